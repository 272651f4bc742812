"""Reads of datasets: the stored token ids."""

import numpy as np
import numpy.typing as npt

from atlas.datasets.models import Dataset


def dataset_tokens(dataset: Dataset, n_sequences: int | None = None) -> npt.NDArray[np.int32]:
    """Token ids [n_sequences, context_length], memory-mapped so large datasets are not read whole."""
    tokens: npt.NDArray[np.int32] = np.load(dataset.tokens_path, mmap_mode="r", allow_pickle=False)
    return tokens[:n_sequences] if n_sequences else tokens


def datasets_list() -> list[Dataset]:
    return list(Dataset.objects.select_related("language_model"))
