"""Datasets: built-in worlds (shapes, digits), image folders, WebDataset shards, one spec string."""
from mmgen.data.build import build_dataset, collate, list_datasets, register_dataset
from mmgen.data.digits import DigitsWorld
from mmgen.data.folders import ImageFolderDataset
from mmgen.data.shapes import (
    COLORS,
    POSITIONS,
    SHAPES,
    SIZES,
    ShapeObject,
    ShapesWorld,
    caption,
    class_label,
    parse_caption,
    render,
    render_with_masks,
    sample_scene,
    vocabulary,
)
from mmgen.data.shards import ShardDataset, pack

__all__ = [
    "build_dataset", "collate", "list_datasets", "register_dataset", "DigitsWorld", "ImageFolderDataset",
    "ShardDataset", "pack", "ShapesWorld", "ShapeObject", "COLORS", "SHAPES", "SIZES", "POSITIONS",
    "caption", "parse_caption", "sample_scene", "render", "render_with_masks", "class_label", "vocabulary",
]
