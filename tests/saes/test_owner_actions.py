"""An SAE's owner (its uploader) or staff cancel its run, run it again, or delete it, on the SAE page or by service;
anyone else is refused. A delete leaves no row and no file behind, and a delete that fails leaves everything."""

import re
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.apps import apps
from django.contrib.auth.models import AbstractUser
from django.db import DatabaseError, connection
from django.test import Client

from atlas.datasets.models import Dataset
from atlas.explanations.services import explanation_create
from atlas.features.models import Feature
from atlas.saes.models import DashboardRun, DashboardShard, RunMetrics, Sae
from atlas.saes.services import (
    SaeActionConflict,
    SaeActionForbidden,
    dashboard_run_again,
    dashboard_run_cancel,
    dashboard_run_publish_lock,
    run_files_path,
    sae_delete,
)
from tests import factories

Capture = Callable[..., AbstractContextManager[list[Callable[[], None]]]]


@pytest.fixture
def owner(db: None) -> AbstractUser:
    return factories.user_make("olga")


@pytest.fixture
def sae(dataset: Dataset, sae_dir: Path, owner: AbstractUser) -> Sae:
    """Olga's upload: its run queued with its shards and metrics (no task is sent: the test never commits)."""
    return factories.sae_uploaded(dataset, sae_dir, owner=owner)


def _client(user: AbstractUser) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _shard_state(run: DashboardRun) -> Path:
    """A shard state as a worker leaves it under the run's directory."""
    state = run_files_path(run.pk) / "shard-0" / "state.npz"
    state.parent.mkdir(parents=True)
    state.write_bytes(b"state")
    return state


def _row_counts() -> dict[str, int]:
    return {model._meta.label: model._default_manager.count() for model in apps.get_models()}


def _page(client: Client, sae: Sae) -> str:
    return client.get(f"/{sae.language_model.slug}/{sae.slug}/").content.decode()


# Cancel


def test_cancelling_a_queued_run_cancels_its_shards_and_metrics_and_removes_its_files(
    sae: Sae, owner: AbstractUser, django_capture_on_commit_callbacks: Capture
) -> None:
    run = sae.runs.get()
    state = _shard_state(run)
    with django_capture_on_commit_callbacks(execute=True):
        cancelled = dashboard_run_cancel(run=run, by=owner)

    assert cancelled.status == DashboardRun.Status.CANCELLED and cancelled.finished is not None
    assert [event["message"] for event in cancelled.events] == ["Cancelled by olga."]
    assert set(DashboardShard.objects.filter(run=run).values_list("status", flat=True)) == {"cancelled"}
    assert RunMetrics.objects.get(run=run).status == RunMetrics.Status.CANCELLED
    assert not state.exists() and not run_files_path(run.pk).exists()


def test_finished_shards_and_metrics_keep_their_status(sae: Sae, owner: AbstractUser) -> None:
    run = sae.runs.get()
    DashboardShard.objects.filter(run=run).update(status=DashboardShard.Status.SUCCEEDED)
    RunMetrics.objects.filter(run=run).update(status=RunMetrics.Status.SUCCEEDED)
    dashboard_run_cancel(run=run, by=owner)
    assert set(DashboardShard.objects.filter(run=run).values_list("status", flat=True)) == {"succeeded"}
    assert RunMetrics.objects.get(run=run).status == RunMetrics.Status.SUCCEEDED


@pytest.mark.parametrize("status", ["succeeded", "failed", "cancelled"])
def test_a_finished_run_cannot_be_cancelled(sae: Sae, owner: AbstractUser, status: str) -> None:
    run = sae.runs.get()
    DashboardRun.objects.filter(pk=run.pk).update(status=status)
    with pytest.raises(SaeActionConflict) as refused:
        dashboard_run_cancel(run=run, by=owner)
    assert refused.value.message == (f"Run {run.pk} is finished ({status}); there is nothing to cancel. Re-run the SAE "
                                     "to compute its dashboards again.")


