"""feature_correlations from the dashboard pass's kept entries against numpy.corrcoef on the dense activations of
the tiny model (the fixture of test_dashboard_reference), never-firing features included."""

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pytest
import torch

from tests.compute.test_dashboard_reference import HOOK, NEVER_FIRING, PARAMS, model_make, sae_make, tokens_make
from workers.compute import correlations
from workers.compute.correlations import FeatureCorrelations, feature_correlations, feature_correlations_of_shards
from workers.compute.dashboard import shard_pass
from workers.compute.results import ActiveLayout, ShardState

K = 10


@dataclass
class Run:
    counted: npt.NDArray[np.float64]  # [N * (T - 1), F] every counted activation, BOS excluded
    states: list[ShardState]  # two shards of the run
    result: FeatureCorrelations


@pytest.fixture(scope="module")
def run() -> Run:
    model, tokens = model_make(), tokens_make()
    with torch.inference_mode():
        _, cache = model.run_with_cache(torch.from_numpy(tokens))
        sae = sae_make(cache[HOOK])
        acts = sae.encode(cache[HOOK]).numpy().astype(np.float64)  # [N, T, F]
        split = 2 * PARAMS.batch_size
        states = [shard_pass(model, sae, tokens[:split], HOOK, 0, PARAMS),
                  shard_pass(model, sae, tokens[split:], HOOK, split, PARAMS)]  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(correlations, "CORRELATION_BLOCK_ELEMENTS", 7 * acts.shape[2])  # blocks of 7 features
        result = feature_correlations_of_shards(states[::-1], first_pos=1, k=K)
    return Run(acts[:, 1:].reshape(-1, acts.shape[2]), states, result)


def _reference(counted: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """numpy.corrcoef of the features that vary, -inf for the others and on the diagonal."""
    varies = counted.std(axis=0) > 0
    r = np.full((counted.shape[1], counted.shape[1]), -np.inf)
    r[np.ix_(varies, varies)] = np.corrcoef(counted[:, varies], rowvar=False)
    np.fill_diagonal(r, -np.inf)
    return r


def test_correlations_equal_numpy_corrcoef_on_the_dense_activations(run: Run) -> None:
    reference = _reference(run.counted)
    firing = np.setdiff1d(np.arange(reference.shape[0]), NEVER_FIRING)
    expected_values = -np.sort(-reference, axis=1)[:, :K]
    np.testing.assert_allclose(run.result.values[firing], expected_values[firing], atol=1e-6)
    chosen = np.take_along_axis(reference[firing], run.result.ids[firing], axis=1)
    np.testing.assert_allclose(chosen, expected_values[firing], atol=1e-6)  # the ids carry those values


def test_the_fixture_ranks_negative_correlations_too(run: Run) -> None:
    """Some top-k partners never co-fire (r < 0): the exact path beyond co-firing candidates is exercised."""
    assert (run.result.values < 0).any()
    assert (run.result.values > 0.1).any()


def test_never_firing_features_have_no_partners_and_no_nan(run: Run) -> None:
    assert np.all(np.isfinite(run.result.values))
    assert np.all(run.result.ids[NEVER_FIRING] == -1)
    assert np.all(run.result.values[NEVER_FIRING] == 0.0)
    assert not np.isin(run.result.ids, NEVER_FIRING).any()


def test_a_feature_is_never_its_own_partner(run: Run) -> None:
    assert not (run.result.ids == np.arange(run.result.ids.shape[0])[:, None]).any()
    assert run.result.ids.shape == (run.counted.shape[1], K)


def test_the_result_does_not_depend_on_the_block_size(run: Run) -> None:
    whole = feature_correlations_of_shards(run.states, first_pos=1, k=K)
    np.testing.assert_array_equal(whole.ids, run.result.ids)
    np.testing.assert_allclose(whole.values, run.result.values, atol=1e-7)


def test_bos_entries_are_left_out() -> None:
    layout = ActiveLayout(d_sae=3, seq_len=4, batch_size=1)
    seq, pos, feature = torch.tensor([0, 0, 0, 0, 0]), torch.tensor([0, 0, 1, 2, 3]), torch.tensor([0, 1, 0, 1, 0])
    keys = layout.key(seq, pos, feature)
    order = keys.argsort()
    values = np.array([5.0, 5.0, 1.0, 2.0, 1.0], dtype=np.float32)
    result = feature_correlations(keys[order].numpy(), values[order.numpy()], layout, n_seqs=1, first_pos=1, k=2)
    # Counted tokens 1..3: feature 0 is [1, 0, 1] and feature 1 is [0, 2, 0]: r = -1; feature 2 never fires.
    assert result.ids.tolist() == [[1, -1], [0, -1], [-1, -1]]
    np.testing.assert_allclose(result.values, [[-1.0, 0.0], [-1.0, 0.0], [0.0, 0.0]], atol=1e-6)


def test_a_run_with_no_counted_token_is_refused() -> None:
    layout = ActiveLayout(d_sae=3, seq_len=1, batch_size=1)
    with pytest.raises(ValueError, match="count no token"):
        feature_correlations(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32), layout, n_seqs=1, first_pos=1)
