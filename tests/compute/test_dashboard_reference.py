"""The streaming dashboard pass against a brute-force reference that holds every activation in memory, on the CPU
and (marked gpu) on a CUDA GPU, the reference computed on the same device."""

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from tests.support.devices import devices
from workers.compute import dashboard
from workers.compute.dashboard import dashboards_compute
from workers.compute.params import DashboardParams
from workers.compute.results import FeatureDashboards
from workers.compute.sae import SaeConfig, SparseAutoencoder

N_SEQS, SEQ_LEN, D_SAE = 24, 40, 96
HOOK = "blocks.0.hook_resid_post"
NEVER_FIRING = [5, 50, 90]
# Encoding a slice of features sums in another order than encoding them all: float32 rounding apart.
ATOL = 2e-6
PARAMS = DashboardParams(
    top_k=6,
    context_before=4,
    context_after=3,
    n_intervals=4,
    examples_per_interval=3,
    act_hist_bins=50,
    logit_hist_bins=20,
    logit_tokens=5,
    batch_size=5,  # 24 sequences: four full batches and an uneven last one
    seed=0,
)


def model_make() -> HookedTransformer:
    config = HookedTransformerConfig(
        n_layers=2, d_model=32, n_ctx=64, d_head=8, n_heads=4, d_mlp=64, d_vocab=97, act_fn="gelu",
        normalization_type="LN", seed=0, device="cpu",
    )  # fmt: skip
    return HookedTransformer(config).eval()


def tokens_make() -> npt.NDArray[np.int64]:
    return np.random.default_rng(0).integers(0, 97, size=(N_SEQS, SEQ_LEN))


def sae_to(sae: SparseAutoencoder, device: str, dtype: torch.dtype = torch.float32) -> SparseAutoencoder:
    """The same SAE with its tensors on device, in dtype."""
    tensors = {"W_enc": sae.W_enc, "W_dec": sae.W_dec, "b_enc": sae.b_enc, "b_dec": sae.b_dec}
    return SparseAutoencoder(sae.config, {name: t.to(device=device, dtype=dtype) for name, t in tensors.items()})


def sae_make(hook_acts: torch.Tensor, d_sae: int = D_SAE) -> SparseAutoencoder:
    """A random SAE on the CPU whose biases make each feature fire on 0.3% to 10% of tokens, and a few never."""
    generator = torch.Generator().manual_seed(0)
    hook_acts = hook_acts.float().cpu()
    d_in = hook_acts.shape[-1]
    w_enc = torch.randn(d_in, d_sae, generator=generator)
    b_dec = torch.randn(d_in, generator=generator) * 0.1
    pre = (hook_acts.reshape(-1, d_in) - b_dec) @ w_enc  # [N * T, d_sae]
    quantiles = torch.linspace(0.997, 0.9, d_sae)
    b_enc = -torch.stack([pre[:, feature].quantile(q) for feature, q in enumerate(quantiles)])
    b_enc[[f for f in NEVER_FIRING if f < d_sae]] = -pre.max() - 1
    config = SaeConfig("standard", d_in, d_sae, HOOK, True, "float32", {})
    tensors = {"W_enc": w_enc, "W_dec": torch.randn(d_sae, d_in, generator=generator), "b_enc": b_enc, "b_dec": b_dec}
    return SparseAutoencoder(config, tensors)


@dataclass
class Run:
    model: HookedTransformer
    sae: SparseAutoencoder
    tokens: npt.NDArray[np.int64]
    acts: npt.NDArray[np.float32]  # [N, T, F] every activation, from a plain full forward
    result: FeatureDashboards
    progress: list[tuple[str, int, int]]

    @property
    def counted(self) -> npt.NDArray[np.float32]:
        return self.acts[:, 1:]  # BOS excluded, as PARAMS.skip_bos says


