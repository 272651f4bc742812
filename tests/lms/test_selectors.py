"""Token text for stored ids."""

import pytest

from atlas.lms.selectors import tokens_text

VOCABULARY = ("<|endoftext|>", " the", " cat")


@pytest.mark.parametrize(("token_ids", "text"), [
    ([1, 2, 0], [" the", " cat", "<|endoftext|>"]),
    ([], []),
    # Ids the vocabulary lacks (a model registered with a shorter one, or a corrupt row) show as <id>.
    ([2, 3, 1], [" cat", "<3>", " the"]),
    ([-1, 1], ["<-1>", " the"]),
])
def test_each_id_becomes_its_text(token_ids: list[int], text: list[str]) -> None:
    assert tokens_text(VOCABULARY, token_ids) == text
