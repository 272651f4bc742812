"""Real browser, real worker: from a feature page to the steering page, a strength changed, DEFAULT and STEERED
generated and shown side by side under the CSP; then the permalink reopens the same result and settings with the
workers stopped. Without a worker: features join by label search and by index and leave by Remove, and a vector
page opens the steering page with the vector."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Page, Route
from pytest_django.live_server_helper import LiveServer

from atlas.explanations.services import explanation_create
from atlas.saes.models import Sae
from tests import factories
from tests.e2e.test_browser import CHROMIUM, LIVE_ANSWER_TIMEOUT_MS
from tests.e2e.test_csp import violations_recorded
from tests.support.workers import Workers

INDEX = 5
LABEL = "a direction worth steering with"
PROMPT = "Return the number of items in the list"
# Far beyond the feature's max activation (1): the steered text cannot stay the default's.
STRENGTH = "200"
N_TOKENS = "8"
VIEW = "#steer"
# Turns of Playwright's event loop (20 ms each) for a request already sent to reach its route handler.
ROUTE_WAITS = 500

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed: `apt-get install chromium` (make install-dev "
                             "does it when run as root)")


def _author() -> User:
    user = factories.user_make()
    assert isinstance(user, User)
    return user


@pytest.fixture
def sae(workers: Workers, media_root: Path) -> Sae:
    """Filled before the browser starts: Playwright's event loop would make Django refuse database calls."""
    sae = factories.live_sae_published(media_root, factories.language_model_make(), {})
    explanation_create(sae=sae, index=INDEX, description=LABEL, author=_author())
    workers.start()
    return sae


@pytest.fixture
def page(live_server: LiveServer, sae: Sae) -> Iterator[Page]:
    with violations_recorded(live_server.url) as opened:
        yield opened


def _page_errors(page: Page) -> list[str]:
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
    return errors


def _shown_texts(page: Page) -> tuple[str, str]:
    page.locator(f"{VIEW} [data-field=steered-text] .tok").first.wait_for(timeout=LIVE_ANSWER_TIMEOUT_MS)
    return (page.locator(f"{VIEW} [data-field=default-text]").inner_text(),
            page.locator(f"{VIEW} [data-field=steered-text]").inner_text())


def _steer_from_the_feature_page(page: Page, sae: Sae) -> None:
    page.goto(f"/tiny-llama/{sae.slug}/{INDEX}", wait_until="networkidle")
    page.get_by_role("link", name="Steer with this feature").click()
    page.wait_for_url(f"**/steer?model=tiny-llama&source={sae.slug}&index={INDEX}")
    feature = page.locator(f"{VIEW} .steer-feature")
    feature.wait_for()
    assert LABEL in feature.inner_text()
    # The default strength is the feature's max activation.
    assert feature.locator("input[type=number]").input_value() == "1"
    feature.locator("input[type=number]").fill(STRENGTH)
    assert feature.locator("input[type=range]").input_value() == STRENGTH
    page.locator(f"{VIEW} textarea[name=prompt]").fill(PROMPT)
    page.locator(f"{VIEW} input[name=n_tokens]").fill(N_TOKENS)


def _generate_seeing_the_progress(page: Page) -> None:
    """The steer request is held until the page has shown that it is generating, then let through."""
    held: list[Route] = []
    page.route("**/api/steer", lambda route: held.append(route))  # (a builtin method cannot be a handler)
    with page.expect_request("**/api/steer"):
        page.locator(f"{VIEW} [data-action=generate]").click()
    progress = page.locator(f"{VIEW} [data-field=progress]")
    progress.wait_for(state="visible")
    assert progress.inner_text().strip() == f"Generating {N_TOKENS} tokens on a worker…"
    assert progress.locator("progress").get_attribute("value") is None  # indeterminate
    assert page.locator(f"{VIEW} [data-action=generate]").is_disabled()
    for _ in range(ROUTE_WAITS):  # the route handler runs while Playwright waits
        if held:
            break
        page.wait_for_timeout(20)
    assert held, "the page's request never reached the route"
    held[0].continue_()


