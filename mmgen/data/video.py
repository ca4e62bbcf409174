"""The ``shapes-video`` world (text-to-video) and the mixed world the Emu3-style model trains on.

``shapes-video``: T frames (default 8) of one object of the ``shapes`` vocabulary (colour,
shape, size) moving ``left|right|up|down`` in a straight line at constant speed, always fully
inside the canvas; caption ``a red circle moving right``. The start position (along and across
the motion) and the size are random, the speed is one world constant (``speed`` of the canvas
side per frame), so once the first frame is drawn the rest of the clip follows from the caption:
what a model must get right is the object and its direction. Like ``shapes``, item ``i`` is a
pure function of ``(seed, i)``.

``shapes-unified``: one item per task, cycling through ``tasks`` (``t2i`` caption -> image,
``t2v`` caption -> video, ``i2t`` image -> caption), written ``t2i+t2v+i2t`` (a task named
twice is drawn twice as often). Every item has the same keys and a
``(3, T, H, W)`` pixel tensor so the generic collate stacks them; an image sits in frame 0
(the other frames are black and never read).

``shapes-frames``: single 32x32 frames for a per-frame tokenizer that both tasks decode: a random
frame of a ``shapes-video`` clip, or (with probability ``stills``) a ``shapes`` scene of one or two
objects, since a text-to-image task asks the same tokenizer for scenes no video frame shows.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from mmgen.data import shapes

__all__ = [
    "DIRECTIONS", "TASKS", "VideoScene", "video_caption", "parse_video_caption", "sample_video_scene",
    "render_video", "ShapesVideoWorld", "UnifiedWorld", "FramesWorld",
]

DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}  # (dx, dy)
TASKS = ("t2i", "t2v", "i2t")
DEFAULT_SPEED = 1 / 16  # of the canvas side per frame: 2 px at 32 px, 14 px over 8 frames
_SPLITS = {"train": 10, "test": 11, "val": 12}  # stream tags disjoint from the image world's


@dataclass(frozen=True)
class VideoScene:
    """Ground truth of one clip: the object, its direction and its box ``(x0, y0, side)`` per frame."""

    color: str
    shape: str
    size: str
    direction: str
    boxes: tuple[tuple[int, int, int], ...]

    @property
    def caption(self) -> str:
        return video_caption(self.color, self.shape, self.direction)


def video_caption(color: str, shape: str, direction: str) -> str:
    """``a red circle moving right`` (every word validated)."""
    shapes.ShapeObject(color, shape, "small", "center")  # validates colour and shape
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; allowed: {list(DIRECTIONS)}")
    return f"a {color} {shape} moving {direction}"


def parse_video_caption(text: str) -> tuple[str, str, str]:
    """Strict inverse of :func:`video_caption`: ``(color, shape, direction)``.

    Raises:
        ValueError: naming the first word that does not fit ``a COLOUR SHAPE moving DIRECTION``.
    """
    words = text.lower().split()
    slots = [("article", ["a"]), ("colour", list(shapes.COLORS)), ("shape", list(shapes.SHAPES)),
             ("'moving'", ["moving"]), ("direction", list(DIRECTIONS))]
    for i, (slot, allowed) in enumerate(slots):
        shapes._expect(words, i, allowed, slot)
    if len(words) != len(slots):
        raise ValueError(f"video caption {text!r} has extra words after the direction: {words[len(slots):]}")
    return words[1], words[2], words[4]


def sample_video_scene(rng: np.random.Generator, size: int = 32, frames: int = 8, speed: float = DEFAULT_SPEED) -> VideoScene:
    """Draw object, direction and start; the speed shrinks only if the path would leave the canvas."""
    shapes._check_size(size)
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    if not speed > 0:
        raise ValueError(f"speed must be > 0 (fraction of the canvas per frame), got {speed}")
    color = list(shapes.COLORS)[rng.integers(len(shapes.COLORS))]
    shape = shapes.SHAPES[rng.integers(len(shapes.SHAPES))]
    size_name = shapes.SIZES[rng.integers(len(shapes.SIZES))]
    direction = list(DIRECTIONS)[rng.integers(len(DIRECTIONS))]
    side = shapes._side(size_name, size)
    room = size - side  # free pixels along an axis
    step = min(speed * size, room / max(frames - 1, 1))
    travel = step * (frames - 1)
    start = rng.uniform(0, room - travel)  # along the motion, measured from the side it leaves
    across = int(rng.integers(0, room + 1))
    dx, dy = DIRECTIONS[direction]
    boxes = []
    for t in range(frames):
        along = start + step * t
        pos = int(round(room - along)) if (dx < 0 or dy < 0) else int(round(along))
        boxes.append((pos, across, side) if dx else (across, pos, side))
    return VideoScene(color, shape, size_name, direction, tuple(boxes))


def render_video(scene: VideoScene, size: int = 32) -> np.ndarray:
    """uint8 ``(T, H, W, 3)``: crisp object on black, every pixel black or the object's colour."""
    video = np.zeros((len(scene.boxes), size, size, 3), dtype=np.uint8)
    x0, y0, side = scene.boxes[0]
    mask = shapes.shape_mask(scene.shape, side)
    for t, (x0, y0, side) in enumerate(scene.boxes):
        video[t, y0:y0 + side, x0:x0 + side][mask] = shapes.COLORS[scene.color]
    return video


