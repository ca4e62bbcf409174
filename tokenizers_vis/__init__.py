"""Visual tokenizers: pixels <-> discrete ``Tokens`` (see design.md §3).

Importing this package registers the presets ``vq-tiny``, ``vq-f16-llamagen``, ``msvq-tiny``
and ``msvq-var`` with :func:`mmgen.create_tokenizer`.
"""
from .base import TokenizerConfig, VisualTokenizer, build_autoencoder
from .losses import LPIPS, PatchDiscriminator, TokenizerCriterion, psnr
from .msvq import MSVQConfig, MultiScaleOutput, MultiScaleQuantizer, MultiScaleVQTokenizer
from .quantizers import CodebookTracker, QuantizerOutput, VectorQuantizer
from .vq import VQConfig, VQTokenizer

__all__ = [
    "TokenizerConfig", "VisualTokenizer", "build_autoencoder",
    "VQConfig", "VQTokenizer", "MSVQConfig", "MultiScaleVQTokenizer",
    "VectorQuantizer", "MultiScaleQuantizer", "CodebookTracker", "QuantizerOutput", "MultiScaleOutput",
    "TokenizerCriterion", "PatchDiscriminator", "LPIPS", "psnr",
]
