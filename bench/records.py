"""The records a benchmark's publish needs (a model, a dataset, an SAE and a run), with nothing on disk.

No model classes here: importing this registers nothing with Django, unlike bench.ingest_orm_baseline.
"""

from atlas.datasets.models import Dataset
from atlas.lms.models import LanguageModel
from atlas.saes.models import DashboardRun, Sae
from workers.compute.params import DashboardParams


def records_make(d_sae: int, slug: str) -> Sae:
    """An SAE on a model and dataset record; nothing on disk, since publishing reads no files."""
    language_model, _ = LanguageModel.objects.get_or_create(
        slug="bench", defaults={"display_name": "bench", "source_kind": LanguageModel.SourceKind.HF_LOCAL,
                                "source": "none", "d_model": 576, "n_layers": 30, "n_ctx": 2048, "d_vocab": 49152},
    )
    Dataset.objects.get_or_create(
        slug="bench", defaults={"language_model": language_model, "source_kind": Dataset.SourceKind.PATH,
                                "source": "none", "context_length": 128, "n_sequences": 4096, "tokens_file": "none"},
    )
    return Sae.objects.create(language_model=language_model, slug=slug, hook_name="blocks.5.hook_resid_post",
                              architecture="standard", d_in=576, d_sae=d_sae, files_dir="none")


def run_make(sae: Sae, params: DashboardParams) -> DashboardRun:
    dataset = Dataset.objects.get(slug="bench")
    return DashboardRun.objects.create(sae=sae, dataset=dataset, n_sequences=dataset.n_sequences,
                                       params=params.as_json(), tokens_total=dataset.n_tokens)
