"""SeqAE: the sequence-to-sequence autoencoder that turns one segment into one discrete code.

After the subobject paper's SeqAE: a segment is its bounding box plus its box crop resized to a
fixed ``R x R`` (RGB inside the mask, and the mask itself as a fourth channel). The encoder reads
the sequence ``[box token, R/p x R/p crop patches, latent query]`` with full attention (the shared
:class:`~mmgen.nn.transformer.Transformer`) and keeps only the query, projected to the FSQ
channels: one FSQ id per segment, an AR model's token. The decoder reads
``[code, box query, patch queries]`` and regresses the box (sigmoid, image-relative), the crop's
RGB and the mask logits, so box, mask and pixels are all decoded from the one token.
"""
from __future__ import annotations

import torch
from torch import nn

from mmgen.nn.masks import Full
from mmgen.nn.transformer import Transformer, TransformerConfig

from .fsq import FSQ
from .patches import patchify, unpatchify

__all__ = ["SeqAE"]


def _positions(g: int, extra: int) -> torch.Tensor:
    """M-RoPE coordinates: ``(0, r, c)`` for the ``g x g`` patches, zeros for the ``extra`` special slots."""
    r, c = torch.meshgrid(torch.arange(g, device="cpu"), torch.arange(g, device="cpu"), indexing="ij")
    grid = torch.stack([torch.zeros_like(r), r, c], -1).reshape(-1, 3).float()
    return torch.cat([torch.zeros(extra, 3, device="cpu"), grid])


class SeqAE(nn.Module):
    """``encode(boxes (S, 4), crops (S, 4, R, R)) -> (codes, ids)``; ``decode(codes) -> (boxes, rgb, mask_logits)``.

    Args:
        crop_size: ``R``, the side every segment crop is resized to.
        patch_size: side of the crop patches (``R`` must be a multiple).
        encoder, decoder: transformer configs (width, depth, heads).
        levels: FSQ levels of the code.
    """

    def __init__(self, crop_size: int, patch_size: int, encoder: TransformerConfig, decoder: TransformerConfig, levels) -> None:
        super().__init__()
        if patch_size < 1 or crop_size % patch_size:
            raise ValueError(f"patch_size={patch_size} must divide crop_size={crop_size}")
        self.crop_size, self.patch_size = crop_size, patch_size
        self.grid = crop_size // patch_size
        pd, de, dd = 4 * patch_size**2, encoder.dim, decoder.dim
        self.fsq = FSQ(levels)
        self.box_in = nn.Linear(4, de)
        self.patch_in = nn.Linear(pd, de)
        self.query = nn.Parameter(torch.randn(de) * 0.02)
        self.enc_slots = nn.Parameter(torch.randn(2 + self.grid**2, de) * 0.02)  # learned slot embeddings
        self.enc = Transformer(encoder)
        self.to_code = nn.Linear(de, self.fsq.dim)
        self.code_in = nn.Linear(self.fsq.dim, dd)
        self.dec_slots = nn.Parameter(torch.randn(2 + self.grid**2, dd) * 0.02)  # box query + patch queries
        self.dec = Transformer(decoder)
        self.box_out = nn.Linear(dd, 4)
        self.patch_out = nn.Linear(dd, pd)
        self.register_buffer("enc_pos", _positions(self.grid, 2), persistent=False)
        self.register_buffer("dec_pos", _positions(self.grid, 2), persistent=False)

    def encode(self, boxes: torch.Tensor, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``boxes (S, 4)`` in [0, 1], ``crops (S, 4, R, R)`` (RGB * mask, mask) -> ``(codes (S, d), ids (S,))``."""
        p = self.patch_size
        patches = self.patch_in(patchify(crops, p))
        special = torch.stack([self.box_in(boxes), self.query.expand(boxes.shape[0], -1)], 1)
        x = torch.cat([special, patches], 1) + self.enc_slots
        h = self.enc(x, self.enc_pos, Full())
        return self.fsq(self.to_code(h[:, 1]))

    def decode(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``codes (S, d)`` -> ``(boxes (S, 4) in [0, 1], rgb (S, 3, R, R), mask_logits (S, 1, R, R))``."""
        x = self.dec_slots.expand(codes.shape[0], -1, -1).clone()
        x[:, 0] = x[:, 0] + self.code_in(codes.to(x.dtype))
        h = self.dec(x, self.dec_pos, Full())
        out = unpatchify(self.patch_out(h[:, 2:]), self.patch_size, self.grid)
        return torch.sigmoid(self.box_out(h[:, 1]).float()), out[:, :3].float(), out[:, 3:].float()
