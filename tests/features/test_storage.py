"""Packed storage round trip: the API and pages show what the dashboard pass produced, values at float16 precision."""

from typing import Any

import numpy as np
import pytest
from django.test import Client

from atlas.datasets.models import Dataset
from atlas.features.models import Feature
from atlas.features.packing import DashboardLayoutError, StoredExample, dashboard_unpack, features_pack
from atlas.lms.models import LanguageModel
from atlas.lms.selectors import tokens_text, vocabulary_for
from atlas.saes.models import Sae
from bench.ingest import dashboards_synthetic
from tests import factories
from tests.factories import dashboards_empty
from workers.compute.params import DashboardParams
from workers.compute.results import Examples, FeatureDashboards

N_FEATURES = 48
PARAMS = DashboardParams()
# float16 keeps 11 significant bits; values are stored relative to the feature's maximum.
VALUE_TOLERANCE = {"rel": 2**-11, "abs": 1e-6}


def _published(language_model: LanguageModel, dataset: Dataset, dashboards: FeatureDashboards,
               params: DashboardParams = PARAMS) -> Sae:
    sae = factories.sae_make(language_model, slug="0-res-synthetic", d_sae=dashboards.frac_nonzero.shape[0])
    factories.published_run_make(sae, dataset, dashboards, params=params)
    sae.refresh_from_db()
    return sae


@pytest.fixture
def synthetic(language_model: LanguageModel, dataset: Dataset) -> tuple[Sae, FeatureDashboards]:
    dashboards = dashboards_synthetic(N_FEATURES, PARAMS, seed=3)
    return _published(language_model, dataset, dashboards), dashboards


def _window(examples: Examples, slot: tuple[int, ...], vocabulary: tuple[str, ...]) -> dict[str, Any]:
    inside = examples.window_tokens[slot] >= 0
    return {
        "tokens": tokens_text(vocabulary, examples.window_tokens[slot][inside].tolist()),
        "values": examples.window_values[slot][inside].astype(float).tolist(),
    }


def _expected_activations(dashboards: FeatureDashboards, index: int, vocabulary: tuple[str, ...]) -> list[Any]:
    """What the old row-per-example store showed: top examples by rank, then intervals from the highest."""
    top = [
        {**_window(dashboards.top, (index, rank), vocabulary), "binMin": -1, "binMax": -1, "binContains": -1}
        for rank in range(PARAMS.top_k) if dashboards.top.seq[index, rank] >= 0
    ]
    n_intervals, max_act = PARAMS.n_intervals, float(dashboards.max_act[index])
    counts = dashboards.interval_counts[index]
    intervals = [
        {**_window(dashboards.intervals, (index, interval, rank), vocabulary),
         "binMin": max_act * interval / n_intervals, "binMax": max_act * (interval + 1) / n_intervals,
         "binContains": float(counts[interval]) / int(counts.sum())}
        for interval in reversed(range(n_intervals)) for rank in range(PARAMS.examples_per_interval)
        if dashboards.intervals.seq[index, interval, rank] >= 0
    ]
    return top + intervals


def _as_shown(activation: dict[str, Any]) -> dict[str, Any]:
    return {key: activation[key] for key in ("tokens", "values", "binMin", "binMax", "binContains")}