def test_a_cancelled_run_is_never_published(sae: Sae, owner: AbstractUser) -> None:
    run = sae.runs.get()
    assert dashboard_run_publish_lock(run_id=run.pk)
    dashboard_run_cancel(run=run, by=owner)
    assert not dashboard_run_publish_lock(run_id=run.pk)


# Permission


def test_someone_else_may_not_cancel_rerun_or_delete(sae: Sae) -> None:
    mallory = factories.user_make("mallory")
    run = sae.runs.get()
    actions = {"cancel its runs": lambda: dashboard_run_cancel(run=run, by=mallory),
               "run it again": lambda: dashboard_run_again(sae=sae, by=mallory),
               "delete it": lambda: sae_delete(sae=sae, by=mallory)}
    for action, attempt in actions.items():
        with pytest.raises(SaeActionForbidden) as refused:
            attempt()
        assert refused.value.message == (f"Only the person who uploaded {sae} (olga) or staff may {action}; log in "
                                         "as them, or ask staff.")
    run.refresh_from_db()
    assert run.status == DashboardRun.Status.QUEUED and sae.runs.count() == 1 and Sae.objects.filter(pk=sae.pk).exists()


def test_staff_may_act_on_anyones_sae(sae: Sae) -> None:
    staff = factories.staff_make()
    assert dashboard_run_cancel(run=sae.runs.get(), by=staff).events[0]["message"] == "Cancelled by sam."
    dashboard_run_again(sae=sae, by=staff)
    assert sae_delete(sae=sae, by=staff).runs == 2


def test_an_sae_nobody_uploaded_is_staffs_alone(dataset: Dataset, sae_dir: Path, owner: AbstractUser) -> None:
    orphan = factories.sae_uploaded(dataset, sae_dir, owner=None, slug="orphan")
    with pytest.raises(SaeActionForbidden) as refused:
        sae_delete(sae=orphan, by=owner)
    assert "(nobody: it has no uploader)" in refused.value.message


def test_a_deactivated_owner_may_not_act(sae: Sae, owner: AbstractUser) -> None:
    owner.is_active = False
    owner.save()
    with pytest.raises(SaeActionForbidden):
        sae_delete(sae=sae, by=owner)


# Re-run


def test_rerun_cancels_the_running_run_and_repeats_its_dataset_sequences_and_parameters(
    sae: Sae, owner: AbstractUser, dataset: Dataset
) -> None:
    published = factories.published_run_make(sae, dataset, factories.dashboards_empty(sae.d_sae))
    first = sae.runs.exclude(pk=published.pk).get()
    # The run to repeat is the newest; the published one is older.
    DashboardRun.objects.filter(pk=published.pk).update(created=first.created - timedelta(hours=1))
    DashboardRun.objects.filter(pk=first.pk).update(status=DashboardRun.Status.RUNNING)

    again = dashboard_run_again(sae=sae, by=owner)

    first.refresh_from_db()
    sae.refresh_from_db()
    assert first.status == DashboardRun.Status.CANCELLED
    assert first.events[-1]["message"] == "Cancelled by olga, who started the SAE again."
    assert again.status == DashboardRun.Status.QUEUED and again.pk not in (first.pk, published.pk)
    assert (again.dataset_id, again.n_sequences, again.params) == (first.dataset_id, first.n_sequences, first.params)
    assert again.shards.count() == first.shards.count() and RunMetrics.objects.filter(run=again).exists()
    assert sae.published_run_id == published.pk  # until the new run publishes
    assert Feature.objects.filter(run=published).count() == sae.d_sae


# Delete


