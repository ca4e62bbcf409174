"""Subobject-level tokenizer: one token per image segment, largest segment first.

After "Subobject-level Image Tokenization" (Chen et al.): a pluggable segmenter (default:
scikit-image's felzenszwalb, no weights; see :mod:`.segmenters`) cuts the image into segments;
each segment's bounding box and its box crop (RGB inside the mask plus the mask, resized to a
fixed ``R x R`` with ``roi_align``) are compressed by the :class:`~.seqae.SeqAE` into one FSQ code,
i.e. one token. Segments are ordered largest first, at most ``max_segments`` of them, then the
end token (``vocab_size - 1``) pads the sequence: the layout is a ``SegmentsLayout``.

Decoding paints the decoded segments back in that order, each into its box where its mask is on,
so smaller segments land on top of larger ones (the background first, the objects over it);
pixels no segment covers take the colour of the nearest painted pixel.

:meth:`SubobjectTokenizer.paint` with ``fill="mean"`` on :meth:`segment`'s output is the exact-fill
path: true boxes and masks, each segment filled with its mean colour, no SeqAE involved. It checks
the segmenter / crop / ordering / painting pipeline on its own (exact on flat-colour ``shapes``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torchvision.ops import roi_align

from mmgen.nn.transformer import TransformerConfig
from mmgen.registry import register_preset
from mmgen.tokens import SegmentsLayout, Tokens

from .base import ImageTokenizer
from .fsq import check_levels
from .losses import psnr
from .render_augment import rerender
from .segmenters import get_segmenter
from .seqae import SeqAE

__all__ = ["SubobjectConfig", "SubobjectTokenizer", "Segments"]


@dataclass
class SubobjectConfig:
    image_size: int = 32
    # flat-colour blobs; anti-aliasing fragments fold into their neighbours (see tokenizers_vis/segmenters.py)
    segmenter: str = "felzenszwalb:scale=1,sigma=0,min_size=1,merge_tol=30"
    max_segments: int = 8  # longer sequences keep the largest segments
    min_area: int = 1  # segments with fewer pixels are dropped (their pixels take the nearest colour)
    crop_size: int = 16  # R: every segment's box crop and mask are resized to R x R
    patch_size: int = 4  # SeqAE patches of the crop
    levels: tuple[int, ...] = (8, 8, 8, 6, 5)  # FSQ levels of a segment's code (15,360 codes + the end token)
    encoder: TransformerConfig = field(default_factory=lambda: TransformerConfig(dim=128, depth=3, heads=4))
    decoder: TransformerConfig = field(default_factory=lambda: TransformerConfig(dim=128, depth=3, heads=4))
    box_weight: float = 4.0  # weight of the L1 box loss (coordinates relative to the image side)
    augment: float = 0.0  # fraction of training images re-rendered (render_augment.rerender): robust to other renderers


@dataclass
class Segments:
    """A batch of segments, largest first, padded to ``M`` slots per image.

    ``boxes (B, M, 4)``: ``(x0, y0, x1, y1)`` / image side (x1, y1 exclusive); ``rgb (B, M, 3, R, R)``:
    the crop's colours in [-1, 1] inside the mask (0 outside); ``mask (B, M, 1, R, R)`` in [0, 1];
    ``valid (B, M)``; ``area (B, M)``: pixels of each segment in the image.
    """

    boxes: torch.Tensor
    rgb: torch.Tensor
    mask: torch.Tensor
    valid: torch.Tensor
    area: torch.Tensor

    def count(self) -> torch.Tensor:
        return self.valid.sum(1)


class SubobjectTokenizer(ImageTokenizer):
    """Image -> ``Tokens(ids=(B, max_segments), layout=SegmentsLayout)``: one id per segment, then end ids."""

    config_class: ClassVar[type] = SubobjectConfig

    def __init__(self, config: SubobjectConfig | dict) -> None:
        super().__init__(config)
        cfg = self.config
        cfg.levels = check_levels(cfg.levels)
        if cfg.max_segments < 1 or cfg.min_area < 1:
            raise ValueError(f"need max_segments >= 1 and min_area >= 1, got {cfg.max_segments}, {cfg.min_area}")
        if cfg.image_size < 8 or cfg.crop_size < 2:
            raise ValueError(f"need image_size >= 8 and crop_size >= 2, got {cfg.image_size}, {cfg.crop_size}")
        get_segmenter(cfg.segmenter)  # fail early on a bad spec
        self.seqae = SeqAE(cfg.crop_size, cfg.patch_size, cfg.encoder, cfg.decoder, cfg.levels)

    # ----- what a generator reads
    @property
    def fsq(self):
        return self.seqae.fsq

    @property
    def end_id(self) -> int:
        return self.fsq.codebook_size

    @property
    def vocab_size(self) -> int:
        return self.fsq.codebook_size + 1  # segment codes + the end token

    @property
    def codebook_dim(self) -> int:
        return self.fsq.dim

    @property
    def layout(self) -> SegmentsLayout:
        return SegmentsLayout(self.config.max_segments, self.end_id)

    def embed_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """FSQ codes ``(B, n) -> (B, n, d)``; the end token maps to zeros."""
        codes = self.fsq.ids_to_codes(ids.clamp(max=self.end_id - 1))
        return codes.masked_fill((ids == self.end_id)[..., None], 0.0)

    # ----- segments
    @torch.no_grad()
    def segment(self, pixels: torch.Tensor) -> Segments:
        """Segment each image and crop every segment (largest first, at most ``max_segments``)."""
        x = self.check_pixels(pixels).float()
        cfg, (B, _, H, W), R = self.config, x.shape, self.config.crop_size
        seg = get_segmenter(cfg.segmenter)
        images = ((x.permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
        owner, masks, boxes, slots, areas = [], [], [], [], []
        for b, img in enumerate(images):
            labels = np.asarray(seg(img))
            ids, counts = np.unique(labels, return_counts=True)
            order = np.lexsort((ids, -counts))  # largest first; ties by label
            kept = [(ids[i], counts[i]) for i in order if counts[i] >= cfg.min_area][: cfg.max_segments]
            for m, (label, area) in enumerate(kept):
                mask = labels == label
                ys, xs = np.nonzero(mask)
                owner.append(b)
                slots.append(m)
                areas.append(int(area))
                masks.append(mask)
                boxes.append((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
        dev, M = x.device, cfg.max_segments
        out = Segments(boxes=torch.zeros(B, M, 4, device=dev), rgb=torch.zeros(B, M, 3, R, R, device=dev),
                       mask=torch.zeros(B, M, 1, R, R, device=dev), valid=torch.zeros(B, M, dtype=torch.bool, device=dev),
                       area=torch.zeros(B, M, dtype=torch.long, device=dev))
        if not owner:
            return out
        owner_t, slots_t = torch.tensor(owner, device=dev), torch.tensor(slots, device=dev)
        full = torch.from_numpy(np.stack(masks)).to(dev, torch.float32)[:, None]  # (S, 1, H, W)
        box_px = torch.tensor(boxes, dtype=torch.float32, device=dev)
        # colours: area-sampled (roi_align) and normalised by the mask's coverage, so edges keep their colour
        crop = roi_align(torch.cat([x[owner_t] * full, full], 1), torch.cat([torch.arange(len(owner), device=dev)[:, None].float(), box_px], 1),
                         output_size=R, spatial_scale=1.0, sampling_ratio=2, aligned=True)
        # mask: nearest sample at each bin centre; with R >= the box side, painting it back is exact
        centre = (torch.arange(R, device=dev) + 0.5) / R
        cols = (box_px[:, 0:1] + centre * (box_px[:, 2:3] - box_px[:, 0:1])).long()
        rows = (box_px[:, 1:2] + centre * (box_px[:, 3:4] - box_px[:, 1:2])).long()
        s_idx = torch.arange(len(owner), device=dev)[:, None, None]
        mask = full[s_idx, 0, rows[:, :, None], cols[:, None, :]][:, None]
        rgb = crop[:, :3] / crop[:, 3:].clamp_min(1e-6) * mask
        out.boxes[owner_t, slots_t] = box_px / torch.tensor([W, H, W, H], device=dev, dtype=torch.float32)
        out.rgb[owner_t, slots_t], out.mask[owner_t, slots_t] = rgb.clamp(-1, 1), mask
        out.valid[owner_t, slots_t] = True
        out.area[owner_t, slots_t] = torch.tensor(areas, device=dev)
        return out

    @torch.no_grad()
    def paint(self, segs: Segments, fill: Literal["pixels", "mean"] = "pixels") -> torch.Tensor:
        """Paint segments back in their order (later ones on top); pixels no mask covers take the nearest colour.

        ``fill="mean"`` paints each segment in its mean colour (the exact-fill path on true segments).
        """
        if fill not in ("pixels", "mean"):
            raise ValueError(f"fill must be 'pixels' or 'mean', got {fill!r}")
        B, M = segs.valid.shape
        S = self.config.image_size
        rgb, mask = segs.rgb.float(), segs.mask.float()
        if fill == "mean":
            on = (mask > 0.5).float()
            mean = (rgb * on).sum((-1, -2), keepdim=True) / on.sum((-1, -2), keepdim=True).clamp_min(1.0)
            rgb = mean.expand_as(rgb)
        px = (segs.boxes.float() * S).round().long().clamp(0, S)
        canvas = torch.zeros(B, 3, S, S, device=rgb.device)
        covered = torch.zeros(B, S, S, dtype=torch.bool, device=rgb.device)
        layers = []
        for b, m in segs.valid.nonzero().tolist():
            x0, y0, x1, y1 = px[b, m].tolist()
            x0, y0 = min(x0, S - 1), min(y0, S - 1)
            x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
            size = (y1 - y0, x1 - x0)
            mk, cl = mask[b, m][None], rgb[b, m][None]
            hard = F.interpolate(mk, size=size, mode="nearest-exact")[0, 0] > 0.5
            den = F.interpolate(mk, size=size, mode="bilinear", align_corners=False)[0]
            num = F.interpolate(cl * mk, size=size, mode="bilinear", align_corners=False)[0]
            # normalised bilinear colours: the zeros outside the mask do not bleed in; nearest where it is thin
            col = torch.where(den > 1e-3, num / den.clamp_min(1e-3), F.interpolate(cl, size=size, mode="nearest-exact")[0])
            layers.append((b, slice(y0, y1), slice(x0, x1), hard, den[0] > 0.25, col))
        # underpaint with the soft masks, largest last (it fills what a downsampled large mask lost), then
        # paint the exact masks largest first, so smaller segments end on top
        for b, ys, xs, _, soft, col in reversed(layers):
            canvas[b, :, ys, xs] = torch.where(soft, col, canvas[b, :, ys, xs])
            covered[b, ys, xs] |= soft
        for b, ys, xs, hard, _, col in layers:
            canvas[b, :, ys, xs] = torch.where(hard, col, canvas[b, :, ys, xs])
            covered[b, ys, xs] |= hard
        for b in range(B):  # holes (dropped or mis-decoded pixels) take the nearest painted colour
            hole = ~covered[b]
            if hole.any() and covered[b].any():
                idx = ndimage.distance_transform_edt(hole.cpu().numpy(), return_distances=False, return_indices=True)
                idx = torch.from_numpy(idx).to(canvas.device)
                canvas[b] = canvas[b][:, idx[0], idx[1]]
        return canvas.clamp(-1, 1)

    # ----- contract
    def _flat(self, segs: Segments) -> tuple[torch.Tensor, torch.Tensor]:
        """Valid segments as SeqAE inputs: ``boxes (S, 4)``, ``crops (S, 4, R, R)``."""
        v = segs.valid
        return segs.boxes[v], torch.cat([segs.rgb[v] * segs.mask[v], segs.mask[v]], 1)

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> Tokens:
        segs = self.segment(pixels)
        ids = torch.full(segs.valid.shape, self.end_id, dtype=torch.long, device=segs.valid.device)
        if segs.valid.any():
            ids[segs.valid] = self.seqae.encode(*self._flat(segs))[1]
        return Tokens(self.layout, ids=ids)

    def check_ids(self, tokens: Tokens | torch.Tensor) -> torch.Tensor:
        """``(B, n)`` ids with ``1 <= n <= max_segments`` (missing slots count as ended), checked."""
        if isinstance(tokens, Tokens):
            if tokens.ids is None:
                raise ValueError(f"{type(self).__name__} decodes discrete ids, got Tokens with latents only")
            if tokens.layout != self.layout:
                raise ValueError(f"tokens have layout {tokens.layout}, this tokenizer produces {self.layout}")
            tokens = tokens.ids
        M = self.config.max_segments
        if not isinstance(tokens, torch.Tensor) or tokens.ndim != 2 or not 1 <= tokens.shape[1] <= M:
            raise ValueError(f"ids must be a (B, n) tensor with 1 <= n <= {M}, got {getattr(tokens, 'shape', type(tokens).__name__)}")
        if tokens.is_floating_point():
            raise ValueError(f"ids must be integers, got dtype {tokens.dtype}")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.vocab_size):
            raise ValueError(f"ids must lie in [0, {self.vocab_size}) (the end token is {self.end_id}), got range [{int(tokens.min())}, {int(tokens.max())}]")
        return F.pad(tokens.long(), (0, M - tokens.shape[1]), value=self.end_id)

    def decode_segments(self, tokens: Tokens | torch.Tensor) -> Segments:
        """Ids -> decoded segments (box, RGB crop, mask probability); slots from the first end token on are empty."""
        ids = self.check_ids(tokens)
        valid = (ids == self.end_id).long().cumsum(1) == 0
        B, M, R, dev = *ids.shape, self.config.crop_size, ids.device
        segs = Segments(torch.zeros(B, M, 4, device=dev), torch.zeros(B, M, 3, R, R, device=dev),
                        torch.zeros(B, M, 1, R, R, device=dev), valid, torch.zeros(B, M, dtype=torch.long, device=dev))
        if valid.any():
            boxes, rgb, logits = self.seqae.decode(self.fsq.ids_to_codes(ids[valid]))
            segs.boxes[valid], segs.rgb[valid], segs.mask[valid] = boxes, rgb.clamp(-1, 1), torch.sigmoid(logits)
        return segs

    @torch.no_grad()
    def decode(self, tokens: Tokens | torch.Tensor) -> torch.Tensor:
        """Ids -> pixels ``(B, 3, H, W)`` in ``[-1, 1]``, painting the decoded segments largest first."""
        return self.paint(self.decode_segments(tokens))

    @torch.no_grad()
    def reconstruct(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(pixels))

    # ----- training
    def loss(self, pixels: torch.Tensor, step: int = 0) -> tuple[torch.Tensor, dict[str, Any]]:
        """SeqAE loss over every segment of the batch: masked RGB MSE + mask BCE + box L1."""
        x = self.check_pixels(pixels)
        if self.training and self.config.augment > 0:
            x = rerender(x, self.config.augment)
        segs = self.segment(x)
        if not segs.valid.any():
            raise ValueError("the segmenter found no segment in this batch")
        boxes, crops = self._flat(segs)
        codes, ids = self.seqae.encode(boxes, crops)
        box_hat, rgb_hat, logits = self.seqae.decode(codes)
        mask = crops[:, 3:]
        rgb_loss = ((rgb_hat - segs.rgb[segs.valid]) ** 2 * mask).sum() / (3 * mask.sum()).clamp_min(1.0)
        mask_loss = F.binary_cross_entropy_with_logits(logits, mask)
        box_loss = F.l1_loss(box_hat, boxes)
        total = rgb_loss + mask_loss + self.config.box_weight * box_loss
        with torch.no_grad():
            dec = Segments(torch.zeros_like(segs.boxes), torch.zeros_like(segs.rgb), torch.zeros_like(segs.mask), segs.valid, segs.area)
            dec.boxes[segs.valid], dec.rgb[segs.valid], dec.mask[segs.valid] = box_hat.detach(), rgb_hat.detach(), torch.sigmoid(logits.detach())
            recon = self.paint(dec)
            counts = torch.bincount(ids, minlength=self.fsq.codebook_size).float()
            p = counts / counts.sum()
            logs = {"loss": total.detach(), "rgb_loss": rgb_loss.detach(), "mask_loss": mask_loss.detach(), "box_loss": box_loss.detach(),
                    "quant_loss": torch.zeros((), device=x.device), "recon_loss": F.mse_loss(recon, x.float()), "psnr": psnr(recon, x),
                    "segments": segs.valid.sum(1).float().mean(), "codebook_usage": (counts > 0).float().mean(),
                    "perplexity": torch.exp(-(p * torch.log(p.clamp_min(1e-10))).sum())}
        return total, logs

    def forward(self, pixels: torch.Tensor, step: int = 0) -> tuple[torch.Tensor, dict[str, Any]]:
        """Same as :meth:`loss` (under DDP the wrapper's forward is what runs)."""
        return self.loss(pixels, step)


# CPU recipe: 32x32 shapes, felzenszwalb segments (exact on flat colours), up to 8 segments of 16x16 crops,
# FSQ [8,8,8,6,5] = 15,360 codes (the FSQ paper's ~2^14 setting) + the end token.
register_preset("subobject-tiny", SubobjectTokenizer, tags=("tiny",))
