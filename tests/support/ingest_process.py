"""A separate Django process against DATABASE_URL, for tests that restart or migrate a private Postgres.

    python -m tests.support.ingest_process setup N      migrate; publish a first run of N features and
                                                          create a second; prints their ids as JSON
    python -m tests.support.ingest_process publish RUN N publish N synthetic features for RUN
    python -m tests.support.ingest_process legacy        migrate to the row-per-example schema, store
                                                          LEGACY_FEATURE there, then migrate to the latest
"""

import json
import os
import sys
from typing import Any

import django

LEGACY_CONTEXT = (3, 1)  # context_before, context_after
LEGACY_TOP_K = 2
# One feature in the row-per-example schema (features 0001): a top example that starts at the sequence's
# first token, and examples in intervals 4 and 1 of 5.
LEGACY_FEATURE: dict[str, Any] = {
    "index": 7, "frac_nonzero": 0.02, "max_act": 5.0, "act_hist_counts": [4, 0, 2],
    "logit_pos_ids": [9, 8], "logit_pos_values": [1.5, 1.25], "logit_neg_ids": [1, 2],
    "logit_neg_values": [-1.5, -1.0], "logit_hist_counts": [1, 3], "logit_hist_min": -2.0, "logit_hist_max": 2.0,
}
LEGACY_EXAMPLES: list[dict[str, Any]] = [
    {"kind": 0, "rank": 0, "token_ids": [20, 21, 22], "values": [0.0, 5.0, 0.5], "focus": 1, "value": 5.0},
    {"kind": 1, "rank": 0, "bin_min": 4.0, "bin_max": 5.0, "bin_contains": 0.125, "token_ids": [30, 31, 32, 33, 34],
     "values": [0.0, 0.0, 0.0, 4.5, 1.0], "focus": 3, "value": 4.5},
    {"kind": 1, "rank": 1, "bin_min": 4.0, "bin_max": 5.0, "bin_contains": 0.125, "token_ids": [40, 41, 42, 43, 44],
     "values": [0.25, 0.0, 0.0, 4.25, 0.0], "focus": 3, "value": 4.25},
    {"kind": 1, "rank": 0, "bin_min": 1.0, "bin_max": 2.0, "bin_contains": 0.5, "token_ids": [50, 51, 52, 53],
     "values": [0.0, 0.0, 0.0, 1.75], "focus": 3, "value": 1.75},
]


def _setup(n_features: int) -> None:
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from atlas.features.services import run_results_publish
    from bench.ingest import dashboards_synthetic
    from bench.records import records_make, run_make
    from workers.compute.params import DashboardParams

    sae = records_make(n_features, slug="restart")
    published, pending = run_make(sae, DashboardParams()), run_make(sae, DashboardParams())
    run_results_publish(run=published, dashboards=dashboards_synthetic(n_features, seed=1))
    print(json.dumps({"published": published.pk, "pending": pending.pk}))


def _publish(run_id: int, n_features: int) -> None:
    from atlas.features.services import run_results_publish
    from atlas.saes.models import DashboardRun
    from bench.ingest import dashboards_synthetic

    dashboards = dashboards_synthetic(n_features, seed=2)
    print("publishing", flush=True)
    run_results_publish(run=DashboardRun.objects.get(pk=run_id), dashboards=dashboards)


def _legacy() -> None:
    from django.core.management import call_command
    from django.db import connection
    from django.db.migrations.loader import MigrationLoader

    call_command("migrate", "features", "0001_initial", verbosity=0)
    # Every record through the models as they were then, whatever the apps' models look like now.
    apps = MigrationLoader(connection).project_state(("features", "0001_initial")).apps
    language_model = apps.get_model("lms", "LanguageModel").objects.create(
        slug="legacy", display_name="legacy", source_kind="hf_local", source="none", d_model=8, n_layers=1,
        n_ctx=64, d_vocab=100,
    )
    dataset = apps.get_model("datasets", "Dataset").objects.create(
        slug="legacy", language_model=language_model, source_kind="path", source="none", context_length=64,
        n_sequences=4, tokens_file="none",
    )
    sae = apps.get_model("saes", "Sae").objects.create(
        language_model=language_model, slug="legacy", hook_name="blocks.0.hook_resid_post", architecture="standard",
        d_in=8, d_sae=8, files_dir="none",
    )
    run = apps.get_model("saes", "DashboardRun").objects.create(
        sae=sae, dataset=dataset, n_sequences=4, top_k=LEGACY_TOP_K, context_before=LEGACY_CONTEXT[0],
        context_after=LEGACY_CONTEXT[1], tokens_total=256, status="succeeded",
    )
    feature = apps.get_model("features", "Feature").objects.create(run=run, **LEGACY_FEATURE)
    example_model = apps.get_model("features", "FeatureExample")
    example_model.objects.bulk_create([example_model(feature=feature, **row) for row in LEGACY_EXAMPLES])
    call_command("migrate", verbosity=0)


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "atlas.settings")
    django.setup()
    command, *arguments = sys.argv[1:]
    if command == "setup":
        _setup(int(arguments[0]))
    elif command == "publish":
        _publish(int(arguments[0]), int(arguments[1]))
    elif command == "legacy":
        _legacy()
    else:
        raise SystemExit(f"unknown command {command!r}; see the module docstring")


if __name__ == "__main__":
    main()
