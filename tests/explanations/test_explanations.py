"""Explanations: written on the feature page by logged-in users, shown there and in the API, searchable."""

from django.test import Client

from atlas.explanations.models import Explanation
from atlas.features.models import Feature
from atlas.saes.models import DashboardRun
from tests import factories

FEATURE = "/tiny-llama/0-res-8/3"


def test_logged_in_user_explains_a_feature(published_feature: Feature, logged_in_client: Client) -> None:
    response = logged_in_client.post(f"{FEATURE}/explain", {"description": "  words about   joy "})
    assert (response.status_code, response["Location"]) == (302, FEATURE)
    explanation = Explanation.objects.get()
    assert (explanation.index, explanation.description, explanation.author.username) == (  # type: ignore[union-attr]
        3, "words about joy", "alice")
    assert "words about joy" in logged_in_client.get(FEATURE).content.decode()


def test_anonymous_user_is_sent_to_log_in(published_feature: Feature) -> None:
    response = Client().post(f"{FEATURE}/explain", {"description": "joy"})
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    assert not Explanation.objects.exists()
    assert "to explain this feature" in Client().get(FEATURE).content.decode()


def test_explanation_of_a_feature_past_the_width_is_refused(published_feature: Feature,
                                                            logged_in_client: Client) -> None:
    response = logged_in_client.post("/tiny-llama/0-res-8/99/explain", {"description": "joy"}, follow=True)
    assert "there is no feature 99" in response.content.decode()
    assert not Explanation.objects.exists()


def test_explanations_appear_in_the_api_with_neuronpedia_fields(published_feature: Feature) -> None:
    Explanation.objects.create(sae=published_feature.run.sae, index=3, description="joy",
                               author=factories.user_make("bob"))
    (explanation,) = Client().get("/api/feature/tiny-llama/0-res-8/3").json()["explanations"]
    assert explanation["description"] == "joy"
    assert explanation["authorUsername"] == "bob"
    assert (explanation["modelId"], explanation["layer"], explanation["index"]) == ("tiny-llama", "0-res-8", 3)


def test_explanations_survive_a_new_run(published_feature: Feature) -> None:
    sae = published_feature.run.sae
    Explanation.objects.create(sae=sae, index=3, description="joy")
    DashboardRun.objects.filter(pk=published_feature.run_id).delete()
    assert Explanation.objects.filter(sae=sae, index=3).exists()


def test_search_finds_explanations_by_word_stem(published_feature: Feature) -> None:
    sae = published_feature.run.sae
    Explanation.objects.create(sae=sae, index=3, description="mentions of happiness")
    Explanation.objects.create(sae=sae, index=4, description="closing brackets")
    page = Client().get("/search", {"q": "happy OR bracket"}).content.decode()
    assert 'href="/tiny-llama/0-res-8/3"' in page and 'href="/tiny-llama/0-res-8/4"' in page
    page = Client().get("/search/", {"q": "brackets"}).content.decode()
    assert 'href="/tiny-llama/0-res-8/3"' not in page and 'href="/tiny-llama/0-res-8/4"' in page


def test_search_escapes_what_it_shows(published_feature: Feature) -> None:
    Explanation.objects.create(sae=published_feature.run.sae, index=3, description="<script>x</script> tags")
    page = Client().get("/search", {"q": "tags"}).content.decode()
    assert "<script>x" not in page and "&lt;script&gt;x" in page


def test_every_page_has_the_search_box(published_feature: Feature) -> None:
    for path in ("/", "/tiny-llama/0-res-8/", FEATURE):
        assert 'action="/search"' in Client().get(path).content.decode(), path
