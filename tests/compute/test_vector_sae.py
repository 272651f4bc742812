"""Vectors as a linear 'SAE' (workers.compute.vector_sae): its files load as any SAE's, SAELens reads them the same,
and the dashboard engine's results for it equal the brute-force reference of relu(h·w + b) computed token by token,
with the logit lens of each vector's unit direction."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import torch
from transformer_lens import HookedTransformer

from tests.compute.test_dashboard_reference import (
    HOOK,
    N_SEQS,
    PARAMS,
    SEQ_LEN,
    Run,
    model_make,
    reference_bin,
    reference_top,
    reference_window,
    tokens_make,
)
from tests.support.devices import devices
from workers.compute.dashboard import dashboards_compute
from workers.compute.sae import SparseAutoencoder, sae_load
from workers.compute.sae_files import sae_files_check
from workers.compute.steering import SteerMethod, steering_direction, steering_hooks
from workers.compute.vector_sae import (
    VectorInSae,
    VectorSaeError,
    vector_sae_entries,
    vector_sae_tensors,
    vector_sae_write,
)

N_VECTORS = 6
# float32 against float64 dot products of 32 terms of up to ~10 each: their rounding apart, not a real difference.
ATOL = 2e-5
NEVER_FIRING = 4  # its bias is below every h·w
ZERO_BIAS = 5  # the default bias: fires wherever h·w > 0


@dataclass
class VectorRun:
    model: HookedTransformer
    vectors: npt.NDArray[np.float32]  # [n, d_in]
    biases: npt.NDArray[np.float32]  # [n]
    sae: SparseAutoencoder
    reference: Run  # acts: the brute-force activations [N, T, n]


def hook_activations(model: HookedTransformer, tokens: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
    with torch.inference_mode():
        _, cache = model.run_with_cache(torch.from_numpy(tokens).to(model.cfg.device), names_filter=HOOK)
        acts: npt.NDArray[np.float32] = cache[HOOK].float().cpu().numpy()
    return acts  # [N, T, d_in]


def vectors_make(hook_acts: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Random directions of various norms, biased to fire on 1% to 40% of tokens, one never, one with bias 0."""
    rng = np.random.default_rng(1)
    d_in = hook_acts.shape[-1]
    vectors = (rng.normal(size=(N_VECTORS, d_in)) * rng.uniform(0.2, 5.0, size=(N_VECTORS, 1))).astype(np.float32)
    dots = hook_acts.reshape(-1, d_in).astype(np.float64) @ vectors.T.astype(np.float64)  # [N * T, n]
    biases = -np.array([np.quantile(dots[:, i], q) for i, q in enumerate(np.linspace(0.99, 0.6, N_VECTORS))])
    biases[NEVER_FIRING] = -dots[:, NEVER_FIRING].max() - 1
    biases[ZERO_BIAS] = 0.0
    return vectors, biases.astype(np.float32)


