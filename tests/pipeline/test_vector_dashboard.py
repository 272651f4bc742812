"""A vector's dashboard end to end: its owner asks on the vector page, a real worker computes it as an SAE's, and
its numbers are relu(h·v + b) over the dataset's tokens, brute-forced here; the pages then link the two."""

import numpy as np
from django.test import Client

from atlas.datasets.selectors import dataset_tokens
from atlas.features.models import Feature
from atlas.saes.models import DashboardRun, Sae
from tests import factories
from tests.support.tiny_model import tiny_model_dir
from workers.compute.language_model import ModelSource, load_language_model

BIAS = -0.1


def brute_force_acts(hook_name: str, tokens: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """relu(h·v + b) [N, T] at every token of the dataset, the model loaded as workers load it."""
    import torch

    model = load_language_model(ModelSource(kind="hf_local", name_or_path=str(tiny_model_dir())))
    with torch.inference_mode():
        _, cache = model.run_with_cache(torch.from_numpy(np.asarray(tokens, dtype=np.int64)), names_filter=hook_name)
        hook = cache[hook_name].double().numpy()
    acts: np.ndarray = np.maximum(hook @ vector.astype(np.float64) + BIAS, 0.0)
    return acts


def test_a_vectors_dashboard_is_computed_by_a_worker_and_shown(celery_worker: list[str]) -> None:
    language_model = factories.language_model_make()
    dataset = factories.dataset_make(language_model)
    owner = factories.user_make("carol")
    values = np.random.default_rng(0).normal(size=language_model.d_model).astype(np.float32)
    vector = factories.vector_make(language_model, owner, values=values.tolist())
    client = Client()
    client.force_login(owner)
    vector_page = f"/{language_model.slug}/{vector.source}/{vector.pk}"

    assert client.post(f"{vector_page}/dashboard", {"dataset": dataset.slug, "bias": str(BIAS)}).status_code == 302
    sae = Sae.objects.get()
    run = factories.run_wait(sae.runs.get(), logs=lambda: "".join(celery_worker[-40:]))

    assert run.status == DashboardRun.Status.SUCCEEDED, run.error
    feature = Feature.objects.get(run=run)
    counted = brute_force_acts(vector.hook_name, dataset_tokens(dataset), values)[:, 1:]  # BOS is never counted
    assert 0 < (counted > 0).mean() < 1
    assert abs(feature.frac_nonzero - (counted > 0).mean()) <= 1 / counted.size  # a token at 0 may round either way
    np.testing.assert_allclose(feature.max_act, counted.max(), rtol=1e-5)
    body = client.get(f"/api/feature/{language_model.slug}/{sae.slug}/0").json()
    top = [activation for activation in body["activations"] if activation["binMin"] == -1]
    assert len(top) == min(run.dashboard_params.top_k, int((counted.max(axis=1) > 0).sum()))  # one per sequence
    np.testing.assert_allclose(top[0]["maxValue"], counted.max(), rtol=1e-5)

    page = client.get(vector_page).content.decode()
    assert f'href="/{language_model.slug}/{sae.slug}/0">Dashboard of this vector</a>' in page
    assert "status-succeeded" in page
    feature_page = client.get(f"/{language_model.slug}/{sae.slug}/0").content.decode()
    assert f'<a href="{vector_page}">joy - sorrow</a>' in feature_page
    assert f"{feature.max_act:.3f}" in feature_page
