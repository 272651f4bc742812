"""URLs: Neuronpedia's layout (/<model>/<sae>/<index>) for pages, /api/... for JSON."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import path, re_path

from atlas.accounts import views as account_views
from atlas.datasets import views as dataset_views
from atlas.explanations import api as explanation_api
from atlas.explanations import views as explanation_views
from atlas.features import api, views
from atlas.openapi import openapi_document
from atlas.saes import api as sae_api
from atlas.saes import views as sae_views

# Every endpoint takes its path with or without a trailing slash, as Neuronpedia's clients send either.
api_patterns = [
    re_path(r"^api/feature/(?P<model_id>[-\w.]+)/(?P<sae_id>[-\w.]+)/(?P<index>\d+)/?$", api.feature,
            name="api-feature"),
    re_path(r"^api/features/?$", api.features, name="api-features"),
    re_path(r"^api/features-offset/?$", api.features_by_offset, name="api-features-offset"),
    re_path(r"^api/activation/new/?$", api.activation_new, name="api-activation-new"),
    re_path(r"^api/search-all/?$", api.search_all, name="api-search-all"),
    re_path(r"^api/explanation/new/?$", explanation_api.explanation_new, name="api-explanation-new"),
    re_path(r"^api/runs/(?P<run_id>\d+)/?$", api.run_status, name="api-run"),
    re_path(r"^api/upload/?$", sae_api.upload, name="api-upload"),
    re_path(r"^api/openapi\.json$", openapi_document, name="api-openapi"),
    re_path(r"^api/(?P<path>.*)$", api.unknown_endpoint),
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
    path("upload/", sae_views.upload, name="upload"),
    path("datasets/new/", dataset_views.dataset_new, name="dataset-new"),
    path("", views.home, name="home"),
    path("<slug:model_id>/<slug:sae_id>/", views.sae_page, name="sae"),
    path("<slug:model_id>/<slug:sae_id>/random", views.feature_random, name="feature-random"),
    path("<slug:model_id>/<slug:sae_id>/<int:index>", views.feature_page, name="feature"),
    path("<slug:model_id>/<slug:sae_id>/<int:index>/explain", explanation_views.explanation_new,
         name="explanation-new"),
    path("<slug:model_id>/<slug:sae_id>/<int:index>/", views.feature_page),
]