def test_api_shows_what_the_dashboard_pass_produced(synthetic: tuple[Sae, FeatureDashboards],
                                                    language_model: LanguageModel) -> None:
    sae, dashboards = synthetic
    vocabulary = vocabulary_for(language_model)
    client = Client()
    for index in range(N_FEATURES):
        body = client.get(f"/api/feature/{language_model.slug}/{sae.slug}/{index}").json()
        expected = _expected_activations(dashboards, index, vocabulary)
        assert [_as_shown(activation) for activation in body["activations"]] == [
            {**activation, "values": pytest.approx(activation["values"], **VALUE_TOLERANCE)} for activation in expected
        ], index
        assert (body["maxActApprox"], body["frac_nonzero"]) == (float(dashboards.max_act[index]),
                                                                 float(dashboards.frac_nonzero[index]))
        assert body["pos_str"] == tokens_text(vocabulary, dashboards.logit_top_ids[index].tolist())
        assert body["pos_values"] == dashboards.logit_top_values[index].astype(float).tolist()
        assert body["neg_str"] == tokens_text(vocabulary, dashboards.logit_bottom_ids[index].tolist())
        assert body["neg_values"] == dashboards.logit_bottom_values[index].astype(float).tolist()
        assert body["freq_hist_data_bar_heights"] == dashboards.act_hist_counts[index].tolist()
        assert body["logits_hist_data_bar_heights"] == dashboards.logit_hist_counts[index].tolist()
        assert body["topkCosSimIndices"] == dashboards.neighbour_ids[index].tolist()
        assert body["topkCosSimValues"] == dashboards.neighbour_cosines[index].astype(float).tolist()


def test_top_example_peaks_at_exactly_the_max_activation(synthetic: tuple[Sae, FeatureDashboards],
                                                         language_model: LanguageModel) -> None:
    sae, dashboards = synthetic
    client = Client()
    for index in np.flatnonzero(dashboards.max_act > 0)[:8]:
        body = client.get(f"/api/feature/{language_model.slug}/{sae.slug}/{index}").json()
        assert body["activations"][0]["maxValue"] == body["maxActApprox"]
        assert body["activations"][0]["maxValueTokenIndex"] == PARAMS.context_before - (
            np.argmax(dashboards.top.window_tokens[index, 0] >= 0))


def test_feature_page_shows_every_stored_example(synthetic: tuple[Sae, FeatureDashboards],
                                                 language_model: LanguageModel) -> None:
    sae, dashboards = synthetic
    index = int(np.argmax(dashboards.frac_nonzero))
    page = Client().get(f"/{language_model.slug}/{sae.slug}/{index}").content.decode()
    filled = int((dashboards.top.seq[index] >= 0).sum() + (dashboards.intervals.seq[index] >= 0).sum())
    assert page.count('class="example"') == filled > 0


def test_tokens_and_values_take_two_bytes_each(synthetic: tuple[Sae, FeatureDashboards]) -> None:
    sae, _ = synthetic
    blob = bytes(Feature.objects.filter(run_id=sae.published_run_id)[0].dashboard)
    slots = PARAMS.top_k + PARAMS.n_intervals * PARAMS.examples_per_interval
    tables = (8 * (PARAMS.n_intervals + PARAMS.act_hist_bins + PARAMS.logit_hist_bins) + 16 * PARAMS.logit_tokens
              + 8 * PARAMS.neighbours + 2 * slots)  # the last: each slot's focus
    assert len(blob) - tables < slots * PARAMS.window * 4 + 64


def test_token_ids_beyond_sixteen_bits_are_kept(language_model: LanguageModel, dataset: Dataset) -> None:
    dashboards = dashboards_empty(1, window=3)
    dashboards.max_act[0] = 2.0
    dashboards.top.seq[0, 0] = 0
    dashboards.top.window_tokens[0, 0] = [65_534, 65_535, 200_000]
    dashboards.top.window_values[0, 0] = [0.0, 2.0, 1.0]
    params = DashboardParams(context_before=1, context_after=1, top_k=2)
    sae = _published(language_model, dataset, dashboards, params)
    stored = dashboard_unpack(bytes(Feature.objects.get(run_id=sae.published_run_id).dashboard))
    assert (stored.top[0].token_ids, stored.top[0].values, stored.top[0].focus) == (
        [65_534, 65_535, 200_000], [0.0, 2.0, 1.0], 1)


