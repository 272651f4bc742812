"""An SAE written by sae_lens's own save_model uploads, computes in-process and renders its pages."""

from pathlib import Path

import pytest
from django.test import Client

from atlas.datasets.models import Dataset
from atlas.features.packing import dashboard_unpack
from atlas.saes.models import DashboardRun, Sae
from tests import factories
from workers.compute.params import DashboardParams
from workers.runs import dashboard_run_execute


@pytest.fixture
def computed_sae(logged_in_client: Client, dataset: Dataset, sae_dir: Path) -> Sae:
    sae = factories.sae_upload_post(logged_in_client, dataset, factories.sae_upload_files(sae_dir))
    dashboard_run_execute(sae.runs.get().pk)
    sae.refresh_from_db()
    return sae


def test_run_succeeds_and_is_published(computed_sae: Sae) -> None:
    run = DashboardRun.objects.get()
    assert run.status == DashboardRun.Status.SUCCEEDED, run.error
    assert computed_sae.published_run_id == run.pk
    assert run.features.count() == computed_sae.d_sae
    assert run.progress_done == run.progress_total > 0


def test_sae_page_lists_features(computed_sae: Sae) -> None:
    page = Client().get(f"/{computed_sae.language_model.slug}/{computed_sae.slug}/").content.decode()
    # Dead features are hidden by default, so the list starts at the first live one.
    first_live = computed_sae.published_run.features.filter(frac_nonzero__gt=0).order_by("index").first()  # type: ignore[union-attr]
    assert first_live is not None and f'href="/tiny-llama/0-res-48/{first_live.index}"' in page
    assert "succeeded" in page


def test_feature_page_renders_examples_and_plots(computed_sae: Sae) -> None:
    feature = computed_sae.published_run.features.order_by("-frac_nonzero").first()  # type: ignore[union-attr]
    assert feature is not None and feature.frac_nonzero > 0
    response = Client().get(f"/tiny-llama/0-res-48/{feature.index}")
    page = response.content.decode()
    assert response.status_code == 200
    stored = dashboard_unpack(bytes(feature.dashboard))
    assert page.count('class="example"') == len(stored.top) + sum(map(len, stored.intervals))
    assert 'class="tok focus"' in page
    assert "/static/vendor/plotly.min.js" in page
    assert 'id="act-hist"' in page and 'id="logit-hist"' in page


def test_jump_box_redirects_to_feature(computed_sae: Sae) -> None:
    response = Client().get("/tiny-llama/0-res-48/", {"index": "7"})
    assert response.status_code == 302
    assert response["Location"] == "/tiny-llama/0-res-48/7"


def test_failed_run_shows_its_error(computed_sae: Sae) -> None:
    (computed_sae.files_path / "sae_weights.safetensors").write_bytes(b"gone")
    run = factories.run_make(computed_sae, DashboardRun.objects.get().dataset,
                             params=DashboardParams(top_k=5, context_before=4, context_after=2))
    dashboard_run_execute(run.pk)
    run.refresh_from_db()
    assert run.status == DashboardRun.Status.FAILED
    assert "safetensors" in run.error
    page = Client().get("/tiny-llama/0-res-48/").content.decode()
    assert run.error.split(":")[0] in page
