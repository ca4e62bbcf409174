"""One place that turns a failed write into an ``OSError`` naming the path.

A write that fails for lack of space raises ``[Errno 28] No space left on device`` without saying
where; a run writing checkpoints, logs and exports to several places should say which one failed.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from safetensors import SafetensorError

__all__ = ["writing"]


@contextlib.contextmanager
def writing(path: str | Path, what: str) -> Iterator[None]:
    """Re-raise an ``OSError`` (or safetensors' I/O error) inside the block as ``OSError`` naming ``path``.

    Args:
        path: the file or folder being written.
        what: what is written there, for the message (``"checkpoint"``, ``"shards"``, ...).
    """
    try:
        yield
    except (OSError, SafetensorError) as e:
        errno, message = getattr(e, "errno", None), f"cannot write {what} to {path}: {getattr(e, 'strerror', None) or e}"
        raise (OSError(errno, message) if errno is not None else OSError(message)) from e
