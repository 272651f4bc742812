"""List pages: the owner's lists at /lists (with a form for a new one), one list at /lists/<id> with each feature's
label, density and top example, and the forms that add a feature from its page and take one off."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from atlas.accounts.auth import LoggedInRequest
from atlas.errors import NotFound
from atlas.lists.forms import ListAddForm, ListForm
from atlas.lists.models import FeatureList
from atlas.lists.selectors import list_features_shown, list_get, list_may_edit, lists_owned
from atlas.lists.services import (
    FeatureToAdd,
    ListForbidden,
    ListRefused,
    list_create,
    list_feature_remove,
    list_features_add,
)


def _list(list_id: str, request: HttpRequest) -> FeatureList:
    try:
        return list_get(list_id, request.user)
    except NotFound as error:
        raise Http404(str(error)) from error


def _form_errors(form: ListForm | ListAddForm) -> str:
    return " ".join(f"{field}: {' '.join(str(error) for error in errors)}" for field, errors in form.errors.items())


@login_required
def lists_page(request: LoggedInRequest) -> HttpResponse:
    form = ListForm(request.POST) if request.method == "POST" else ListForm()
    if request.method == "POST" and form.is_valid():
        try:
            feature_list = list_create(owner=request.user, name=form.cleaned_data["name"],
                                       description=form.cleaned_data["description"],
                                       public=form.cleaned_data["public"])
        except ListRefused as error:
            form.add_error(None, str(error))
        else:
            return redirect("list", list_id=feature_list.pk)
    return render(request, "lists.html", {"owned": lists_owned(request.user), "form": form},
                  status=400 if form.errors else 200)


def list_page(request: HttpRequest, list_id: str) -> HttpResponse:
    feature_list = _list(list_id, request)
    context = {
        "feature_list": feature_list,
        "features": list_features_shown(feature_list),
        "may_edit": list_may_edit(feature_list, request.user),
    }
    return render(request, "list.html", context)


@login_required
@require_POST
def list_feature_add(request: LoggedInRequest) -> HttpResponse:
    form = ListAddForm(request.POST)
    if not form.is_valid():
        messages.error(request, _form_errors(form))
        return redirect("lists")
    data = form.cleaned_data
    feature_list = _list(data["list_id"], request)
    feature = FeatureToAdd(model_slug=data["model_id"], sae_slug=data["sae_id"], index=data["index"],
                           note=data["note"])
    try:
        list_features_add(feature_list=feature_list, by=request.user, features=[feature])
    except ListForbidden as error:
        raise PermissionDenied(str(error)) from error
    except ListRefused as error:
        messages.error(request, str(error))
        return redirect("lists")
    messages.success(request, f"Added {feature.model_slug}/{feature.sae_slug}/{feature.index} to "
                              f"{feature_list.name}.")
    return redirect("feature", model_id=feature.model_slug, sae_id=feature.sae_slug, index=feature.index)


@login_required
@require_POST
def list_feature_delete(request: LoggedInRequest, list_id: str, model_id: str, sae_id: str,
                        index: int) -> HttpResponse:
    feature_list = _list(list_id, request)
    try:
        list_feature_remove(feature_list=feature_list, by=request.user, model_slug=model_id, sae_slug=sae_id,
                            index=index)
    except ListForbidden as error:
        raise PermissionDenied(str(error)) from error
    except NotFound as error:
        raise Http404(str(error)) from error
    messages.success(request, f"Took {model_id}/{sae_id}/{index} off the list.")
    return redirect("list", list_id=feature_list.pk)