@pytest.fixture(scope="module", params=devices())
def run(request: pytest.FixtureRequest) -> Run:
    torch.manual_seed(0)
    model = model_make().to(request.param)
    tokens = tokens_make()
    with torch.inference_mode():
        _, cache = model.run_with_cache(torch.from_numpy(tokens).to(request.param))
        hook_acts = cache[HOOK]
        sae = sae_to(sae_make(hook_acts.cpu()), request.param)
        acts = sae.encode(hook_acts).cpu().numpy()
    progress: list[tuple[str, int, int]] = []
    with pytest.MonkeyPatch.context() as patch:
        # Ten features per logit-lens chunk, so the chunking (and an uneven last chunk) is exercised.
        patch.setattr(dashboard, "LOGIT_LENS_CHUNK_ELEMENTS", 97 * 10)
        patch.setattr(dashboard, "LOGIT_LENS_VOCAB_TILE", 40)  # 97 tokens: tiles of 40, 40 and 17
        # Slices of 30 features per encode and 1,000 kept entries per piece of the second pass, so
        # that slicing the feature dimension and reading the kept activations in pieces are exercised.
        patch.setattr(dashboard, "ENCODE_CHUNK_ELEMENTS", PARAMS.batch_size * SEQ_LEN * 30)
        patch.setattr(dashboard, "ACTIVE_CHUNK_ENTRIES", 1000)
        result = dashboards_compute(model, sae, tokens, HOOK, PARAMS, lambda *call: progress.append(call))
    return Run(model, sae, tokens, acts, result, progress)


def reference_window(run: Run, seq: int, pos: int, feature: int) -> tuple[list[int], list[float]]:
    tokens, values = [], []
    for position in range(pos - PARAMS.context_before, pos + PARAMS.context_after + 1):
        inside = 0 <= position < SEQ_LEN
        tokens.append(int(run.tokens[seq, position]) if inside else -1)
        values.append(float(run.acts[seq, position, feature]) if inside else float("nan"))
    return tokens, values


def reference_bin(value: np.float32, top: np.float32, n_bins: int) -> int:
    # The same float32 arithmetic as the implementation, so a value on an edge lands in the same bin.
    return int(min(max(np.ceil(value / top * np.float32(n_bins)) - 1, 0), n_bins - 1))


def reference_top(run: Run, feature: int) -> list[tuple[float, int, int]]:
    """(value, seq, pos) of the strongest token of every sequence where the feature fires, best first."""
    best = []
    for seq in range(N_SEQS):
        pos = int(np.argmax(run.counted[seq, :, feature]))
        value = float(run.counted[seq, pos, feature])
        if value > 0:
            best.append((value, seq, pos + 1))
    return sorted(best, reverse=True)[: PARAMS.top_k]


def test_fixture_has_rare_common_and_dead_features(run: Run) -> None:
    fires_in = (run.counted > 0).any(axis=1).sum(axis=0)  # sequences where each feature fires
    assert (fires_in == 0).sum() == len(NEVER_FIRING)
    assert ((fires_in > 0) & (fires_in < PARAMS.top_k)).any()
    assert (fires_in > PARAMS.top_k).any()


def test_counts_and_frac_nonzero_are_exact(run: Run) -> None:
    counts = (run.counted > 0).sum(axis=(0, 1))
    assert run.result.n_tokens == N_SEQS * (SEQ_LEN - 1)
    np.testing.assert_array_equal(run.result.frac_nonzero, counts / (N_SEQS * (SEQ_LEN - 1)))


def test_max_act_is_exact(run: Run) -> None:
    np.testing.assert_allclose(run.result.max_act, run.counted.max(axis=(0, 1)).clip(min=0), rtol=1e-6)


def test_top_examples_are_the_strongest_one_per_sequence(run: Run) -> None:
    top = run.result.top
    for feature in range(D_SAE):
        expected = reference_top(run, feature)
        n = len(expected)
        assert top.seq[feature, :n].tolist() == [seq for _, seq, _ in expected]
        assert top.pos[feature, :n].tolist() == [pos for _, _, pos in expected]
        np.testing.assert_allclose(top.values[feature, :n], [value for value, _, _ in expected], rtol=1e-6, atol=ATOL)
        assert (top.seq[feature, n:] == -1).all()


def test_top_examples_are_sorted_and_one_per_sequence(run: Run) -> None:
    top = run.result.top
    for feature in range(D_SAE):
        n = int((top.seq[feature] >= 0).sum())
        assert (top.seq[feature, n:] == -1).all()  # empty slots come last
        assert (np.diff(top.values[feature, :n]) < 0).all()
        assert len(set(top.seq[feature, :n].tolist())) == n


