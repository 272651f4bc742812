"""Export an SAE's published dashboards in Neuronpedia's import layout, under <dir>/<model>/<sae>/."""

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from atlas.errors import NotFound
from atlas.features.export import NEURONPEDIA_DEFAULT_CREATOR_ID, ExportError, sae_export_neuronpedia
from atlas.saes.selectors import sae_get


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("model", help="model id")
        parser.add_argument("sae", help="SAE id, e.g. 5-res-demo")
        parser.add_argument("dir", type=Path, help="folder that holds <model>/<sae>/, as Neuronpedia's datasets root")
        parser.add_argument("--creator-id", default=NEURONPEDIA_DEFAULT_CREATOR_ID,
                            help="Neuronpedia user id the rows name as creator; it must exist where they are imported")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            sae = sae_get(options["model"], options["sae"])
        except NotFound as error:
            raise CommandError(str(error)) from error
        with tqdm(total=sae.d_sae, unit="feature", desc=f"export {sae}") as bar:
            try:
                target = sae_export_neuronpedia(sae=sae, directory=options["dir"], creator_id=options["creator_id"],
                                                progress=bar.update)
            except ExportError as error:
                raise CommandError(str(error)) from error
        self.stdout.write(self.style.SUCCESS(f"Wrote {target}; import it on Neuronpedia with "
                                             f"/api/admin/import?modelId={sae.language_model.slug}&sourceId={sae.slug}"))
