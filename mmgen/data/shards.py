"""WebDataset tar shards: ``pack`` any dataset into shards, ``ShardDataset`` streams them back.

Long runs stream shards instead of random access. Samples are stored as ``<key>.png``,
``<key>.txt`` (caption) and ``<key>.cls`` (label). Streaming is deterministic (optionally
shuffled per epoch from a seed), so a resumed run skips exactly the samples it already consumed;
corrupt samples are skipped and counted, never fatal, but a shard set that yields nothing is.
"""
from __future__ import annotations

import glob
import io
import logging
import re
import tarfile
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from mmgen.data.folders import pil_to_pixels
from mmgen.fs import writing
from mmgen.images import to_uint8

__all__ = ["pack", "ShardDataset", "resolve_shards", "check_shard_url", "SHARD_PATTERN"]

logger = logging.getLogger(__name__)
SHARD_PATTERN = "shard-%06d.tar"
_IMAGE_KEYS = ("png", "jpg", "jpeg", "webp", "bmp")
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")


def _is_remote(url: str) -> bool:
    return urlparse(url).scheme.lower() in ALLOWED_SCHEMES


def _to_uint8(pixels: torch.Tensor) -> np.ndarray:
    """(3,H,W) in [-1,1] -> (H,W,3) uint8 (exact for images that came from uint8)."""
    return to_uint8(pixels.detach().cpu()).permute(1, 2, 0).numpy()