def test_a_feature_steers_the_completion_and_its_permalink_reopens_it(page: Page, sae: Sae,
                                                                     workers: Workers) -> None:
    errors = _page_errors(page)
    _steer_from_the_feature_page(page, sae)
    _generate_seeing_the_progress(page)
    default, steered = _shown_texts(page)
    assert default.startswith(PROMPT) and steered.startswith(PROMPT)
    assert default != PROMPT and steered != PROMPT and default != steered
    assert page.locator(f"{VIEW} [data-field=error]").is_hidden()
    assert page.locator(f"{VIEW} [data-field=progress]").is_hidden()
    permalink = page.locator(f"{VIEW} [data-field=permalink-link]").inner_text()
    assert "/steer/" in permalink and page.url == permalink
    page.locator(f"{VIEW} [data-field=steered-text] .tok").first.hover()
    details = page.locator(f"{VIEW} [data-field=token-details]")
    assert "log-prob" in details.inner_text() and details.locator("li").count() > 0
    assert page.evaluate("window.__violations") == [] and errors == []

    workers.stop_all()
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url) if "/api/steer" in request.url else None)
    page.goto(permalink, wait_until="networkidle")
    assert _shown_texts(page) == (default, steered)
    feature = page.locator(f"{VIEW} .steer-feature")
    feature.wait_for()
    assert LABEL in feature.inner_text() and feature.locator("input[type=number]").input_value() == STRENGTH
    assert page.locator(f"{VIEW} textarea[name=prompt]").input_value() == PROMPT
    assert page.locator(f"{VIEW} input[name=n_tokens]").input_value() == N_TOKENS
    assert asked == []
    assert page.evaluate("window.__violations") == [] and errors == []


@pytest.fixture
def labelled(transactional_db: None, media_root: Path) -> Sae:
    """Two labelled features and no worker: choosing features asks none."""
    sae = factories.live_sae_published(media_root, factories.language_model_make(), {})
    author = _author()
    for index in (5, 7):
        explanation_create(sae=sae, index=index, description=f"happy words, case {index}", author=author)
    return sae


def test_features_join_by_label_search_and_by_index_and_leave_by_remove(live_server: LiveServer,
                                                                       labelled: Sae) -> None:
    with violations_recorded(live_server.url) as page:
        errors = _page_errors(page)
        asked: list[str] = []
        page.on("request", lambda request: asked.append(request.url) if "/api/steer" in request.url else None)
        page.goto("/steer", wait_until="networkidle")
        page.locator(f"{VIEW} input[name=label]").fill("happy")
        page.locator(f"{VIEW} input[name=label]").press("Enter")  # searches; it must not generate
        found = page.locator(f"{VIEW} [data-field=search-results] li")
        found.nth(1).wait_for()
        assert found.count() == 2 and "happy words, case" in found.first.inner_text()
        found.filter(has_text="case 7").get_by_role("button", name="Add").click()
        chosen = page.locator(f"{VIEW} .steer-feature")
        chosen.first.wait_for()
        page.locator(f"{VIEW} input[name=index]").fill("9")
        page.locator(f"{VIEW} input[name=index]").press("Enter")
        chosen.nth(1).wait_for()
        assert chosen.locator(".steer-address").all_inner_texts() == [f"{labelled.slug} / 7", f"{labelled.slug} / 9"]
        assert chosen.locator(".steer-label").all_inner_texts() == ["happy words, case 7", "no label yet"]
        assert chosen.nth(1).locator("input[type=number]").input_value() == "1"
        page.locator(f"{VIEW} input[name=index]").press("Enter")
        status = page.locator(f"{VIEW} [data-field=features-status]")
        assert status.inner_text() == f"{labelled.slug} / 9 is chosen already; change its strength below."
        chosen.first.get_by_role("button", name="Remove").click()
        assert chosen.count() == 1 and "/ 9" in chosen.first.inner_text()
        assert asked == [] and page.evaluate("window.__violations") == [] and errors == []


@pytest.fixture
def vector_path(transactional_db: None) -> str:
    """A vector's page (its default strength is 8), and no worker."""
    vector = factories.vector_make(factories.language_model_make(), _author())
    return f"/tiny-llama/{vector.source}/{vector.pk}"


def test_the_vector_page_opens_steering_with_the_vector_at_its_default_strength(live_server: LiveServer,
                                                                               vector_path: str) -> None:
    with violations_recorded(live_server.url) as page:
        errors = _page_errors(page)
        page.goto(vector_path, wait_until="networkidle")
        page.get_by_role("link", name="Steer with this vector").click()
        chosen = page.locator(f"{VIEW} .steer-feature")
        chosen.wait_for()
        assert chosen.locator(".steer-address").inner_text() == " / ".join(vector_path.rsplit("/", 2)[1:])
        assert chosen.locator(".steer-label").inner_text() == "joy - sorrow"
        assert chosen.locator("input[type=number]").input_value() == "8"
        assert page.evaluate("window.__violations") == [] and errors == []
