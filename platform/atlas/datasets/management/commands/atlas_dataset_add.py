"""Tokenize a dataset for a model from a .txt / .jsonl file on the server or a Hugging Face dataset name."""

from pathlib import Path
from typing import Any

from django.core.files import File
from django.core.management.base import BaseCommand, CommandError, CommandParser

from atlas.datasets.models import Dataset
from atlas.datasets.services import (
    DatasetError,
    dataset_create,
    dataset_documents_from_file,
    dataset_documents_from_huggingface,
)
from atlas.lms.models import LanguageModel


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--model", required=True, help="model id")
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--path", help=".txt or .jsonl file on this server")
        source.add_argument("--huggingface", help="Hugging Face dataset name (needs hub access)")
        parser.add_argument("--context-length", type=int, default=128)
        parser.add_argument("--max-sequences", type=int, default=None)

    def handle(self, *args: Any, **options: Any) -> None:
        model = LanguageModel.objects.filter(slug=options["model"]).first()
        if model is None:
            raise CommandError(f"No model '{options['model']}'; register it with atlas_model_add first.")
        try:
            if options["path"]:
                path = Path(options["path"])
                with path.open("rb") as handle:
                    documents = dataset_documents_from_file(File(handle, name=path.name))
                kind, source = Dataset.SourceKind.PATH, str(path.resolve())
            else:
                documents = dataset_documents_from_huggingface(options["huggingface"])
                kind, source = Dataset.SourceKind.HUGGINGFACE, options["huggingface"]
            dataset = dataset_create(
                slug=options["slug"],
                language_model=model,
                documents=documents,
                source_kind=kind,
                source=source,
                context_length=options["context_length"],
                max_sequences=options["max_sequences"],
            )
        except (DatasetError, OSError) as error:
            raise CommandError(str(error)) from error
        shape = f"{dataset.n_sequences} x {dataset.context_length} tokens"
        self.stdout.write(self.style.SUCCESS(f"Dataset {dataset.slug}: {shape}."))