def brute_force_acts(hook_acts: npt.NDArray[np.float32], vectors: npt.NDArray[np.float32],
                     biases: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """relu(h·w_i + b_i) for every token and vector, one dot product at a time, in float64."""
    n_seqs, seq_len, _ = hook_acts.shape
    acts = np.zeros((n_seqs, seq_len, len(vectors)), dtype=np.float32)
    for seq, pos, i in np.ndindex(n_seqs, seq_len, len(vectors)):
        pre = np.dot(hook_acts[seq, pos].astype(np.float64), vectors[i].astype(np.float64)) + float(biases[i])
        acts[seq, pos, i] = max(pre, 0.0)
    return acts


def saved(directory: Path, vectors: npt.NDArray[np.float32], biases: npt.NDArray[np.float32]) -> Path:
    entries = [VectorInSae(id=100 + i, label=f"probe {i}", values=vectors[i], bias=float(biases[i]))
               for i in range(len(vectors))]
    vector_sae_write(directory, entries, hook_name=HOOK, model_name="test-model")
    return directory


@pytest.fixture(scope="module", params=devices())
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> VectorRun:
    torch.manual_seed(0)
    model = model_make().to(request.param)
    tokens = tokens_make()
    hook_acts = hook_activations(model, tokens)
    vectors, biases = vectors_make(hook_acts)
    sae = sae_load(saved(tmp_path_factory.mktemp("vector-sae"), vectors, biases), device=request.param)
    result = dashboards_compute(model, sae, tokens, HOOK, PARAMS)
    acts = brute_force_acts(hook_acts, vectors, biases)
    return VectorRun(model, vectors, biases, sae, Run(model, sae, tokens, acts, result, []))


def test_the_tensors_are_the_vectors_their_biases_and_unit_directions() -> None:
    vectors = np.array([[3.0, -4.0, 0.0], [0.0, 0.5, 0.0]], dtype=np.float32)
    tensors = vector_sae_tensors(vectors, [0.25, -1.0])
    np.testing.assert_array_equal(tensors["W_enc"], vectors.T)
    np.testing.assert_array_equal(tensors["b_enc"], np.array([0.25, -1.0], dtype=np.float32))
    np.testing.assert_array_equal(tensors["b_dec"], np.zeros(3, dtype=np.float32))
    np.testing.assert_allclose(tensors["W_dec"], [[0.6, -0.8, 0.0], [0.0, 1.0, 0.0]], rtol=1e-7)
    assert {name: tensor.dtype for name, tensor in tensors.items()} == dict.fromkeys(tensors, np.dtype(np.float32))


def test_the_files_pass_the_upload_checks_and_mark_a_vector_set(tmp_path: Path) -> None:
    vectors = np.array([[3.0, -4.0], [1.0, 0.0]], dtype=np.float32)
    config = sae_files_check(saved(tmp_path, vectors, np.array([0.0, 0.5], dtype=np.float32)))
    assert (config.architecture, config.d_in, config.d_sae, config.hook_name) == ("standard", 2, 2, HOOK)
    assert config.apply_b_dec_to_input is False
    entries = vector_sae_entries(config.raw)
    assert entries is not None
    assert [(entry.id, entry.label, entry.bias, entry.norm) for entry in entries] == [
        (100, "probe 0", 0.0, 5.0), (101, "probe 1", 0.5, 1.0)]


def test_an_sae_of_no_vectors_is_not_a_vector_set() -> None:
    assert vector_sae_entries({"architecture": "standard", "d_in": 4, "d_sae": 2}) is None


@pytest.mark.parametrize(("vectors", "biases", "message"), [
    ([[1.0, 2.0], [0.0, 0.0]], [0.0, 0.0], "vector 1 is zero"),
    ([[1.0, 2.0]], [0.0, 1.0], "1 vectors need 1 biases"),
    ([[1.0, np.nan]], [0.0], "must be finite"),
    ([[1.0, 2.0]], [np.inf], "must be finite"),
    (np.zeros((0, 3)), [], "with n, d_in > 0"),
])
def test_vectors_that_make_no_sae_are_refused(vectors: npt.ArrayLike, biases: npt.ArrayLike, message: str) -> None:
    with pytest.raises(VectorSaeError, match=message):
        vector_sae_tensors(vectors, biases)


def test_sae_lens_reads_the_files_and_encodes_the_same(run: VectorRun, tmp_path: Path) -> None:
    from sae_lens import SAE

    directory = saved(tmp_path, run.vectors, run.biases)
    theirs = SAE.load_from_disk(str(directory), device="cpu")
    hook_acts = torch.from_numpy(hook_activations(run.model, run.reference.tokens))
    with torch.inference_mode():
        np.testing.assert_allclose(theirs.encode(hook_acts).numpy(), run.reference.acts, rtol=1e-5, atol=ATOL)
        np.testing.assert_allclose(theirs.W_dec.numpy(), run.sae.W_dec.cpu().numpy(), rtol=1e-7)


def test_encode_is_relu_of_h_dot_w_plus_b(run: VectorRun) -> None:
    hook_acts = torch.from_numpy(hook_activations(run.model, run.reference.tokens)).to(run.sae.device)
    with torch.inference_mode():
        np.testing.assert_allclose(run.sae.encode(hook_acts).cpu().numpy(), run.reference.acts, rtol=1e-5, atol=ATOL)


def test_the_fixture_has_rare_common_and_never_firing_vectors(run: VectorRun) -> None:
    density = (run.reference.counted > 0).mean(axis=(0, 1))
    assert density[NEVER_FIRING] == 0
    assert 0 < density.min(where=density > 0, initial=1) < 0.05 and density.max() > 0.2


def test_density_is_exact(run: VectorRun) -> None:
    counts = (run.reference.counted > 0).sum(axis=(0, 1))
    assert run.reference.result.n_tokens == N_SEQS * (SEQ_LEN - 1)
    np.testing.assert_array_equal(run.reference.result.frac_nonzero, counts / (N_SEQS * (SEQ_LEN - 1)))


def test_max_activation_is_exact(run: VectorRun) -> None:
    np.testing.assert_allclose(run.reference.result.max_act, run.reference.counted.max(axis=(0, 1)), rtol=1e-5)


def test_top_examples_and_their_windows_are_the_reference(run: VectorRun) -> None:
    top = run.reference.result.top
    for feature in range(N_VECTORS):
        expected = reference_top(run.reference, feature)
        n = len(expected)
        assert top.seq[feature, :n].tolist() == [seq for _, seq, _ in expected]
        assert top.pos[feature, :n].tolist() == [pos for _, _, pos in expected]
        np.testing.assert_allclose(top.values[feature, :n], [value for value, _, _ in expected], rtol=1e-5, atol=ATOL)
        assert (top.seq[feature, n:] == -1).all()
        for slot in range(n):
            tokens, values = reference_window(run.reference, int(top.seq[feature, slot]), int(top.pos[feature, slot]),
                                              feature)
            assert top.window_tokens[feature, slot].tolist() == tokens
            np.testing.assert_allclose(top.window_values[feature, slot], values, rtol=1e-5, atol=ATOL, equal_nan=True)


def test_activation_histogram_and_interval_counts_are_exact(run: VectorRun) -> None:
    counted, result = run.reference.counted, run.reference.result
    for feature in range(N_VECTORS):
        active = counted[..., feature][counted[..., feature] > 0]
        top = np.float32(result.max_act[feature])
        for n_bins, counts in ((PARAMS.act_hist_bins, result.act_hist_counts), (PARAMS.n_intervals,
                                                                                  result.interval_counts)):
            expected = np.zeros(n_bins, dtype=np.int64)
            for value in active:
                expected[reference_bin(value, top, n_bins)] += 1
            np.testing.assert_array_equal(counts[feature], expected)


def test_interval_examples_are_active_tokens_of_their_interval(run: VectorRun) -> None:
    intervals, result = run.reference.result.intervals, run.reference.result
    np.testing.assert_array_equal((intervals.seq >= 0).sum(axis=2),
                                  np.minimum(result.interval_counts, PARAMS.examples_per_interval))
    for feature, interval, slot in np.argwhere(intervals.seq >= 0):
        seq, pos = int(intervals.seq[feature, interval, slot]), int(intervals.pos[feature, interval, slot])
        value = run.reference.acts[seq, pos, feature]
        assert value > 0 and pos > 0
        np.testing.assert_allclose(intervals.values[feature, interval, slot], value, rtol=1e-5, atol=ATOL)
        assert reference_bin(value, np.float32(result.max_act[feature]), PARAMS.n_intervals) == interval
        tokens, values = reference_window(run.reference, seq, pos, int(feature))
        assert intervals.window_tokens[feature, interval, slot].tolist() == tokens
        np.testing.assert_allclose(intervals.window_values[feature, interval, slot], values, rtol=1e-5, atol=ATOL,
                                   equal_nan=True)


def test_the_never_firing_vector_has_no_examples(run: VectorRun) -> None:
    result = run.reference.result
    assert (result.top.seq[NEVER_FIRING] == -1).all() and (result.intervals.seq[NEVER_FIRING] == -1).all()
    assert result.max_act[NEVER_FIRING] == 0 and result.frac_nonzero[NEVER_FIRING] == 0


def test_the_logit_lens_is_the_unit_directions(run: VectorRun) -> None:
    unembed = run.model.W_U.detach().cpu().double().numpy()  # [d_model, V]
    vectors = run.vectors.astype(np.float64)
    logits = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)) @ unembed  # [n, V]
    result = run.reference.result
    order = np.argsort(logits, axis=1)
    np.testing.assert_array_equal(result.logit_top_ids, order[:, ::-1][:, : PARAMS.logit_tokens])
    np.testing.assert_array_equal(result.logit_bottom_ids, order[:, : PARAMS.logit_tokens])
    np.testing.assert_allclose(result.logit_top_values, np.take_along_axis(logits, result.logit_top_ids, axis=1),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.logit_hist_min, logits.min(axis=1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.logit_hist_max, logits.max(axis=1), rtol=1e-5, atol=1e-6)


def test_the_decoder_rows_steer_with_the_unit_direction(run: VectorRun) -> None:
    rows = run.sae.W_dec.cpu().double().numpy()
    vectors = run.vectors.astype(np.float64)
    np.testing.assert_allclose(rows, vectors / np.linalg.norm(vectors, axis=1, keepdims=True), rtol=1e-6)


def test_steering_with_its_feature_at_strength_s_is_steering_with_the_vector_at_s_over_its_norm(
    run: VectorRun,
) -> None:
    tokens = torch.from_numpy(run.reference.tokens[:2]).to(run.sae.device)
    feature, strength = 2, 6.0
    norm = float(np.linalg.norm(run.vectors[feature].astype(np.float64)))
    as_feature = steering_direction(run.sae.W_dec[feature], strength, HOOK, normalize=False)
    as_vector = steering_direction(torch.from_numpy(run.vectors[feature]).to(run.sae.device), strength / norm, HOOK,
                                   normalize=False)
    with torch.inference_mode():
        plain = run.model(tokens)
        logits = [run.model.run_with_hooks(tokens, fwd_hooks=steering_hooks([direction], SteerMethod.SIMPLE_ADDITIVE,
                                                                            rows=slice(None)))
                  for direction in (as_feature, as_vector)]
    assert not torch.allclose(logits[0], plain, atol=1e-3)  # the steering does something
    torch.testing.assert_close(logits[0], logits[1], rtol=1e-4, atol=1e-4)
