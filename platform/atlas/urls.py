"""URLs: Neuronpedia's layout (/<model>/<sae>/<index>) for pages, /api/... for JSON."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path

from atlas.accounts import views as account_views
from atlas.api import unknown_endpoint
from atlas.api import urlpatterns as api_urls
from atlas.concepts import views as concepts_views
from atlas.datasets import views as dataset_views
from atlas.explanations import views as explanation_views
from atlas.features import views
from atlas.lists import views as list_views
from atlas.saes import views as sae_views
from atlas.steering import views as steering_views
from atlas.vectors import views as vector_views

# The JSON API (atlas.api: every endpoint with or without a trailing slash), then a JSON 404 for any other /api/
# path, so that clients never get an HTML page.
api_patterns = [
    path("api/", include(api_urls)),
    re_path(r"^api/(?P<path>.*)$", unknown_endpoint),
]

urlpatterns = [
    *api_patterns,
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("account/", account_views.account, name="account"),
    path("account/keys/", account_views.api_key_new, name="api-key-new"),
    path("account/keys/<int:key_id>/revoke", account_views.api_key_delete, name="api-key-revoke"),
    path("search", explanation_views.search, name="search"),
    path("search/", explanation_views.search),
    path("search-activations", views.activation_search, name="activation-search"),
    path("search-activations/", views.activation_search),
    path("steer", steering_views.steer_page, name="steer"),
    path("steer/", steering_views.steer_page),
    path("steer/<slug:output_id>", steering_views.steer_output_page, name="steer-output"),
    path("concepts", concepts_views.concepts_page, name="concepts"),
    path("concepts/", concepts_views.concepts_page),
    path("concepts/<slug:search_id>", concepts_views.concept_search_page, name="concept-search"),
    path("concepts/<slug:search_id>/detector", concepts_views.detector_save, name="concept-detector-save"),
    path("concepts/<slug:search_id>/vector", concepts_views.probe_vector_page, name="concept-probe-vector"),
    path("detectors/<slug:detector_id>", concepts_views.detector_page, name="detector"),
    path("lists", list_views.lists_page, name="lists"),
    path("lists/", list_views.lists_page),
    path("lists/add", list_views.list_feature_add, name="list-feature-add"),
    path("lists/<slug:list_id>", list_views.list_page, name="list"),
    path("lists/<slug:list_id>/<slug:model_id>/<slug:sae_id>/<int:index>/remove", list_views.list_feature_delete,
         name="list-feature-delete"),
    path("upload/", sae_views.upload, name="upload"),
    path("datasets/new/", dataset_views.dataset_new, name="dataset-new"),
    path("", views.home, name="home"),
    # A vector's address has a feature's shape, under a source id no SAE may take (atlas.vectors.models).
    re_path(r"^(?P<model_id>[-\w.]+)/(?P<source>\d+-vectors-resid-(?:pre|post))/(?P<index>\d{1,9})/?$",
            vector_views.vector_page, name="vector"),
    re_path(r"^(?P<model_id>[-\w.]+)/(?P<source>\d+-vectors-resid-(?:pre|post))/(?P<index>\d{1,9})/delete$",
            vector_views.vector_remove, name="vector-delete"),
    re_path(r"^(?P<model_id>[-\w.]+)/(?P<source>\d+-vectors-resid-(?:pre|post))/(?P<index>\d{1,9})/dashboard$",
            sae_views.vector_dashboard_new, name="vector-dashboard"),
    path("<slug:model_id>/<slug:sae_id>/", views.sae_page, name="sae"),
    path("<slug:model_id>/<slug:sae_id>/runs/<int:run_id>/cancel", sae_views.run_cancel, name="run-cancel"),
    path("<slug:model_id>/<slug:sae_id>/rerun", sae_views.sae_rerun, name="sae-rerun"),
    path("<slug:model_id>/<slug:sae_id>/delete", sae_views.sae_remove, name="sae-delete"),
    path("<slug:model_id>/<slug:sae_id>/random", views.feature_random, name="feature-random"),
    path("<slug:model_id>/<slug:sae_id>/<int:index>", views.feature_page, name="feature"),
    path("<slug:model_id>/<slug:sae_id>/<int:index>/explain", explanation_views.explanation_new,
         name="explanation-new"),
    path("<slug:model_id>/<slug:sae_id>/<int:index>/", views.feature_page),
]