def test_delete_removes_every_row_and_file_of_the_sae(
    dataset: Dataset, sae_dir: Path, owner: AbstractUser, media_root: Path,
    django_capture_on_commit_callbacks: Capture,
) -> None:
    rows, files = _row_counts(), factories.media_files(media_root)
    sae = factories.sae_uploaded(dataset, sae_dir, owner=owner)
    running = sae.runs.get()
    DashboardRun.objects.filter(pk=running.pk).update(status=DashboardRun.Status.RUNNING)
    factories.published_run_make(sae, dataset, factories.dashboards_empty(sae.d_sae))
    explanation_create(sae=sae, index=3, description="opening words", author=owner)
    _shard_state(running)
    assert sae.files_path.is_dir() and factories.media_files(media_root) != files

    with django_capture_on_commit_callbacks(execute=True):
        deleted = sae_delete(sae=sae, by=owner)

    assert (deleted.runs, deleted.features, deleted.explanations) == (2, sae.d_sae, 1)
    assert _row_counts() == rows
    assert factories.media_files(media_root) == files
    assert not sae.files_path.exists() and not run_files_path(running.pk).exists()


def test_a_delete_whose_transaction_fails_leaves_rows_and_files(
    sae: Sae, owner: AbstractUser, media_root: Path, django_capture_on_commit_callbacks: Capture
) -> None:
    state = _shard_state(sae.runs.get())
    rows, files = _row_counts(), factories.media_files(media_root)
    with connection.cursor() as cursor:  # the database refuses the SAE's own row, the last one deleted
        cursor.execute("CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$ "
                       "LANGUAGE plpgsql; CREATE TRIGGER refuse BEFORE DELETE ON saes_sae "
                       "FOR EACH ROW EXECUTE FUNCTION refuse()")
    with django_capture_on_commit_callbacks(execute=True) as callbacks, pytest.raises(DatabaseError, match="refused"):
        sae_delete(sae=sae, by=owner)

    assert callbacks == []
    assert _row_counts() == rows
    assert factories.media_files(media_root) == files and state.exists()
    assert sae.runs.get().status == DashboardRun.Status.QUEUED  # its cancel was rolled back too


def test_files_outside_the_saes_own_directory_are_kept(
    language_model: Any, owner: AbstractUser, media_root: Path, django_capture_on_commit_callbacks: Capture
) -> None:
    keep = media_root / "saes" / "shared" / "sae_weights.safetensors"
    keep.parent.mkdir(parents=True)
    keep.write_bytes(b"weights")
    first = factories.sae_make(language_model, slug="first", files_dir="saes/shared", uploaded_by=owner)
    factories.sae_make(language_model, slug="second", files_dir="saes/shared")
    nowhere = factories.sae_make(language_model, slug="nowhere", files_dir="", uploaded_by=owner)
    with django_capture_on_commit_callbacks(execute=True):
        sae_delete(sae=first, by=owner)
        sae_delete(sae=nowhere, by=owner)
    assert keep.exists()
    assert list(Sae.objects.values_list("slug", flat=True)) == ["second"]


# Pages


def _owner_block(page: str) -> str:
    found = re.search(r'<section class="owner-actions".*?</section>', page, re.S)
    return found.group(0) if found else ""


def test_the_owner_sees_cancel_rerun_and_delete_with_csrf_forms(sae: Sae, owner: AbstractUser) -> None:
    block = _owner_block(_page(_client(owner), sae))
    run = sae.runs.get()
    assert f'action="/{sae.language_model.slug}/{sae.slug}/runs/{run.pk}/cancel"' in block
    assert f'action="/{sae.language_model.slug}/{sae.slug}/rerun"' in block
    assert f'href="/{sae.language_model.slug}/{sae.slug}/delete"' in block
    assert block.count('method="post"') == 2 and block.count("csrfmiddlewaretoken") == 2
    assert "<script" not in block and not re.search(r"\bon\w+=", block)


def test_a_finished_run_offers_no_cancel(sae: Sae, owner: AbstractUser) -> None:
    DashboardRun.objects.filter(sae=sae).update(status=DashboardRun.Status.SUCCEEDED)
    block = _owner_block(_page(_client(owner), sae))
    assert "Re-run" in block and "Cancel run" not in block


@pytest.mark.parametrize("who", ["anonymous", "someone else"])
def test_others_see_no_owner_actions(sae: Sae, who: str) -> None:
    client = Client() if who == "anonymous" else _client(factories.user_make("mallory"))
    page = _page(client, sae)
    assert sae.slug in page and _owner_block(page) == ""


