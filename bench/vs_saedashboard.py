"""SAEDashboard and Atlas on the same model, SAE, tokens and example settings, for all features.

SAEDashboard 0.8.0 runs in its own virtual environment (created once under var/bench/saedashboard/),
driven by bench/saedashboard_runner.py the way Neuronpedia's runner drives it. Model and SAE loading
are outside both timings; SAEDashboard's includes writing Neuronpedia's JSON, Atlas's ends with the
arrays dashboards_compute returns. The bare forward-to-hook + encode is timed too, as the floor.
Prints the three times, both ratios to the floor, and `RESULT speedup_vs_saedashboard=<x>`.
Default case: SmolLM2-135M, blocks.5.hook_resid_post, a random 4096-feature SAE with b_enc set so the
mean L0 is about 64, 64 x 128 tokens of standard-library docstrings.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from sae_lens import SAE

from bench.cases import (
    ROOT,
    SMOLLM2_DIR,
    SMOLLM2_HOOK,
    bare_forward_encode,
    docstring_tokens,
    random_sae,
    smollm2_model,
    timed,
)
from workers.compute.dashboard import dashboards_compute
from workers.compute.params import DashboardParams
from workers.compute.sae import SparseAutoencoder, sae_load

BENCH_DIR = ROOT / "var" / "bench" / "saedashboard"
PEER_VENV = BENCH_DIR / "venv"
PEER_PYTHON = PEER_VENV / "bin" / "python"
PEER_INSTALLED_MARKER = PEER_VENV / ".installed"
PEER_INSTALL_LOG = BENCH_DIR / "venv-install.log"
CONSTRAINTS = ROOT / "requirements" / "constraints.txt"
# sae-dashboard 0.8.0 pins transformer-lens<3, whose rope handling gives SmolLM2 wrong logits, so it goes
# in without its dependencies beside transformer-lens 3.9 and what its import chain needs.
PEER_PACKAGE = "sae-dashboard==0.8.0"
PEER_REQUIREMENTS = (
    "transformer-lens>=3.9,<4",
    "sae-lens>=6.8,<7",
    "dataclasses-json>=0.6.4,<0.7",
    "eindex-callum>=0.1,<0.2",
    "matplotlib>=3.8.4,<4",
    "einops>=0.7",
    "jaxtyping>=0.2.28",
    "rich>=13.7.1",
)


def peer_venv_ensure() -> float | None:
    """Create SAEDashboard's virtual environment unless it is there; the seconds it took, None if cached."""
    wanted = "\n".join((*PEER_REQUIREMENTS, PEER_PACKAGE))
    if PEER_INSTALLED_MARKER.is_file() and PEER_INSTALLED_MARKER.read_text() == wanted:
        return None
    shutil.rmtree(PEER_VENV, ignore_errors=True)
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    print(f"creating SAEDashboard's virtual environment in {PEER_VENV} (log: {PEER_INSTALL_LOG})", flush=True)
    started = time.perf_counter()
    pip = [str(PEER_PYTHON), "-m", "pip", "install", "--quiet"]
    with PEER_INSTALL_LOG.open("w") as log:
        for command in (
            [sys.executable, "-m", "venv", str(PEER_VENV)],
            # The constraints pin torch's CPU build, so nothing pulls a multi-GB CUDA one.
            [*pip, "-c", str(CONSTRAINTS), *PEER_REQUIREMENTS],
            [*pip, "--no-deps", PEER_PACKAGE],
        ):
            if subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode != 0:
                sys.exit(f"`{' '.join(command)}` failed; see {PEER_INSTALL_LOG}")
    PEER_INSTALLED_MARKER.write_text(wanted)
    return time.perf_counter() - started


def shared_tokens(sequences: int, context: int) -> Path:
    """The token ids both tools read, as .npy, written once."""
    path = BENCH_DIR / f"tokens-{sequences}x{context}.npy"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npy", delete=False) as staging:
            np.save(staging, docstring_tokens(sequences, context))
        os.replace(staging.name, path)
    return path


def shared_sae(tokens_path: Path, d_sae: int, l0: int) -> Path:
    """The random SAE both tools load, saved by SAELens itself, written once per token set."""
    directory = BENCH_DIR / f"sae-{d_sae}-l0-{l0}-{tokens_path.stem}"
    if (directory / "cfg.json").is_file():
        return directory
    tokens = torch.from_numpy(np.load(tokens_path).astype(np.int64))
    with torch.inference_mode():
        sae = random_sae(smollm2_model(), tokens, SMOLLM2_HOOK, d_sae, l0)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=BENCH_DIR))
    sae_lens_save(sae, staging)
    os.replace(staging, directory)
    return directory


