"""Chromium draws a vector's values on its page under the Content-Security-Policy (script-src 'self')."""

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page
from pytest_django.live_server_helper import LiveServer

from atlas.lms.models import LanguageModel
from atlas.vectors.models import Vector
from tests import factories
from tests.e2e.test_csp import needs_chromium, violations_recorded


@pytest.fixture
def vector(language_model: LanguageModel) -> Vector:
    """Made before the browser starts: Playwright's event loop would make Django refuse database calls."""
    values = [(position % 9 - 4) / 2 for position in range(language_model.d_model)]
    made: Vector = factories.vector_make(language_model, factories.user_make("carol"), values=values)
    return made


@pytest.fixture
def page(live_server: LiveServer, vector: Vector) -> Iterator[Page]:
    with violations_recorded(live_server.url) as opened:
        yield opened


@needs_chromium
def test_the_vector_page_plots_every_value_under_the_policy(page: Page, vector: Vector) -> None:
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
    response = page.goto(f"/tiny-llama/{vector.source}/{vector.pk}", wait_until="networkidle")
    assert response is not None and response.status == 200
    page.locator("#vector-values-plot .main-svg").first.wait_for(state="attached", timeout=10_000)
    assert page.locator("#vector-values-plot .bars .point").count() == vector.language_model.d_model
    assert page.evaluate("window.__violations") == []
    assert errors == []
