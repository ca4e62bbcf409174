"""Visual tokenizers: pixels <-> discrete or continuous ``Tokens`` (see design.md §3).

Importing this package registers the presets ``vq-tiny``, ``vq-f16-llamagen``, ``msvq-tiny``,
``msvq-var``, ``kl-tiny``, ``kl-f16-mar``, ``video-vq-tiny`` and ``video-vq3d-tiny`` with :func:`mmgen.create_tokenizer`.
"""
from .base import TokenizerConfig, VisualTokenizer, build_autoencoder
from .kl import KLConfig, KLTokenizer
from .losses import LPIPS, PatchDiscriminator, TokenizerCriterion, psnr
from .msvq import MSVQConfig, MultiScaleOutput, MultiScaleQuantizer, MultiScaleVQTokenizer
from .quantizers import CodebookTracker, QuantizerOutput, VectorQuantizer
from .vq import VQConfig, VQTokenizer
from .video import CausalVideoVQTokenizer, CausalVQConfig, FrameVQConfig, FrameVQTokenizer

__all__ = [
    "TokenizerConfig", "VisualTokenizer", "build_autoencoder",
    "VQConfig", "VQTokenizer", "FrameVQConfig", "FrameVQTokenizer", "CausalVQConfig", "CausalVideoVQTokenizer", "MSVQConfig", "MultiScaleVQTokenizer", "KLConfig", "KLTokenizer",
    "VectorQuantizer", "MultiScaleQuantizer", "CodebookTracker", "QuantizerOutput", "MultiScaleOutput",
    "TokenizerCriterion", "PatchDiscriminator", "LPIPS", "psnr",
]
