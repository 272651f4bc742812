"""Load the language model an SAE reads from, and describe the hooks, vocabulary and tokenizer it offers.

Worker and registration side: this module imports torch, transformer-lens and transformers. The web reads
what it needs of a model (ModelFacts, TextTokenizer) through workers.compute.model_source, which imports none.
"""

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformer_lens import loading_from_pretrained as tl_loading
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from workers.compute.model_source import (
    HF_CONFIG_FILENAME,
    LanguageModelError,
    ModelFacts,
    ModelSource,
    TokenizerDefinition,
    hf_directory,
    load_tokenizer,
)

__all__ = [
    "SAELENS_PROCESSING",
    "LanguageModelError",
    "ModelFacts",
    "ModelSource",
    "hf_tokenizer_load",
    "hook_widths",
    "load_language_model",
    "load_tokenizer",
    "model_facts",
    "tokenizer_definition",
    "vocabulary",
]

# SAELens loads models with these settings; an SAE trained there only sees the same activations
# when the residual stream is processed the same way.
SAELENS_PROCESSING: dict[str, bool] = {
    "fold_ln": True,
    "center_writing_weights": False,
    "center_unembed": True,
}
# transformer-lens picks the architecture from the name alone when it contains one of these, and then
# never reads config.json; a local directory is therefore announced under a neutral alias.
_NAME_SNIFFED_WORDS = ("llama", "gemma")
_NEUTRAL_ALIAS = "hf-local-model"