def sae_lens_save(sae: SparseAutoencoder, directory: Path) -> None:
    lens_sae = SAE.from_dict({
        "architecture": "standard", "d_in": sae.d_in, "d_sae": sae.d_sae, "dtype": "float32", "device": "cpu",
        "apply_b_dec_to_input": sae.config.apply_b_dec_to_input,
        "metadata": {"hook_name": sae.config.hook_name, "model_name": SMOLLM2_DIR.name},
    })
    with torch.no_grad():
        for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
            getattr(lens_sae, name).copy_(getattr(sae, name))
    lens_sae.save_model(str(directory))


def saedashboard_run(sae_dir: Path, tokens_path: Path) -> dict[str, float]:
    """Run the peer tool's side in its own environment and return the times it reports."""
    environment = os.environ | {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with tempfile.TemporaryDirectory(prefix="saedashboard-", dir=BENCH_DIR) as scratch:
        result_file = Path(scratch) / "result.json"
        command = [str(PEER_PYTHON), "-m", "bench.saedashboard_runner", "--model-dir", str(SMOLLM2_DIR),
                   "--sae-dir", str(sae_dir), "--tokens", str(tokens_path), "--output-dir", scratch,
                   "--result-file", str(result_file)]
        if subprocess.run(command, cwd=ROOT, env=environment).returncode != 0 or not result_file.is_file():
            sys.exit("SAEDashboard's runner failed; its output is above.")
        times: dict[str, float] = json.loads(result_file.read_text())
    return times


def _spread(times: list[float]) -> str:
    return f"median of {len(times)}, range {min(times):.2f}-{max(times):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequences", type=int, default=64)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--d-sae", type=int, default=4096)
    parser.add_argument("--l0", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="Atlas and bare-pass repeats (median reported)")
    args = parser.parse_args()

    setup_s = peer_venv_ensure()
    tokens_path = shared_tokens(args.sequences, args.context)
    sae_dir = shared_sae(tokens_path, args.d_sae, args.l0)
    peer = saedashboard_run(sae_dir, tokens_path)

    model = smollm2_model()
    sae = sae_load(sae_dir)
    token_array: npt.NDArray[np.int32] = np.load(tokens_path)
    tokens = torch.from_numpy(token_array.astype(np.int64))
    params = DashboardParams()
    with torch.inference_mode():
        def bare() -> None:
            bare_forward_encode(model, sae, tokens, SMOLLM2_HOOK, params.batch_size)

        bare()  # warm-up: allocator, kernels
        bare_times = timed(bare, args.repeats)
        atlas = dashboards_compute(model, sae, token_array, SMOLLM2_HOOK, params)  # warm-up
        atlas_times = timed(lambda: dashboards_compute(model, sae, token_array, SMOLLM2_HOOK, params), args.repeats)
    bare_s, atlas_s, peer_s = statistics.median(bare_times), statistics.median(atlas_times), peer["total_s"]

    print(f"{args.sequences} x {args.context} tokens, d_sae {args.d_sae}, target L0 {args.l0}, "
          f"{torch.get_num_threads()} threads here, {peer['threads']:.0f} in SAEDashboard's process")
    print("SAEDashboard's environment: " + ("cached" if setup_s is None else f"created in {setup_s:.0f} s"))
    print(f"check, same activations: mean L0 {float(atlas.frac_nonzero.sum()):.1f} (Atlas) vs {peer['l0']:.1f} "
          f"(SAEDashboard); mean max act {float(atlas.max_act.mean()):.3f} vs {peer['mean_max_act']:.3f}")
    print(f"bare forward-to-hook + encode: {bare_s:6.2f} s ({_spread(bare_times)})")
    print(f"Atlas dashboards_compute:      {atlas_s:6.2f} s ({_spread(atlas_times)})")
    print(f"SAEDashboard:                  {peer_s:6.2f} s (one run; SaeVisRunner {peer['run_s']:.2f} s, "
          f"Neuronpedia JSON {peer['json_s']:.2f} s)")
    print(f"Atlas vs bare: {atlas_s / bare_s:.2f}x; SAEDashboard vs bare: {peer_s / bare_s:.2f}x")
    print(f"Atlas is {peer_s / atlas_s:.1f}x faster than SAEDashboard")
    print(f"RESULT saedashboard_seconds={peer_s:.2f}")
    print(f"RESULT atlas_seconds={atlas_s:.2f}")
    print(f"RESULT forward_encode_seconds={bare_s:.2f}")
    print(f"RESULT atlas_vs_forward={atlas_s / bare_s:.2f}")
    print(f"RESULT saedashboard_vs_forward={peer_s / bare_s:.2f}")
    print(f"RESULT speedup_vs_saedashboard={peer_s / atlas_s:.2f}")


if __name__ == "__main__":
    main()
