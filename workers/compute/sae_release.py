"""Fetching an SAE by SAELens release and id from the hub (or the local hub cache when offline)."""

import json
import shutil
from pathlib import Path
from typing import Any

from workers.compute.sae_errors import SaeFormatError
from workers.compute.sae_files import CFG_FILENAME, WEIGHTS_FILENAME


def _release_lookup(release: str) -> Any:
    try:
        from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory
    except ImportError as error:
        raise SaeFormatError("adding an SAE by release needs the sae-lens package: pip install sae-lens") from error
    lookup = get_pretrained_saes_directory().get(release)
    if lookup is None:
        raise SaeFormatError(f"SAELens has no release {release!r}")
    return lookup


def sae_release_fetch(release: str, sae_id: str, into: Path, cache_dir: Path | None = None) -> None:
    """Write the release's cfg.json and sae_weights.safetensors for sae_id into `into`.

    Only releases stored in SAELens's own format are supported; the others need SAELens's converters,
    which read foreign formats with code we have not checked. A release's norm_scaling_factor, which
    SAELens keeps in its list rather than in cfg.json, is written into cfg.json.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    lookup = _release_lookup(release)
    folder = lookup.saes_map.get(sae_id)
    if folder is None:
        some = ", ".join(list(lookup.saes_map)[:5])
        raise SaeFormatError(f"release {release!r} has no SAE {sae_id!r}; its ids look like {some}")
    if lookup.conversion_func is not None:
        raise SaeFormatError(
            f"release {release!r} is stored as {lookup.conversion_func}, not in SAELens's format; "
            "download it and upload its cfg.json and sae_weights.safetensors"
        )
    into.mkdir(parents=True, exist_ok=True)
    for filename in (CFG_FILENAME, WEIGHTS_FILENAME):
        try:
            path = hf_hub_download(lookup.repo_id, f"{folder}/{filename}", cache_dir=cache_dir)
        except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as error:
            raise SaeFormatError(f"{lookup.repo_id}/{folder}/{filename} could not be fetched: {error}") from error
        shutil.copyfile(path, into / filename)
    factor = lookup.norm_scaling_factor.get(sae_id)
    if factor is not None:
        _norm_scaling_factor_write(into / CFG_FILENAME, factor)


def _norm_scaling_factor_write(cfg_path: Path, factor: float) -> None:
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return  # the checks that follow name the problem
    if isinstance(cfg, dict):
        cfg_path.write_text(json.dumps({**cfg, "norm_scaling_factor": factor}), encoding="utf-8")
