"""Live activations: a worker runs typed text through the model and SAE while the web request waits for it.

The request sends one task to the GPU queue and waits ATLAS_LIVE_TIMEOUT_SECONDS for its result in the
result backend; the task expires at the same moment, so a worker that starts later never computes an
answer nobody is waiting for.
"""

from dataclasses import dataclass, replace
from typing import Any

from celery.exceptions import TimeoutError as CeleryTimeoutError
from django.conf import settings

from atlas.celery import app as celery_app
from atlas.lms.selectors import tokens_text, vocabulary_for
from atlas.saes.models import Sae

LIVE_TASK = "workers.tasks.text_activations"
TOP_BY_TOKEN_TASK = "workers.tasks.text_top_features_by_token"


class LiveActivationError(Exception):
    """A live request that got no answer; the message says what to do about it."""


class WorkerUnavailable(LiveActivationError):
    """No worker took the task within the timeout."""


class WorkerFailed(LiveActivationError):
    """The worker took the task and raised an error."""


class LiveTextRefused(LiveActivationError):
    """The worker could not run this text or feature (no tokens, a feature the SAE lacks)."""


@dataclass(frozen=True)
class FeatureOnText:
    index: int
    values: list[float]  # one per token, BOS first

    @property
    def max_value(self) -> float:
        """The strongest activation on any token but BOS, which counts nowhere as in the dashboards."""
        return max(self.values[1:], default=0.0)

    @property
    def max_value_token_index(self) -> int:
        return self.values.index(self.max_value, 1) if len(self.values) > 1 else 0


@dataclass(frozen=True)
class TokenFeatures:
    """One token of typed text and the features that fire most strongly on it."""

    position: int  # in the text's tokens, BOS at 0
    token: str
    is_special: bool  # one of the tokenizer's special tokens (BOS among them)
    features: list[tuple[int, float]]  # (index, activation), strongest first; only features that fire


@dataclass(frozen=True)
class TextAnomaly:
    """Each token's anomaly scores (workers.compute.anomaly defines them), BOS first and None: it counts nowhere.

    A list is None where it cannot be known: rarity without a published run's densities, percentiles without
    its anomaly distribution; `message` then says why.
    """

    reconstruction_error: list[float | None]
    rarity: list[float | None] | None
    reconstruction_error_percentile: list[float | None] | None
    rarity_percentile: list[float | None] | None
    dataset_tokens: int | None  # the distribution's sample
    message: str


@dataclass(frozen=True)
class LiveActivations:
    tokens: list[str]  # BOS first, as the vocabulary shows them
    features: list[FeatureOnText]
    anomaly: TextAnomaly | None = None  # asked for by activation/new alone


def no_worker_message(timeout: float | None = None) -> str:
    seconds = f"{settings.ATLAS_LIVE_TIMEOUT_SECONDS if timeout is None else timeout:g}"
    return (f"No worker answered within {seconds} s; start one with `make worker` (a worker busy with a "
            f"dashboard run answers when its shard ends).")


def worker_answer(task: str = LIVE_TASK, timeout: float | None = None, **task_kwargs: Any) -> dict[str, Any]:
    """A live task's answer, waited for up to timeout seconds (ATLAS_LIVE_TIMEOUT_SECONDS by default); a worker's
    {"error": ...} is LiveTextRefused."""
    timeout = settings.ATLAS_LIVE_TIMEOUT_SECONDS if timeout is None else timeout
    result = celery_app.send_task(task, kwargs=task_kwargs, queue=settings.ATLAS_LIVE_QUEUE, expires=timeout)
    try:
        answer = result.get(timeout=timeout, propagate=False)
    except CeleryTimeoutError as error:
        raise WorkerUnavailable(no_worker_message(timeout)) from error
    finally:
        result.forget()
    if result.failed() or not isinstance(answer, dict):
        raise WorkerFailed(f"The worker failed to run the text: {answer!r}.")
    if "error" in answer:
        raise LiveTextRefused(str(answer["error"]))
    return answer


def _text_anomaly(answer: dict[str, Any] | None) -> TextAnomaly | None:
    if answer is None:
        return None
    return TextAnomaly(
        reconstruction_error=answer["reconstructionError"],
        rarity=answer["rarity"],
        reconstruction_error_percentile=answer["reconstructionErrorPercentile"],
        rarity_percentile=answer["rarityPercentile"],
        dataset_tokens=answer["datasetTokens"],
        message=answer["message"],
    )


def _live_activations(sae: Sae, answer: dict[str, Any]) -> LiveActivations:
    features = [FeatureOnText(index, values) for index, values in zip(answer["features"], answer["values"],
                                                                      strict=True)]
    return LiveActivations(tokens_text(vocabulary_for(sae.language_model), answer["tokenIds"]), features,
                           _text_anomaly(answer.get("anomaly")))


def feature_activations_live(*, sae: Sae, index: int, text: str, anomaly: bool = False) -> LiveActivations:
    """One feature's activation on each token of text, computed by a worker; one entry in `features`. With
    anomaly, each token's anomaly scores too, from the same forward."""
    answer = worker_answer(sae_id=sae.pk, text=text, feature=index, n_results=1, anomaly=anomaly)
    return _live_activations(sae, answer)


def top_features_live(*, sae: Sae, text: str, n_results: int) -> LiveActivations:
    """The SAE's features that fire most strongly on text (BOS aside), strongest first, computed by a worker."""
    answer = worker_answer(sae_id=sae.pk, text=text, feature=None, n_results=n_results)
    return _live_activations(sae, answer)


def top_features_by_token_live(*, sae: Sae, text: str, n_results: int) -> list[TokenFeatures]:
    """Each token's (at most) n_results strongest features on text, BOS first, computed by a worker."""
    answer = worker_answer(TOP_BY_TOKEN_TASK, sae_id=sae.pk, text=text, n_results=n_results)
    tokens = tokens_text(vocabulary_for(sae.language_model), answer["tokenIds"])
    rows = zip(tokens, answer["special"], answer["features"], answer["values"], strict=True)
    return [
        TokenFeatures(position, token, special, [(index, value) for index, value in zip(indices, values,
                                                                                     strict=True) if value > 0])
        for position, (token, special, indices, values) in enumerate(rows)
    ]


def tokens_shown(tokens: list[TokenFeatures], *, ignore_bos: bool, densities: dict[int, float],
                 density_threshold: float) -> list[TokenFeatures]:
    """As Neuronpedia filters its answer: with ignore_bos, no BOS nor other special token; with a threshold above 0,
    only features whose published density is above 0 and at most the threshold (so none unpublished)."""
    if ignore_bos:
        tokens = [token for token in tokens if token.position > 0 and not token.is_special]
    if density_threshold <= 0:
        return tokens
    return [replace(token, features=[(index, value) for index, value in token.features
                                     if 0 < densities.get(index, 0.0) <= density_threshold]) for token in tokens]
