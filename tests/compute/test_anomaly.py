"""Anomaly scores on the tiny model and SAE: equal to a brute-force computation, and a dataset's own tokens read
uniform percentiles from its quantile table."""

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats
from transformer_lens import HookedTransformer

from tests import factories
from tests.support.tiny_model import TINY_HOOK, tiny_model_dir
from workers.compute import anomaly
from workers.compute.anomaly import (
    QUANTILES,
    TokenAnomaly,
    anomaly_distribution,
    dataset_anomaly_scores,
    feature_activations_with_anomaly,
    feature_surprisal,
    percentiles,
)
from workers.compute.language_model import ModelSource, load_language_model
from workers.compute.live import LiveTextError
from workers.compute.sae import SparseAutoencoder, sae_load

TEXT = "Return the number of items in a container.\tSplit the string at the first separator."
D_SAE = 48
N_SEQUENCES, SEQUENCE_LENGTH = 24, 32


@pytest.fixture(scope="module")
def model() -> HookedTransformer:
    return load_language_model(ModelSource(kind="hf_local", name_or_path=str(tiny_model_dir())))


@pytest.fixture(scope="module")
def sae(model: HookedTransformer, tmp_path_factory: pytest.TempPathFactory) -> SparseAutoencoder:
    directory: Path = tmp_path_factory.mktemp("sae")
    return sae_load(factories.sae_lens_write(directory, d_in=model.cfg.d_model, d_sae=D_SAE))


@pytest.fixture(scope="module")
def busy_sae(model: HookedTransformer, tmp_path_factory: pytest.TempPathFactory) -> SparseAutoencoder:
    """About half its features fire on each token, as on a trained SAE some always do: scores with no ties."""
    directory: Path = tmp_path_factory.mktemp("busy")
    return sae_load(factories.sae_lens_write_busy(directory, d_in=model.cfg.d_model, d_sae=D_SAE))


@pytest.fixture(scope="module")
def surprisal() -> np.ndarray:
    """Densities spread over six orders of magnitude, some features never seen (density 0)."""
    densities = np.geomspace(1e-6, 0.5, D_SAE)
    densities[::7] = 0.0
    return feature_surprisal(densities, n_tokens=10_000)


@pytest.fixture(scope="module")
def dataset_tokens(model: HookedTransformer) -> np.ndarray:
    """Random sequences, each starting with BOS as the datasets' do."""
    generator = np.random.default_rng(0)
    tokens = generator.integers(0, model.cfg.d_vocab, size=(N_SEQUENCES, SEQUENCE_LENGTH))
    tokens[:, 0] = model.tokenizer.bos_token_id
    return tokens


