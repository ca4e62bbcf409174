"""Visual tokenizers: pixels <-> discrete or continuous ``Tokens`` (see design.md §3).

Importing this package registers the presets ``vq-tiny``, ``vq-f16-llamagen``, ``msvq-tiny``,
``msvq-var``, ``kl-tiny``, ``kl-f16-mar``, ``video-vq-tiny``, ``video-vq3d-tiny``, ``flextok-tiny``,
``flextok-d12-d12``, ``flextok-d18-d18``, ``flextok-d18-d28``, ``maskgit-vq-f16`` and ``subobject-tiny`` with :func:`mmgen.create_tokenizer`.
"""
from .base import ImageTokenizer, TokenizerConfig, VisualTokenizer, build_autoencoder
from .flextok import FlexTokConfig, FlexTokTokenizer
from .fsq import FSQ
from .kl import KLConfig, KLTokenizer
from .losses import LPIPS, PatchDiscriminator, TokenizerCriterion, psnr
from .maskgit_backbone import MaskGITDecoder, MaskGITEncoder
from .msvq import MSVQConfig, MultiScaleOutput, MultiScaleQuantizer, MultiScaleVQTokenizer
from .official import llamagen_vq_config, maskgit_vq_config, var_vqvae_config  # registers maskgit-vq-f16
from .quantizers import CodebookTracker, QuantizerOutput, VectorQuantizer
from .segmenters import get_segmenter, list_segmenters, register_segmenter
from .seqae import SeqAE
from .subobject import Segments, SubobjectConfig, SubobjectTokenizer
from .video import CausalVideoVQTokenizer, CausalVQConfig, FrameVQConfig, FrameVQTokenizer
from .vq import VQConfig, VQTokenizer

__all__ = [
    "ImageTokenizer", "TokenizerConfig", "VisualTokenizer", "build_autoencoder",
    "VQConfig", "VQTokenizer", "FrameVQConfig", "FrameVQTokenizer", "CausalVQConfig", "CausalVideoVQTokenizer", "MSVQConfig", "MultiScaleVQTokenizer", "KLConfig", "KLTokenizer",
    "VectorQuantizer", "MultiScaleQuantizer", "CodebookTracker", "QuantizerOutput", "MultiScaleOutput",
    "TokenizerCriterion", "PatchDiscriminator", "LPIPS", "psnr",
    "FSQ", "FlexTokConfig", "FlexTokTokenizer", "SeqAE", "Segments", "SubobjectConfig", "SubobjectTokenizer",
    "MaskGITEncoder", "MaskGITDecoder", "var_vqvae_config", "llamagen_vq_config", "maskgit_vq_config",
    "get_segmenter", "list_segmenters", "register_segmenter",
]
