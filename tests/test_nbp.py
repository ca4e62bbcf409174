"""Next-block prediction: block schedules, mask, cache equivalence, one forward pass per block."""
import pytest
import torch

import mmgen
from mmgen.models.base import tokenizer_overrides
from mmgen.models.nbp import block_order, parse_block
from mmgen.nn.masks import BlockCausal
from mmgen.sampler import SamplerConfig
from mmgen.tokens import FramesLayout, Tokens

SMALL = dict(transformer=dict(dim=48, depth=2, heads=4))
CAPTIONS = ["a red circle moving right", "a cyan square moving up"]


@pytest.fixture(scope="module")
def tok():
    return mmgen.create_tokenizer("video-vq3d-tiny").eval()


def build(tok, **kw):
    torch.manual_seed(0)
    gen = mmgen.create_generator("nbp-tiny", **tokenizer_overrides(tok), **{**SMALL, **kw}).bind_tokenizer(tok)
    with torch.no_grad():
        for p in gen.parameters():
            p.normal_(0, 0.1)  # the zero-initialised head would make every test vacuous
    return gen.eval()


def batch(gen, n=2):
    ids = torch.randint(0, gen.config.vocab_size, (n, gen.layout.num_tokens), generator=torch.Generator().manual_seed(1))
    return Tokens(gen.layout, ids=ids), gen.make_condition(prompts=CAPTIONS[:n])


def test_blocks_and_their_order():
    lay = FramesLayout(2, 2, 4)
    assert parse_block("row", lay) == (1, 1, 4) and parse_block("frame", lay) == (1, 2, 4) and parse_block("token", lay) == (1, 1, 1)
    assert parse_block("2x1x2", lay) == (2, 1, 2)
    assert block_order(lay, (1, 1, 4)).tolist() == list(range(16))  # rows and frames are raster order
    assert block_order(lay, (1, 2, 2)).tolist()[:8] == [0, 1, 4, 5, 2, 3, 6, 7]  # 2x2 tiles, tile by tile
    assert sorted(block_order(lay, (2, 1, 2)).tolist()) == list(range(16))
    with pytest.raises(ValueError, match="must tile"):
        parse_block("1x3x4", lay)
    with pytest.raises(ValueError, match="TxHxW"):
        parse_block("diagonal", lay)


@pytest.mark.parametrize("block,first_frame,sizes", [
    ("frame", "blocks", (16,) * 5),
    ("row", "blocks", (4,) * 20),
    ("1x2x2", "blocks", (4,) * 20),
    ("token", "blocks", (1,) * 80),
    ("frame", "tokens", (1,) * 16 + (16,) * 4),
])
def test_mask_is_block_causal_with_the_block_sizes(tok, block, first_frame, sizes):
    gen = build(tok, block=block, first_frame=first_frame)
    assert gen._mask() == BlockCausal(sizes, prefix=gen.prefix_len)
    assert gen.positions.shape == (gen.prefix_len + gen.layout.num_tokens, 3)


@pytest.mark.parametrize("block,first_frame", [("frame", "blocks"), ("row", "blocks"), ("1x2x2", "blocks"), ("frame", "tokens")])
def test_cached_block_decoding_equals_full_forward(tok, block, first_frame):
    gen = build(tok, block=block, first_frame=first_frame)
    tokens, cond = batch(gen)
    with torch.no_grad():
        full, cached = gen.logits(tokens, cond), gen.logits(tokens, cond, cached=True)
    assert full.shape == (2, 80, gen.config.vocab_size)
    assert torch.allclose(full, cached, atol=1e-4), (full - cached).abs().max()


@pytest.mark.parametrize("block,first_frame,passes", [("frame", "blocks", 5), ("row", "blocks", 20), ("token", "blocks", 80), ("frame", "tokens", 20)])
def test_one_forward_pass_per_block(tok, block, first_frame, passes):
    gen = build(tok, block=block, first_frame=first_frame)
    calls = []
    hook = gen.transformer.register_forward_hook(lambda m, args, out: calls.append(out.shape[1]))
    try:
        _, cond = batch(gen)
        gen.generate(cond, SamplerConfig(cfg_scale=2.0, seed=0))
    finally:
        hook.remove()
    assert gen.forward_passes() == len(calls) == passes
    if first_frame == "blocks" and block != "token":
        assert calls[0] == gen.prefix_len + gen.L and set(calls[1:]) == {gen.L}  # prefix + queries, then whole blocks


@pytest.mark.parametrize("block,first_frame", [("frame", "blocks"), ("row", "tokens")])
def test_greedy_sampling_agrees_with_teacher_forcing(tok, block, first_frame):
    gen = build(tok, block=block, first_frame=first_frame)
    _, cond = batch(gen)
    out = gen.generate(cond, SamplerConfig(top_k=1, seed=0))
    with torch.no_grad():
        logits = gen.logits(out, cond)
    assert torch.equal(logits.argmax(-1), out.ids[:, gen.perm])


def test_shorter_clips_and_bad_configs(tok):
    gen = build(tok, block="row", first_frame="tokens")
    _, cond = batch(gen)
    out = gen.generate(cond, SamplerConfig(seed=0), latent_frames=2)
    assert out.layout == FramesLayout(2, 4, 4) and gen.forward_passes(2) == 16 + 4
    assert tok.decode(out).shape == (2, 3, 3, 32, 32)
    with pytest.raises(ValueError, match="latent frames"):
        gen.generate(cond, latent_frames=6)
    with pytest.raises(ValueError, match="1xHxW"):
        build(tok, block="5x1x1", first_frame="tokens")
    with pytest.raises(ValueError, match="frames layout"):
        mmgen.create_generator("nbp-tiny", layout={"type": "grid", "h": 4, "w": 4}, **SMALL)
    with pytest.raises(ValueError, match="latent frames with this tokenizer"):
        mmgen.create_generator("nbp-tiny", **tokenizer_overrides(tok), frames=4, **SMALL).bind_tokenizer(tok)


def test_nbp_learns_a_fixed_clip():
    """A few steps on one clip per prompt drive the next-block loss down (the schedule is trainable)."""
    tok = mmgen.create_tokenizer("video-vq3d-tiny").eval()
    torch.manual_seed(0)
    gen = mmgen.create_generator("nbp-tiny", **tokenizer_overrides(tok), transformer=dict(dim=64, depth=2, heads=4), cond_dropout=0.0).bind_tokenizer(tok)
    tokens, cond = batch(gen)
    opt = torch.optim.AdamW(gen.parameters(), lr=3e-3)
    first = None
    for _ in range(40):
        loss, logs = gen.train()(tokens, cond)
        first = first or loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first and {"ce", "ce_frame0", "ce_rest"} <= set(logs)
