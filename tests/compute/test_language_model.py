"""Loading a local Hugging Face model into transformer-lens, the facts read from it, and its tokenizer for the web."""

import gc
import json
import shutil
import socket
import weakref
from pathlib import Path
from typing import Any

import pytest
import torch
from transformer_lens import HookedTransformer
from transformer_lens import loading_from_pretrained as tl_loading
from transformers import AutoModelForCausalLM, AutoTokenizer

from workers.compute.corpus import stdlib_docstrings
from workers.compute.language_model import (
    LanguageModelError,
    ModelSource,
    load_language_model,
    load_tokenizer,
    model_facts,
)
from workers.compute.model_source import HF_TOKENIZER_FILENAME, TextTokenizer
from workers.compute.tiny_model import tiny_model_write

TEXT = "Return the sum of two numbers, or raise ValueError if either is negative."


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # "llama" in the directory name is deliberate: transformer-lens guesses configs from such names.
    return tiny_model_write(tmp_path_factory.mktemp("models") / "tiny-llama", stdlib_docstrings(60_000))


@pytest.fixture(scope="module")
def tiny_source(tiny_dir: Path) -> ModelSource:
    return ModelSource(kind="hf_local", name_or_path=str(tiny_dir))


@pytest.fixture(scope="module")
def tiny_model(tiny_source: ModelSource) -> HookedTransformer:
    return load_language_model(tiny_source)


def flattened_width(activation: torch.Tensor) -> int:
    """Width of an activation as an SAE reads it: [batch, pos, d] or [batch, pos, heads, d] flattened."""
    return activation.shape[-1] if activation.ndim == 3 else activation.shape[-2] * activation.shape[-1]


def test_load_never_opens_a_network_connection(tiny_source: ModelSource, monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[Any] = []

    def refuse(self: socket.socket, address: Any) -> None:
        attempts.append(address)
        raise OSError("network disabled in this test")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    model = load_language_model(tiny_source)
    assert attempts == []
    assert model.cfg.n_layers == 2


def test_facts_describe_the_tiny_model(tiny_model: HookedTransformer) -> None:
    facts = model_facts(tiny_model)
    assert (facts.d_model, facts.n_layers, facts.n_ctx, facts.d_vocab) == (64, 2, 128, 512)


def test_hook_widths_equal_real_activation_widths(tiny_model: HookedTransformer) -> None:
    widths = model_facts(tiny_model).hook_widths
    _, cache = tiny_model.run_with_cache(TEXT)
    assert {name: flattened_width(cache[name]) for name in widths} == widths


def test_hook_widths_cover_the_hooks_saes_attach_to(tiny_model: HookedTransformer) -> None:
    widths = model_facts(tiny_model).hook_widths
    for layer in range(2):
        for hook in ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out", "hook_mlp_out"):
            assert widths[f"blocks.{layer}.{hook}"] == 64
        assert widths[f"blocks.{layer}.mlp.hook_post"] == 256
        # hook_z flattens 4 heads of 16; k and v belong to the 2 grouped key-value heads.
        assert widths[f"blocks.{layer}.attn.hook_z"] == 64
        assert widths[f"blocks.{layer}.attn.hook_k"] == 32
    assert widths["hook_embed"] == 64


def test_hook_result_is_listed_once_enabled(tiny_source: ModelSource) -> None:
    model = load_language_model(tiny_source)
    model.set_use_attn_result(True)
    widths = model_facts(model).hook_widths
    _, cache = model.run_with_cache(TEXT)
    assert widths["blocks.1.attn.hook_result"] == flattened_width(cache["blocks.1.attn.hook_result"]) == 4 * 64


def test_vocabulary_decodes_each_id_like_the_tokenizer(tiny_model: HookedTransformer, tiny_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    vocabulary = model_facts(tiny_model).vocabulary
    assert len(vocabulary) == 512
    assert vocabulary == [tokenizer.decode([token_id]) for token_id in range(512)]


def test_vocabulary_keeps_spaces_so_tokens_join_back_into_the_text(
    tiny_model: HookedTransformer, tiny_dir: Path
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    vocabulary = model_facts(tiny_model).vocabulary
    token_ids = tokenizer.encode(TEXT, add_special_tokens=False)
    assert any(vocabulary[token_id].startswith(" ") for token_id in token_ids)
    assert "".join(vocabulary[token_id] for token_id in token_ids) == TEXT


def test_model_matches_transformers_logprobs(tiny_model: HookedTransformer, tiny_dir: Path) -> None:
    tokens = tiny_model.to_tokens(TEXT)
    hf_model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    with torch.no_grad():
        expected = hf_model(tokens).logits.log_softmax(dim=-1)
        actual = tiny_model(tokens).log_softmax(dim=-1)
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=0)


def test_model_uses_saelens_processing(tiny_model: HookedTransformer) -> None:
    # fold_ln turns RMSNorm into its weightless form; center_unembed gives every position zero-mean logits.
    assert tiny_model.cfg.normalization_type == "RMSPre"
    assert tiny_model.W_U.mean(dim=-1).abs().max().item() < 1e-6


def test_model_prepends_bos(tiny_model: HookedTransformer) -> None:
    assert tiny_model.to_tokens(TEXT)[0, 0].item() == tiny_model.tokenizer.bos_token_id


def test_hf_model_is_freed_after_conversion(tiny_source: ModelSource, monkeypatch: pytest.MonkeyPatch) -> None:
    loaded: list[weakref.ref[Any]] = []
    load = AutoModelForCausalLM.from_pretrained

    def load_and_watch(*args: Any, **kwargs: Any) -> Any:
        hf_model = load(*args, **kwargs)
        loaded.append(weakref.ref(hf_model))
        return hf_model

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", load_and_watch)
    model = load_language_model(tiny_source)
    gc.collect()
    assert len(loaded) == 1
    assert loaded[0]() is None
    assert model.cfg.d_model == 64


def test_official_name_registration_is_temporary(tiny_source: ModelSource) -> None:
    before = list(tl_loading.OFFICIAL_MODEL_NAMES)
    load_language_model(tiny_source)
    assert before == tl_loading.OFFICIAL_MODEL_NAMES


def test_model_name_is_the_directory_name(tiny_model: HookedTransformer) -> None:
    assert tiny_model.cfg.model_name == "tiny-llama"


def test_tokenizer_loads_without_weights_and_tokenizes_like_transformers(tiny_dir: Path, tmp_path: Path) -> None:
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_dir / name, tmp_path / name)
    tokenizer = load_tokenizer(ModelSource(kind="hf_local", name_or_path=str(tmp_path)))
    reference = AutoTokenizer.from_pretrained(tiny_dir)
    documents = stdlib_docstrings(20_000)
    assert tokenizer.encode_batch(documents) == reference(documents, add_special_tokens=False)["input_ids"]
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id) == (reference.bos_token_id, reference.eos_token_id)
    assert tokenizer.get_vocab() == reference.get_vocab()