def _to_pixels(array: np.ndarray) -> torch.Tensor:
    """uint8 ``(..., H, W, 3)`` -> float ``(3, ..., H, W)`` in [-1, 1]."""
    x = torch.from_numpy(array).float().div(127.5).sub(1.0)
    return x.movedim(-1, 0).contiguous()


class ShapesVideoWorld(Dataset):
    """Map-style ``shapes-video`` dataset; items ``{"pixels": float (3,T,H,W) in [-1,1], "caption": str}``.

    Args:
        size: canvas side (>= 16).
        seed: world seed.
        frames: frames per clip.
        length: virtual length.
        split: ``train`` / ``test`` / ``val`` (disjoint random streams).
        speed: fraction of the canvas side moved per frame.
    """

    infinite = True

    def __init__(self, size: int = 32, seed: int = 0, frames: int = 8, length: int = 10**9, split: str = "train", speed: float = DEFAULT_SPEED):
        shapes._check_size(size)
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {list(_SPLITS)} for shapes-video, got {split!r}")
        if frames < 1 or length <= 0:
            raise ValueError(f"frames and length must be positive, got frames={frames}, length={length}")
        if not speed > 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self.size, self.seed, self.frames, self.length, self.split, self.speed = size, seed, frames, length, split, speed

    def __len__(self) -> int:
        return self.length

    def scene(self, i: int) -> VideoScene:
        if not 0 <= i < self.length:
            raise IndexError(f"index {i} out of range for a ShapesVideoWorld of length {self.length}")
        rng = np.random.default_rng([self.seed, i, _SPLITS[self.split]])
        return sample_video_scene(rng, self.size, self.frames, self.speed)

    def __getitem__(self, i: int) -> dict:
        scene = self.scene(int(i))
        return {"pixels": _to_pixels(render_video(scene, self.size)), "caption": scene.caption}


class UnifiedWorld(Dataset):
    """Items of the Emu3-style mixed training run: ``{"pixels": (3,T,H,W), "caption", "task"}``.

    Item ``i`` has task ``tasks[i % len(tasks)]``; images come from ``shapes`` (``objects``; ``two_fraction`` as
    there), videos from ``shapes-video``, each world seeded with ``seed``.
    """

    infinite = True

    def __init__(self, size: int = 32, seed: int = 0, frames: int = 8, tasks: str = "t2i+t2v+i2t", objects: str = "1-2",
                 length: int = 10**9, split: str = "train", speed: float = DEFAULT_SPEED, two_fraction: float | None = None):
        self.tasks = tuple(t.strip() for t in tasks.split("+") if t.strip())
        bad = [t for t in self.tasks if t not in TASKS]
        if not self.tasks or bad:
            raise ValueError(f"tasks must be '+'-separated names from {list(TASKS)} (e.g. 't2v+t2i+i2t'), got {tasks!r}")
        self.video = ShapesVideoWorld(size, seed, frames, length, split, speed)
        self.image = shapes.ShapesWorld(size, seed, objects, length, split if split in ("train", "test", "val") else "train", two_fraction)
        self.frames, self.length = frames, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        i = int(i)
        task = self.tasks[i % len(self.tasks)]
        if task == "t2v":
            return {**self.video[i], "task": task}
        item = self.image[i]
        pixels = torch.full((3, self.frames, *item["pixels"].shape[-2:]), -1.0)
        pixels[:, 0] = item["pixels"]
        return {"pixels": pixels, "caption": item["caption"], "task": task}


class FramesWorld(Dataset):
    """Items ``{"pixels": float (3,H,W) in [-1,1], "caption": str}``: a video frame, or a still scene.

    Item ``i`` is a ``shapes`` scene (``objects``) with probability ``stills``, else frame ``j`` (random)
    of clip ``i`` of ``shapes-video``; the caption is the scene's or the clip's.
    """

    infinite = True

    def __init__(self, size: int = 32, seed: int = 0, stills: float = 0.5, objects: str = "1-2", frames: int = 8,
                 length: int = 10**9, split: str = "train", speed: float = DEFAULT_SPEED):
        if not 0.0 <= stills <= 1.0:
            raise ValueError(f"stills must be a fraction in [0, 1], got {stills}")
        self.video = ShapesVideoWorld(size, seed, frames, length, split, speed)
        self.image = shapes.ShapesWorld(size, seed, objects, length, split)
        self.seed, self.stills, self.frames, self.length, self.split = seed, stills, frames, length, split

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        i = int(i)
        if not 0 <= i < self.length:
            raise IndexError(f"index {i} out of range for a FramesWorld of length {self.length}")
        rng = np.random.default_rng([self.seed, i, _SPLITS[self.split], 1])
        if rng.random() < self.stills:
            item = self.image[i]
            return {"pixels": item["pixels"], "caption": item["caption"]}
        clip = self.video[i]
        return {"pixels": clip["pixels"][:, int(rng.integers(self.frames))].contiguous(), "caption": clip["caption"]}