# Written by layout version 1 (before neighbours): focus 1, one top slot and two intervals of one slot, window 3.
VERSION_1_BLOB = bytes.fromhex(
    "01020300010001000200010002000200030000000040000000000000d03f000000000000e83f03000000000000000100000000000000"
    "010000000000000002000000000000000100000000000000000080bf0000c03f07000000050000000000c03f0000003f020000000300"
    "0000000080bf000000bfffff0a000b000c000d000e00ffffffffffff007e003c0034000000380000007e007e007e"
)


def test_a_version_1_blob_still_decodes_without_neighbours() -> None:
    stored = dashboard_unpack(VERSION_1_BLOB)
    assert (stored.top[0].token_ids, stored.top[0].values, stored.top[0].focus) == ([10, 11], [2.0, 0.5], 0)
    assert stored.intervals == [[StoredExample([12, 13, 14], [0.0, 1.0, 0.0], 1)], []]
    assert (stored.interval_shares, stored.logit_top_ids, stored.logit_hist_max) == ([0.25, 0.75], [7, 5], 1.5)
    assert (stored.neighbour_ids, stored.neighbour_cosines) == ([], [])


# The same feature written by layout version 2 (neighbours, one focus for every example), with neighbour 4 at 0.5.
VERSION_2_BLOB = bytes.fromhex(
    "020203000100010002000100020002000200010000000040000000000000d03f000000000000e83f03000000000000000100000000000000"
    "01000000000000000200000000000000000080bf0000c03f07000000050000000000c03f0000003f0200000003000000000080bf000000bf"
    "ffff0a000b000c000d000e00ffffffffffff007e003c0034000000380000007e007e007e040000000000003f"
)


def test_a_version_2_blob_still_decodes_with_one_focus_for_all() -> None:
    stored = dashboard_unpack(VERSION_2_BLOB)
    assert (stored.top[0].token_ids, stored.top[0].values, stored.top[0].focus) == ([10, 11], [2.0, 0.5], 0)
    assert stored.intervals == [[StoredExample([12, 13, 14], [0.0, 1.0, 0.0], 1)], []]
    assert (stored.neighbour_ids, stored.neighbour_cosines) == ([4], [0.5])


def test_each_example_keeps_its_own_focus() -> None:
    """Whole sequences (imported) peak anywhere: slot 0 at position 2, slot 1 at 0; slot 2 is empty."""
    window_values = np.array([[[0.5, 1.0, 2.0], [1.0, 0.0, 0.5], [np.nan] * 3]], dtype=np.float32)
    rows = features_pack(
        focus=1, max_act=np.array([2.0], dtype=np.float32), interval_shares=np.array([[0.25, 0.75]]),
        act_hist_counts=np.zeros((1, 2), dtype=np.int64), logit_hist_counts=np.zeros((1, 2), dtype=np.int64),
        logit_hist_min=np.zeros(1, dtype=np.float32), logit_hist_max=np.ones(1, dtype=np.float32),
        logit_top_ids=np.zeros((1, 1), dtype=np.int64), logit_top_values=np.zeros((1, 1), dtype=np.float32),
        logit_bottom_ids=np.zeros((1, 1), dtype=np.int64), logit_bottom_values=np.zeros((1, 1), dtype=np.float32),
        window_tokens=np.array([[[10, 11, 12], [13, 14, 15], [-1, -1, -1]]]), window_values=window_values, n_top=1,
        example_focus=np.array([[2, 0, 0]]),
    )
    stored = dashboard_unpack(rows[0].tobytes())
    assert (stored.top[0].focus, stored.top[0].value) == (2, 2.0)
    assert (stored.intervals[0][0].focus, stored.intervals[0][0].value) == (0, 1.0)


def test_a_blob_of_another_layout_is_refused_with_its_version(published_feature: Feature) -> None:
    blob = bytearray(published_feature.dashboard)
    blob[0] = 99
    with pytest.raises(DashboardLayoutError, match="layout 99"):
        dashboard_unpack(bytes(blob))
