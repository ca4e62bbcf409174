"""Deterministic, non-trivial weights for a tokenizer given only its official key -> shape list.

Used to make the MaskGIT-VQ parity fixture (the official module was filled with these weights
outside this repo) and by the test that reproduces it, so the fixture stores outputs, not weights.
"""
import math

import torch


def recipe_weights(shapes: dict, seed: int, codebook_std: float) -> dict[str, torch.Tensor]:
    """Norm weights 1 + 0.1 N, biases 0.1 N, conv weights N(0, 1/fan_in), codebook N(0, codebook_std^2); sorted-key order."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key in sorted(shapes):
        shape = tuple(shapes[key])
        noise = torch.randn(shape, generator=g)
        if key.endswith("embedding.weight"):
            out[key] = noise * codebook_std
        elif len(shape) == 1:
            out[key] = (1.0 if "norm" in key and key.endswith("weight") else 0.0) + 0.1 * noise
        else:
            out[key] = noise / math.sqrt(math.prod(shape[1:]))
    return out
