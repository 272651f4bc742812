"""DashboardParams as a run stores them: every field, read back exactly or not at all."""

import pytest

from workers.compute.params import DashboardParams, DashboardParamsError


def test_stored_params_read_back_equal() -> None:
    params = DashboardParams(top_k=3, context_before=1, batch_size=64, skip_bos=False)
    assert DashboardParams.from_json(params.as_json()) == params


def test_a_missing_field_is_an_error_not_todays_default() -> None:
    stored = DashboardParams().as_json()
    del stored["n_intervals"]
    with pytest.raises(DashboardParamsError, match="lack \\['n_intervals'\\]"):
        DashboardParams.from_json(stored)


def test_an_unknown_field_or_a_value_of_another_type_is_an_error() -> None:
    with pytest.raises(DashboardParamsError, match="unknown \\['colour'\\]"):
        DashboardParams.from_json({**DashboardParams().as_json(), "colour": 1})
    with pytest.raises(DashboardParamsError, match="top_k is '20', not int"):
        DashboardParams.from_json({**DashboardParams().as_json(), "top_k": "20"})
