"""Writes SAEDashboard's own batch-N.json for a model, SAE and tokens; run in the peer tool's venv (var/bench).

The import tests use it to check Atlas against files the real converter wrote, not ones made to look like them.
"""

import argparse
from pathlib import Path

import numpy as np
import torch
from sae_lens import SAE

from bench.saedashboard_runner import dashboards_generate, vocab_dict
from workers.compute.language_model import ModelSource, load_language_model
from workers.compute.params import DashboardParams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--sae-dir", type=Path, required=True)
    parser.add_argument("--tokens", type=Path, required=True, help=".npy of token ids [sequences, context]")
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--context-before", type=int, default=4)
    parser.add_argument("--context-after", type=int, default=2)
    parser.add_argument("--whole-sequences", action="store_true",
                        help="whole prompts (buffer=None, the Neuronpedia runner's default) instead of windows")
    args = parser.parse_args()

    params = DashboardParams(top_k=5, context_before=args.context_before, context_after=args.context_after,
                             n_intervals=4, examples_per_interval=3, act_hist_bins=10, logit_hist_bins=12,
                             logit_tokens=5, batch_size=4)
    model = load_language_model(ModelSource("hf_local", str(args.model_dir)))
    sae = SAE.load_from_disk(str(args.sae_dir), device="cpu")
    tokens = torch.from_numpy(np.load(args.tokens).astype(np.int64))
    args.output_dir.mkdir(parents=True, exist_ok=True)
    dashboards_generate(model, sae, tokens, list(range(sae.cfg.d_sae)), params, vocab_dict(model), args.output_dir,
                        whole_sequences=args.whole_sequences)


if __name__ == "__main__":
    main()
