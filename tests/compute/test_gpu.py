"""The worker's compute on a CUDA GPU against the same compute on the CPU, with the tiny Llama loaded as workers load
models (hf_local, on the device, in the device's dtype): live activations, concept pooling, steering, quality metrics
and a dashboard run, in float32 (equal within rounding) and in bf16, the CUDA workers' default (close).

Every test here is marked gpu and is skipped without CUDA; ATLAS_TEST_GPU_DEVICE=cpu runs them on the CPU.
"""

import numpy as np
import pytest
import torch
from transformer_lens import HookedTransformer

from tests.compute.test_dashboard_reference import sae_make, sae_to
from tests.support.devices import gpu_param
from tests.support.tiny_model import TINY_HOOK, tiny_model_source
from workers.compute.concepts import pooled_activations, probe_report
from workers.compute.dashboard import dashboards_compute
from workers.compute.language_model import load_language_model
from workers.compute.live import feature_activations_on_text, text_tokens, top_features_on_text
from workers.compute.metrics import sae_metrics
from workers.compute.params import DashboardParams
from workers.compute.sae import SparseAutoencoder
from workers.compute.steering import GenerationParams, SteerMethod, steer_generate, steering_direction

pytestmark = pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])

TEXT = "Return the number of items in a container. Split the string at the first separator."
TEXTS = [
    "Return a new list of the items.", "Split the string at the separator.", "Open the file and read it.",
    "Raise an error if the key is missing.", "Compile the pattern and match it.", "Return True when it is empty.",
    "Write the bytes to the stream.", "Close the connection to the server.",
]
# float32 on another device sums in another order; bf16 keeps 8 significant bits, about 1% after a layer.
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 0.05}
THRESHOLD_MARGIN = 0.01


@pytest.fixture(scope="module")
def cpu_model() -> HookedTransformer:
    return load_language_model(tiny_model_source())


@pytest.fixture(scope="module")
def cpu_sae(cpu_model: HookedTransformer) -> SparseAutoencoder:
    with torch.inference_mode():
        tokens = torch.cat([text_tokens(cpu_model, text)[:, :8] for text in TEXTS])
        _, cache = cpu_model.run_with_cache(tokens, names_filter=TINY_HOOK)
    sae = sae_make(cache[TINY_HOOK])
    # Texts that begin alike give equal activations, which the quantile thresholds can fall on exactly, leaving
    # those tokens' pre-activations at 0 give or take rounding: a margin puts them clearly below.
    tensors = {"W_enc": sae.W_enc, "W_dec": sae.W_dec, "b_enc": sae.b_enc - THRESHOLD_MARGIN, "b_dec": sae.b_dec}
    return SparseAutoencoder(sae.config, tensors)


@pytest.fixture(scope="module", params=[gpu_param()])
def device(request: pytest.FixtureRequest) -> str:
    device: str = request.param
    return device


def _on_device(device: str, dtype: torch.dtype, sae: SparseAutoencoder) -> tuple[HookedTransformer, SparseAutoencoder]:
    return load_language_model(tiny_model_source(), device=device, dtype=dtype), sae_to(sae, device, dtype)


def _scale(values: np.ndarray) -> float:
    return float(np.abs(values).max())


def test_models_load_on_the_device_in_its_dtype(device: str, dtype: torch.dtype, cpu_sae: SparseAutoencoder) -> None:
    model, sae = _on_device(device, dtype, cpu_sae)
    parameter = next(model.parameters())
    assert (parameter.device.type, parameter.dtype) == (torch.device(device).type, dtype)
    assert (sae.device.type, sae.W_enc.dtype) == (torch.device(device).type, dtype)


def test_live_activations_equal_the_cpu(device: str, dtype: torch.dtype, cpu_model: HookedTransformer,
                                        cpu_sae: SparseAutoencoder) -> None:
    model, sae = _on_device(device, dtype, cpu_sae)
    expected = top_features_on_text(cpu_model, cpu_sae, TINY_HOOK, TEXT, 96)
    got = top_features_on_text(model, sae, TINY_HOOK, TEXT, 96)
    np.testing.assert_array_equal(got.token_ids, expected.token_ids)
    reference = {int(f): expected.values[i] for i, f in enumerate(expected.features)}
    scale = _scale(expected.values)
    for i, feature in enumerate(got.features.tolist()):
        np.testing.assert_allclose(got.values[i], reference.get(feature, 0.0), atol=TOLERANCE[dtype] * scale)
    one = feature_activations_on_text(model, sae, TINY_HOOK, TEXT, int(expected.features[0]))
    np.testing.assert_allclose(one.values[0], expected.values[0], atol=TOLERANCE[dtype] * scale)
    assert got.values.dtype == np.float32


