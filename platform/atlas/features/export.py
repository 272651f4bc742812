"""An SAE's published dashboards written in the layout Neuronpedia's importer reads, so they can move to it.

Neuronpedia's `/api/admin/import?modelId=<model>&sourceId=<source>` reads `<model>/<source>/` under its datasets
root: model.jsonl, sourceset.jsonl and source.jsonl (one row each), then every features/*.jsonl.gz and
activations/*.jsonl.gz, each line one row of its Neuron or Activation table (keys are column names), and last
explanations/*.jsonl.gz, rows of its Explanation table (the features' labels). Batches hold 1024 features and those
features' activations and explanations, as Neuronpedia's own export script writes them.
"""

import gzip
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atlas.features.schemas import FeatureOut
from atlas.features.selectors import features_detail
from atlas.saes.models import Sae

# Features per features/ and activations/ batch file, as in Neuronpedia's export-data.py.
EXPORT_BATCH_FEATURES = 1024
# The creator Neuronpedia's export and convert scripts fall back to; rows name their creator, which must exist.
NEURONPEDIA_DEFAULT_CREATOR_ID = "clkht01d40000jv08hvalcvly"
# Neuronpedia's Activation rows carry these; Atlas computes no DFA, so they are empty.
_NO_DFA: dict[str, Any] = {"dfaValues": [], "dfaMaxValue": None, "dfaTargetIndex": None}
# Neuron columns for what Atlas does not compute (alignments, correlations, steering vectors), written empty.
_NEURON_EMPTY_LISTS = (
    "neuron_alignment_indices", "neuron_alignment_l1", "neuron_alignment_values", "correlated_neurons_indices",
    "correlated_neurons_l1", "correlated_neurons_pearson", "decoder_weights_dist", "vector",
)
# Neuron columns the API payload carries under the same name when the run has them (decoder-cosine neighbours).
_NEURON_OPTIONAL_LISTS = ("topkCosSimIndices", "topkCosSimValues")


class ExportError(ValueError):
    """An SAE that cannot be exported; the message says why."""


@dataclass(frozen=True)
class NeuronpediaSource:
    """Where the SAE lands on Neuronpedia: source ids are "<layer>-<set name>", e.g. 5-res-demo in set res-demo."""

    model_id: str
    source_id: str
    set_name: str
    creator_id: str

    def row(self, **fields: Any) -> dict[str, Any]:
        return {"modelId": self.model_id, "layer": self.source_id, "creatorId": self.creator_id, **fields}


def neuronpedia_source(sae: Sae, creator_id: str) -> NeuronpediaSource:
    prefix = f"{sae.layer}-"
    set_name = sae.slug.removeprefix(prefix) if sae.layer is not None and sae.slug.startswith(prefix) else sae.slug
    return NeuronpediaSource(sae.language_model.slug, sae.slug, set_name, creator_id)


def _model_row(sae: Sae, source: NeuronpediaSource) -> dict[str, Any]:
    model = sae.language_model
    return {
        "id": model.slug, "displayName": model.display_name, "displayNameShort": model.display_name,
        "creatorId": source.creator_id, "instruct": model.slug.endswith(("-it", "-instruct")),
        "dimension": model.d_model, "layers": model.n_layers, "neuronsPerLayer": model.d_model,
        "visibility": "PUBLIC", "inferenceEnabled": False, "owner": "",
    }


def _source_set_row(sae: Sae, source: NeuronpediaSource) -> dict[str, Any]:
    return {
        "modelId": source.model_id, "name": source.set_name, "creatorId": source.creator_id,
        "creatorName": "SAE Atlas", "description": sae.description or sae.hook_name, "hasDashboards": True,
        "visibility": "PUBLIC", "type": "", "urls": [],
    }


def _source_row(sae: Sae, source: NeuronpediaSource) -> dict[str, Any]:
    run = sae.published_run
    assert run is not None
    return {
        "id": source.source_id, "modelId": source.model_id, "setName": source.set_name,
        "creatorId": source.creator_id, "hasDashboards": True, "inferenceEnabled": False, "visibility": "PUBLIC",
        "saelensConfig": json.dumps(sae.cfg), "dataset": run.dataset.source, "num_prompts": run.n_sequences,
        "num_tokens_in_prompt": run.dataset.context_length, "notes": sae.description or None,
    }