def test_top_example_windows_match_the_reference(run: Run) -> None:
    top = run.result.top
    for feature in range(D_SAE):
        for slot in np.flatnonzero(top.seq[feature] >= 0):
            seq, pos = int(top.seq[feature, slot]), int(top.pos[feature, slot])
            tokens, values = reference_window(run, seq, pos, feature)
            assert top.window_tokens[feature, slot].tolist() == tokens
            np.testing.assert_allclose(top.window_values[feature, slot], values, rtol=1e-6, atol=ATOL, equal_nan=True)


def test_windows_run_past_the_sequence_edges(run: Run) -> None:
    top = run.result.top
    filled = top.seq >= 0
    starts_early = filled & (top.pos < PARAMS.context_before)
    assert starts_early.any()
    assert (top.window_tokens[starts_early][:, 0] == -1).all()
    assert np.isnan(top.window_values[starts_early][:, 0]).all()


def test_act_histogram_is_exact(run: Run) -> None:
    maxima = run.counted.max(axis=(0, 1))
    for feature in range(D_SAE):
        expected = np.zeros(PARAMS.act_hist_bins, dtype=np.int64)
        for value in run.counted[..., feature][run.counted[..., feature] > 0]:
            expected[reference_bin(value, maxima[feature], PARAMS.act_hist_bins)] += 1
        np.testing.assert_array_equal(run.result.act_hist_counts[feature], expected)


def test_interval_counts_are_exact(run: Run) -> None:
    maxima = run.counted.max(axis=(0, 1))
    for feature in range(D_SAE):
        expected = np.zeros(PARAMS.n_intervals, dtype=np.int64)
        for value in run.counted[..., feature][run.counted[..., feature] > 0]:
            expected[reference_bin(value, maxima[feature], PARAMS.n_intervals)] += 1
        np.testing.assert_array_equal(run.result.interval_counts[feature], expected)


def test_each_interval_holds_as_many_samples_as_it_can(run: Run) -> None:
    sampled = (run.result.intervals.seq >= 0).sum(axis=2)
    expected = np.minimum(run.result.interval_counts, PARAMS.examples_per_interval)
    np.testing.assert_array_equal(sampled, expected)
    assert (expected < PARAMS.examples_per_interval).any() and (expected == PARAMS.examples_per_interval).any()


def test_interval_samples_are_distinct_active_tokens_in_their_interval(run: Run) -> None:
    intervals = run.result.intervals
    for feature, interval, slot in np.argwhere(intervals.seq >= 0):
        seq, pos = intervals.seq[feature, interval, slot], intervals.pos[feature, interval, slot]
        value = run.acts[seq, pos, feature]
        assert value > 0 and pos > 0
        np.testing.assert_allclose(intervals.values[feature, interval, slot], value, rtol=1e-6, atol=ATOL)
        assert reference_bin(value, run.result.max_act[feature], PARAMS.n_intervals) == interval
    for feature, interval in np.ndindex(*intervals.seq.shape[:2]):
        filled = intervals.seq[feature, interval] >= 0
        seqs, positions = intervals.seq[feature, interval][filled], intervals.pos[feature, interval][filled]
        assert len(set(zip(seqs, positions, strict=True))) == filled.sum()


def test_interval_sample_windows_match_the_reference(run: Run) -> None:
    intervals = run.result.intervals
    for feature, interval, slot in np.argwhere(intervals.seq >= 0):
        seq, pos = int(intervals.seq[feature, interval, slot]), int(intervals.pos[feature, interval, slot])
        tokens, values = reference_window(run, seq, pos, feature)
        assert intervals.window_tokens[feature, interval, slot].tolist() == tokens
        np.testing.assert_allclose(
            intervals.window_values[feature, interval, slot], values, rtol=1e-6, atol=ATOL, equal_nan=True
        )


