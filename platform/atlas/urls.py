"""URLs: Neuronpedia's layout (/<model>/<sae>/<index>) for pages, /api/... for JSON."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import path, re_path

from atlas.datasets import views as dataset_views
from atlas.features import api, views
from atlas.saes import views as sae_views

api_patterns = [
    re_path(r"^api/feature/(?P<model_id>[-\w.]+)/(?P<sae_id>[-\w.]+)/(?P<index>\d+)/?$", api.feature,
            name="api-feature"),
    re_path(r"^api/runs/(?P<run_id>\d+)/?$", api.run_status, name="api-run"),
    re_path(r"^api/(?P<path>.*)$", api.unknown_endpoint),
]

urlpatterns = [
    *api_patterns,
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("upload/", sae_views.upload, name="upload"),
    path("datasets/new/", dataset_views.dataset_new, name="dataset-new"),
    path("", views.home, name="home"),
    path("<slug:model_id>/<slug:sae_id>/", views.sae_page, name="sae"),
    path("<slug:model_id>/<slug:sae_id>/<int:index>", views.feature_page, name="feature"),
    path("<slug:model_id>/<slug:sae_id>/<int:index>/", views.feature_page),
]
