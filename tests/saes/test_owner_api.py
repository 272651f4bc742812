"""The owner's actions by API, with an x-api-key: POST /api/runs/{runId}/cancel, POST /api/sae/{modelId}/{layer}/rerun,
DELETE /api/sae/{modelId}/{layer}; JSON errors: 401 without a key, 403 for someone else, 404, 409."""

from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import AbstractUser
from django.test import Client

from atlas.accounts.services import api_key_create
from atlas.datasets.models import Dataset
from atlas.saes.models import DashboardRun, Sae
from tests import factories


@pytest.fixture
def owner(db: None) -> AbstractUser:
    return factories.user_make("olga")


@pytest.fixture
def sae(dataset: Dataset, sae_dir: Path, owner: AbstractUser) -> Sae:
    return factories.sae_uploaded(dataset, sae_dir, owner=owner)


def _key(user: AbstractUser) -> str:
    return api_key_create(user=user).secret


def _call(method: str, path: str, key: str | None) -> tuple[int, Any]:
    headers = {"x-api-key": key} if key else {}
    response = getattr(Client(), method)(path, headers=headers)
    return response.status_code, response.json()


def _sae_path(sae: Sae) -> str:
    return f"/api/sae/{sae.language_model.slug}/{sae.slug}"


def test_cancel_answers_the_cancelled_run(sae: Sae, owner: AbstractUser) -> None:
    run = sae.runs.get()
    status, body = _call("post", f"/api/runs/{run.pk}/cancel", _key(owner))
    assert status == 200, body
    assert body["id"] == run.pk and body["status"] == "cancelled" and body["finished"] is not None
    assert {shard["status"] for shard in body["shards"]} == {"cancelled"}
    assert body["metrics"]["status"] == "cancelled"


def test_cancelling_a_finished_run_is_409(sae: Sae, owner: AbstractUser) -> None:
    run = sae.runs.get()
    key = _key(owner)
    assert _call("post", f"/api/runs/{run.pk}/cancel", key)[0] == 200
    status, body = _call("post", f"/api/runs/{run.pk}/cancel/", key)  # the trailing slash works as well
    assert status == 409 and body["error"] == "conflict"
    assert body["message"] == (f"Run {run.pk} is finished (cancelled); there is nothing to cancel. Re-run the SAE to "
                               "compute its dashboards again.")


def test_rerun_answers_201_with_the_new_run(sae: Sae, owner: AbstractUser) -> None:
    first = sae.runs.get()
    status, body = _call("post", f"{_sae_path(sae)}/rerun", _key(owner))
    assert status == 201, body
    again = sae.runs.latest("created")
    assert body["id"] == again.pk != first.pk and body["status"] == "queued"
    assert len(body["shards"]) == first.shards.count()
    first.refresh_from_db()
    assert first.status == DashboardRun.Status.CANCELLED


def test_delete_answers_what_it_removed(sae: Sae, owner: AbstractUser, dataset: Dataset) -> None:
    factories.published_run_make(sae, dataset, factories.dashboards_empty(sae.d_sae))
    status, body = _call("delete", f"{_sae_path(sae)}/", _key(owner))
    assert status == 200, body
    assert body == {"modelId": sae.language_model.slug, "layer": sae.slug, "runs": 2, "features": sae.d_sae,
                    "explanations": 0}
    assert not Sae.objects.filter(pk=sae.pk).exists()
    assert _call("delete", _sae_path(sae), _key(owner))[0] == 404


def test_staff_may_use_them(sae: Sae) -> None:
    key = _key(factories.staff_make())
    assert _call("post", f"/api/runs/{sae.runs.get().pk}/cancel", key)[0] == 200
    assert _call("post", f"{_sae_path(sae)}/rerun", key)[0] == 201
    assert _call("delete", _sae_path(sae), key)[0] == 200


@pytest.mark.parametrize("method, path", [("post", "/api/runs/{run}/cancel"), ("post", "{sae}/rerun"),
                                          ("delete", "{sae}")])
def test_someone_else_gets_a_json_403_and_nothing_changes(sae: Sae, method: str, path: str) -> None:
    run = sae.runs.get()
    status, body = _call(method, path.format(run=run.pk, sae=_sae_path(sae)), _key(factories.user_make("mallory")))
    assert status == 403 and body["error"] == "forbidden"
    assert "(olga) or staff may" in body["message"] and "ask staff" in body["message"]
    assert list(sae.runs.values_list("status", flat=True)) == ["queued"]


@pytest.mark.parametrize("method, path", [("post", "/api/runs/{run}/cancel"), ("post", "{sae}/rerun"),
                                          ("delete", "{sae}")])
def test_without_a_key_it_is_401(sae: Sae, method: str, path: str) -> None:
    status, body = _call(method, path.format(run=sae.runs.get().pk, sae=_sae_path(sae)), None)
    assert status == 401 and body["error"] == "unauthorized"
    assert Sae.objects.filter(pk=sae.pk).exists()


def test_unknown_runs_and_saes_are_json_404s(sae: Sae, owner: AbstractUser) -> None:
    key = _key(owner)
    assert _call("post", "/api/runs/999999/cancel", key) == (404, {"error": "not_found", "message": "No run 999999."})
    status, body = _call("post", f"/api/sae/{sae.language_model.slug}/nothing/rerun", key)
    assert status == 404 and body["message"] == f"Model '{sae.language_model.slug}' has no SAE 'nothing'."
    assert _call("delete", "/api/sae/no-model/nothing", key)[0] == 404


def test_reading_the_sae_path_is_a_json_405(sae: Sae) -> None:
    response = Client().get(_sae_path(sae))
    assert response.status_code == 405 and response.json()["error"] == "method_not_allowed"
    assert response["Allow"] == "DELETE"