def test_interval_samples_are_spread_evenly_over_the_dataset(run: Run) -> None:
    """A uniform sample's place among its interval's active tokens, in dataset order, averages one half."""
    maxima = run.counted.max(axis=(0, 1))
    places = []
    for feature, interval in np.argwhere(run.result.interval_counts > PARAMS.examples_per_interval):
        seqs, positions = np.nonzero(run.counted[:, :, feature] > 0)
        values = run.counted[seqs, positions, feature]
        in_interval = [reference_bin(value, maxima[feature], PARAMS.n_intervals) == interval for value in values]
        tokens = list(zip(seqs[in_interval], positions[in_interval] + 1, strict=True))
        for seq, pos in zip(
            run.result.intervals.seq[feature, interval], run.result.intervals.pos[feature, interval], strict=True
        ):
            places.append(tokens.index((seq, pos)) / (len(tokens) - 1))
    assert len(places) > 300
    assert abs(np.mean(places) - 0.5) < 0.05


def test_intervals_with_room_for_everything_hold_every_active_token(run: Run) -> None:
    roomy = DashboardParams(**{**vars(PARAMS), "examples_per_interval": N_SEQS * SEQ_LEN})
    intervals = dashboards_compute(run.model, run.sae, run.tokens, HOOK, roomy).intervals
    for feature in range(D_SAE):
        filled = intervals.seq[feature] >= 0
        sampled = sorted(zip(intervals.seq[feature][filled], intervals.pos[feature][filled], strict=True))
        seqs, positions = np.nonzero(run.counted[:, :, feature] > 0)
        assert sampled == sorted(zip(seqs, positions + 1, strict=True))


def test_interval_samples_are_reproducible_with_the_seed(run: Run) -> None:
    again = dashboards_compute(run.model, run.sae, run.tokens, HOOK, PARAMS)
    np.testing.assert_array_equal(again.intervals.seq, run.result.intervals.seq)
    np.testing.assert_array_equal(again.intervals.pos, run.result.intervals.pos)


def test_bos_position_is_excluded_everywhere(run: Run) -> None:
    fires_at_bos = (run.acts[:, 0] > 0).any(axis=0)
    assert fires_at_bos.any()  # otherwise this test would prove nothing
    assert (run.result.top.pos != 0).all()
    assert (run.result.intervals.pos != 0).all()
    counts_with_bos = (run.acts > 0).sum(axis=(0, 1))
    assert (run.result.act_hist_counts.sum(axis=1) < counts_with_bos)[fires_at_bos].all()


def test_bos_may_appear_inside_a_window(run: Run) -> None:
    top = run.result.top
    near_start = (top.seq >= 0) & (top.pos <= PARAMS.context_before) & (top.pos > 0)
    column = PARAMS.context_before - top.pos[near_start]  # where position 0 sits in each window
    bos_tokens = top.window_tokens[near_start][np.arange(column.size), column]
    assert (bos_tokens == run.tokens[top.seq[near_start], 0]).all()


def test_never_firing_features_have_no_examples(run: Run) -> None:
    result = run.result
    assert (result.top.seq[NEVER_FIRING] == -1).all()
    assert (result.intervals.seq[NEVER_FIRING] == -1).all()
    assert (result.max_act[NEVER_FIRING] == 0).all()
    assert (result.frac_nonzero[NEVER_FIRING] == 0).all()
    assert (result.act_hist_counts[NEVER_FIRING] == 0).all()
    assert np.isnan(result.top.window_values[NEVER_FIRING]).all()
    assert (result.top.window_tokens[NEVER_FIRING] == -1).all()


def reference_logits(run: Run) -> npt.NDArray[np.float32]:
    """Every feature's logit lens [F, V] in one piece, for comparison with the chunked computation."""
    with torch.inference_mode():
        logits: npt.NDArray[np.float32] = (run.sae.W_dec @ run.model.W_U).cpu().numpy()
    return logits


def test_logit_lens_top_and_bottom_tokens(run: Run) -> None:
    logits = reference_logits(run)
    order = np.argsort(logits, axis=1)
    np.testing.assert_array_equal(run.result.logit_top_ids, order[:, ::-1][:, : PARAMS.logit_tokens])
    np.testing.assert_array_equal(run.result.logit_bottom_ids, order[:, : PARAMS.logit_tokens])
    top_values = np.take_along_axis(logits, run.result.logit_top_ids, axis=1)
    np.testing.assert_allclose(run.result.logit_top_values, top_values, rtol=1e-5)


