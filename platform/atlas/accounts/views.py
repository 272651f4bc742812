"""The account page: a person's API keys, made (shown once) and revoked."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from atlas.accounts.auth import LoggedInRequest
from atlas.accounts.selectors import api_keys_of
from atlas.accounts.services import api_key_create, api_key_revoke


@login_required
def account(request: LoggedInRequest) -> HttpResponse:
    keys = api_keys_of(request.user)
    context = {"api_keys": keys, "new_key": request.session.pop("new_api_key", None)}
    return render(request, "account.html", context)


@login_required
@require_POST
def api_key_new(request: LoggedInRequest) -> HttpResponse:
    name = request.POST.get("name", "").strip()[:100]
    issued = api_key_create(user=request.user, name=name)
    # Shown once, on the page the redirect lands on, and never stored anywhere but this session until then.
    request.session["new_api_key"] = issued.secret
    return redirect("account")


@login_required
@require_POST
def api_key_delete(request: LoggedInRequest, key_id: int) -> HttpResponse:
    if not api_key_revoke(user=request.user, key_id=key_id):
        messages.error(request, "You hold no such key.")
    return redirect("account")
