"""Real browser: the activation-search page's top-features-by-token view, answered by a real worker. Hovering a
token lists its features with their labels; clicking it opens its strongest feature's page."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_django.live_server_helper import LiveServer

from atlas.explanations.services import explanation_create
from atlas.saes.models import Sae
from tests import factories
from tests.e2e.test_browser import CHROMIUM, LIVE_ANSWER_TIMEOUT_MS, WatchedPage, watched_chromium
from tests.support.workers import Workers

TEXT = "Return the number of items in the list."
VIEW = "#topk-by-token"

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed: `apt-get install chromium` (make install-dev "
                             "does it when run as root)")


@pytest.fixture
def sae(workers: Workers, media_root: Path) -> Sae:
    """Filled before the browser starts: Playwright's event loop would make Django refuse database calls."""
    sae = factories.live_sae_published(media_root, factories.language_model_make(), {})
    author = factories.user_make()
    for index in range(sae.d_sae):
        explanation_create(sae=sae, index=index, description=f"label of {index}", author=author)
    workers.start()
    return sae


@pytest.fixture
def browser(live_server: LiveServer, sae: Sae) -> Iterator[WatchedPage]:
    with watched_chromium(live_server.url) as watched:
        yield watched


def test_hovering_a_token_lists_its_features_and_clicking_it_opens_the_strongest(browser: WatchedPage,
                                                                               sae: Sae) -> None:
    page = browser.page
    browser.open(f"/search-activations?model=tiny-llama&source={sae.slug}")
    page.locator(f"{VIEW} textarea").fill(TEXT)
    page.locator(f"{VIEW} input[name=results]").fill("3")
    page.locator(f"{VIEW} input[name=density]").fill("0")
    page.locator(f"{VIEW} button").click()
    tokens = page.locator(f"{VIEW} .tok")
    tokens.first.wait_for(timeout=LIVE_ANSWER_TIMEOUT_MS)
    assert tokens.count() > 3 and page.locator(f"{VIEW} [data-field=error]").is_hidden()
    tokens.nth(1).hover()
    listed = page.locator(f"{VIEW} [data-field=token-features] li")
    assert listed.count() == 3
    first = listed.first.locator("a")
    strongest = first.inner_text().rsplit(" / ", 1)[1]
    assert first.get_attribute("href") == f"/tiny-llama/{sae.slug}/{strongest}"
    assert f"label of {strongest}" in listed.first.inner_text()
    tokens.nth(1).click()
    page.wait_for_url(f"**/tiny-llama/{sae.slug}/{strongest}")
    assert strongest in page.locator("main h1").inner_text()
    assert browser.errors == [] and browser.dialogs == []
