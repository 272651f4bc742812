"""Import SAEDashboard's Neuronpedia batch files (batch-N.json) as the published dashboards of an existing SAE."""

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from atlas.datasets.models import Dataset
from atlas.errors import NotFound
from atlas.features.saedashboard_import import SaeDashboardImportError, sae_dashboards_import
from atlas.saes.selectors import sae_get


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("model", help="model id")
        parser.add_argument("sae", help="SAE id, e.g. 5-res-demo")
        parser.add_argument("files", nargs="+", type=Path, help="batch-N.json files written by SAEDashboard")
        parser.add_argument("--dataset", default="",
                            help="dataset id the run records; default the dataset of the SAE's latest run")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            sae = sae_get(options["model"], options["sae"])
        except NotFound as error:
            raise CommandError(str(error)) from error
        dataset = None
        if options["dataset"]:
            dataset = Dataset.objects.filter(slug=options["dataset"], language_model=sae.language_model).first()
            if dataset is None:
                raise CommandError(f"{sae.language_model.slug} has no dataset '{options['dataset']}'.")
        try:
            run = sae_dashboards_import(sae=sae, files=options["files"], dataset=dataset)
        except SaeDashboardImportError as error:
            raise CommandError(str(error)) from error
        live = run.features.filter(frac_nonzero__gt=0).count()
        self.stdout.write(self.style.SUCCESS(f"Run {run.pk} published for {sae}: {run.progress_total} features, "
                                             f"{live} of them live."))
