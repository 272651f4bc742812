"""The features app's published feature, reused for explanation tests."""

from tests.features.conftest import published_feature

__all__ = ["published_feature"]
