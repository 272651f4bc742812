"""How a dashboard pass selects and summarises examples: the parameters a run stores (no torch here)."""

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any


class DashboardParamsError(ValueError):
    """Stored parameters that are not exactly DashboardParams' fields with values of their types."""


@dataclass(frozen=True)
class DashboardParams:
    """How a dashboard pass selects and summarises examples; one source of truth for the defaults."""

    top_k: int = 20
    context_before: int = 24
    context_after: int = 8
    n_intervals: int = 5
    examples_per_interval: int = 5
    act_hist_bins: int = 50
    logit_hist_bins: int = 50
    logit_tokens: int = 10
    neighbours: int = 10  # features of the same SAE listed by decoder cosine similarity
    # Sequences per model batch: shards start on batch boundaries, so every shard of a run uses the same.
    batch_size: int = 8
    seed: int = 0
    # The first token of every sequence is BOS, whose activations are an artefact of attention sinks.
    skip_bos: bool = True

    @property
    def window(self) -> int:
        return self.context_before + 1 + self.context_after

    def as_json(self) -> dict[str, int | bool]:
        """Every field, for a run to store: what its dashboards were computed with."""
        return asdict(self)

    @classmethod
    def from_json(cls, stored: Mapping[str, Any]) -> "DashboardParams":
        """The parameters as_json stored, exactly: a field missing is an error, never filled in with today's
        default, since a run must be finished with the numbers it started with."""
        kinds = {field.name: field.type for field in fields(cls)}
        missing, unknown = sorted(kinds.keys() - stored.keys()), sorted(stored.keys() - kinds.keys())
        if missing or unknown:
            raise DashboardParamsError(f"stored dashboard parameters lack {missing} and have unknown {unknown}")
        for name, value in stored.items():
            expected = bool if kinds[name] is bool else int
            if type(value) is not expected:
                raise DashboardParamsError(f"stored dashboard parameter {name} is {value!r}, not {expected.__name__}")
        return cls(**stored)
