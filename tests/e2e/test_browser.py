"""Real browser: Debian's chromium, driven by Playwright, loads every page with no console errors, draws the
histograms and shows hostile token text as text."""

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import ConsoleMessage, Dialog, Page, sync_playwright
from pytest_django.live_server_helper import LiveServer

from atlas.explanations.services import explanation_create
from atlas.features.models import Feature
from atlas.lms.models import Vocabulary
from tests import factories
from tests.e2e.conftest import HOSTILE_TOKENS
from tests.support.workers import Workers

CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
FEATURE_PATH = "/tiny-llama/0-res-8/3"
# Bars per histogram in the published feature: two activation bins, three logit bins.
HISTOGRAM_BARS = {"#act-hist-plot": 2, "#logit-hist-plot": 3}
# Live answers come from the worker: the tiny model loads on the first one.
LIVE_ANSWER_TIMEOUT_MS = 60_000
TYPED_TEXT = "Return the number of items in the list, or raise an error if it is empty."

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed: `apt-get install chromium` (make install-dev "
                             "does it when run as root)")


@dataclass
class WatchedPage:
    """A browser tab and everything it complained about: console errors, uncaught exceptions, dialogs."""

    page: Page
    base_url: str
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def open(self, path: str) -> None:
        response = self.page.goto(f"{self.base_url}{path}", wait_until="networkidle")
        assert response is not None and response.status == 200, path

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text} at {message.location}")

    def on_dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()


@pytest.fixture
def site(hostile_feature: Feature) -> Feature:
    """The hostile feature with a label to search for. The database is filled before the browser starts:
    Playwright's event loop would make Django refuse database calls from this thread."""
    explanation_create(sae=hostile_feature.run.sae, index=hostile_feature.index,
                       description="opening words of docstrings", author=factories.user_make())
    return hostile_feature


@contextmanager
def watched_chromium(base_url: str) -> Iterator[WatchedPage]:
    assert CHROMIUM is not None
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = chromium.new_page()
        watched = WatchedPage(page=page, base_url=base_url)
        page.on("console", watched.on_console)
        page.on("pageerror", lambda error: watched.errors.append(f"uncaught: {error}"))
        page.on("dialog", watched.on_dialog)
        yield watched
        chromium.close()


@pytest.fixture
def browser(live_server: LiveServer, site: Feature) -> Iterator[WatchedPage]:
    with watched_chromium(live_server.url) as watched:
        yield watched


@pytest.fixture
def computed_feature_path(workers: Workers, tmp_path: Path) -> str:
    """An SAE uploaded through the form and computed by a real worker, which stays up for live requests. Every
    token's text in the vocabulary is markup, so whatever the typed text becomes must show as text. Yields the
    page of the feature that fires most often."""
    workers.start()
    language_model = factories.language_model_make()
    vocabulary = Vocabulary.objects.get(language_model=language_model)
    vocabulary.tokens = [f"<img src=x onerror=alert({token_id})>" for token_id in range(len(vocabulary.tokens))]
    vocabulary.save()
    dataset = factories.dataset_make(language_model)
    run = factories.uploaded_run_computed(dataset, tmp_path / "sae", workers.logs)
    busiest = Feature.objects.filter(run=run).order_by("-frac_nonzero").first()
    assert busiest is not None and busiest.frac_nonzero > 0
    return f"/{language_model.slug}/{run.sae.slug}/{busiest.index}"


@pytest.fixture
def live_browser(live_server: LiveServer, computed_feature_path: str) -> Iterator[WatchedPage]:
    with watched_chromium(live_server.url) as watched:
        yield watched


def shaded_values(page: Page, container: str) -> list[float]:
    """The value on hover of every token the page shaded inside container, once some are shown."""
    tokens = page.locator(f"{container} .tok")
    tokens.first.wait_for(timeout=LIVE_ANSWER_TIMEOUT_MS)
    return [float(title) for title in tokens.evaluate_all("spans => spans.map(span => span.title)")]


@pytest.mark.parametrize("path", ["/", "/tiny-llama/0-res-8/", FEATURE_PATH, "/search?q=docstrings",
                                  "/search-activations"])
def test_page_loads_without_console_errors(browser: WatchedPage, path: str) -> None:
    browser.open(path)
    assert browser.page.locator("main h1").count() >= 1
    assert browser.errors == []


def test_search_page_lists_the_matching_label(browser: WatchedPage) -> None:
    browser.open("/search?q=docstrings")
    row = browser.page.locator("main table tbody tr").first
    assert "opening words of docstrings" in row.inner_text()
    assert row.locator("a").get_attribute("href") == FEATURE_PATH


def test_feature_page_draws_both_histograms(browser: WatchedPage) -> None:
    browser.open(FEATURE_PATH)
    for plot, bars in HISTOGRAM_BARS.items():
        browser.page.locator(f"{plot} .main-svg").first.wait_for(state="attached", timeout=10_000)
        assert browser.page.locator(f"{plot} .bars .point").count() == bars, plot
    assert browser.errors == []


def test_hostile_token_text_shows_as_text_and_runs_nothing(browser: WatchedPage) -> None:
    browser.open(FEATURE_PATH)
    title = browser.page.title()
    shown = browser.page.locator("main").inner_text()
    for text in HOSTILE_TOKENS.values():
        assert text in shown
    # The page's only scripts inside <main> are its two JSON data blocks; token text made no elements.
    assert browser.page.locator("main img, main script:not([type='application/json'])").count() == 0
    assert browser.dialogs == []
    assert browser.page.title() == title and "pwned" not in title
    assert browser.errors == []


def test_live_activation_box_returns_shaded_tokens(live_browser: WatchedPage, computed_feature_path: str) -> None:
    page = live_browser.page
    live_browser.open(computed_feature_path)
    page.locator("#live-activation textarea").fill(TYPED_TEXT)
    page.locator("#live-activation button").click()
    values = shaded_values(page, "#live-activation [data-field=result]")
    assert len(values) > 1 and max(values) > 0
    assert page.locator("#live-activation [data-field=error]").is_hidden()
    assert_markup_shown_as_text(live_browser, "#live-activation [data-field=result]")


def test_activation_search_lists_features_with_shaded_tokens(live_browser: WatchedPage) -> None:
    page = live_browser.page
    live_browser.open("/search-activations")
    page.locator("#activation-search textarea").fill(TYPED_TEXT)
    page.locator("#activation-search button").click()
    values = shaded_values(page, "#activation-search .search-result")
    assert max(values) > 0
    assert page.locator("#activation-search .search-result a").count() >= 1
    assert_markup_shown_as_text(live_browser, "#activation-search [data-field=result]")


def assert_markup_shown_as_text(browser: WatchedPage, container: str) -> None:
    """Every token's text is an <img onerror=alert(...)>: it must be text, make no element, run nothing."""
    assert "<img src=x onerror=alert(" in browser.page.locator(container).inner_text()
    assert browser.page.locator(f"{container} img").count() == 0
    assert browser.dialogs == [] and browser.errors == []
