"""The Content-Security-Policy: every answer carries it, and Chromium loads every page (plotly's histograms and the
Swagger docs included) without a single violation of it."""

import shutil
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.test import Client
from playwright.sync_api import Page, sync_playwright
from pytest_django.live_server_helper import LiveServer

from atlas.explanations.services import explanation_create
from atlas.features.models import Feature
from tests import factories

CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
FEATURE_PATH = "/tiny-llama/0-res-8/3"
PAGES = ["/", "/tiny-llama/0-res-8/", FEATURE_PATH, "/search?q=docstrings", "/search-activations", "/steer",
         "/concepts", "/upload/", "/datasets/new/", "/accounts/login/", "/api/docs"]
# Recorded in the page before any of its own scripts run (Playwright's init scripts are exempt from the policy).
RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__violations.push(`${event.violatedDirective} blocked ${event.blockedURI} at ${event.sourceFile}`);
});
"""
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed: `apt-get install "
                                                             "chromium` (make install-dev does it when run as root)")


@pytest.fixture
def site(published_feature: Feature) -> Feature:
    """Filled before the browser starts: Playwright's event loop would make Django refuse database calls."""
    explanation_create(sae=published_feature.run.sae, index=published_feature.index,
                       description="opening words of docstrings", author=factories.user_make())
    return published_feature


@contextmanager
def violations_recorded(base_url: str) -> Iterator[Page]:
    """A Chromium page on base_url that records every CSP violation (RECORD_VIOLATIONS), closed after the block."""
    assert CHROMIUM is not None
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        opened = chromium.new_page(base_url=base_url)
        opened.add_init_script(RECORD_VIOLATIONS)
        yield opened
        chromium.close()


@pytest.fixture
def page(live_server: LiveServer, site: Feature) -> Iterator[Page]:
    with violations_recorded(live_server.url) as opened:
        yield opened


@needs_chromium
@pytest.mark.parametrize("path", PAGES)
def test_the_page_loads_with_no_policy_violation(page: Page, path: str) -> None:
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
    response = page.goto(path, wait_until="networkidle")
    assert response is not None and response.status == 200
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert page.evaluate("window.__violations") == []
    assert errors == []


@needs_chromium
def test_the_feature_page_draws_its_histograms_under_the_policy(page: Page) -> None:
    page.goto(FEATURE_PATH, wait_until="networkidle")
    page.locator("#act-hist-plot .main-svg").first.wait_for(state="attached", timeout=10_000)
    assert page.locator("#act-hist-plot .bars .point").count() > 0
    assert page.evaluate("window.__violations") == []


@needs_chromium
def test_an_inline_script_would_be_blocked(page: Page) -> None:
    """The policy is enforced, not only sent: a script written into the page is refused and reported."""
    page.goto("/", wait_until="networkidle")
    page.evaluate("""() => { const script = document.createElement("script");
                             script.textContent = "window.__ran = true"; document.body.append(script); }""")
    assert page.evaluate("window.__ran === undefined")
    assert any(violation.startswith("script-src") for violation in page.evaluate("window.__violations"))


@pytest.mark.parametrize("path", [*PAGES, "/api/openapi.json", "/api/runs/999", "/no/such-page/", "/static/"
                                  "atlas/atlas.css"])
def test_every_answer_carries_the_policy(site: Feature, path: str) -> None:
    response = Client().get(path)
    policy = response["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy and "object-src 'none'" in policy
    assert "'unsafe-eval'" not in policy and "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]
