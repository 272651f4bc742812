"""The interval samples' keys: splitmix64 of (seed, entry index), the same on every device and for any chunking."""

import numpy as np
import pytest
import torch
from scipy import stats

from tests.support.devices import devices
from workers.compute.dashboard import sample_keys_of

MASK = (1 << 64) - 1


def splitmix64_reference(index: int, seed: int) -> float:
    """The same hash in Python's unbounded integers, reduced mod 2**64 at each step."""
    z = ((index + 1) * 0x9E3779B97F4A7C15 + seed * 0xD1B54A32D192ED03) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    z ^= z >> 31
    return (z >> 11) / float(1 << 53)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("seed", [0, 7, 2**40 + 3])
def test_keys_equal_the_python_reference(device: str, seed: int) -> None:
    entries = torch.tensor([0, 1, 2, 1000, 2**31 + 5, 2**40], dtype=torch.int64, device=device)
    got = sample_keys_of(entries, seed).cpu().tolist()
    assert got == [splitmix64_reference(int(entry), seed) for entry in entries.cpu()]


def test_keys_do_not_depend_on_the_chunks() -> None:
    entries = torch.arange(10_000, dtype=torch.int64)
    whole = sample_keys_of(entries, 3)
    pieces = torch.cat([sample_keys_of(part, 3) for part in torch.split(entries, 777)])
    assert torch.equal(whole, pieces)


def test_keys_are_uniform_and_differ_with_the_seed() -> None:
    entries = torch.arange(200_000, dtype=torch.int64)
    keys = sample_keys_of(entries, 0).numpy()
    assert ((keys >= 0) & (keys < 1)).all()
    assert stats.kstest(keys, "uniform").pvalue > 1e-3
    assert np.unique(keys).size == keys.size
    assert not np.array_equal(keys[:100], sample_keys_of(entries[:100], 1).numpy())
