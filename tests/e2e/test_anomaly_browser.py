"""Real browser: the feature page's typed-text box shows each token's anomaly, answered by a real worker against the
published run's own distribution."""

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from pytest_django.live_server_helper import LiveServer

from atlas.features.models import Feature
from atlas.saes.models import RunAnomalyDistribution
from tests import factories
from tests.e2e.test_browser import CHROMIUM, LIVE_ANSWER_TIMEOUT_MS, TYPED_TEXT, WatchedPage, watched_chromium
from tests.support.workers import Workers

BOX = "#live-activation"
DISTRIBUTION_TIMEOUT_SECONDS = 120

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed: `apt-get install chromium` (make install-dev "
                             "does it when run as root)")


@pytest.fixture
def feature_and_answer(workers: Workers, settings: Any, tmp_path: Path) -> tuple[str, dict[str, Any]]:
    """The page of a feature of an SAE computed by a real worker, once its anomaly distribution is stored, and the
    API's answer for the typed text. Filled before the browser starts: Playwright's event loop would make Django
    refuse database calls."""
    workers.env["ATLAS_METRICS_SEQUENCES"] = "6"
    workers.start()
    language_model = factories.language_model_make()
    dataset = factories.dataset_make(language_model)
    run = factories.uploaded_run_computed(dataset, tmp_path / "sae", workers.logs)
    deadline = time.monotonic() + DISTRIBUTION_TIMEOUT_SECONDS
    while not RunAnomalyDistribution.objects.filter(run=run, status=RunAnomalyDistribution.Status.SUCCEEDED).exists():
        assert time.monotonic() < deadline, workers.logs()
        time.sleep(0.3)
    feature = Feature.objects.filter(run=run).order_by("-frac_nonzero").first()
    assert feature is not None
    body = {"feature": {"modelId": language_model.slug, "source": run.sae.slug, "index": feature.index},
            "customText": TYPED_TEXT}
    answer = Client().post("/api/activation/new", json.dumps(body), content_type="application/json").json()
    return f"/{language_model.slug}/{run.sae.slug}/{feature.index}", answer


@pytest.fixture
def browser(live_server: LiveServer, feature_and_answer: tuple[str, dict[str, Any]]) -> Iterator[WatchedPage]:
    with watched_chromium(live_server.url) as watched:
        yield watched


def _expected_sentence(answer: dict[str, Any]) -> str:
    anomaly = answer["anomaly"]
    error, rarity = anomaly["maxReconstructionErrorPercentile"], anomaly["maxRarityPercentile"]
    position, share, score = (anomaly["maxReconstructionErrorTokenIndex"], error, "reconstruction error")
    if rarity is not None and rarity > error:
        position, share, score = (anomaly["maxRarityTokenIndex"], rarity, "rarity of its features")
    token = answer["tokens"][position].replace("\n", "↵").replace("\t", "⇥")
    return (f"Most unusual token: '{token}', more unusual than {share * 100:.1f} % of the dataset's tokens "
            f"(by {score}).")


def test_the_typed_text_box_shows_how_unusual_each_token_is(
    browser: WatchedPage, feature_and_answer: tuple[str, dict[str, Any]]
) -> None:
    path, answer = feature_and_answer
    assert answer["anomaly"]["maxReconstructionErrorPercentile"] is not None, answer
    page = browser.page
    browser.open(path)
    page.locator(f"{BOX} textarea").fill(TYPED_TEXT)
    page.locator(f"{BOX} button").click()
    summary = page.locator(f"{BOX} [data-field=anomaly-summary]")
    summary.wait_for(timeout=LIVE_ANSWER_TIMEOUT_MS)
    assert summary.inner_text() == _expected_sentence(answer)
    titles = page.locator(f"{BOX} [data-field=anomaly] .anomaly-tok").evaluate_all(
        "spans => spans.map(span => span.title)")
    assert len(titles) == len(answer["tokens"])
    assert titles[0] == "BOS: not scored"
    assert all("reconstruction error" in title and "of the dataset" in title for title in titles[1:])
    assert page.locator(f"{BOX} [data-field=error]").is_hidden()
    assert browser.errors == []