def test_logit_lens_histogram(run: Run) -> None:
    logits = reference_logits(run)
    np.testing.assert_allclose(run.result.logit_hist_min, logits.min(axis=1), rtol=1e-5)
    np.testing.assert_allclose(run.result.logit_hist_max, logits.max(axis=1), rtol=1e-5)
    for feature in range(D_SAE):
        low, high = logits[feature].min(), logits[feature].max()
        expected, _ = np.histogram(logits[feature], bins=PARAMS.logit_hist_bins, range=(low, high))
        np.testing.assert_array_equal(run.result.logit_hist_counts[feature], expected)


def test_progress_is_reported_per_batch_for_each_phase(run: Run) -> None:
    phases = [call[0] for call in run.progress]
    n_entries = int((run.acts > 0).sum())  # BOS included: its entries are kept for windows
    n_pieces = -(-n_entries // 1000)
    assert n_pieces > 1
    assert phases == ["forward"] * 5 + ["intervals"] * n_pieces + ["logit lens"] * 10 + ["neighbours"] * 2
    assert run.progress[0] == ("forward", 5 * SEQ_LEN, N_SEQS * SEQ_LEN)
    assert run.progress[4] == ("forward", N_SEQS * SEQ_LEN, N_SEQS * SEQ_LEN)
    assert run.progress[5] == ("intervals", 1000, n_entries)
    assert run.progress[4 + n_pieces] == ("intervals", n_entries, n_entries)
    assert run.progress[-3] == ("logit lens", D_SAE, D_SAE)
    assert run.progress[-1] == ("neighbours", D_SAE, D_SAE)


def test_neighbours_are_the_closest_decoder_directions(run: Run) -> None:
    decoder = run.sae.W_dec.cpu().numpy()
    directions = decoder / np.linalg.norm(decoder, axis=1, keepdims=True)
    cosines = directions @ directions.T
    np.fill_diagonal(cosines, -np.inf)
    expected = np.argsort(-cosines, axis=1)[:, : PARAMS.neighbours]
    np.testing.assert_array_equal(run.result.neighbour_ids, expected)
    np.testing.assert_allclose(run.result.neighbour_cosines, np.take_along_axis(cosines, expected, axis=1), atol=1e-6)


def test_output_shapes_follow_results_py(run: Run) -> None:
    result, window = run.result, PARAMS.window
    assert result.top.window_tokens.shape == (D_SAE, PARAMS.top_k, window)
    assert result.intervals.window_values.shape == (D_SAE, PARAMS.n_intervals, PARAMS.examples_per_interval, window)
    assert result.logit_hist_counts.shape == (D_SAE, PARAMS.logit_hist_bins)
    assert result.top.window_tokens.dtype == np.int32 and result.top.window_values.dtype == np.float32
    assert result.frac_nonzero.dtype == np.float64 and result.interval_counts.dtype == np.int64


def test_hook_z_heads_are_flattened_and_get_no_logit_lens(run: Run) -> None:
    hook = "blocks.1.attn.hook_z"
    with torch.inference_mode():
        _, cache = run.model.run_with_cache(torch.from_numpy(run.tokens).to(run.sae.device))
        hook_acts = cache[hook].flatten(2)  # [N, T, n_heads * d_head]
        sae = sae_to(sae_make(hook_acts, d_sae=8), str(run.sae.device))
        acts = sae.encode(hook_acts).cpu().numpy()
    result = dashboards_compute(run.model, sae, run.tokens, hook, PARAMS)
    np.testing.assert_allclose(result.max_act, acts[:, 1:].max(axis=(0, 1)).clip(min=0), rtol=1e-6)
    assert result.logit_top_ids.shape == (8, 0)
    assert (result.logit_hist_counts == 0).all()


def test_a_hook_the_model_lacks_is_refused(run: Run) -> None:
    with pytest.raises(ValueError) as raised:
        dashboards_compute(run.model, run.sae, run.tokens, "blocks.9.hook_resid_post", PARAMS)
    assert str(raised.value).startswith("the model has no hook 'blocks.9.hook_resid_post'")
