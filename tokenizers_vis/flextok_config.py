"""The configuration of :class:`~mmgen.tokenizers_vis.flextok.FlexTokTokenizer`: the reference's fields and the
knobs measured on ``shapes`` (each field's comment says what it does and why; results in bench/RESULTS.md, FlexTok)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mmgen.nn.transformer import TransformerConfig

__all__ = ["FlexTokConfig"]


@dataclass
class FlexTokConfig:
    """Defaults are FlexTok d18-d18 at 256 px on a 32x32x16 VAE latent grid (patch 2, 256 registers)."""

    image_size: int = 256
    autoencoder: str = ""  # folder of a trained KL/VQ tokenizer whose latent grid the ViT sees; "" = pixels
    autoencoder_config: dict = field(default_factory=dict)  # filled from that folder, so a checkpoint is self-contained
    in_channels: int = 16  # channels of the grid the ViT sees (3 for pixels; set from the autoencoder)
    grid_size: int = 32  # side of that grid (image_size for pixels; set from the autoencoder)
    patch_size: int = 2
    num_registers: int = 256  # K: the longest sequence
    register_std: float = 0.02  # init scale of the K learned register queries
    abs_pos: bool = True  # add fixed 2D sin-cos positions to the patch embeddings (the reference's 4M-style ViTs do): with RoPE
    # alone a patch's value carries no position, so neither a register nor a pure-noise decoder patch knows where things are
    levels: tuple[int, ...] = (8, 8, 8, 5, 5, 5)
    encoder: TransformerConfig = field(default_factory=lambda: TransformerConfig(dim=1152, depth=18, heads=18))
    decoder: TransformerConfig = field(default_factory=lambda: TransformerConfig(dim=1152, depth=18, heads=18))
    keep_k: Literal["uniform", "pow2"] = "uniform"  # nested dropout: k uniform in 1..K, or a power of two
    keep_weights: tuple[float, ...] = ()  # with keep_k "pow2": relative odds of each prefix size 1, 2, 4, .., K (one per
    # size); () = equally likely. More weight on k = 1 trains the decoder more on what the first token alone says
    keep_all_prob: float = 0.0  # share of training samples that keep all K registers (before null_prob): the full
    # code's last registers carry the fine detail, and with k uniform the decoder sees them in few samples
    null_prob: float = 0.1  # training samples decoded from no token at all (the unconditional branch of CFG)
    time_dist: Literal["logit-normal", "uniform"] = "logit-normal"
    prediction: Literal["v", "x"] = "v"  # the network outputs the velocity (reference) or the clean grid ("x": easier in pixel space)
    fsq_dropout: float = 0.0  # share of training samples whose codes skip FSQ's rounding (the reference's drop_quant_p):
    # small unrounded codes still carry information, so the decoder starts reading the registers sooner
    time_shift: float = 1.0  # SD3's shift t -> s t / (1 + (s - 1) t): s > 1 trains more at high noise, where only the tokens tell the image
    pure_noise_prob: float = 0.0  # share of training samples at t = 1 exactly: the input is pure noise, so the loss there is
    # a noise-free autoencoder loss that only the tokens can lower (it trains decode()'s first, layout-deciding Euler step)
    noise_draws: int = 1  # flow-loss draws (t, noise) per encoded image (MAR's diffusion_batch_mul): the encoder's
    # gradient is averaged over them, so the noise of the flow loss does not drown the signal that tells images apart
    repa_teacher: str = ""  # REPA (the reference aligns its decoder to DINOv2): folder of a frozen KL/VQ tokenizer whose
    # conv encoder's feature grid the decoder's patch states must predict; only training reads it, it is not saved with us
    repa_weight: float = 0.0  # weight of the REPA loss (negative cosine similarity per patch); 0 = off
    repa_layer: int = 1  # decoder block (1-based) whose patch states are projected onto the teacher's features
    repa_dim: int = 64  # channels of the teacher's feature grid (the projector's output); "ids": its codebook size
    repa_target: Literal["features", "ids"] = "features"  # what the projected states predict: the teacher's features
    # (negative cosine, REPA) or, for a VQ teacher on the decoder's patch grid, its code ids (cross-entropy: a sharp target)
    coarse_weight: float = 0.0  # weight of an auxiliary MSE: a small MLP must redraw a coarse copy of the grid from the kept
    # codes alone, so every prefix carries the layout on both axes from step 0 (the flow loss alone let one axis go, issue 19)
    coarse_size: int = 8  # side of that coarse copy (average-pooled grid); must divide grid_size
    detail_weight: float = 0.0  # flow loss per patch weighted 1 + w * (its std / the batch's mean patch std), then
    # renormalised: edges and corners (a small shape's only clue) count more than flat patches; 0 = the plain loss
    conv_head: int = 0  # channels of a conv refinement of the decoder's output at grid resolution (U-ViT's final conv,
    # deeper): per-pixel features of every patch state, the noisy grid and the linear output go through 3x3 convs, so
    # neighbouring patches agree along their borders, where a small shape's corners lie; zero-initialised (a fine-tune
    # starts as the decoder it extends); 0 = off
    code_mlp: int = 0  # hidden width of an MLP that reads all kept codes at once (dropped ones zeroed, plus the keep
    # mask) and adds its summary to the noise level's AdaLN condition of every decoder block: a nonlinear reading of the
    # whole code, what an MLP probe of the codes does well, beside the per-register in-context tokens; the last layer
    # starts at zero (a fine-tune starts as the decoder it extends); 0 = off
    id_embed: bool = False  # the decoder also reads each kept token through a learned embedding of its id (zero-initialised,
    # times sqrt(dim) as the Transformer scales its embeddings), beside the linear reading of its FSQ code: any id can mean
    # its own picture without the network bending the code lattice into it, and Adam moves an id's row at the learning
    # rate however weak that id's share of the loss is (unscaled, 2000 steps left the rows at ~1/70 of the code's reading)
    prior_mlp: int = 0  # hidden width of a code prior: an MLP (two hidden layers) that redraws the whole grid from all kept
    # codes at once (its own MSE, weight prior_weight); the decoder reads its patches beside the noisy ones (zero-initialised
    # input, so a fine-tune starts as the decoder it extends). A direct readout of the codes draws small shapes the flow
    # loss alone leaves unsure (bench/RESULTS.md, FlexTok); 0 = off
    prior_weight: float = 1.0
    prior_nested: bool = False  # the prior's MSE on every power-of-two prefix of each sample at once (Matryoshka): the
    # first tokens get a training signal from every image instead of from the share that nested dropout cuts to them
    flow_steps: int = 25  # Euler steps of decode()
    cfg_scale: float = 1.0  # decoder guidance of decode() (1 = off)
    decode_seed: int = 0  # decode() starts from this seeded noise, so it is deterministic
    decode_noise_scale: float = 1.0  # decode()'s start noise times this (the temperature of Glow-style flows): the flow
    # draws from p(image | tokens), so where a short prefix leaves colour or shape unsure a draw lands on a less likely
    # one; below 1 the decode moves toward the likeliest image (bench/RESULTS.md, "a cooler decode")
