"""Add an SAE by SAELens release and id (needs hub access, or the files already in the hub cache)."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from atlas.datasets.models import Dataset
from atlas.lms.models import LanguageModel
from atlas.saes.services import RunParams, SaeUploadError, sae_release_add


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--release", required=True, help='SAELens release, e.g. "gpt2-small-res-jb"')
        parser.add_argument("--sae-id", required=True, help='id within the release, e.g. "blocks.8.hook_resid_pre"')
        parser.add_argument("--model", required=True, help="model id")
        parser.add_argument("--dataset", required=True, help="dataset id")
        parser.add_argument("--slug", default="", help="SAE id; default <layer>-res-<width>")
        parser.add_argument("--sequences", type=int, default=None)

    def handle(self, *args: Any, **options: Any) -> None:
        model = LanguageModel.objects.filter(slug=options["model"]).first()
        dataset = Dataset.objects.filter(slug=options["dataset"]).first()
        if model is None or dataset is None:
            raise CommandError(f"No model '{options['model']}' or no dataset '{options['dataset']}'.")
        try:
            sae = sae_release_add(
                language_model=model, dataset=dataset, uploaded_by=None, release=options["release"],
                sae_id=options["sae_id"], slug=options["slug"], params=RunParams(n_sequences=options["sequences"]),
            )
        except SaeUploadError as error:
            raise CommandError(error.message) from error
        self.stdout.write(self.style.SUCCESS(f"SAE {sae.slug} stored; its dashboard run is queued."))