def _brute_force(model: HookedTransformer, sae: SparseAutoencoder, ids: list[int],
                 surprisal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each token's relative squared error and activation-weighted mean surprisal, one token at a time."""
    with torch.inference_mode():
        _, cache = model.run_with_cache(torch.tensor([ids]), names_filter=TINY_HOOK)
        hook = cache[TINY_HOOK][0].double()
    errors, rarities = [], []
    for x in hook:
        acts = sae.encode(x.float()).double()
        x_hat = sae.decode(acts.float()).double()
        errors.append(float(((x - x_hat) ** 2).sum() / (x**2).sum()))
        active = acts > 0
        rarities.append(float((acts[active] * torch.from_numpy(surprisal)[active]).sum() / acts[active].sum())
                        if active.any() else 0.0)
    return np.array(errors), np.array(rarities)


def test_surprisal_is_minus_log_density_with_unseen_features_at_one_token() -> None:
    found = feature_surprisal(np.array([0.5, 0.0, 1e-9]), n_tokens=1000)
    np.testing.assert_allclose(found, [np.log(2), np.log(1000), np.log(1000)])


def test_live_scores_equal_a_brute_force_computation(model: HookedTransformer, sae: SparseAutoencoder,
                                                     surprisal: np.ndarray) -> None:
    activations, scores = feature_activations_with_anomaly(model, sae, TINY_HOOK, TEXT, 3, surprisal)
    errors, rarities = _brute_force(model, sae, activations.token_ids.tolist(), surprisal)
    np.testing.assert_allclose(scores.reconstruction_error, errors, rtol=1e-4)
    np.testing.assert_allclose(scores.rarity, rarities, rtol=1e-4, atol=1e-6)
    assert (rarities[1:] > 0).any() and np.ptp(errors[1:]) > 0  # the test SAE makes them vary


def test_scores_do_not_depend_on_how_rows_are_chunked(model: HookedTransformer, sae: SparseAutoencoder,
                                                      surprisal: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    _, whole = feature_activations_with_anomaly(model, sae, TINY_HOOK, TEXT, 0, surprisal)
    monkeypatch.setattr(anomaly, "ENCODE_CHUNK_ELEMENTS", D_SAE * 3)  # three rows at a time
    _, chunked = feature_activations_with_anomaly(model, sae, TINY_HOOK, TEXT, 0, surprisal)
    np.testing.assert_allclose(chunked.reconstruction_error, whole.reconstruction_error, rtol=1e-6)
    np.testing.assert_allclose(chunked.rarity, whole.rarity, rtol=1e-6)


def test_a_feature_the_sae_lacks_is_refused(model: HookedTransformer, sae: SparseAutoencoder,
                                            surprisal: np.ndarray) -> None:
    with pytest.raises(LiveTextError, match="no feature 48"):
        feature_activations_with_anomaly(model, sae, TINY_HOOK, TEXT, D_SAE, surprisal)


def test_dataset_scores_leave_out_bos_and_equal_the_brute_force(
    model: HookedTransformer, sae: SparseAutoencoder, surprisal: np.ndarray, dataset_tokens: np.ndarray
) -> None:
    scores = dataset_anomaly_scores(model, sae, TINY_HOOK, dataset_tokens[:3], surprisal, batch_size=2)
    expected = [_brute_force(model, sae, row.tolist(), surprisal) for row in dataset_tokens[:3]]
    np.testing.assert_allclose(scores.reconstruction_error, np.concatenate([e[1:] for e, _ in expected]), rtol=1e-4)
    np.testing.assert_allclose(scores.rarity, np.concatenate([r[1:] for _, r in expected]), rtol=1e-4, atol=1e-6)


def test_the_quantile_table_is_numpys(model: HookedTransformer, busy_sae: SparseAutoencoder,
                                      surprisal: np.ndarray, dataset_tokens: np.ndarray) -> None:
    scores = dataset_anomaly_scores(model, busy_sae, TINY_HOOK, dataset_tokens, surprisal)
    table = anomaly_distribution(scores)
    levels = np.linspace(0, 1, QUANTILES)
    assert table.n_tokens == N_SEQUENCES * (SEQUENCE_LENGTH - 1)
    np.testing.assert_array_equal(table.reconstruction_error, np.quantile(scores.reconstruction_error, levels))
    np.testing.assert_array_equal(table.rarity, np.quantile(scores.rarity, levels))


@pytest.mark.parametrize("score", ["reconstruction_error", "rarity"])
def test_the_datasets_own_tokens_have_uniform_percentiles(
    model: HookedTransformer, busy_sae: SparseAutoencoder, surprisal: np.ndarray, dataset_tokens: np.ndarray,
    score: str,
) -> None:
    scores = dataset_anomaly_scores(model, busy_sae, TINY_HOOK, dataset_tokens, surprisal)
    values = getattr(scores, score)
    assert np.unique(values).size > 0.9 * values.size  # continuous: the test is not about ties
    found = percentiles(values, getattr(anomaly_distribution(scores), score))
    assert stats.kstest(found, "uniform").pvalue > 0.5
    counts, _ = np.histogram(found, bins=10, range=(0, 1))
    assert counts.min() >= 0.9 * values.size / 10


def test_percentiles_are_the_share_below_with_ties_counting_half() -> None:
    sample = np.array([0.0, 0.0, 1.0, 2.0, 3.0])
    table = anomaly_distribution(TokenAnomaly(reconstruction_error=sample, rarity=sample)).rarity
    found = percentiles(np.array([-1.0, 0.0, 2.0, 99.0]), table)
    np.testing.assert_allclose(found, [0.0, 0.125, 0.75, 1.0])


def test_percentiles_of_fresh_tokens_match_their_empirical_share(surprisal: np.ndarray) -> None:
    generator = np.random.default_rng(1)
    sample, fresh = generator.lognormal(size=20_000), generator.lognormal(size=200)
    table = anomaly_distribution(TokenAnomaly(reconstruction_error=sample, rarity=sample)).rarity
    shares = (sample[None, :] < fresh[:, None]).mean(axis=1)
    np.testing.assert_allclose(percentiles(fresh, table), shares, atol=2e-3)
