"""How a dashboard pass selects and summarises examples: the parameters a run stores (no torch here)."""

from dataclasses import dataclass


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
    batch_size: int = 8
    seed: int = 0
    # The first token of every sequence is BOS, whose activations are an artefact of attention sinks.
    skip_bos: bool = True

    @property
    def window(self) -> int:
        return self.context_before + 1 + self.context_after
