"""Every supported SAE format and architecture uploads, computes in-process and renders its pages; a bad file
that reaches the worker fails the run with its message instead of killing the worker."""

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from atlas.datasets.models import Dataset
from atlas.lms.models import LanguageModel
from atlas.saes.models import DashboardRun
from tests import factories
from workers.runs import dashboard_run_execute

D_SAE = 40


def _sae_lens(architecture: str, **cfg: Any) -> Callable[[Path], dict[str, SimpleUploadedFile]]:
    def write(directory: Path) -> dict[str, SimpleUploadedFile]:
        d_in = factories.tiny_model_facts().d_model
        return factories.sae_upload_files(
            factories.sae_lens_write(directory, d_in=d_in, d_sae=D_SAE, architecture=architecture, **cfg)
        )

    return write


def _dictionary_learning(dict_class: str) -> Callable[[Path], dict[str, SimpleUploadedFile]]:
    def write(directory: Path) -> dict[str, SimpleUploadedFile]:
        sae = factories.dictionary_learning_make(dict_class, d_in=factories.tiny_model_facts().d_model, d_sae=D_SAE)
        factories.dictionary_learning_write(directory, sae, dict_class=dict_class)
        return {
            "cfg_file": SimpleUploadedFile("config.json", (directory / "config.json").read_bytes()),
            "weights_file": SimpleUploadedFile("ae.pt", (directory / "ae.pt").read_bytes()),
        }

    return write


FORMATS: dict[str, tuple[Callable[[Path], dict[str, SimpleUploadedFile]], str]] = {
    "sae_lens standard": (_sae_lens("standard"), "standard"),
    "sae_lens jumprelu": (_sae_lens("jumprelu"), "jumprelu"),
    "sae_lens gated": (_sae_lens("gated"), "gated"),
    "sae_lens topk": (_sae_lens("topk", k=6, rescale_acts_by_decoder_norm=True), "topk"),
    "sae_lens layer_norm": (_sae_lens("standard", normalize_activations="layer_norm"), "standard"),
    "sae_lens constant_norm_rescale": (
        _sae_lens("jumprelu", normalize_activations="constant_norm_rescale"), "jumprelu"
    ),
    "dictionary_learning AutoEncoder": (_dictionary_learning("AutoEncoder"), "standard"),
    "dictionary_learning AutoEncoderTopK": (_dictionary_learning("AutoEncoderTopK"), "topk"),
    "dictionary_learning BatchTopKSAE": (_dictionary_learning("BatchTopKSAE"), "jumprelu"),
    "dictionary_learning JumpReluAutoEncoder": (_dictionary_learning("JumpReluAutoEncoder"), "jumprelu"),
    "dictionary_learning GatedAutoEncoder": (_dictionary_learning("GatedAutoEncoder"), "gated"),
}


@pytest.mark.parametrize("case", FORMATS, ids=list(FORMATS))
def test_upload_run_and_pages(
    logged_in_client: Client, language_model: LanguageModel, dataset: Dataset, tmp_path: Path, case: str
) -> None:
    write, architecture = FORMATS[case]
    sae = factories.sae_upload_post(logged_in_client, dataset, write(tmp_path / "sae"))
    assert sae.architecture == architecture
    run = DashboardRun.objects.get()
    dashboard_run_execute(run.pk)
    run.refresh_from_db()
    assert run.status == DashboardRun.Status.SUCCEEDED, run.error
    assert run.features.count() == D_SAE
    feature = run.features.order_by("-frac_nonzero").first()
    assert feature is not None and feature.frac_nonzero > 0
    assert Client().get(f"/{sae.language_model.slug}/{sae.slug}/").status_code == 200
    page = Client().get(f"/{sae.language_model.slug}/{sae.slug}/{feature.index}")
    assert page.status_code == 200
    assert 'class="tok focus"' in page.content.decode()


def _code_running_state_dict() -> bytes:
    class RunsCode:
        def __reduce__(self) -> tuple[Any, ...]:
            return exec, ("import pathlib; pathlib.Path('PWNED').write_text('ran')",)

    buffer = io.BytesIO()
    torch.save({"encoder.weight": torch.zeros(2, 2), "payload": RunsCode()}, buffer)
    return buffer.getvalue()


SWAPPED_AFTER_UPLOAD: dict[str, tuple[str, Callable[[], bytes], str]] = {
    "ae.pt that would run code": ("ae.pt", _code_running_state_dict, "ae.pt was refused"),
    "truncated ae.pt": ("ae.pt", lambda: b"PK\x03\x04 not whole", "ae.pt is not a readable PyTorch state dict"),
}


@pytest.mark.parametrize("case", SWAPPED_AFTER_UPLOAD, ids=list(SWAPPED_AFTER_UPLOAD))
def test_a_bad_file_reaching_the_worker_fails_the_run_with_its_message(
    logged_in_client: Client, language_model: LanguageModel, dataset: Dataset, tmp_path: Path, case: str
) -> None:
    sae = factories.sae_upload_post(logged_in_client, dataset, _dictionary_learning("AutoEncoder")(tmp_path / "sae"))
    name, contents, message = SWAPPED_AFTER_UPLOAD[case]
    (sae.files_path / name).write_bytes(contents())
    run = DashboardRun.objects.get()
    dashboard_run_execute(run.pk)  # returns: the worker's task body does not raise
    run.refresh_from_db()
    assert run.status == DashboardRun.Status.FAILED
    assert message in run.error
    status = Client().get(f"/api/runs/{run.pk}").json()
    assert status["status"] == "failed" and message in status["error"]
    assert not Path("PWNED").exists()