def load_language_model(
    source: ModelSource, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> HookedTransformer:
    if source.kind == "transformer_lens":
        return HookedTransformer.from_pretrained(source.name_or_path, device=device, dtype=dtype, **SAELENS_PROCESSING)
    return _load_hf_local(hf_directory(source), device, dtype)


def model_facts(model: HookedTransformer) -> ModelFacts:
    cfg = model.cfg
    return ModelFacts(
        d_model=cfg.d_model,
        n_layers=cfg.n_layers,
        n_ctx=cfg.n_ctx,
        d_vocab=cfg.d_vocab,
        hook_widths=hook_widths(cfg),
        vocabulary=vocabulary(model),
        tokenizer=tokenizer_definition(model.tokenizer),
    )


def tokenizer_definition(tokenizer: PreTrainedTokenizerBase | None) -> TokenizerDefinition:
    """What the web needs to tokenize as this tokenizer does, with the `tokenizers` library alone."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if tokenizer is None or backend is None:
        raise LanguageModelError(
            "The model has no fast (tokenizers-library) tokenizer, so the site could not tokenize text for it."
        )
    return TokenizerDefinition(
        json=backend.to_str(), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id
    )


def hf_tokenizer_load(source: ModelSource) -> PreTrainedTokenizerBase:
    """The model's transformers tokenizer alone, without loading any weights (transformer-lens needs this kind)."""
    if source.kind == "transformer_lens":
        official_name = tl_loading.get_official_model_name(source.name_or_path)
        return AutoTokenizer.from_pretrained(official_name)
    return AutoTokenizer.from_pretrained(hf_directory(source))


def hook_widths(cfg: HookedTransformerConfig) -> dict[str, int]:
    """Every hook an SAE may read, with the width of its activations once heads are flattened."""
    widths = {"hook_embed": cfg.d_model}
    if cfg.positional_embedding_type in ("standard", "shortformer"):
        widths["hook_pos_embed"] = cfg.d_model
    for layer in range(cfg.n_layers):
        widths |= _block_hook_widths(cfg, layer)
    return widths


def _block_hook_widths(cfg: HookedTransformerConfig, layer: int) -> dict[str, int]:
    prefix = f"blocks.{layer}"
    kv_heads = cfg.n_heads
    if cfg.n_key_value_heads is not None and not cfg.ungroup_grouped_query_attention:
        # Grouped-query attention hooks k and v before they are shared between query heads.
        kv_heads = cfg.n_key_value_heads
    widths = {
        f"{prefix}.hook_resid_pre": cfg.d_model,
        f"{prefix}.hook_attn_out": cfg.d_model,
        f"{prefix}.hook_resid_post": cfg.d_model,
        f"{prefix}.attn.hook_q": cfg.n_heads * cfg.d_head,
        f"{prefix}.attn.hook_k": kv_heads * cfg.d_head,
        f"{prefix}.attn.hook_v": kv_heads * cfg.d_head,
        f"{prefix}.attn.hook_z": cfg.n_heads * cfg.d_head,
    }
    if cfg.use_attn_result:
        widths[f"{prefix}.attn.hook_result"] = cfg.n_heads * cfg.d_model
    return widths | _mlp_hook_widths(cfg, prefix)


def _mlp_hook_widths(cfg: HookedTransformerConfig, prefix: str) -> dict[str, int]:
    if cfg.attn_only:
        return {}
    widths = {f"{prefix}.hook_mlp_out": cfg.d_model}
    if not cfg.parallel_attn_mlp:
        widths[f"{prefix}.hook_resid_mid"] = cfg.d_model
    # Mixture-of-experts layers hook per-expert activations, which no SAE width describes.
    if cfg.num_experts or cfg.d_mlp is None:
        return widths
    widths[f"{prefix}.mlp.hook_pre"] = cfg.d_mlp
    widths[f"{prefix}.mlp.hook_post"] = cfg.d_mlp
    if cfg.gated_mlp:
        widths[f"{prefix}.mlp.hook_pre_linear"] = cfg.d_mlp
    return widths


def vocabulary(model: HookedTransformer) -> list[str]:
    """Display string of every token id, spaces and special tokens kept as the tokenizer decodes them."""
    if model.tokenizer is None:
        raise LanguageModelError("The model has no tokenizer, so its tokens cannot be displayed.")
    tokenizer = model.tokenizer
    # Some models pad the embedding beyond the tokenizer; those ids decode to nothing.
    known = min(model.cfg.d_vocab, len(tokenizer))
    decoded: list[str] = tokenizer.batch_decode(
        [[token_id] for token_id in range(known)],
        skip_special_tokens=False,
        clean_up_tokenization_spaces=False,
    )
    return decoded + [""] * (model.cfg.d_vocab - known)


def _load_hf_local(directory: Path, device: str, dtype: torch.dtype) -> HookedTransformer:
    tokenizer = hf_tokenizer_load(ModelSource("hf_local", str(directory)))
    # The HF model lives only in this frame, so its weights are freed when the conversion returns.
    hf_model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype)
    with _official_alias(directory) as alias:
        model = HookedTransformer.from_pretrained(
            alias,
            hf_model=hf_model,
            tokenizer=tokenizer,
            device=device,
            dtype=dtype,
            **SAELENS_PROCESSING,
        )
    model.cfg.model_name = directory.name
    return model


@contextmanager
def _official_alias(directory: Path) -> Iterator[str]:
    """A path transformer-lens accepts as an official name and whose config it reads from disk.

    transformer-lens 3.9 only loads names in OFFICIAL_MODEL_NAMES, and reads config.json from the name
    when it is a directory; the weights and tokenizer are passed in, so config.json is all it needs.
    """
    with tempfile.TemporaryDirectory(prefix="tl-config-") as scratch:
        alias_dir = Path(scratch) / _NEUTRAL_ALIAS
        alias_dir.mkdir()
        shutil.copyfile(directory / HF_CONFIG_FILENAME, alias_dir / HF_CONFIG_FILENAME)
        alias = str(alias_dir)
        if any(word in alias.lower() for word in _NAME_SNIFFED_WORDS):
            raise LanguageModelError(f"Temporary directory {alias} would mislead transformer-lens.")
        tl_loading.OFFICIAL_MODEL_NAMES.append(alias)
        try:
            yield alias
        finally:
            tl_loading.OFFICIAL_MODEL_NAMES.remove(alias)
