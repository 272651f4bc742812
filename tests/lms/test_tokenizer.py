"""The tokenizer the web process reads text with: stored at registration, read with the tokenizers library alone."""

from dataclasses import replace

import pytest
from transformers import AutoTokenizer

from atlas.lms import services
from atlas.lms.models import LanguageModel, Tokenizer
from atlas.lms.selectors import tokenizer_for
from atlas.lms.services import language_model_store
from tests import factories
from workers.compute.corpus import stdlib_docstrings
from workers.compute.language_model import ModelSource
from workers.compute.model_source import LanguageModelError


def test_a_registered_models_tokenizer_tokenizes_as_transformers_does(language_model: LanguageModel) -> None:
    reference = AutoTokenizer.from_pretrained(language_model.source)
    documents = stdlib_docstrings(20_000)
    tokenizer = tokenizer_for(language_model)
    assert tokenizer.encode_batch(documents) == reference(documents, add_special_tokens=False)["input_ids"]
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id) == (reference.bos_token_id, reference.eos_token_id)


def test_registering_again_replaces_the_tokenizer_a_process_has_read(language_model: LanguageModel) -> None:
    assert tokenizer_for(language_model).bos_token_id == 0
    facts = factories.tiny_model_facts()
    source = ModelSource(kind="hf_local", name_or_path=language_model.source)
    language_model_store(slug=language_model.slug, display_name="Tiny Llama", source=source,
                         facts=replace(facts, tokenizer=replace(facts.tokenizer, bos_token_id=2)))
    assert tokenizer_for(language_model).bos_token_id == 2


def test_a_local_model_registered_before_tokenizers_were_stored_reads_its_directory(
    language_model: LanguageModel,
) -> None:
    Tokenizer.objects.filter(language_model=language_model).delete()
    tokenizer = tokenizer_for(language_model)
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1)
    assert tokenizer.encode_batch(["Return self."]) == tokenizer_for(language_model).encode_batch(["Return self."])


def test_a_hub_model_registered_before_tokenizers_were_stored_says_to_register_it_again(db: None) -> None:
    hub_model = LanguageModel.objects.create(slug="gpt2-small", display_name="GPT-2", source="gpt2-small",
                                             source_kind=LanguageModel.SourceKind.TRANSFORMER_LENS, d_model=768,
                                             n_layers=12, n_ctx=1024, d_vocab=50257)
    with pytest.raises(LanguageModelError, match="atlas_model_add gpt2-small --transformer-lens gpt2-small"):
        tokenizer_for(hub_model)


def test_there_is_one_language_model_error() -> None:
    assert services.LanguageModelError is LanguageModelError