def test_stored_tokenizer_is_the_models_own(tiny_model: HookedTransformer) -> None:
    tokenizer = TextTokenizer(model_facts(tiny_model).tokenizer)
    assert tiny_model.tokenizer is not None
    assert tokenizer.encode_batch([TEXT]) == [tiny_model.tokenizer.encode(TEXT, add_special_tokens=False)]
    assert tokenizer.bos_token_id == tiny_model.tokenizer.bos_token_id is not None
    assert tokenizer.eos_token_id == tiny_model.tokenizer.eos_token_id is not None


def test_a_tokenizer_saved_with_truncation_still_gives_every_token(tiny_dir: Path, tmp_path: Path) -> None:
    for name in ("config.json", "tokenizer_config.json"):
        shutil.copy(tiny_dir / name, tmp_path / name)
    definition = json.loads((tiny_dir / HF_TOKENIZER_FILENAME).read_text())
    definition["truncation"] = {"direction": "Right", "max_length": 4, "strategy": "LongestFirst", "stride": 0}
    (tmp_path / HF_TOKENIZER_FILENAME).write_text(json.dumps(definition))
    [ids] = load_tokenizer(ModelSource(kind="hf_local", name_or_path=str(tmp_path))).encode_batch([TEXT])
    assert ids == AutoTokenizer.from_pretrained(tiny_dir).encode(TEXT, add_special_tokens=False)
    assert len(ids) > 4


def test_a_directory_without_tokenizer_json_is_named(tiny_dir: Path, tmp_path: Path) -> None:
    shutil.copy(tiny_dir / "config.json", tmp_path / "config.json")
    with pytest.raises(LanguageModelError, match=r"has no tokenizer\.json"):
        load_tokenizer(ModelSource(kind="hf_local", name_or_path=str(tmp_path)))


def test_a_hub_models_tokenizer_is_not_fetched_by_the_web() -> None:
    with pytest.raises(LanguageModelError, match="stored when it was registered"):
        load_tokenizer(ModelSource(kind="transformer_lens", name_or_path="gpt2-small"))


def test_directory_without_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LanguageModelError, match=r"no config\.json"):
        load_language_model(ModelSource(kind="hf_local", name_or_path=str(tmp_path)))
