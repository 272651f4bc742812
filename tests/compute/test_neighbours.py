"""decoder_neighbours against a brute-force cosine matrix of the decoder rows, on the CPU and (marked gpu) CUDA."""

import numpy as np
import numpy.typing as npt
import pytest
import torch

from tests.support.devices import devices
from workers.compute.neighbours import decoder_neighbours


def _decoder(n_features: int = 50, d_in: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randn(n_features, d_in, generator=torch.Generator().manual_seed(seed))


def _brute_force_cosines(decoder: torch.Tensor) -> npt.NDArray[np.float64]:
    """Every pair's cosine in float64, a feature's cosine with itself ruled out."""
    rows = decoder.double().numpy()
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    cosines: npt.NDArray[np.float64] = (rows @ rows.T) / np.maximum(norms * norms.T, 1e-300)
    np.fill_diagonal(cosines, -np.inf)
    return cosines


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("chunk", [None, 1, 7, 50])
def test_neighbours_match_brute_force_cosines_whatever_the_chunk(chunk: int | None, device: str) -> None:
    decoder = _decoder()
    ids, cosines = decoder_neighbours(decoder.to(device), n=10, chunk=chunk)
    reference = _brute_force_cosines(decoder)
    expected = np.argsort(-reference, axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_allclose(cosines, np.take_along_axis(reference, expected, axis=1), atol=1e-6)
    assert (ids.dtype, cosines.dtype, ids.shape) == (np.int64, np.float32, (50, 10))


def test_a_feature_is_never_its_own_neighbour() -> None:
    decoder = _decoder(n_features=12)
    decoder[5] = decoder[3] * 2.0  # a duplicate direction is the nearest, but only for the other one
    ids, cosines = decoder_neighbours(decoder, n=11)
    assert all(index not in row for index, row in enumerate(ids.tolist()))
    assert (ids[3, 0], ids[5, 0]) == (5, 3)
    assert cosines[3, 0] == pytest.approx(1.0, abs=1e-6)


def test_cosine_ignores_the_decoder_norm() -> None:
    decoder = _decoder()
    scaled = decoder * torch.linspace(0.1, 10.0, decoder.shape[0]).unsqueeze(1)
    np.testing.assert_array_equal(decoder_neighbours(decoder)[0], decoder_neighbours(scaled)[0])


def test_a_small_sae_lists_every_other_feature() -> None:
    ids, cosines = decoder_neighbours(_decoder(n_features=4), n=10)
    assert ids.shape == cosines.shape == (4, 3)
    assert [sorted(row) for row in ids.tolist()] == [[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]]


def test_a_zero_decoder_row_has_cosine_zero() -> None:
    decoder = _decoder(n_features=6)
    decoder[2] = 0.0
    ids, cosines = decoder_neighbours(decoder, n=5)
    others = np.arange(6)[:, None] != 2
    assert np.all(cosines[2] == 0.0)
    assert np.all(cosines[others & (ids == 2)] == 0.0)
    assert np.all(cosines[others & (ids != 2)] != 0.0)


def test_one_feature_has_no_neighbours() -> None:
    ids, cosines = decoder_neighbours(_decoder(n_features=1))
    assert ids.shape == cosines.shape == (1, 0)
