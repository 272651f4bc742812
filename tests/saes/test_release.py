"""Adding an SAE by SAELens release and id, from a local hub cache (as a deployment with hub access would)."""

import json
from pathlib import Path

import pytest

from atlas.datasets.models import Dataset
from atlas.lms.models import LanguageModel
from atlas.saes.models import DashboardRun, Sae
from atlas.saes.services import SaeUploadError, sae_release_add
from tests import factories

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def hub_cache_write(cache: Path, repo_id: str, folder: str, sae_dir: Path) -> Path:
    """The layout huggingface_hub keeps: models--<org>--<name>/refs/main -> snapshots/<commit>/<files>."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    snapshot = repo / "snapshots" / COMMIT / folder
    snapshot.mkdir(parents=True)
    for name in ("cfg.json", "sae_weights.safetensors"):
        (snapshot / name).write_bytes((sae_dir / name).read_bytes())
    return cache


def test_a_release_in_sae_lens_format_is_added_from_the_cache(
    language_model: LanguageModel, dataset: Dataset, tmp_path: Path
) -> None:
    sae_dir = factories.sae_lens_write(tmp_path / "sae", d_in=64, hook_name="blocks.0.hook_resid_pre")
    cache = hub_cache_write(tmp_path / "hub", "jbloom/GPT2-Small-SAEs-Reformatted", "blocks.0.hook_resid_pre", sae_dir)
    sae = sae_release_add(language_model=language_model, dataset=dataset, uploaded_by=None,
                          release="gpt2-small-res-jb", sae_id="blocks.0.hook_resid_pre", hub_cache_dir=cache)
    assert (sae.hook_name, sae.d_sae, sae.architecture) == ("blocks.0.hook_resid_pre", 48, "standard")
    assert "gpt2-small-res-jb" in sae.description
    assert DashboardRun.objects.filter(sae=sae).count() == 1


def test_a_release_norm_scaling_factor_is_written_into_the_config(
    language_model: LanguageModel, dataset: Dataset, tmp_path: Path
) -> None:
    sae_dir = factories.sae_lens_write(tmp_path / "sae", d_in=64, hook_name="blocks.0.hook_mlp_out",
                                       normalize_activations="expected_average_only_in")
    folder = "sae_group_gpt2_blocks.0.hook_mlp_out_24576:v1"
    cache = hub_cache_write(tmp_path / "hub", "tommmcgrath/gpt2-small-mlp-out-saes", folder, sae_dir)
    release = next(name for name, lookup in _directory().items()
                   if lookup.repo_id == "tommmcgrath/gpt2-small-mlp-out-saes")
    sae = sae_release_add(language_model=language_model, dataset=dataset, uploaded_by=None,
                          release=release, sae_id="blocks.0.hook_mlp_out", hub_cache_dir=cache)
    assert sae.cfg["norm_scaling_factor"] == pytest.approx(1.049317316132615)
    stored = json.loads((sae.files_path / "cfg.json").read_text())
    assert stored["norm_scaling_factor"] == sae.cfg["norm_scaling_factor"]


def _directory() -> dict[str, object]:
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    return get_pretrained_saes_directory()  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("release", "sae_id", "message"),
    [
        ("no-such-release", "x", "SAELens has no release 'no-such-release'"),
        ("gpt2-small-res-jb", "blocks.99.nope", "release 'gpt2-small-res-jb' has no SAE 'blocks.99.nope'"),
        ("gpt2-small-res-jb", "blocks.0.hook_resid_pre", "could not be fetched"),  # not in the (empty) cache
    ],
)
def test_a_release_that_cannot_be_had_is_named_and_leaves_nothing(
    language_model: LanguageModel, dataset: Dataset, tmp_path: Path, media_root: Path, release: str, sae_id: str,
    message: str,
) -> None:
    with pytest.raises(SaeUploadError) as raised:
        sae_release_add(language_model=language_model, dataset=dataset, uploaded_by=None,
                        release=release, sae_id=sae_id, hub_cache_dir=tmp_path / "empty-hub")
    assert message in raised.value.message
    assert Sae.objects.count() == 0
    assert [path for path in media_root.rglob("*") if path.is_file() and "datasets" not in path.parts] == []
