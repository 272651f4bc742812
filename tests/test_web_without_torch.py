"""The web process never imports torch, transformer-lens or transformers: a gunicorn worker holds ~100 MB, not ~300+.

A child process starts the app as gunicorn does (import atlas.wsgi: settings, every URL and view), then requests
every page and API endpoint against this test's database, with a published SAE present, and uploads SAEs and a
dataset so that the upload's checks and the tokenizer run too. Nothing the child does may queue a task: the SAEs
it uploads hold a NaN, found by the last check, so nothing is stored.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any
from urllib.parse import quote

import torch
from django.conf import settings
from django.db import connection
from safetensors.torch import load_file, save_file

from atlas.accounts.services import api_key_create
from atlas.datasets.models import Dataset
from atlas.lms.models import LanguageModel
from atlas.saes.models import Sae
from tests import factories
from workers.compute.corpus import stdlib_docstrings
from workers.compute.sae_files import (
    CFG_FILENAME,
    DICTIONARY_LEARNING_CONFIG_FILENAME,
    DICTIONARY_LEARNING_WEIGHTS_FILENAME,
    WEIGHTS_FILENAME,
)

ROOT = Path(__file__).resolve().parents[1]
# The libraries a web process must never load; the last two only ever come with the first.
FORBIDDEN = {"torch", "transformer_lens", "transformers", "sae_lens", "triton"}

# Runs in the child: the app as gunicorn loads it, then the requests the parent planned, then what got imported.
CHILD = textwrap.dedent("""
    import json, sys
    import atlas.wsgi
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.test.utils import setup_test_environment

    setup_test_environment()
    plan = json.load(sys.stdin)
    client = Client()
    answers = {}
    for request in plan["requests"]:
        if request.get("logged_in"):
            client.force_login(get_user_model().objects.get(username=plan["username"]))
        else:
            client.logout()
        files = {field: open(path, "rb") for field, path in request.get("files", {}).items()}
        method = getattr(client, request["method"].lower())
        if "json" in request:
            response = method(request["path"], json.dumps(request["json"]), content_type="application/json",
                              headers=request.get("headers", {}))
        else:
            response = method(request["path"], {**request.get("data", {}), **files}, headers=request.get("headers", {}))
        body = response.content.decode(errors="replace")
        answers[request["name"]] = [response.status_code, all(words in body for words in request.get("says", []))]
    print(json.dumps({"answers": answers, "imported": sorted({name.split(".")[0] for name in sys.modules})}))
