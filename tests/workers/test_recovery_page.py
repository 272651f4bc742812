"""The SAE page's run panel in a real browser (Debian's chromium): a shard whose worker went silent is flagged as
it happens, and the recovery's events appear without a reload."""

import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connections
from django.test import Client
from django.utils import timezone
from pytest_django.live_server_helper import LiveServer

from atlas.datasets.models import Dataset
from atlas.saes.models import DashboardRun, DashboardShard
from atlas.saes.services import runs_recover
from tests import factories
from tests.e2e.test_browser import CHROMIUM, watched_chromium

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed: `apt-get install "
                                                         "chromium` (make install-dev does it when run as root)")


def _in_a_thread(work: Callable[[], object]) -> None:
    """Database work while Playwright's event loop runs in this thread, where Django refuses it."""

    def closing() -> None:
        try:
            work()
        finally:
            connections.close_all()  # the thread's own connection, or the test database could not be dropped

    thread = threading.Thread(target=closing)
    thread.start()
    thread.join()


def test_the_run_panel_flags_a_silent_shard_then_shows_it_handed_on(
    live_server: LiveServer, settings: Any, dataset: Dataset, sae_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("atlas.saes.services.celery_app.send_task", lambda *args, **kwargs: None)
    settings.ATLAS_SHARD_STALE_SECONDS = 120
    client = Client()
    client.force_login(factories.user_make())
    sae = factories.sae_upload_post(client, dataset, factories.sae_upload_files(sae_dir))
    run = sae.runs.get()
    DashboardRun.objects.filter(pk=run.pk).update(status=DashboardRun.Status.RUNNING)
    DashboardShard.objects.filter(run=run).update(status=DashboardShard.Status.RUNNING, attempts=1,
                                                  worker="runs@dead-host",
                                                  heartbeat=timezone.now() - timedelta(seconds=300))

    path = f"/{sae.language_model.slug}/{sae.slug}/"

    with watched_chromium(live_server.url) as browser:
        browser.open(path)
        late = browser.page.locator('#run [data-field="late"]')
        late.wait_for(state="visible")
        assert "Shard 1: no heartbeat for 30" in late.inner_text() and "runs@dead-host" in late.inner_text()

        _in_a_thread(lambda: runs_recover(now=timezone.now()))
        events = browser.page.locator('#run [data-field="events"] li')
        events.first.wait_for()
        assert "Shard 1 of 1: worker runs@dead-host stopped reporting" in events.first.inner_text()
        late.wait_for(state="hidden")
        assert browser.errors == []
