"""HTML pages: home, SAE and feature pages, their escaping and their locally served scripts."""

from django.test import Client

from atlas.features.models import Feature
from atlas.lms.models import Vocabulary
from atlas.saes.models import DashboardRun

HOSTILE = "<script>alert(1)</script>"


def test_home_lists_models_and_saes_with_run_status(published_feature: Feature) -> None:
    page = Client().get("/").content.decode()
    assert "tiny-llama" in page
    assert 'href="/tiny-llama/0-res-8/"' in page
    assert "status-succeeded" in page


def test_feature_page_escapes_token_text(published_feature: Feature) -> None:
    vocabulary = Vocabulary.objects.get(language_model=published_feature.run.sae.language_model)
    vocabulary.tokens[11] = HOSTILE
    vocabulary.tokens[5] = '<img src=x onerror="alert(2)">'
    vocabulary.save()
    page = Client().get("/tiny-llama/0-res-8/3").content.decode()
    assert HOSTILE not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=&quot;alert(2)&quot;&gt;" in page


def test_feature_page_shades_tokens_with_values_on_hover(published_feature: Feature) -> None:
    page = Client().get("/tiny-llama/0-res-8/3").content.decode()
    assert 'class="tok focus" style="--a:1.000" title="4.000"' in page
    assert 'style="--a:0.250" title="1.000"' in page


def test_feature_page_links_to_its_neighbours_with_their_cosines(published_feature: Feature) -> None:
    page = Client().get("/tiny-llama/0-res-8/3").content.decode()
    neighbours = page[page.index('class="neighbours"'):]
    assert neighbours.index('href="/tiny-llama/0-res-8/6"') < neighbours.index('href="/tiny-llama/0-res-8/1"')
    assert neighbours.index("0.750") < neighbours.index("0.500")


def test_unknown_feature_page_is_404_with_the_reason(published_feature: Feature) -> None:
    response = Client().get("/tiny-llama/0-res-8/99")
    assert response.status_code == 404
    assert "there is no feature 99" in response.content.decode()


def test_sae_page_polls_its_run(published_feature: Feature) -> None:
    run = DashboardRun.objects.get()
    page = Client().get("/tiny-llama/0-res-8/").content.decode()
    assert f'data-url="/api/runs/{run.pk}"' in page
    assert "/static/atlas/run_progress.js" in page


def test_scripts_are_served_locally(published_feature: Feature) -> None:
    client = Client()
    for path in ("/static/vendor/plotly.min.js", "/static/atlas/run_progress.js", "/static/atlas/feature.js",
                 "/static/atlas/atlas.css"):
        response = client.get(path)
        assert response.status_code == 200, path
    plotly = b"".join(client.get("/static/vendor/plotly.min.js").streaming_content)  # type: ignore[attr-defined]
    assert b"plotly" in plotly[:2000].lower() and len(plotly) > 1_000_000


def test_sae_page_paginates_and_reports_a_bad_jump(published_feature: Feature) -> None:
    page = Client().get("/tiny-llama/0-res-8/", {"index": "abc"}).content.decode()
    assert "is not a feature index" in page
    assert 'href="/tiny-llama/0-res-8/3"' in page


def test_home_lists_datasets(published_feature: Feature) -> None:
    page = Client().get("/").content.decode()
    assert "<code>docstrings</code>" in page
