"""A hook point's layer, read from its name."""

import pytest

from workers.compute.hooks import hook_layer


@pytest.mark.parametrize(("hook_name", "layer"), [
    ("blocks.5.hook_resid_post", 5), ("blocks.11.attn.hook_z", 11), ("blocks.0.hook_mlp_out", 0),
    ("hook_embed", None), ("ln_final.hook_normalized", None),
])
def test_the_layer_is_the_block_number(hook_name: str, layer: int | None) -> None:
    assert hook_layer(hook_name) == layer
