"""Real browser, real worker: paste two sets of texts on /concepts, run the search, see the ranked table and the
charts, save a detector, and run it on new text, under the CSP with no console error."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.test import Client
from playwright.sync_api import Page
from pytest_django.live_server_helper import LiveServer

from tests import factories
from tests.concepts.test_api import NEGATIVES, POSITIVES
from tests.e2e.test_browser import CHROMIUM, LIVE_ANSWER_TIMEOUT_MS
from tests.e2e.test_csp import violations_recorded
from tests.support.workers import Workers

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed: `apt-get install chromium` (make install-dev "
                             "does it when run as root)")
NEW_TEXTS = ["A glad and happy song.", "Read the bytes from the file."]


@pytest.fixture
def session(workers: Workers, media_root: Path) -> str:
    """A published SAE, a live worker and a logged-in user's session id; made before the browser starts, as
    Playwright's event loop would make Django refuse database calls."""
    factories.live_sae_published(media_root, factories.language_model_make(), {})
    workers.start(live_only=True)
    client = Client()
    client.force_login(factories.user_make())
    return client.cookies["sessionid"].value


@pytest.fixture
def page(live_server: LiveServer, session: str) -> Iterator[Page]:
    with violations_recorded(live_server.url) as opened:
        opened.context.add_cookies([{"name": "sessionid", "value": session, "url": live_server.url}])
        yield opened


def test_a_search_ranks_features_and_its_detector_runs_on_new_text(page: Page) -> None:
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
    page.goto("/concepts", wait_until="networkidle")
    form = page.locator("#concepts-form")
    form.locator("input[name=sources]").fill("0-res-topk")
    form.locator("textarea[name=positives]").fill("\n".join(POSITIVES))
    form.locator("textarea[name=negatives]").fill("\n".join(NEGATIVES))
    form.get_by_role("button", name="Search").click()
    page.wait_for_url("**/concepts/*", timeout=LIVE_ANSWER_TIMEOUT_MS)
    rows = page.locator(".concept-features tbody tr")
    assert rows.count() > 0
    aurocs = [float(rows.nth(i).locator("td").nth(2).inner_text()) for i in range(rows.count())]
    assert aurocs == sorted(aurocs, reverse=True)
    for chart in (".concept-scores-plot", ".concept-sparse-plot"):
        page.locator(f"{chart} .main-svg").first.wait_for()
    assert page.locator(".concept-scores-plot .point").count() >= len(POSITIVES) + len(NEGATIVES)
    assert page.locator(".concept-cosines tbody tr").count() > 0
    assert "#" in page.locator(".concept-nearest").first.inner_text()

    page.locator(".concept-detectors tbody tr").first.get_by_role("button", name="Save detector").click()
    page.wait_for_url("**/detectors/*")
    page.locator("#detector-roc .main-svg").first.wait_for()
    page.locator("#detect textarea[name=texts]").fill("\n".join(NEW_TEXTS))
    page.locator("#detect").get_by_role("button", name="Detect").click()
    results = page.locator("#detect [data-field=results] li")
    results.first.wait_for(timeout=LIVE_ANSWER_TIMEOUT_MS)
    assert results.count() == len(NEW_TEXTS)
    for i in range(len(NEW_TEXTS)):
        assert "detected" in results.nth(i).inner_text() and "score" in results.nth(i).inner_text()
        assert results.nth(i).locator(".tokens span").count() > 0
    assert page.evaluate("window.__violations") == [] and errors == []
