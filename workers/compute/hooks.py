"""Where a TransformerLens hook point sits in the model, read from its name alone (no torch)."""

import re

_BLOCK = re.compile(r"blocks\.(\d+)\.")


def hook_layer(hook_name: str) -> int | None:
    """The block a hook belongs to ("blocks.5.hook_resid_post" -> 5); None for hooks outside the blocks
    (hook_embed, ln_final.hook_normalized, ...)."""
    block = _BLOCK.search(hook_name)
    return int(block.group(1)) if block else None
