"""SAEDashboard's side of bench.vs_saedashboard; runs in the peer tool's own virtual environment.

Generates dashboards for every feature the way Neuronpedia's runner does (SaeVisRunner over batches of
features, activations cached on disk after the first batch, each batch converted to Neuronpedia's JSON),
with the example settings of Atlas's DashboardParams. Writes its times as JSON to --result-file.
"""

import argparse
import json
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sae_dashboard.components_config import (
    ActsHistogramConfig,
    Column,
    FeatureTablesConfig,
    LogitsHistogramConfig,
    LogitsTableConfig,
    SequencesConfig,
)
from sae_dashboard.layout import SaeVisLayoutConfig
from sae_dashboard.neuronpedia.neuronpedia_converter import NeuronpediaConverter
from sae_dashboard.neuronpedia.neuronpedia_runner_config import NeuronpediaRunnerConfig
from sae_dashboard.sae_vis_data import SaeVisConfig
from sae_dashboard.sae_vis_runner import SaeVisRunner
from sae_lens import SAE
from transformer_lens import HookedTransformer

from workers.compute.language_model import ModelSource, load_language_model
from workers.compute.params import DashboardParams

# Neuronpedia's runner defaults: features per SaeVisRunner call and per quantile batch.
FEATURES_PER_RUN = 128
QUANTILE_FEATURE_BATCH_SIZE = 64
# SaeVisRunner reads layout.feature_tables_cfg unconditionally; Neuronpedia shows 3 rows.
FEATURE_TABLE_ROWS = 3
OUT_OF_RANGE_TOKEN = "<|outofrange|>"
# eindex indexes with lists, which torch warns about on every call; the warning says nothing about the run.
warnings.filterwarnings("ignore", message="Using a non-tuple sequence for multidimensional indexing")


def vis_config(hook: str, features: list[int], params: DashboardParams, cache_dir: Path,
               whole_sequences: bool = False) -> Any:
    """SaeVisConfig as Neuronpedia's runner builds it, with Atlas's example settings: windows of Atlas's context,
    or whole sequences (buffer=None), which is what Neuronpedia's runner itself asks for."""
    layout = SaeVisLayoutConfig(columns=[Column(
        SequencesConfig(
            stack_mode="stack-all",
            buffer=None if whole_sequences else (params.context_before, params.context_after),
            compute_buffer=True,
            n_quantiles=params.n_intervals,
            top_acts_group_size=params.top_k,
            quantile_group_size=params.examples_per_interval,
        ),
        ActsHistogramConfig(n_bins=params.act_hist_bins),
        LogitsHistogramConfig(n_bins=params.logit_hist_bins),
        LogitsTableConfig(n_rows=params.logit_tokens),
        FeatureTablesConfig(n_rows=FEATURE_TABLE_ROWS),
    )])
    return SaeVisConfig(
        hook_point=hook,
        features=features,
        minibatch_size_features=FEATURES_PER_RUN,
        minibatch_size_tokens=params.batch_size,
        quantile_feature_batch_size=QUANTILE_FEATURE_BATCH_SIZE,
        device="cpu",
        dtype="float32",
        feature_centric_layout=layout,
        perform_ablation_experiments=False,
        # Atlas skips each sequence's BOS; Neuronpedia ignores the BOS token id, the same positions here.
        ignore_positions=[0] if params.skip_bos else [],
        use_dfa=False,
        seed=params.seed,
        verbose=False,
        cache_dir=cache_dir,
    )


def vocab_dict(model: HookedTransformer) -> dict[int, str]:
    """Token id -> string as Neuronpedia's runner builds it (minus its HTML escapes)."""
    assert model.tokenizer is not None
    vocab = {token_id: token for token, token_id in model.tokenizer.get_vocab().items()}
    return vocab | {i: OUT_OF_RANGE_TOKEN for i in range(len(vocab), model.cfg.d_vocab)}


def dashboards_generate(model: HookedTransformer, sae: Any, tokens: torch.Tensor, features: list[int],
                        params: DashboardParams, vocab: dict[int, str], output_dir: Path,
                        whole_sequences: bool = False) -> dict[str, float]:
    """Neuronpedia's loop: a SaeVisRunner per batch of features, each written as one JSON batch file."""
    hook = sae.cfg.metadata.hook_name
    np_config = NeuronpediaRunnerConfig(sae_set="bench", sae_path="", outputs_dir=str(output_dir),
                                        n_prompts_total=tokens.shape[0], n_tokens_in_prompt=tokens.shape[1])
    seconds = {"run": 0.0, "json": 0.0}
    with tempfile.TemporaryDirectory(prefix="activations-", dir=output_dir) as cache_dir:
        for batch_index, start in enumerate(range(0, len(features), FEATURES_PER_RUN)):
            batch = features[start : start + FEATURES_PER_RUN]
            started = time.perf_counter()
            config = vis_config(hook, batch, params, Path(cache_dir), whole_sequences)
            data = SaeVisRunner(config).run(sae, model, tokens)
            ran = time.perf_counter()
            text = NeuronpediaConverter.convert_to_np_json(model, data, np_config, vocab)
            (output_dir / f"batch-{batch_index}.json").write_text(text)
            seconds["run"] += ran - started
            seconds["json"] += time.perf_counter() - ran
    return seconds


def output_summary(output_dir: Path, d_sae: int) -> dict[str, float]:
    """Mean L0 and mean top activation over the written batches, to check both tools saw the same acts."""
    frac_nonzero: list[float] = []
    top_act: list[float] = []
    for path in output_dir.glob("batch-*.json"):
        for feature in json.loads(path.read_text())["features"]:
            frac_nonzero.append(feature["frac_nonzero"])
            top_act.append(max((a["bin_max"] for a in feature["activations"] if a["bin_min"] == -1), default=0.0))
    return {"features": len(frac_nonzero), "l0": sum(frac_nonzero) * d_sae / max(len(frac_nonzero), 1),
            "mean_max_act": statistics.fmean(top_act) if top_act else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--sae-dir", type=Path, required=True)
    parser.add_argument("--tokens", type=Path, required=True, help=".npy of token ids [sequences, context]")
    parser.add_argument("--output-dir", type=Path, required=True, help="scratch space for activations and JSON")
    parser.add_argument("--result-file", type=Path, required=True)
    parser.add_argument("--warmup-features", type=int, default=8)
    args = parser.parse_args()

    params = DashboardParams()
    model = load_language_model(ModelSource("hf_local", str(args.model_dir)))
    sae = SAE.load_from_disk(str(args.sae_dir), device="cpu")
    tokens = torch.from_numpy(np.load(args.tokens).astype(np.int64))
    vocab = vocab_dict(model)
    features = list(range(sae.cfg.d_sae))
    with tempfile.TemporaryDirectory(prefix="warmup-", dir=args.output_dir) as warmup_dir:
        dashboards_generate(model, sae, tokens, features[: args.warmup_features], params, vocab, Path(warmup_dir))
    with tempfile.TemporaryDirectory(prefix="dashboards-", dir=args.output_dir) as output_dir:
        started = time.perf_counter()
        seconds = dashboards_generate(model, sae, tokens, features, params, vocab, Path(output_dir))
        total = time.perf_counter() - started
        summary = output_summary(Path(output_dir), sae.cfg.d_sae)
    result = {"total_s": total, "run_s": seconds["run"], "json_s": seconds["json"],
              "threads": torch.get_num_threads(), **summary}
    args.result_file.write_text(json.dumps(result))
    print(f"SAEDashboard: {total:.2f} s for {len(features)} features")


if __name__ == "__main__":
    main()
