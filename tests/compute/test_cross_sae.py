"""cross_sae_neighbours against a brute-force cosine matrix of two random SAEs' decoders, on the CPU and (marked
gpu) CUDA."""

import numpy as np
import numpy.typing as npt
import pytest
import torch

from tests.support.devices import devices
from workers.compute.cross_sae import cross_sae_neighbours


def _decoder(n_features: int, d_in: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randn(n_features, d_in, generator=torch.Generator().manual_seed(seed))


def _brute_force_cosines(W_a: torch.Tensor, W_b: torch.Tensor) -> npt.NDArray[np.float64]:
    """Every pair's cosine in float64; 0 where either row is zero."""
    a, b = W_a.double().numpy(), W_b.double().numpy()
    norms = np.linalg.norm(a, axis=1)[:, None] * np.linalg.norm(b, axis=1)[None, :]
    cosines: npt.NDArray[np.float64] = np.divide(a @ b.T, norms, out=np.zeros(norms.shape), where=norms > 0)
    return cosines


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("chunk", [None, 1, 7, 40])
def test_neighbours_match_brute_force_cosines_whatever_the_chunk(chunk: int | None, device: str) -> None:
    W_a, W_b = _decoder(40, seed=1), _decoder(70, seed=2)
    ids, cosines = cross_sae_neighbours(W_a.to(device), W_b.to(device), n=10, chunk=chunk)
    reference = _brute_force_cosines(W_a, W_b)
    expected = np.argsort(-reference, axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_allclose(cosines, np.take_along_axis(reference, expected, axis=1), atol=1e-6)
    assert ids.dtype == np.int64 and cosines.dtype == np.float32
    assert ids.shape == (40, 10)


def test_a_feature_finds_its_copy_in_the_other_sae() -> None:
    W_a, W_b = _decoder(20, seed=1), _decoder(30, seed=2)
    W_b[17] = W_a[4] * 3.0
    ids, cosines = cross_sae_neighbours(W_a, W_b, n=3)
    assert ids[4, 0] == 17
    assert cosines[4, 0] == pytest.approx(1.0, abs=1e-6)


def test_zero_rows_have_cosine_zero_and_ties_list_the_lower_id_first() -> None:
    W_a, W_b = _decoder(8, seed=1), _decoder(12, seed=2)
    W_a[3] = 0.0
    W_b[[2, 9]] = 0.0
    ids, cosines = cross_sae_neighbours(W_a, W_b, n=12)
    assert ids[3].tolist() == list(range(12))
    assert np.all(cosines[3] == 0.0)
    for row_ids, row_cosines in zip(ids, cosines, strict=True):
        assert row_cosines[row_ids == 2] == row_cosines[row_ids == 9] == 0.0
        assert np.flatnonzero(row_ids == 2) < np.flatnonzero(row_ids == 9)


def test_equal_cosines_list_the_lower_id_first() -> None:
    W_a = _decoder(5, seed=1)
    W_b = torch.cat([_decoder(6, seed=2), W_a[:1], W_a[:1] * 2.0, W_a[:1]])  # three copies of a's feature 0
    ids, _ = cross_sae_neighbours(W_a, W_b, n=2)
    assert ids[0].tolist() == [6, 7]


def test_n_above_the_other_sae_lists_all_its_features() -> None:
    ids, cosines = cross_sae_neighbours(_decoder(6, seed=1), _decoder(4, seed=2), n=10)
    assert ids.shape == cosines.shape == (6, 4)
    assert [sorted(row) for row in ids.tolist()] == [[0, 1, 2, 3]] * 6


def test_decoders_of_different_width_are_refused() -> None:
    with pytest.raises(ValueError, match="d_in 16 and 8"):
        cross_sae_neighbours(_decoder(3), _decoder(3, d_in=8))
