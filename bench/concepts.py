"""A concept search (workers.compute.concepts) against the bare forward-to-hook + SAE encode of the same tokens.

The bare pass is the least a concept search must do: one forward to the hook and one encode per token; the search
adds pooling, every feature's AUROC, the mass-mean and logistic probes, sparse probing and the cosines. The two are
timed in turn, repeat by repeat, and the ratio is the median of each back-to-back pair's, so drift in the machine's
speed hits both sides of every ratio; a warm-up of a few batches goes first. Prints the medians, the part of the
search after the model pass (ranking, probes, cosines), and `RESULT concepts_vs_forward=<ratio>` (goal: <= 1.2).
Default case: SmolLM2-135M-Instruct, the demo SAE (demo/sae/, blocks.5.hook_resid_post, 2048 features), max
pooling, 2 x 500 texts of 128 tokens with BOS: the standard library's docstrings joined and cut into windows of 127
tokens (1,609 of them), positives the windows that say what something returns ("return" or "returns": 709),
negatives the others.
The bare pass reads the same texts tokenized as the search tokenizes them (BOS, then the text), in the same batches
of the same size, ordered by length and padded on the right with BOS as the search pads them.
"""

import argparse
import re
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor
from transformer_lens import HookedTransformer

from bench.cases import SMOLLM2_HOOK, bare_forward_encode, smollm2_model
from workers.compute.concepts import concept_search_compute
from workers.compute.corpus import stdlib_docstrings
from workers.compute.live import text_tokens
from workers.compute.sae import SparseAutoencoder, sae_load

DEMO_SAE_DIR = Path(__file__).resolve().parents[1] / "demo" / "sae"
WINDOW_TOKENS = 127  # + BOS = 128
MENTIONS_RETURN = re.compile(r"\breturns?\b", re.IGNORECASE)
WARM_UP_BATCHES = 2


def docstring_windows(model: HookedTransformer, per_class: int) -> tuple[list[str], list[str]]:
    """per_class windows of WINDOW_TOKENS docstring tokens, decoded, that mention returning, per_class that do not."""
    assert model.tokenizer is not None
    ids: list[int] = model.tokenizer("\n\n".join(stdlib_docstrings(10**9)), add_special_tokens=False)["input_ids"]
    windows = [model.tokenizer.decode(ids[start : start + WINDOW_TOKENS])
               for start in range(0, len(ids) - WINDOW_TOKENS + 1, WINDOW_TOKENS)]
    positives = [text for text in windows if MENTIONS_RETURN.search(text)][:per_class]
    negatives = [text for text in windows if not MENTIONS_RETURN.search(text)][:per_class]
    if min(len(positives), len(negatives)) < per_class:
        raise SystemExit(f"The docstrings give {len(positives)} + {len(negatives)} windows, not {per_class} of each.")
    return positives, negatives


def padded_batches(model: HookedTransformer, texts: Sequence[str], batch_size: int) -> list[Tensor]:
    """The batches concept search runs: texts tokenized by text_tokens, ordered by length, BOS-padded on the right."""
    rows = sorted((text_tokens(model, text)[0] for text in texts), key=len)
    batches = []
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        padded = torch.full((len(batch), max(map(len, batch))), int(batch[0][0]), dtype=torch.int64)
        for index, row in enumerate(batch):
            padded[index, : len(row)] = row
        batches.append(padded)
    return batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=500, help="texts per class")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--pooling", choices=["max", "mean"], default="max")
    args = parser.parse_args()

    model = smollm2_model()
    sae: SparseAutoencoder = sae_load(DEMO_SAE_DIR)
    hook_name = sae.config.hook_name or SMOLLM2_HOOK
    positives, negatives = docstring_windows(model, args.texts)
    batches = padded_batches(model, [*positives, *negatives], args.batch_size)
    pass_ends: list[float] = []

    def bare() -> None:
        with torch.inference_mode():
            for batch in batches:
                bare_forward_encode(model, sae, batch, hook_name, args.batch_size)

    def search() -> None:
        concept_search_compute(model, sae, hook_name, positives, negatives, args.pooling,
                               batch_size=args.batch_size,
                               progress=lambda done, total: pass_ends.append(time.perf_counter()))

    with torch.inference_mode():  # warm-up (allocator, kernels) on a few batches: a full pass takes minutes on CPU
        for batch in batches[:WARM_UP_BATCHES]:
            bare_forward_encode(model, sae, batch, hook_name, args.batch_size)
    warm_up = WARM_UP_BATCHES * args.batch_size // 2
    concept_search_compute(model, sae, hook_name, positives[:warm_up], negatives[:warm_up], args.pooling,
                           batch_size=args.batch_size)
    bare_times, search_times, analysis_times = [], [], []
    for _ in range(args.repeats):
        bare_times.append(_seconds(bare))
        start = time.perf_counter()
        search()
        end = time.perf_counter()
        search_times.append(end - start)
        analysis_times.append(end - pass_ends[-1])
    bare_s, search_s = statistics.median(bare_times), statistics.median(search_times)
    tokens = [len(row) for batch in batches for row in batch]
    print(f"SmolLM2-135M-Instruct on cpu, {torch.get_num_threads()} threads; demo SAE {hook_name}, d_sae {sae.d_sae}; "
          f"{args.texts} + {args.texts} docstring windows of {min(tokens)}-{max(tokens)} tokens with BOS, "
          f"{args.pooling} pooling, batches of {args.batch_size}")
    print(f"bare forward-to-hook + encode: {bare_s:.2f} s (median of {args.repeats})")
    print(f"concept search:                {search_s:.2f} s (median of {args.repeats})")
    print(f"  of which after the pass:     {statistics.median(analysis_times):.2f} s (ranking, probes, cosines)")
    ratios = [search / bare for search, bare in zip(search_times, bare_times, strict=True)]
    print(f"pairwise ratios: {', '.join(f'{ratio:.2f}' for ratio in ratios)}")
    print(f"RESULT concepts_vs_forward={statistics.median(ratios):.2f}")


def _seconds(function: Callable[[], object]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
