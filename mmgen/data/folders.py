"""Image folders: plain images, image+caption pairs, or class sub-folders.

Bring-your-own-data entry point. Captions come from a same-stem ``.txt`` next to the image or
from ``captions.jsonl`` in the root; labels from the first-level sub-folder. Unreadable images
are skipped and counted rather than crashing a long run.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

__all__ = ["IMAGE_EXTENSIONS", "ImageFolderDataset", "pil_to_pixels", "find_images"]

logger = logging.getLogger(__name__)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
CAPTIONS_FILE = "captions.jsonl"


def pil_to_pixels(image: Image.Image, size: int) -> torch.Tensor:
    """RGB, shorter side resized to ``size`` (bicubic, antialiased), centre crop -> (3,size,size) in [-1,1]."""
    image = image.convert("RGB")
    w, h = image.size
    if (w, h) != (size, size):
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        image = image.resize((nw, nh), Image.BICUBIC)
        left, top = (nw - size) // 2, (nh - size) // 2
        image = image.crop((left, top, left + size, top + size))
    arr = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div(127.5).sub(1.0)


def find_images(root: Path) -> list[Path]:
    """Image files under ``root`` (recursive, sorted, hidden files ignored)."""
    return sorted(
        p for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def _read_jsonl_captions(path: Path) -> dict[str, str]:
    captions: dict[str, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            captions[str(row["file"])] = str(row["caption"])
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{path}:{n}: expected {{\"file\": ..., \"caption\": ...}}, got {line[:80]!r} ({e})") from e
    return captions


class ImageFolderDataset(Dataset):
    """Images found recursively under ``root`` as ``{"pixels", "caption"?, "label"?}`` dicts.

    Args:
        root: folder to scan (png/jpg/jpeg/webp/bmp).
        size: output side; shorter side resized, then centre-cropped.
        captions: attach captions from ``<stem>.txt`` or ``root/captions.jsonl`` (keys are paths
            relative to ``root`` or bare file names). When some images have captions, those
            without one are skipped and counted in ``stats["uncaptioned"]``.
        verify: check every image once at start-up so corrupt files never reach training.

    Labels are given when every image sits in a first-level sub-folder; ``classes`` is the sorted
    list of those folder names. ``stats`` counts ``images`` kept and ``skipped`` unreadable ones.

    Raises:
        FileNotFoundError: ``root`` is missing. ValueError: no usable image under ``root``.
    """

    def __init__(self, root: str | Path, size: int = 32, captions: bool = True, verify: bool = True):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {str(self.root)!r} does not exist or is not a directory")
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive integer, got {size!r}")
        self.size = size
        self.stats: dict[str, int] = {"images": 0, "skipped": 0, "uncaptioned": 0}
        self.bad_files: set[Path] = set()
        files = find_images(self.root)
        if not files:
            raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {str(self.root)!r}")
        if verify:
            files = [f for f in files if self._readable(f)]

        self.captions: list[str] | None = None
        if captions:
            found = self._find_captions(files)
            if any(c is not None for c in found):
                missing = [f for f, c in zip(files, found) if c is None]
                if missing:
                    self.stats["uncaptioned"] = len(missing)
                    logger.warning("%d image(s) under %s have no caption and are skipped, e.g. %s", len(missing), self.root, missing[0])
                keep = [k for k, c in enumerate(found) if c is not None]
                files, self.captions = [files[k] for k in keep], [found[k] for k in keep]

        rel = [f.relative_to(self.root).parts for f in files]
        self.classes: list[str] = []
        self.labels: list[int] | None = None
        if rel and all(len(parts) > 1 for parts in rel):
            self.classes = sorted({parts[0] for parts in rel})
            self.labels = [self.classes.index(parts[0]) for parts in rel]
        self.files = list(files)
        if not self.files:
            raise ValueError(f"no usable images under {str(self.root)!r}: {self.stats}")
        self.stats["images"] = len(self.files)

    def _readable(self, path: Path) -> bool:
        try:
            with Image.open(path) as im:
                im.verify()
            return True
        except Exception as e:  # PIL raises many types for corrupt files
            self._mark_bad(path, e)
            return False

    def _mark_bad(self, path: Path, error: Exception) -> None:
        if path not in self.bad_files:  # count and log each file once
            self.bad_files.add(path)
            self.stats["skipped"] += 1
            logger.warning("skipping unreadable image %s: %s", path, error)

    def _find_captions(self, files: list[Path]) -> list[str | None]:
        table = _read_jsonl_captions(self.root / CAPTIONS_FILE) if (self.root / CAPTIONS_FILE).is_file() else {}
        out: list[str | None] = []
        for f in files:
            txt = f.with_suffix(".txt")
            if txt.is_file():
                out.append(txt.read_text(encoding="utf-8").strip())
            else:
                out.append(table.get(f.relative_to(self.root).as_posix(), table.get(f.name)))
        return out

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict:
        # A file that breaks after start-up (or with verify=False) is skipped: the next readable
        # image is returned, so a long run never dies on one bad file.
        n = len(self.files)
        for k in range(n):
            j = (i + k) % n
            path = self.files[j]
            if path in self.bad_files:
                continue
            try:
                with Image.open(path) as im:
                    pixels = pil_to_pixels(ImageOps.exif_transpose(im), self.size)
            except Exception as e:
                self._mark_bad(path, e)
                continue
            item: dict = {"pixels": pixels}
            if self.captions is not None:
                item["caption"] = self.captions[j]
            if self.labels is not None:
                item["label"] = self.labels[j]
            return item
        raise ValueError(f"every image under {str(self.root)!r} is unreadable: {self.stats}")
