"""torchrun / ``torch.distributed`` plumbing: env detection, DDP wrapping, rank-0 helpers.

Launch with ``torchrun --nproc_per_node N ...`` (or ``python -m torch.distributed.run``). Each
rank reads its contiguous slice of every global batch, so an N-process update equals the
1-process update on the concatenated batch (DDP averages gradients over equal-size slices). The data order lives here too: it is a
function of (seed, samples consumed) only, which is what makes resume exact.
"""
from __future__ import annotations

import copy
import itertools
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler, default_collate

__all__ = ["DistInfo", "env_info", "setup", "teardown", "default_device", "wrap", "unwrap", "barrier",
           "all_reduce_mean", "all_gather_dict", "rank_slice", "batch_loader"]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None


def env_info() -> DistInfo:
    """Rank layout from torchrun's ``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` (single process if unset)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", dist.get_rank()))
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"inconsistent distributed env: RANK={rank}, WORLD_SIZE={world}")
    return DistInfo(rank, world, local)


def default_device(info: DistInfo | None = None) -> torch.device:
    """``cuda:LOCAL_RANK`` when CUDA is available, else CPU."""
    info = info or env_info()
    if torch.cuda.is_available():
        return torch.device("cuda", info.local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def setup(device: torch.device | None = None) -> tuple[DistInfo, bool]:
    """Init the process group from the env if needed (nccl on CUDA, gloo on CPU).

    Returns the layout and whether this call created the group (its owner tears it down).
    """
    info = env_info()
    if not info.enabled or dist.is_initialized():
        return info, False
    device = device or default_device(info)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size,
                            timeout=timedelta(minutes=30))
    return info, True


def teardown(owned: bool) -> None:
    if owned and dist.is_initialized():
        dist.barrier()  # no rank tears down while another still talks to it (gloo aborts otherwise)
        dist.destroy_process_group()


def wrap(model: nn.Module, info: DistInfo, device: torch.device, find_unused_parameters: bool = False) -> nn.Module:
    """DDP-wrap ``model`` when running distributed; otherwise return it unchanged."""
    if not info.enabled:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return DDP(model, device_ids=ids, find_unused_parameters=find_unused_parameters)


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside a DDP (or ``torch.compile``) wrapper."""
    while isinstance(model, DDP) or hasattr(model, "_orig_mod"):
        model = model.module if isinstance(model, DDP) else model._orig_mod
    return model


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_reduce_mean(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of ``t`` over ranks (returns ``t`` itself when single-process)."""
    if info.enabled:
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= info.world_size
    return t


def all_gather_dict(tensors: dict[str, torch.Tensor], info: DistInfo, device: torch.device) -> list[dict[str, torch.Tensor]]:
    """Gather a dict of same-shaped tensors from every rank (CPU results, rank order)."""
    if not info.enabled:
        return [{k: v.cpu() for k, v in tensors.items()}]
    out: list[dict[str, torch.Tensor]] = [{} for _ in range(info.world_size)]
    comm = device if dist.get_backend() == "nccl" else torch.device("cpu")
    for k in sorted(tensors):
        v = tensors[k].to(comm).contiguous()
        bufs = [torch.empty_like(v) for _ in range(info.world_size)]
        dist.all_gather(bufs, v)
        for r, b in enumerate(bufs):
            out[r][k] = b.cpu()
    return out


def rank_slice(global_batch: int, grad_accum: int, info: DistInfo) -> tuple[int, int]:
    """(offset, micro-batch size) of this rank inside each global batch.

    Rank ``r`` owns samples ``[r * B / W, (r + 1) * B / W)`` of the global batch, read as
    ``grad_accum`` consecutive micro-batches.
    """
    per_rank, rem = divmod(global_batch, info.world_size)
    if rem or per_rank % grad_accum:
        raise ValueError(f"batch_size={global_batch} must be divisible by world_size ({info.world_size}) "
                         f"x grad_accum ({grad_accum})")
    return info.rank * per_rank, per_rank // grad_accum


# ----------------------------------------------------------------------------- resumable, rank-sliced data order
def _is_infinite(dataset: Dataset) -> bool:
    """Built-in worlds are deterministic per index and virtually unbounded: read them sequentially."""
    if getattr(dataset, "infinite", False):
        return True
    try:
        return len(dataset) >= 2**31
    except TypeError:  # no __len__
        return True


class _RankBatches(Sampler):
    """This rank's micro-batches of sample indices, from ``start_step`` on, forever.

    Global position ``p`` (samples consumed so far) maps to index ``p`` for unbounded datasets,
    and to ``perm(seed, epoch)[p % n]`` with ``epoch = p // n`` for finite ones.
    """

    def __init__(self, n: int | None, seed: int, global_batch: int, grad_accum: int, offset: int, micro: int,
                 start_step: int) -> None:
        self.n, self.seed, self.global_batch, self.grad_accum = n, seed, global_batch, grad_accum
        self.offset, self.micro, self.start_step = offset, micro, start_step
        self._perms: dict[int, np.ndarray] = {}

    def _index(self, p: int) -> int:
        if self.n is None:
            return p
        epoch, i = divmod(p, self.n)
        if epoch not in self._perms:
            self._perms = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.n)}
        return int(self._perms[epoch][i])

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start_step
        while True:
            base = step * self.global_batch + self.offset
            for m in range(self.grad_accum):
                yield [self._index(base + m * self.micro + i) for i in range(self.micro)]
            step += 1


def _splits_itself(dataset: IterableDataset, info: DistInfo) -> bool:
    """A stream with a ``world_size`` attribute (e.g. ``ShardDataset``) hands each rank its own part."""
    if not info.enabled or not hasattr(dataset, "world_size"):
        return False
    return dataset.world_size is None or dataset.world_size == info.world_size


class _StreamBatches(IterableDataset):
    """Micro-batches from a sample stream, after skipping the ``skip`` samples already consumed.

    Each step reads ``chunk`` samples and keeps ``[offset, offset + micro * grad_accum)``: for a
    global stream every rank reads all ``batch_size`` samples and keeps its slice (the same order
    for any world size); for a stream that splits itself across ranks, ``chunk`` is the rank's
    share and ``offset`` is 0. A stream that ends is iterated again (a new epoch).
    """

    def __init__(self, dataset: IterableDataset, collate: Callable, skip: int, chunk: int, grad_accum: int,
                 offset: int, micro: int) -> None:
        self.dataset, self.collate, self.skip = dataset, collate, skip
        self.chunk, self.grad_accum, self.offset, self.micro = chunk, grad_accum, offset, micro

    def _samples(self) -> Iterator[Any]:
        first: Iterable = self.dataset
        skip = self.skip
        if skip and hasattr(self.dataset, "skip"):  # fast path (shards); on a copy, so later epochs start at 0
            first = copy.copy(self.dataset)
            skipped = first.skip(skip)
            first = skipped if skipped is not None else first
            skip = 0
        source, epoch = first, 0
        while True:
            empty = True
            for sample in source:
                empty = False
                if skip:
                    skip -= 1
                    continue
                yield sample
            if empty:
                hint = f" after skip({self.skip}): a finite stream with skip() must repeat itself" if epoch == 0 and self.skip else ""
                raise ValueError(f"{type(self.dataset).__name__} yielded no samples in epoch {epoch}{hint}")
            source, epoch = self.dataset, epoch + 1

    def __iter__(self) -> Iterator[Any]:
        stream = self._samples()
        mine = self.micro * self.grad_accum
        while True:
            chunk = list(itertools.islice(stream, self.chunk))[self.offset:self.offset + mine]
            for m in range(self.grad_accum):
                yield self.collate(chunk[m * self.micro:(m + 1) * self.micro])


def batch_loader(dataset: Dataset, collate_fn: Callable | None, *, info: DistInfo, global_batch: int, grad_accum: int,
                 start_step: int, seed: int, num_workers: int = 0, pin_memory: bool = False) -> Iterator[Any]:
    """Infinite iterator over this rank's collated micro-batches, starting at ``start_step``.

    The DataLoader gets its own generator so creating it never touches the global RNG (which
    would make a resumed run drift from an uninterrupted one). A stream is read by one worker at
    most, which keeps its order exact.
    """
    offset, micro = rank_slice(global_batch, grad_accum, info)
    collate = collate_fn or default_collate
    gen = torch.Generator().manual_seed(seed)
    if isinstance(dataset, IterableDataset):
        if _splits_itself(dataset, info):
            dataset = copy.copy(dataset)
            if dataset.world_size is None:  # pin the placement: workers may not see the process group
                dataset.rank, dataset.world_size = info.rank, info.world_size
            per_rank = global_batch // info.world_size
            stream = _StreamBatches(dataset, collate, start_step * per_rank, per_rank, grad_accum, 0, micro)
        else:
            stream = _StreamBatches(dataset, collate, start_step * global_batch, global_batch, grad_accum, offset, micro)
        loader = DataLoader(stream, batch_size=None, num_workers=min(num_workers, 1), pin_memory=pin_memory, generator=gen)
    else:
        n = None if _is_infinite(dataset) else len(dataset)
        if n == 0:
            raise ValueError(f"{type(dataset).__name__} is empty")
        sampler = _RankBatches(n, seed, global_batch, grad_accum, offset, micro, start_step)
        loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers,
                            pin_memory=pin_memory, generator=gen)
    return _worker_errors_in_one_line(iter(loader)) if num_workers > 0 else iter(loader)


def _worker_errors_in_one_line(batches: Iterator[Any]) -> Iterator[Any]:
    """A DataLoader worker's error arrives with the worker's whole traceback as its message: keep the error's own line.

    (Say, a folder of garbage shards read by a worker: the user should see the dataset's one-line
    message, as with ``num_workers=0``, not a multi-line text.)
    """
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (ValueError, OSError) as e:
            text = str(e)
            if not (text.startswith("Caught ") and "DataLoader worker" in text):
                raise
            last = text.rstrip().splitlines()[-1]
            raise type(e)(last.split(": ", 1)[-1]) from e
        yield batch