def pack(
    dataset: Dataset,
    out_dir: str | Path,
    num_samples: int | None = None,
    samples_per_shard: int = 1000,
    overwrite: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Write a dataset into ``out_dir/shard-000000.tar``, ``shard-000001.tar``, ...

    Args:
        dataset: a map-style dataset of item dicts, e.g. ``build_dataset("shapes", size=32)``.
        out_dir: output folder (created).
        num_samples: how many items to write; required for infinite worlds (``shapes``),
            defaults to the whole dataset otherwise.
        samples_per_shard: items per tar file.
        overwrite: replace existing ``shard-*.tar`` files in ``out_dir`` (else an error).
        progress: show a tqdm progress bar.

    Returns:
        The shard paths written, in order.

    Raises:
        FileExistsError: ``out_dir`` already holds shards and ``overwrite`` is off.
        OSError: naming ``out_dir``, when it cannot be written (read-only, disk full).
    """
    if isinstance(dataset, (str, Path)):
        raise TypeError(f"pack() takes a dataset, not {dataset!r}: pass build_dataset({str(dataset)!r}, size=..., seed=...)")
    if num_samples is None:
        if getattr(dataset, "infinite", False):
            raise ValueError(f"{type(dataset).__name__} is an infinite world: pass num_samples (e.g. num_samples=100000)")
        num_samples = len(dataset)
    if num_samples <= 0:
        raise ValueError(f"num_samples must be positive, got {num_samples}")
    if not getattr(dataset, "infinite", False) and num_samples > len(dataset):
        raise ValueError(f"num_samples={num_samples} exceeds the dataset's {len(dataset)} items")
    if samples_per_shard <= 0:
        raise ValueError(f"samples_per_shard must be positive, got {samples_per_shard}")

    out = Path(out_dir)
    old = sorted(out.glob("shard-*.tar"))
    if old and not overwrite:
        raise FileExistsError(f"{out} already holds {len(old)} shard(s); pass --overwrite (overwrite=True) to replace them")
    with writing(out, "shards"):
        out.mkdir(parents=True, exist_ok=True)
        for p in old:
            p.unlink()
        return _write_shards(dataset, out, num_samples, samples_per_shard, progress)


def _write_shards(dataset: Dataset, out: Path, num_samples: int, samples_per_shard: int, progress: bool) -> list[Path]:
    import webdataset as wds
    from tqdm.auto import tqdm

    written: list[Path] = []
    with wds.ShardWriter(str(out / SHARD_PATTERN), maxcount=samples_per_shard, verbose=0, mtime=0.0,
                         post=lambda f: written.append(Path(f))) as sink:
        for i in tqdm(range(num_samples), desc=f"packing {out.name}", unit="img", disable=not progress):
            item = dataset[i]
            sample: dict = {"__key__": f"{i:09d}", "png": _to_uint8(item["pixels"])}
            if item.get("caption") is not None:
                sample["txt"] = str(item["caption"])
            if item.get("label") is not None:
                sample["cls"] = int(item["label"])
            sink.write(sample)
    return written


ALLOWED_SCHEMES = ("http", "https")


def check_shard_url(url: str) -> None:
    """Refuse every shard URL but a local path and plain ``http(s)://``.

    webdataset opens ``pipe:CMD`` by running CMD in a shell (and ``-`` reads stdin, ``gs:`` etc.
    spawn other programs): a data spec comes from recipes that people send each other, and a
    recipe must never be code.

    Raises:
        ValueError: any other scheme (``pipe:``, ``file:``, ``s3:``, ``-``, ...).
    """
    scheme = urlparse(url).scheme.lower()
    if url.strip() == "-" or (scheme and scheme not in ALLOWED_SCHEMES and not _WINDOWS_DRIVE.match(url)):
        raise ValueError(f"shard URL {url!r} is refused: only local paths and {'/'.join(ALLOWED_SCHEMES)}:// URLs are "
                         "allowed (write a relative path with a colon as ./name)")


def resolve_shards(spec: str | Path | list) -> list[str]:
    """Shard paths from a directory (its ``*.tar``), a brace pattern ``a-{000..009}.tar``, a glob or a list.

    Raises:
        FileNotFoundError: a named shard is missing, or nothing matches.
        ValueError: a URL that is neither a local path nor plain http(s) (see :func:`check_shard_url`).
    """
    import webdataset as wds

    if isinstance(spec, (list, tuple)):
        urls = [str(s) for s in spec]
    elif Path(spec).is_dir():
        urls = sorted(str(p) for p in Path(spec).glob("*.tar"))
        if not urls:
            raise FileNotFoundError(f"no .tar shards in directory {str(spec)!r}")
    elif "{" in str(spec):
        urls = wds.shardlists.expand_urls(str(spec))
    elif any(c in str(spec) for c in "*?["):
        urls = sorted(glob.glob(str(spec)))
    else:
        urls = [str(spec)]
    if not urls:
        raise FileNotFoundError(f"shard spec {str(spec)!r} matches no files")
    for u in urls:
        check_shard_url(u)
    missing = [u for u in urls if not _is_remote(u) and not Path(u).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of {len(urls)} shard(s) missing, e.g. {missing[0]!r}")
    return urls


class ShardDataset(IterableDataset):
    """Stream ``{"pixels", "caption"?, "label"?}`` dicts from WebDataset shards.

    Order is deterministic. A rank reads ``shards[rank::world_size]`` when the shard count divides
    evenly, else every ``world_size``-th sample (balanced ranks, so DDP never waits at epoch end).
    DataLoader workers take consecutive blocks of ``batch_size`` samples round-robin, which is the
    order the DataLoader hands batches out in: the loader yields exactly the rank's stream.

    Args:
        shards: directory, brace pattern, glob, file or list (see :func:`resolve_shards`).
        size: output side (images are resized + centre-cropped when they differ).
        start: samples of this rank's stream to skip (resume after consuming ``start`` samples).
        rank, world_size: DDP placement; default from ``torch.distributed`` when initialised.
        batch_size: the DataLoader's batch size, so worker blocks line up with its batches.
        repeat: loop over epochs forever (positions keep counting across epochs, so ``start``
            may point into any epoch); the usual choice for training.
        shuffle: shuffle the shard order each epoch from ``(seed, epoch)`` (without ``repeat``
            every pass is epoch 0, so the order is the same each time).
        seed: seed of the shard shuffling.

    ``stats`` counts ``yielded`` and ``skipped`` samples (per process: workers keep their own).
    Samples whose entries differ from the first good one (say, a caption lost to truncation) are
    skipped too, so every yielded dict has the same keys.
    """

    def __init__(self, shards: str | Path | list, size: int = 32, start: int = 0, rank: int | None = None,
                 world_size: int | None = None, batch_size: int = 1, repeat: bool = False, shuffle: bool = False, seed: int = 0):
        self.urls = resolve_shards(shards)
        self.source = str(shards) if not isinstance(shards, (list, tuple)) else f"{self.urls[:3]}{'...' if len(self.urls) > 3 else ''}"
        if start < 0 or batch_size < 1:
            raise ValueError(f"need start >= 0 and batch_size >= 1, got start={start}, batch_size={batch_size}")
        self.size, self.start, self.batch_size = size, start, batch_size
        self.rank, self.world_size = rank, world_size
        self.repeat, self.shuffle, self.seed = repeat, shuffle, seed
        self.stats: dict[str, int] = {"yielded": 0, "skipped": 0}
        self._counts: dict[str, int | None] = {}

    def skip(self, n: int) -> "ShardDataset":
        """Skip ``n`` more samples of this rank's stream (returns self, for chaining)."""
        if n < 0:
            raise ValueError(f"cannot skip a negative number of samples ({n})")
        self.start += n
        return self

    def _placement(self) -> tuple[int, int]:
        if self.world_size is not None:
            rank, world = self.rank or 0, self.world_size
        elif torch.distributed.is_available() and torch.distributed.is_initialized():
            rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        else:
            rank, world = self.rank or 0, 1
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} out of range for world_size {world}")
        return rank, world

    def _skip_error(self, exn: Exception) -> bool:
        """webdataset error handler: count, log, carry on with the next member/shard."""
        self.stats["skipped"] += 1
        logger.warning("skipping corrupt shard data: %s", exn)
        return True

    def _count(self, url: str) -> int | None:
        """Samples in a local shard from its tar headers alone (seeks over data; None if unreadable)."""
        if url not in self._counts:
            from webdataset.tariterators import base_plus_ext

            try:
                with tarfile.open(url) as tar:
                    self._counts[url] = len({k for k, _ in map(base_plus_ext, tar.getnames()) if k is not None})
            except Exception:  # remote or broken: read it the slow way
                self._counts[url] = None
        return self._counts[url]

    def _raw_samples(self, rank: int, world: int, tally: dict[str, int]) -> Iterator[tuple[int, dict]]:
        """``(position, undecoded sample)`` of this rank's stream, epoch after epoch if ``repeat``.

        Whole shards that lie before ``start`` are stepped over using header counts, so a resume
        deep into a run does not re-read everything it already trained on. ``tally["positions"]``
        ends as the stream's length (fast-forwarded samples included).
        """
        from webdataset.tariterators import tarfile_samples

        def share(n: int) -> int:  # how many of the epoch's first n samples belong to this rank
            return n if shard_split else max(0, (n - rank + world - 1) // world)

        shard_split = len(self.urls) % world == 0
        pos, epoch = 0, 0
        while True:
            urls = list(self.urls)
            if self.shuffle:
                urls = [urls[k] for k in np.random.default_rng([self.seed, epoch]).permutation(len(urls))]
            if shard_split:
                urls = urls[rank::world]
            n = 0  # sample index within the epoch, before the sample-level rank split
            for url in urls:
                count = self._count(url) if pos < self.start and not _is_remote(url) else None
                if count is not None and pos + share(n + count) - share(n) <= self.start:
                    pos, n = pos + share(n + count) - share(n), n + count
                    continue
                check_shard_url(url)  # again, right before webdataset opens it
                for raw in tarfile_samples([{"url": url}], handler=self._skip_error):
                    if shard_split or n % world == rank:
                        yield pos, raw
                        pos += 1
                    n += 1
            epoch += 1
            tally["positions"] = pos
            if not self.repeat or n == 0:  # an empty epoch would loop forever
                return

    def _decode(self, raw: dict) -> dict | None:
        key = next((k for k in _IMAGE_KEYS if k in raw), None)
        try:
            if key is None:
                raise ValueError(f"no image entry (one of {_IMAGE_KEYS}); entries: {sorted(k for k in raw if not k.startswith('__'))}")
            with Image.open(io.BytesIO(raw[key])) as im:
                item: dict = {"pixels": pil_to_pixels(im, self.size)}
            if "txt" in raw:
                item["caption"] = raw["txt"].decode("utf-8").strip()
            if "cls" in raw:
                item["label"] = int(raw["cls"].decode("ascii").strip())
            return item
        except Exception as e:  # undecodable image, bad label or text
            self.stats["skipped"] += 1
            logger.warning("skipping corrupt sample %s in %s: %s", raw.get("__key__"), raw.get("__url__"), e)
            return None

    def __iter__(self) -> Iterator[dict]:
        rank, world = self._placement()
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        tried = yielded = 0
        tally = {"positions": 0}
        schema: set[str] | None = None  # the keys of the first good sample; later ones must match
        for pos, raw in self._raw_samples(rank, world, tally):
            if pos < self.start or ((pos - self.start) // self.batch_size) % workers != worker:
                continue
            tried += 1
            item = self._decode(raw)
            if item is not None and schema is not None and set(item) != schema:
                # e.g. a sample cut short by a truncated shard: it would break collate downstream
                self.stats["skipped"] += 1
                logger.warning("skipping incomplete sample %s in %s: has %s, expected %s",
                               raw.get("__key__"), raw.get("__url__"), sorted(item), sorted(schema))
                item = None
            if item is not None:
                schema = set(item)
                self.stats["yielded"] += 1
                yielded += 1
                yield item
        seen = tally["positions"]
        if seen == 0:
            raise ValueError(f"shards {self.source} hold no readable samples for rank {rank}/{world} "
                             f"(not WebDataset tar files, or empty; {self.stats['skipped']} corrupt part(s) skipped)")
        if tried and yielded == 0:
            raise ValueError(f"every sample read from shards {self.source} was corrupt ({self.stats})")
        if seen <= self.start:
            logger.warning("start=%d skips past the end of the stream (%d samples)", self.start, seen)
