"""Datasets: text uploaded through the form is tokenized once into BOS-led sequences of a fixed length."""

import json

import numpy as np
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from transformers import AutoTokenizer

from atlas.datasets.models import Dataset
from atlas.datasets.selectors import dataset_tokens
from atlas.lms.models import LanguageModel, Tokenizer
from workers.compute.corpus import stdlib_docstrings


def _post(client: Client, language_model: LanguageModel, upload: SimpleUploadedFile, **fields: object) -> str:
    data = {"slug": "mine", "language_model": language_model.slug, "context_length": 32, "text_file": upload,
            **fields}
    response = client.post("/datasets/new/", data)
    return response.content.decode() if response.status_code == 200 else response["Location"]


def test_txt_upload_is_tokenized(logged_in_client: Client, language_model: LanguageModel) -> None:
    text = "\n\n".join(stdlib_docstrings(20_000)).encode()
    location = _post(logged_in_client, language_model, SimpleUploadedFile("corpus.txt", text), max_sequences=5)
    dataset = Dataset.objects.get(slug="mine")
    tokens = dataset_tokens(dataset)
    assert location == "/upload/"
    assert tokens.shape == (5, 32) == (dataset.n_sequences, dataset.context_length)
    assert len(set(tokens[:, 0].tolist())) == 1  # every sequence starts with BOS
    assert tokens.dtype == np.int32


def test_jsonl_upload_is_tokenized(logged_in_client: Client, language_model: LanguageModel) -> None:
    lines = "\n".join(json.dumps({"text": doc}) for doc in stdlib_docstrings(20_000)).encode()
    _post(logged_in_client, language_model, SimpleUploadedFile("corpus.jsonl", lines))
    assert Dataset.objects.get(slug="mine").n_sequences > 5


def test_bad_jsonl_names_the_line(logged_in_client: Client, language_model: LanguageModel, media_root: object) -> None:
    lines = b'{"text": "fine"}\n{"text": 3\n'
    page = _post(logged_in_client, language_model, SimpleUploadedFile("corpus.jsonl", lines))
    assert "line 2" in page.lower()
    assert not Dataset.objects.exists()


def test_too_little_text_says_how_much_is_needed(logged_in_client: Client, language_model: LanguageModel) -> None:
    page = _post(logged_in_client, language_model, SimpleUploadedFile("tiny.txt", b"Just a few words."))
    assert "tokens" in page
    assert not Dataset.objects.exists()


def test_other_file_types_are_refused(logged_in_client: Client, language_model: LanguageModel) -> None:
    page = _post(logged_in_client, language_model, SimpleUploadedFile("corpus.pdf", b"%PDF-1.4"))
    assert "neither .txt nor .jsonl" in page


def test_context_longer_than_the_model_is_refused(logged_in_client: Client, language_model: LanguageModel) -> None:
    text = "\n\n".join(stdlib_docstrings(20_000)).encode()
    page = _post(logged_in_client, language_model, SimpleUploadedFile("corpus.txt", text), context_length=4096)
    assert f"maximum of {language_model.n_ctx}" in page


def test_text_is_tokenized_as_the_models_own_tokenizer_does(
    logged_in_client: Client, language_model: LanguageModel
) -> None:
    documents = stdlib_docstrings(20_000)
    _post(logged_in_client, language_model, SimpleUploadedFile("corpus.jsonl", "\n".join(
        json.dumps({"text": doc}) for doc in documents).encode()), max_sequences=2)
    reference = AutoTokenizer.from_pretrained(language_model.source)
    expected = [*reference.encode(documents[0], add_special_tokens=False), reference.eos_token_id]
    first = dataset_tokens(Dataset.objects.get(slug="mine"))[0]
    assert first[0] == reference.bos_token_id
    assert first[1:].tolist() == expected[:31]


def test_a_model_without_a_stored_tokenizer_says_how_to_store_one(
    logged_in_client: Client, language_model: LanguageModel
) -> None:
    Tokenizer.objects.filter(language_model=language_model).delete()
    LanguageModel.objects.filter(pk=language_model.pk).update(source_kind=LanguageModel.SourceKind.TRANSFORMER_LENS)
    text = "\n\n".join(stdlib_docstrings(20_000)).encode()
    page = _post(logged_in_client, language_model, SimpleUploadedFile("corpus.txt", text))
    assert f"run `manage.py atlas_model_add {language_model.slug} --transformer-lens" in page
    assert not Dataset.objects.exists()