def test_pooled_activations_and_probes_equal_the_cpu(device: str, dtype: torch.dtype, cpu_model: HookedTransformer,
                                                     cpu_sae: SparseAutoencoder) -> None:
    model, sae = _on_device(device, dtype, cpu_sae)
    expected = pooled_activations(cpu_model, cpu_sae, TINY_HOOK, TEXTS, "max", batch_size=3)
    got = pooled_activations(model, sae, TINY_HOOK, TEXTS, "max", batch_size=3)
    np.testing.assert_array_equal(got.n_tokens, expected.n_tokens)
    np.testing.assert_allclose(got.features, expected.features, atol=TOLERANCE[dtype] * _scale(expected.features))
    np.testing.assert_allclose(got.hook, expected.hook, atol=TOLERANCE[dtype] * _scale(expected.hook))
    labels = np.array([False] * 4 + [True] * 4)
    report = probe_report(got.hook, got.features, labels, test_fraction=0.5, seed=0)
    assert 0.0 <= report.mass_mean_test.auroc <= 1.0


def test_steering_runs_on_the_device_and_changes_the_text(device: str, dtype: torch.dtype,
                                                          cpu_model: HookedTransformer,
                                                          cpu_sae: SparseAutoencoder) -> None:
    model, sae = _on_device(device, dtype, cpu_sae)
    prompt = text_tokens(cpu_model, "Return the number of")
    params = GenerationParams(n_tokens=6, temperature=0.0, stop_at_eos=False)

    def steer(on: HookedTransformer, decoder: torch.Tensor) -> tuple[list[int], list[int], np.ndarray]:
        direction = steering_direction(decoder[0], 40.0, TINY_HOOK, normalize=True)
        result = steer_generate(on, prompt, [direction], SteerMethod.SIMPLE_ADDITIVE, params)
        return result.default.token_ids.tolist(), result.steered.token_ids.tolist(), result.default.logprobs

    default, steered, logprobs = steer(model, sae.W_dec)
    cpu_default, cpu_steered, cpu_logprobs = steer(cpu_model, cpu_sae.W_dec)
    assert default != steered
    assert default[0] == cpu_default[0]
    np.testing.assert_allclose(logprobs[0], cpu_logprobs[0], atol=TOLERANCE[dtype] * 10)
    if dtype == torch.float32:
        assert (default, steered) == (cpu_default, cpu_steered)


def test_quality_metrics_equal_the_cpu(device: str, dtype: torch.dtype, cpu_model: HookedTransformer,
                                       cpu_sae: SparseAutoencoder) -> None:
    model, sae = _on_device(device, dtype, cpu_sae)
    tokens = torch.cat([text_tokens(cpu_model, text)[:, :8] for text in TEXTS]).numpy()
    expected = sae_metrics(cpu_model, cpu_sae, tokens, TINY_HOOK)
    got = sae_metrics(model, sae, tokens, TINY_HOOK)
    for name, value in vars(expected).items():
        if isinstance(value, float) and np.isfinite(value):
            assert getattr(got, name) == pytest.approx(value, rel=TOLERANCE[dtype] * 5, abs=TOLERANCE[dtype] * 5), name


def test_a_dashboard_run_on_the_device_matches_the_cpu(device: str, dtype: torch.dtype, cpu_model: HookedTransformer,
                                                       cpu_sae: SparseAutoencoder) -> None:
    model, sae = _on_device(device, dtype, cpu_sae)
    tokens = torch.cat([text_tokens(cpu_model, text)[:, :8] for text in TEXTS]).numpy()
    params = DashboardParams(top_k=4, context_before=2, context_after=1, batch_size=3)
    expected = dashboards_compute(cpu_model, cpu_sae, tokens, TINY_HOOK, params)
    got = dashboards_compute(model, sae, tokens, TINY_HOOK, params)
    scale = max(_scale(expected.max_act), 1e-6)
    np.testing.assert_allclose(got.max_act, expected.max_act, atol=TOLERANCE[dtype] * scale * 2)
    np.testing.assert_allclose(got.frac_nonzero, expected.frac_nonzero, atol=0.1 if dtype == torch.bfloat16 else 0)
    if dtype == torch.float32:  # the same tokens fire, so the same examples are chosen, samples included
        # Texts that begin alike tie exactly, and the devices' top-k order ties differently: compare as sets.
        np.testing.assert_allclose(got.top.values, expected.top.values, atol=TOLERANCE[dtype] * scale)
        for feature in range(sae.d_sae):
            assert set(got.top.seq[feature].tolist()) == set(expected.top.seq[feature].tolist()), feature
        np.testing.assert_array_equal(got.intervals.seq, expected.intervals.seq)
        np.testing.assert_array_equal(got.intervals.pos, expected.intervals.pos)
        np.testing.assert_array_equal(got.logit_top_ids, expected.logit_top_ids)
        np.testing.assert_array_equal(got.neighbour_ids, expected.neighbour_ids)
