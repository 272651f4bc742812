"""The whole slice on real services: upload through the form, a real worker computes, the API serves it."""

from pathlib import Path

from django.test import Client

from atlas.features.models import Feature
from atlas.saes.models import DashboardRun
from tests import factories


def test_uploaded_sae_is_computed_by_the_worker_and_served(celery_worker: list[str], tmp_path: Path) -> None:
    language_model = factories.language_model_make()
    dataset = factories.dataset_make(language_model)
    sae_dir = factories.sae_lens_write(tmp_path / "sae", d_in=language_model.d_model)
    client = Client()
    client.force_login(factories.user_make())

    sae = factories.sae_upload_post(client, dataset, factories.sae_upload_files(sae_dir))
    run = factories.run_wait(sae.runs.get(), logs=lambda: "".join(celery_worker[-40:]))

    assert run.status == DashboardRun.Status.SUCCEEDED, run.error
    assert run.device == "cpu"
    sae.refresh_from_db()
    assert sae.published_run_id == run.pk
    assert Feature.objects.filter(run=run).count() == sae.d_sae
    progress = client.get(f"/api/runs/{run.pk}").json()
    assert progress["status"] == "succeeded"
    assert progress["progressDone"] == progress["progressTotal"] > 0

    busiest = Feature.objects.filter(run=run).order_by("-frac_nonzero").first()
    assert busiest is not None
    body = client.get(f"/api/feature/{language_model.slug}/{sae.slug}/{busiest.index}").json()
    assert body["maxActApprox"] == busiest.max_act > 0
    assert body["frac_nonzero"] == busiest.frac_nonzero
    top = [activation for activation in body["activations"] if activation["binMin"] == -1]
    assert len(top) == min(5, dataset.n_sequences)
    assert top[0]["maxValue"] == body["maxActApprox"]
