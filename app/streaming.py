"""Partial results while a pipeline generates: what the page shows before the final image.

``Pipeline.__call__`` drives the autoregressive loop and reports each step through
``callback(step, total, partial_tokens)``. The page needs a generator of updates instead, so the
pipeline runs in a worker thread and the callback hands decoded partials over a queue. Closing
the generator (the browser went away) sets a flag that stops the worker at its next step, so an
abandoned request does not keep a CPU busy.
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator

import torch

from mmgen.images import to_uint8
from mmgen.tokens import GridLayout, ScalesLayout, Tokens

__all__ = ["Partial", "Done", "decode_partial", "stream_pipeline", "Cancelled"]

GREY = 96  # not-yet-generated tokens of a raster image


class Cancelled(Exception):
    """Raised inside the worker's callback when the consumer stopped listening."""


@dataclass
class Partial:
    step: int
    total: int
    images: torch.Tensor | None  # uint8 (B,3,H,W) or (B,3,T,H,W); None = progress only


@dataclass
class Done:
    images: torch.Tensor
    seconds: float


def decode_partial(pipe: Any, tokens: Tokens, step: int, total: int) -> torch.Tensor | None:
    """Pixels (uint8) of what is generated after ``step`` steps, or None if this layout has no partial view.

    A pipeline may define ``decode_partial(tokens, step)`` itself (NBP blocks, xAR entities, video);
    otherwise VAR scales accumulate into the tokenizer's latent (the image sharpens), token-by-token
    raster grids decode with the not-yet-sampled cells greyed out, and anything else (xAR entities
    merged into the full grid, ...) is decoded as it is.
    """
    custom = getattr(pipe, "decode_partial", None)
    if callable(custom):
        return custom(tokens, step)
    tok, lay = pipe.tokenizer, tokens.layout
    if isinstance(lay, ScalesLayout) and hasattr(tok, "next_scale_input") and tokens.ids is not None:
        f_hat = tok.empty_fhat(tokens.batch_size, tokens.device)
        for si, ids in enumerate(lay.split(tokens.ids)):
            f_hat, _ = tok.next_scale_input(si, f_hat, ids)
        return to_uint8(tok.decode_fhat(f_hat)).cpu()
    if _token_by_token(tokens, total):
        img = to_uint8(tok.decode(tokens)).cpu()
        done = torch.zeros(lay.num_tokens, dtype=torch.bool)
        done[:step] = True  # raster order: the first `step` cells are sampled
        mask = torch.nn.functional.interpolate(done.view(1, 1, lay.h, lay.w).float(), size=img.shape[-2:], mode="nearest")[0, 0].bool()
        return img.masked_fill(~mask, GREY)
    try:
        return to_uint8(tok.decode(tokens)).cpu()
    except Exception:  # a layout whose partial tokens the tokenizer cannot decode: progress only
        return None


def _token_by_token(tokens: Any, total: int) -> bool:
    """A raster grid sampled one token per step (not a grid filled a group at a time, like xAR's entities)."""
    lay = getattr(tokens, "layout", None)
    return isinstance(lay, GridLayout) and total == lay.num_tokens and tokens.ids is not None


def _wants_image(tokens: Any, step: int, total: int) -> bool:
    """Decode a partial at each scale/block/entity, each completed raster row, and the last step."""
    if _token_by_token(tokens, total):
        return step == total or step % tokens.layout.w == 0
    return True


def stream_pipeline(pipe: Any, min_interval: float = 0.1, image_interval: float = 0.0, **kwargs: Any) -> Iterator[Partial | Done]:
    """Run ``pipe(**kwargs, callback=...)`` in a thread; yield ``Partial`` updates in step order, then ``Done``.

    Progress-only updates (no image) are thinned to one per ``min_interval`` seconds; partial
    images to one per ``image_interval`` seconds (decoding each step of a 128-step clip would
    cost more than sampling it); the last step always comes through. Exceptions of the pipeline
    re-raise here.
    """
    updates: queue.Queue = queue.Queue()
    stop = threading.Event()
    last, last_image = [0.0], [0.0]

    def callback(step: int, total: int, tokens: Tokens) -> None:
        if stop.is_set():
            raise Cancelled
        wanted = _wants_image(tokens, step, total) and (step == total or time.perf_counter() - last_image[0] >= image_interval)
        images = decode_partial(pipe, tokens, step, total) if wanted else None
        now = time.perf_counter()
        if images is not None:
            last_image[0] = now
        if images is None and step < total and now - last[0] < min_interval:
            return
        last[0] = now
        updates.put(Partial(step, total, images))

    def work() -> None:
        t0 = time.perf_counter()
        try:
            out = pipe(**kwargs, callback=callback)
            updates.put(Done(out, time.perf_counter() - t0))
        except BaseException as e:  # handed to the consumer, which re-raises it
            updates.put(e)

    worker = threading.Thread(target=work, name="mmgen-demo-generate", daemon=True)
    worker.start()
    try:
        while True:
            item = updates.get()
            if isinstance(item, BaseException):
                raise item
            yield item
            if isinstance(item, Done):
                return
    finally:
        stop.set()  # consumer gone or finished: the worker stops at its next step
