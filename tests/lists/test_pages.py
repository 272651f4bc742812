"""The list pages: /lists/<id> with each feature's label, density and top example in shaded tokens, private lists
for their owner alone; /lists with the owner's lists and a form for a new one; "Add to list" on a feature page."""

import pytest
from django.contrib.auth.models import User
from django.test import Client

from atlas.explanations.models import Explanation
from atlas.features.models import Feature
from atlas.lists.models import FeatureList, ListItem
from atlas.lists.services import FeatureToAdd, list_create, list_features_add
from tests import factories


@pytest.fixture
def owner(published_feature: Feature) -> User:
    return person("carol")


def person(username: str) -> User:
    user = factories.user_make(username)
    assert isinstance(user, User)
    return user


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def joy_list(owner: User, *, public: bool = True) -> FeatureList:
    feature_list = list_create(owner=owner, name="joy features", description="happy ones", public=public)
    list_features_add(feature_list=feature_list, by=owner,
                      features=[FeatureToAdd("tiny-llama", "0-res-8", 3, "fires on joy"),
                                FeatureToAdd("tiny-llama", "0-res-8", 5)])
    return feature_list


def test_a_list_page_shows_each_features_label_density_note_and_top_example(owner: User,
                                                                            published_feature: Feature) -> None:
    Explanation.objects.create(sae=published_feature.run.sae, index=3, description="joyful words", author=owner)
    feature_list = joy_list(owner)
    page = Client().get(f"/lists/{feature_list.pk}").content.decode()
    assert "joy features" in page and "happy ones" in page and "fires on joy" in page
    assert "joyful words" in page
    assert "Density 25% of tokens" in page
    # The top example's window (tokens 10, 11, 12; the first slot is padding), shaded by activation over max 4.0.
    assert page.count('class="example"') == 1
    assert '<span class="tok focus" style="--a:1.000" title="4.000">' in page
    assert 'style="--a:0.250" title="1.000"' in page
    # Feature 5 has a published row but never fired: no example, and no label.
    assert "This feature never fired on the dataset." in page and "no label yet" in page
    assert page.index("/tiny-llama/0-res-8/3") < page.index("/tiny-llama/0-res-8/5")


def test_a_private_list_is_a_404_for_anyone_but_its_owner(owner: User) -> None:
    feature_list = joy_list(owner, public=False)
    assert Client().get(f"/lists/{feature_list.pk}").status_code == 404
    assert logged_in(person("dave")).get(f"/lists/{feature_list.pk}").status_code == 404
    assert logged_in(owner).get(f"/lists/{feature_list.pk}").status_code == 200


def test_the_owner_sees_remove_buttons_and_others_do_not(owner: User) -> None:
    feature_list = joy_list(owner)
    assert "Take off the list" in logged_in(owner).get(f"/lists/{feature_list.pk}").content.decode()
    assert "Take off the list" not in Client().get(f"/lists/{feature_list.pk}").content.decode()


def test_the_owner_takes_a_feature_off_and_nobody_else_may(owner: User) -> None:
    feature_list = joy_list(owner)
    path = f"/lists/{feature_list.pk}/tiny-llama/0-res-8/5/remove"
    assert logged_in(person("dave")).post(path).status_code == 403
    assert logged_in(owner).post(path).status_code == 302
    assert list(ListItem.objects.values_list("index", flat=True)) == [3]


def test_lists_shows_only_the_owners_lists(owner: User) -> None:
    joy_list(owner)
    list_create(owner=person("dave"), name="dave's list")
    page = logged_in(owner).get("/lists").content.decode()
    assert "joy features" in page and "dave&#x27;s list" not in page


def test_lists_needs_a_login(owner: User) -> None:
    assert Client().get("/lists").status_code == 302


def test_a_new_list_from_the_form_opens_its_page(owner: User) -> None:
    response = logged_in(owner).post("/lists", {"name": "  sad   ones ", "description": "", "public": ""})
    stored = FeatureList.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/lists/{stored.pk}"
    assert (stored.name, stored.public, stored.owner) == ("sad ones", False, owner)


def test_a_blank_name_in_the_form_is_a_400_and_stores_nothing(owner: User) -> None:
    response = logged_in(owner).post("/lists", {"name": "   "})
    assert response.status_code == 400
    assert "This field is required." in response.content.decode()
    assert not FeatureList.objects.exists()


def test_a_feature_page_offers_the_users_lists(owner: User) -> None:
    feature_list = list_create(owner=owner, name="joy features")
    page = logged_in(owner).get("/tiny-llama/0-res-8/3").content.decode()
    assert f'<option value="{feature_list.pk}">joy features (0)</option>' in page
    assert "Add to list" in page


def test_a_feature_page_asks_a_visitor_to_log_in_for_lists(published_feature: Feature) -> None:
    page = Client().get("/tiny-llama/0-res-8/3").content.decode()
    assert "to add this feature to a list" in page and "<select name=\"list_id\">" not in page


def test_add_to_list_from_a_feature_page_stores_the_feature_with_its_note(owner: User) -> None:
    feature_list = list_create(owner=owner, name="joy features")
    response = logged_in(owner).post("/lists/add", {"list_id": feature_list.pk, "model_id": "tiny-llama",
                                                    "sae_id": "0-res-8", "index": "3", "note": "so happy"})
    assert response.status_code == 302 and response["Location"] == "/tiny-llama/0-res-8/3"
    item = ListItem.objects.get()
    assert (item.feature_list, item.sae.slug, item.index, item.note) == (feature_list, "0-res-8", 3, "so happy")


def test_nobody_adds_to_someone_elses_list(owner: User) -> None:
    feature_list = list_create(owner=owner, name="joy features")
    response = logged_in(person("dave")).post(
        "/lists/add", {"list_id": feature_list.pk, "model_id": "tiny-llama", "sae_id": "0-res-8", "index": "3"})
    assert response.status_code == 403
    assert not ListItem.objects.exists()


def test_adding_a_feature_past_the_saes_end_stores_nothing(owner: User) -> None:
    feature_list = list_create(owner=owner, name="joy features")
    response = logged_in(owner).post("/lists/add", {"list_id": feature_list.pk, "model_id": "tiny-llama",
                                                    "sae_id": "0-res-8", "index": "99"}, follow=True)
    assert "there is no feature 99" in response.content.decode()
    assert not ListItem.objects.exists()