def _feature_row(payload: dict[str, Any], source: NeuronpediaSource) -> dict[str, Any]:
    names = ("maxActApprox", "frac_nonzero", "freq_hist_data_bar_heights", "freq_hist_data_bar_values",
             "logits_hist_data_bar_heights", "logits_hist_data_bar_values", "neg_str", "neg_values", "pos_str",
             "pos_values")
    return source.row(
        index=str(payload["index"]),  # Neuronpedia's index columns are text
        sourceSetName=source.set_name,
        hasVector=False,
        vectorLabel=None,
        hookName=None,
        **{name: payload[name] for name in names},
        **{name: [] for name in _NEURON_EMPTY_LISTS},
        **{name: payload.get(name, []) for name in _NEURON_OPTIONAL_LISTS},
    )


def _activation_rows(payload: dict[str, Any], source: NeuronpediaSource, run_id: int) -> Iterator[dict[str, Any]]:
    for rank, activation in enumerate(payload["activations"]):
        yield source.row(
            # Stable ids, so that importing the same export twice adds nothing (the importer skips conflicts).
            id=f"atlas-{source.model_id}-{source.source_id}-{run_id}-{payload['index']}-{rank}",
            index=str(payload["index"]),
            dataSource=None,
            tokens=activation["tokens"],
            values=activation["values"],
            maxValue=activation["maxValue"],
            maxValueTokenIndex=activation["maxValueTokenIndex"],
            minValue=activation["minValue"],
            binMin=activation["binMin"],
            binMax=activation["binMax"],
            binContains=activation["binContains"],
            qualifyingTokenIndex=activation["qualifyingTokenIndex"],
            **_NO_DFA,
        )


def _explanation_rows(payload: dict[str, Any], source: NeuronpediaSource) -> Iterator[dict[str, Any]]:
    """Labels as Explanation rows. Their authors are Atlas users, which the target instance does not have, so the
    rows are the export's creator's and the Atlas author's name goes into the notes."""
    for explanation in payload["explanations"]:
        author = explanation["authorUsername"]
        yield {
            "id": f"atlas-{source.model_id}-{source.source_id}-explanation-{explanation['id']}",
            "modelId": source.model_id,
            "layer": source.source_id,
            "index": str(payload["index"]),
            "description": explanation["description"],
            "authorId": source.creator_id,
            "notes": f"Written by {author} on SAE Atlas." if author else "Written on SAE Atlas.",
            "typeName": None,
            "explanationModelName": None,
            "createdAt": explanation["createdAt"],
            "updatedAt": explanation["createdAt"],
        }


def _jsonl_write(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    path.write_text(text, encoding="utf-8")


def _jsonl_gz_write(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=5) as out:
        out.write(text)


def _batch_write(sae: Sae, source: NeuronpediaSource, target: Path, batch: int, batch_features: int) -> int:
    start = batch * batch_features
    views = features_detail(sae, range(start, min(start + batch_features, sae.d_sae)))
    payloads = [FeatureOut.from_view(view).model_dump(by_alias=True) for view in views]
    assert sae.published_run_id is not None
    activations = [row for payload in payloads for row in _activation_rows(payload, source, sae.published_run_id)]
    _jsonl_gz_write(target / "features" / f"batch-{batch}.jsonl.gz", [_feature_row(p, source) for p in payloads])
    _jsonl_gz_write(target / "activations" / f"batch-{batch}.jsonl.gz", activations)
    explanations = [row for payload in payloads for row in _explanation_rows(payload, source)]
    _jsonl_gz_write(target / "explanations" / f"batch-{batch}.jsonl.gz", explanations)
    return len(views)


def sae_export_neuronpedia(
    *,
    sae: Sae,
    directory: Path,
    creator_id: str = NEURONPEDIA_DEFAULT_CREATOR_ID,
    batch_features: int = EXPORT_BATCH_FEATURES,
    progress: Callable[[int], object] | None = None,
) -> Path:
    """Write the SAE's published dashboards under directory/<model>/<source>/; returns that folder.

    progress is called with the number of features written after each batch.
    """
    if sae.published_run is None:
        raise ExportError(f"{sae} has no published dashboards to export; wait for its run to finish.")
    source = neuronpedia_source(sae, creator_id)
    target = directory / source.model_id / source.source_id
    _jsonl_write(target / "model.jsonl", [_model_row(sae, source)])
    _jsonl_write(target / "sourceset.jsonl", [_source_set_row(sae, source)])
    _jsonl_write(target / "source.jsonl", [_source_row(sae, source)])
    for batch in range(-(-sae.d_sae // batch_features)):
        written = _batch_write(sae, source, target, batch, batch_features)
        if progress is not None:
            progress(written)
    return target
