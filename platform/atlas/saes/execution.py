"""Worker-side services: run an SAE's dashboard pass on the worker's device and publish the results."""

import logging
import os
import time
from collections.abc import Callable

import torch
from django.conf import settings
from django.utils import timezone
from transformer_lens import HookedTransformer

from atlas.datasets.selectors import dataset_tokens
from atlas.features.services import run_results_publish
from atlas.lms.models import LanguageModel
from atlas.lms.selectors import language_model_source
from atlas.saes.models import DashboardRun
from workers.compute.dashboard import dashboards_compute
from workers.compute.language_model import load_language_model
from workers.compute.results import DashboardParams, FeatureDashboards
from workers.compute.sae import SaeFormatError, sae_load

logger = logging.getLogger(__name__)

# One model stays loaded per worker process: loading SmolLM2 takes seconds, a run may follow a run.
_loaded: dict[tuple[int, str], HookedTransformer] = {}


def worker_device() -> str:
    return os.environ.get("ATLAS_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")


def _model_for(language_model: LanguageModel, device: str) -> HookedTransformer:
    key = (language_model.pk, device)
    if key not in _loaded:
        _loaded.clear()
        _loaded[key] = load_language_model(language_model_source(language_model), device=device)
    return _loaded[key]


def _progress_writer(run_id: int) -> Callable[[str, int, int], None]:
    """Write progress at most every ATLAS_RUN_PROGRESS_SECONDS so the database is not hammered."""
    last = 0.0

    def write(phase: str, done: int, total: int) -> None:
        nonlocal last
        now = time.monotonic()
        if done < total and now - last < settings.ATLAS_RUN_PROGRESS_SECONDS:
            return
        last = now
        DashboardRun.objects.filter(pk=run_id).update(phase=phase, progress_done=done, progress_total=total)

    return write


def dashboards_for_run(run: DashboardRun, device: str, progress: Callable[[str, int, int], None]) -> FeatureDashboards:
    model = _model_for(run.sae.language_model, device)
    sae = sae_load(run.sae.files_path, device=device)
    params = DashboardParams(top_k=run.top_k, context_before=run.context_before, context_after=run.context_after)
    tokens = dataset_tokens(run.dataset, run.n_sequences)
    return dashboards_compute(model, sae, tokens, run.sae.hook_name, params, progress=progress)


def dashboard_run_fail(run_id: int, message: str) -> None:
    DashboardRun.objects.filter(pk=run_id).update(
        status=DashboardRun.Status.FAILED, error=message, finished=timezone.now()
    )


def dashboard_run_execute(run_id: int) -> None:
    """Compute and publish a run's dashboards (the worker task's body); failures are recorded, not raised."""
    run = DashboardRun.objects.select_related("sae__language_model", "dataset").filter(pk=run_id).first()
    if run is None or run.status == DashboardRun.Status.SUCCEEDED:
        logger.info("run %s is gone or already done; nothing to do", run_id)
        return
    device = worker_device()
    DashboardRun.objects.filter(pk=run_id).update(
        status=DashboardRun.Status.RUNNING, started=timezone.now(), error="", finished=None, device=device
    )
    progress = _progress_writer(run_id)
    try:
        dashboards = dashboards_for_run(run, device, progress)
        progress("saving", 0, run.sae.d_sae)
        run_results_publish(run=run, dashboards=dashboards)
    except SaeFormatError as error:
        dashboard_run_fail(run_id, str(error))
    except Exception as error:  # the worker must survive any run; the message goes to the SAE page
        logger.exception("run %s failed", run_id)
        dashboard_run_fail(run_id, f"{type(error).__name__}: {error}")
