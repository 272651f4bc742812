"""Fixtures for end-to-end tests: a published feature served by a live server over real HTTP."""

import pytest

from atlas.features.models import Feature
from atlas.lms.models import Vocabulary

# Token text that would run as markup if the pages ever stopped escaping it; ids 11 and 13 are
# in the feature's examples, 5 is a top logit.
HOSTILE_TOKENS = {11: "<script>alert(1)</script>", 13: "<img src=x onerror=alert(2)>",
                  5: '<img src=x onerror="document.title=\'pwned\'">'}


@pytest.fixture
def hostile_feature(published_feature: Feature) -> Feature:
    """The published feature, with markup in the vocabulary where its examples and logits show token text."""
    vocabulary = Vocabulary.objects.get(language_model=published_feature.run.sae.language_model)
    for token_id, text in HOSTILE_TOKENS.items():
        vocabulary.tokens[token_id] = text
    vocabulary.save()
    return published_feature