""")


def _database_url() -> str:
    """This test's database, as a URL for a child process's DATABASE_URL."""
    database = connection.settings_dict
    credentials = quote(database["USER"] or "", safe="")
    if database["PASSWORD"]:
        credentials += ":" + quote(database["PASSWORD"], safe="")
    port = f":{database['PORT']}" if database["PORT"] else ""
    return f"postgres://{credentials}@{quote(database['HOST'] or 'localhost', safe='')}{port}/{database['NAME']}"


def _child_env(media_root: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{ROOT / 'platform'}{os.pathsep}{ROOT}", "DATABASE_URL": _database_url(),
            "REDIS_URL": settings.REDIS_URL, "ATLAS_MEDIA_ROOT": str(media_root)}


def _sae_lens_with_a_nan(directory: Path) -> dict[str, str]:
    factories.sae_lens_write(directory, d_in=factories.tiny_model_facts().d_model)
    tensors = load_file(directory / WEIGHTS_FILENAME)
    tensors["W_dec"] = tensors["W_dec"].bfloat16()
    tensors["W_dec"][1, 2] = float("nan")
    save_file(tensors, directory / WEIGHTS_FILENAME)
    return {"cfg_file": str(directory / CFG_FILENAME), "weights_file": str(directory / WEIGHTS_FILENAME)}


def _dictionary_learning_with_a_nan(directory: Path) -> dict[str, str]:
    sae = factories.dictionary_learning_make("AutoEncoder", d_in=factories.tiny_model_facts().d_model, d_sae=40)
    with torch.no_grad():
        sae.encoder.bias[3] = float("inf")
    factories.dictionary_learning_write(directory, sae, dict_class="AutoEncoder")
    return {"cfg_file": str(directory / DICTIONARY_LEARNING_CONFIG_FILENAME),
            "weights_file": str(directory / DICTIONARY_LEARNING_WEIGHTS_FILENAME)}


def _requests(language_model: LanguageModel, dataset: Dataset, tmp_path: Path, api_key: str) -> list[dict[str, Any]]:
    feature = factories.published_feature_make(language_model, dataset)
    sae, run = feature.run.sae, feature.run
    page = f"/{language_model.slug}/{sae.slug}"
    form = factories.upload_form_data(language_model, dataset)
    selector = {"modelId": language_model.slug, "layer": sae.slug}
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(stdlib_docstrings(20_000)))
    return [
        {"name": "home", "method": "GET", "path": "/"},
        {"name": "sae page", "method": "GET", "path": f"{page}/"},
        {"name": "feature page", "method": "GET", "path": f"{page}/{feature.index}"},
        {"name": "random feature", "method": "GET", "path": f"{page}/random"},
        {"name": "search", "method": "GET", "path": "/search?q=happy"},
        {"name": "activation search", "method": "GET", "path": "/search-activations"},
        {"name": "login page", "method": "GET", "path": "/accounts/login/"},
        {"name": "upload page", "method": "GET", "path": "/upload/", "logged_in": True},
        {"name": "dataset page", "method": "GET", "path": "/datasets/new/", "logged_in": True},
        {"name": "account page", "method": "GET", "path": "/account/", "logged_in": True},
        {"name": "upload with a NaN", "method": "POST", "path": "/upload/", "logged_in": True, "data": form,
         "files": _sae_lens_with_a_nan(tmp_path / "sae_lens"), "says": ["tensor W_dec has 1 NaN or infinite values"]},
        {"name": "ae.pt with an Inf", "method": "POST", "path": "/upload/", "logged_in": True,
         "data": {**form, "hook_name": factories.TINY_HOOK}, "files": _dictionary_learning_with_a_nan(tmp_path / "dl"),
         "says": ["tensor b_enc has 1 NaN or infinite values"]},
        {"name": "new dataset", "method": "POST", "path": "/datasets/new/", "logged_in": True,
         "data": {"slug": "tokenized-by-the-web", "language_model": language_model.slug, "context_length": 32},
         "files": {"text_file": str(corpus)}},
        {"name": "api feature", "method": "GET",
         "path": f"/api/feature/{language_model.slug}/{sae.slug}/{feature.index}"},
        {"name": "api features", "method": "POST", "path": "/api/features", "json": [{**selector, "index": 3}]},
        {"name": "api features offset", "method": "POST", "path": "/api/features-offset",
         "json": {**selector, "offset": 0}},
        {"name": "api run", "method": "GET", "path": f"/api/runs/{run.pk}"},
        {"name": "api openapi", "method": "GET", "path": "/api/openapi.json"},
        {"name": "api upload without a key", "method": "POST", "path": "/api/upload", "data": form,
         "files": _sae_lens_with_a_nan(tmp_path / "no_key")},
        {"name": "api upload with a NaN", "method": "POST", "path": "/api/upload", "data": form,
         "headers": {"x-api-key": api_key}, "files": _sae_lens_with_a_nan(tmp_path / "api"),
         "says": ["tensor W_dec has 1 NaN or infinite values"]},
        # Malformed bodies: answered before any task is sent to a worker.
        {"name": "api activation without a feature", "method": "POST", "path": "/api/activation/new", "json": {}},
        {"name": "api search without text", "method": "POST", "path": "/api/search-all", "json": {}},
        {"name": "api unknown", "method": "GET", "path": "/api/nothing-here"},
    ]


EXPECTED_STATUS = {
    "home": 200, "sae page": 200, "feature page": 200, "random feature": 302, "search": 200,
    "activation search": 200, "login page": 200, "upload page": 200, "dataset page": 200, "account page": 200,
    "upload with a NaN": 200, "ae.pt with an Inf": 200, "new dataset": 302, "api feature": 200,
    "api features": 200, "api features offset": 200, "api run": 200, "api openapi": 200,
    "api upload without a key": 401, "api upload with a NaN": 400, "api activation without a feature": 400,
    "api search without text": 400, "api unknown": 404,
}


def test_every_page_and_endpoint_is_served_without_torch(
    transactional_db: None, language_model: LanguageModel, dataset: Dataset, tmp_path: Path, media_root: Path,
) -> None:
    user = factories.user_make()
    requests = _requests(language_model, dataset, tmp_path, api_key_create(user=user).secret)
    plan = json.dumps({"username": user.username, "requests": requests})
    child = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, env=_child_env(media_root), input=plan,
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr[-4000:]
    report = json.loads(child.stdout.strip().splitlines()[-1])
    assert {name: status for name, (status, _) in report["answers"].items()} == EXPECTED_STATUS
    assert [name for name, (_, says) in report["answers"].items() if not says] == []
    assert set(report["imported"]) & FORBIDDEN == set()
    # What the child did landed: the dataset it tokenized, and none of the refused SAEs.
    assert Dataset.objects.filter(slug="tokenized-by-the-web", n_sequences__gt=0).exists()
    assert list(Sae.objects.values_list("slug", flat=True)) == ["0-res-8"]


def test_importing_the_web_app_imports_no_model_library(media_root: Path) -> None:
    """python -X importtime lists every module a fresh `import atlas.wsgi` loads, as gunicorn would load it."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", "import atlas.wsgi"], cwd=ROOT,
                            env=_child_env(media_root), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    imported = {line.rsplit("|", 1)[1].strip().split(".")[0] for line in result.stderr.splitlines()
                if line.startswith("import time:") and line.count("|") == 2}
    assert {"django", "numpy", "atlas", "workers"} <= imported  # the listing is real
    assert imported & FORBIDDEN == set()

