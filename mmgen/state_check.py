"""Check a loaded state dict against the module it is meant for, before ``load_state_dict``.

torch's own error lists every mismatch in a multi-line message; a user whose ``config.json`` does
not match the weights (or whose weights hold NaN after a diverged run) wants one line naming the
first bad tensor.
"""
from __future__ import annotations

from typing import Mapping

import torch

__all__ = ["check_state_dict", "first_nonfinite"]


def first_nonfinite(state: Mapping[str, torch.Tensor]) -> str | None:
    """Name of the first floating tensor holding NaN or inf (None if all are finite)."""
    for name, t in state.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return name
    return None


def check_state_dict(expected: Mapping[str, torch.Tensor], loaded: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise ``ValueError`` naming the first missing, unexpected, mis-shaped or non-finite tensor.

    Args:
        expected: the target module's ``state_dict()`` (names and shapes that must match).
        loaded: the tensors read from ``source``.
        source: the file or folder they came from (for the message).
    """
    missing = [k for k in expected if k not in loaded]
    unexpected = [k for k in loaded if k not in expected]
    if missing or unexpected:
        parts = [f"{len(missing)} missing (e.g. {missing[0]!r})"] if missing else []
        parts += [f"{len(unexpected)} unexpected (e.g. {unexpected[0]!r})"] if unexpected else []
        raise ValueError(f"{source} does not match its config: tensors {', '.join(parts)}")
    for name, ref in expected.items():
        if tuple(loaded[name].shape) != tuple(ref.shape):
            raise ValueError(f"{source} does not match its config: tensor {name!r} has shape "
                             f"{tuple(loaded[name].shape)} in the weights, {tuple(ref.shape)} in the model the config builds")
    bad = first_nonfinite(loaded)
    if bad is not None:
        raise ValueError(f"{source} holds non-finite weights (NaN/inf), e.g. in tensor {bad!r}: refusing to load them")
