"""vector_dashboard_start: a vector (or a set of them) stored as an SAE with its files and a queued run, in one
transaction; bad input (another model's dataset or vectors, someone else's vector, a zero vector, a second
dashboard) refused with a message that names the problem, and nothing stored."""

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.contrib.auth.models import AbstractUser

from atlas.datasets.models import Dataset
from atlas.lms.models import LanguageModel
from atlas.saes.models import DashboardRun, DashboardShard, RunMetrics, Sae
from atlas.saes.services import (
    METRICS_TASK,
    SHARD_TASK,
    SaeActionConflict,
    SaeActionForbidden,
    SaeUploadError,
    VectorDashboardRefused,
    vector_dashboard_start,
)
from atlas.vectors.models import Vector
from tests import factories
from workers.compute.sae import sae_load
from workers.compute.sae_files import CFG_FILENAME, WEIGHTS_FILENAME
from workers.compute.vector_sae import vector_sae_entries

Capture = Any


@pytest.fixture
def owner(db: None) -> AbstractUser:
    return factories.user_make("carol")


def values(language_model: LanguageModel, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    return [float(value) for value in rng.normal(size=language_model.d_model).astype(np.float32)]


@pytest.fixture
def vector(language_model: LanguageModel, owner: AbstractUser) -> Vector:
    made: Vector = factories.vector_make(language_model, owner, values=values(language_model))
    return made


def assert_nothing_stored(media_root: Path) -> None:
    assert (Sae.objects.count(), DashboardRun.objects.count(), DashboardShard.objects.count()) == (0, 0, 0)
    assert [path for path in media_root.rglob("*") if path.is_file() and "datasets" not in path.parts] == []


def test_it_stores_the_sae_its_files_and_a_queued_run(
    vector: Vector, dataset: Dataset, owner: AbstractUser, media_root: Path
) -> None:
    sae = vector_dashboard_start(vectors=[vector], dataset=dataset, owner=owner)
    assert (sae.slug, sae.hook_name, sae.layer) == (f"1-vectors-{vector.pk}-dash", vector.hook_name, 1)
    assert (sae.architecture, sae.d_in, sae.d_sae, sae.uploaded_by) == ("standard", vector.values_array().size, 1,
                                                                        owner)
    assert sae.description == "Dashboard of vector joy - sorrow"
    entries = vector_sae_entries(sae.cfg)
    assert entries is not None and [(entry.id, entry.label, entry.bias) for entry in entries] == [
        (vector.pk, "joy - sorrow", 0.0)]
    assert sorted(path.name for path in sae.files_path.iterdir()) == [CFG_FILENAME, WEIGHTS_FILENAME]
    loaded = sae_load(sae.files_path)
    np.testing.assert_array_equal(loaded.W_enc[:, 0].numpy(), vector.values_array())
    assert float(loaded.b_enc[0]) == 0.0
    run = DashboardRun.objects.get(sae=sae)
    assert (run.status, run.dataset, run.n_sequences) == ("queued", dataset, dataset.n_sequences)
    assert run.shards.count() >= 1 and RunMetrics.objects.filter(run=run).exists()
    assert not any((media_root / "staging").iterdir())


def test_its_tasks_are_sent_once_it_commits(
    vector: Vector, dataset: Dataset, owner: AbstractUser, monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Capture,
) -> None:
    sent: list[str] = []
    monkeypatch.setattr("atlas.saes.services.celery_app.send_task", lambda name, **_: sent.append(name))
    with django_capture_on_commit_callbacks(execute=True):
        sae = vector_dashboard_start(vectors=[vector], dataset=dataset, owner=owner)
        assert sent == []
    assert sent == [SHARD_TASK] * sae.runs.get().shards.count() + [METRICS_TASK]


def test_the_bias_is_stored_in_the_weights_and_the_cfg(vector: Vector, dataset: Dataset, owner: AbstractUser) -> None:
    sae = vector_dashboard_start(vectors=[vector], dataset=dataset, owner=owner, biases=[-1.5])
    assert float(sae_load(sae.files_path).b_enc[0]) == -1.5
    entries = vector_sae_entries(sae.cfg)
    assert entries is not None and entries[0].bias == -1.5


def test_a_set_of_vectors_is_one_sae_with_a_feature_each(
    vector: Vector, language_model: LanguageModel, dataset: Dataset, owner: AbstractUser
) -> None:
    second = factories.vector_make(language_model, owner, values=values(language_model, seed=1), label="calm")
    sae = vector_dashboard_start(vectors=[vector, second], dataset=dataset, owner=owner, biases=[0.0, 2.0])
    assert (sae.slug, sae.d_sae) == (f"1-vectors-{vector.pk}-{second.pk}-dash", 2)
    loaded = sae_load(sae.files_path)
    np.testing.assert_array_equal(loaded.W_enc[:, 1].numpy(), second.values_array())
    np.testing.assert_allclose(loaded.W_dec.norm(dim=-1).numpy(), [1.0, 1.0], rtol=1e-6)


def test_staff_may_compute_anyones_vector(vector: Vector, dataset: Dataset) -> None:
    sae = vector_dashboard_start(vectors=[vector], dataset=dataset, owner=factories.staff_make())
    assert sae.uploaded_by is not None and sae.uploaded_by.username == "sam"


def test_someone_elses_vector_is_forbidden(vector: Vector, dataset: Dataset, media_root: Path) -> None:
    with pytest.raises(SaeActionForbidden, match=f"Only carol, who made tiny-llama/1-vectors-resid-pre/{vector.pk}"):
        vector_dashboard_start(vectors=[vector], dataset=dataset, owner=factories.user_make("dave"))
    assert_nothing_stored(media_root)


def test_a_dataset_of_another_model_is_refused(vector: Vector, dataset: Dataset, media_root: Path,
                                                owner: AbstractUser) -> None:
    other_model = factories.language_model_make("other-llama")
    other = factories.dataset_make(other_model, slug="other-docs")
    with pytest.raises(VectorDashboardRefused) as refused:
        vector_dashboard_start(vectors=[vector], dataset=other, owner=owner)
    assert refused.value.message == ("'datasetId': dataset 'other-docs' was tokenized for other-llama, not tiny-llama; "
                                     "choose one of tiny-llama's datasets (docstrings).")
    assert_nothing_stored(media_root)


def test_vectors_of_another_model_or_hook_make_no_set(
    vector: Vector, dataset: Dataset, owner: AbstractUser, media_root: Path
) -> None:
    other_model = factories.language_model_make("other-llama")
    elsewhere = factories.vector_make(other_model, owner)
    other_hook = factories.vector_make(vector.language_model, owner, hook_type="hook_resid_post")
    for second in (elsewhere, other_hook):
        with pytest.raises(VectorDashboardRefused, match="a set shares one hook"):
            vector_dashboard_start(vectors=[vector, second], dataset=dataset, owner=owner)
    assert_nothing_stored(media_root)


@pytest.mark.parametrize(("biases", "message"), [
    ([float("nan")], r"'biases': give 1 finite number, one per vector, or none for 0; got \[nan\]"),
    ([0.0, 1.0], r"'biases': give 1 finite number"),
])
def test_bad_biases_are_refused(vector: Vector, dataset: Dataset, owner: AbstractUser, media_root: Path,
                                biases: list[float], message: str) -> None:
    with pytest.raises(VectorDashboardRefused, match=message):
        vector_dashboard_start(vectors=[vector], dataset=dataset, owner=owner, biases=biases)
    assert_nothing_stored(media_root)


def test_a_zero_vector_is_refused(language_model: LanguageModel, dataset: Dataset, owner: AbstractUser,
                                  media_root: Path) -> None:
    zero = factories.vector_make(language_model, owner, values=[0.0] * language_model.d_model)
    with pytest.raises(VectorDashboardRefused, match="'index': vector 0 is zero, so it has no direction"):
        vector_dashboard_start(vectors=[zero], dataset=dataset, owner=owner)
    assert_nothing_stored(media_root)


def test_no_vectors_or_the_same_twice_are_refused(vector: Vector, dataset: Dataset, owner: AbstractUser) -> None:
    with pytest.raises(VectorDashboardRefused, match="1 to 8 vectors; 0 were given"):
        vector_dashboard_start(vectors=[], dataset=dataset, owner=owner)
    with pytest.raises(VectorDashboardRefused, match="must differ"):
        vector_dashboard_start(vectors=[vector, vector], dataset=dataset, owner=owner)


def test_a_second_dashboard_of_the_same_vector_is_a_conflict(
    vector: Vector, dataset: Dataset, owner: AbstractUser, media_root: Path
) -> None:
    first = vector_dashboard_start(vectors=[vector], dataset=dataset, owner=owner)
    files_before = factories.media_files(media_root)
    with pytest.raises(SaeActionConflict, match=f"tiny-llama/{first.slug} holds this dashboard already"):
        vector_dashboard_start(vectors=[vector], dataset=dataset, owner=owner)
    assert (Sae.objects.count(), DashboardRun.objects.count()) == (1, 1)
    assert factories.media_files(media_root) == files_before


def test_a_failure_inside_the_transaction_leaves_nothing(
    vector: Vector, dataset: Dataset, owner: AbstractUser, media_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(**_: Any) -> None:
        raise RuntimeError("the run could not be recorded")

    monkeypatch.setattr("atlas.saes.services.dashboard_run_create", refuse)
    with pytest.raises(RuntimeError, match="could not be recorded"):
        vector_dashboard_start(vectors=[vector], dataset=dataset, owner=owner)
    assert_nothing_stored(media_root)


def test_a_context_window_the_dataset_cannot_hold_is_refused(
    vector: Vector, dataset: Dataset, owner: AbstractUser, media_root: Path
) -> None:
    from atlas.saes.services import RunParams

    with pytest.raises(VectorDashboardRefused, match="'context_before': A context window of 40"):
        vector_dashboard_start(vectors=[vector], dataset=dataset, owner=owner,
                               params=RunParams(context_before=40, context_after=8))
    assert_nothing_stored(media_root)


def test_an_upload_may_not_take_a_vector_dashboards_id(dataset: Dataset, sae_dir: Path) -> None:
    with pytest.raises(SaeUploadError, match="a vector dashboard's"):
        factories.sae_uploaded(dataset, sae_dir, owner=None, slug="1-vectors-7-dash")


def test_steering_names_its_feature_as_any_saes(vector: Vector, dataset: Dataset, owner: AbstractUser) -> None:
    from atlas.steering.schemas import SteerCompletionIn
    from atlas.steering.services import steer_plan

    sae = vector_dashboard_start(vectors=[vector], dataset=dataset, owner=owner)
    body = SteerCompletionIn.model_validate({"modelId": "tiny-llama", "prompt": "Hello", "features": [
        {"modelId": "tiny-llama", "layer": sae.slug, "index": 0, "strength": 4.0}]})
    plan = steer_plan(body)
    assert plan.task["features"] == [{"sae_id": sae.pk, "index": 0, "strength": 4.0}]
    assert plan.task["vectors"] == []