def test_staff_see_the_owner_actions(sae: Sae) -> None:
    assert "Delete SAE" in _owner_block(_page(_client(factories.staff_make()), sae))


def test_cancel_from_the_page(sae: Sae, owner: AbstractUser) -> None:
    client, run = _client(owner), sae.runs.get()
    response = client.post(f"/{sae.language_model.slug}/{sae.slug}/runs/{run.pk}/cancel", follow=True)
    assert response.redirect_chain == [(f"/{sae.language_model.slug}/{sae.slug}/", 302)]
    assert f"Run {run.pk} is cancelled" in response.content.decode()
    run.refresh_from_db()
    assert run.status == DashboardRun.Status.CANCELLED

    again = client.post(f"/{sae.language_model.slug}/{sae.slug}/runs/{run.pk}/cancel", follow=True)
    assert f"Run {run.pk} is finished (cancelled)" in again.content.decode()


def test_rerun_from_the_page(sae: Sae, owner: AbstractUser) -> None:
    response = _client(owner).post(f"/{sae.language_model.slug}/{sae.slug}/rerun", follow=True)
    assert "A new run is queued" in response.content.decode()
    assert list(sae.runs.order_by("created").values_list("status", flat=True)) == ["cancelled", "queued"]


def test_delete_asks_to_type_the_address_then_deletes_and_goes_home(sae: Sae, owner: AbstractUser) -> None:
    client, address = _client(owner), f"{sae.language_model.slug}/{sae.slug}"
    confirm = client.get(f"/{address}/delete").content.decode()
    assert f"Delete {address}?" in confirm and 'name="confirm" required' in confirm
    assert "csrfmiddlewaretoken" in confirm and "<script" not in confirm.split("</main>")[0]

    wrong = client.post(f"/{address}/delete", {"confirm": sae.slug})
    assert wrong.status_code == 200 and f"Type {address} exactly to delete it." in wrong.content.decode()
    assert Sae.objects.filter(pk=sae.pk).exists()

    done = client.post(f"/{address}/delete", {"confirm": address}, follow=True)
    assert done.redirect_chain == [("/", 302)]
    assert f"{address} is deleted" in done.content.decode()
    assert not Sae.objects.filter(pk=sae.pk).exists()


@pytest.mark.parametrize("method, suffix", [("get", "delete"), ("post", "delete"), ("post", "rerun"),
                                            ("post", "runs/{run}/cancel")])
def test_someone_else_is_refused_on_the_pages_with_the_reason(sae: Sae, method: str, suffix: str) -> None:
    client = _client(factories.user_make("mallory"))
    path = f"/{sae.language_model.slug}/{sae.slug}/{suffix.format(run=sae.runs.get().pk)}"
    response = getattr(client, method)(path, {"confirm": f"{sae.language_model.slug}/{sae.slug}"})
    assert response.status_code == 403
    assert "(olga) or staff may" in response.content.decode()
    assert Sae.objects.filter(pk=sae.pk).exists() and sae.runs.get().status == DashboardRun.Status.QUEUED


def test_the_pages_need_a_login_and_post(sae: Sae, owner: AbstractUser) -> None:
    base = f"/{sae.language_model.slug}/{sae.slug}"
    assert Client().post(f"{base}/rerun").status_code == 302  # to the login page
    assert _client(owner).get(f"{base}/rerun").status_code == 405
    assert _client(owner).get(f"{base}/runs/{sae.runs.get().pk}/cancel").status_code == 405


def test_unknown_addresses_are_404(sae: Sae, owner: AbstractUser) -> None:
    client = _client(owner)
    assert client.post(f"/{sae.language_model.slug}/nothing/rerun").status_code == 404
    assert client.get(f"/{sae.language_model.slug}/nothing/delete").status_code == 404
    assert client.post(f"/{sae.language_model.slug}/{sae.slug}/runs/999999/cancel").status_code == 404

