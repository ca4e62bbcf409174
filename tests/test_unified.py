"""Emu3-style unified model: sequence formats, mixed training, constrained decoding, CFG, captions."""
import pytest
import torch

import mmgen
from mmgen.data import build_dataset, collate, parse_caption
from mmgen.data.shapes_text import shapes_caption_grammar, shapes_text_vocab, video_caption_grammar
from mmgen.data.video import parse_video_caption
from mmgen.models.base import tokenizer_overrides
from mmgen.models.unified import CODE, TEXT, TaskBatch
from mmgen.pipeline import Pipeline
from mmgen.sampler import SamplerConfig
from mmgen.text import GrammarConstraint, TextTokenizer
from mmgen.tokens import FramesLayout

SMALL = dict(transformer=dict(dim=48, depth=2, heads=4))


@pytest.fixture(scope="module")
def tok():
    return mmgen.create_tokenizer("video-vq3d-tiny").eval()


def build(tok, random=True, **kw):
    torch.manual_seed(0)
    gen = mmgen.create_generator("emu3-tiny", **tokenizer_overrides(tok), **{**SMALL, **kw}).bind_tokenizer(tok)
    if random:
        with torch.no_grad():
            for p in gen.parameters():
                p.normal_(0, 0.3)
    return gen.eval()


def test_sequence_formats(tok):
    gen = build(tok, random=False)
    C, h, w = gen.config.text_context, 4, 4
    ids, pos = gen.template("t2v", 5)
    assert len(ids) == C + 2 + 5 * (h * (w + 1) + 1) and pos.shape == (len(ids), 3)
    span = ids[C:].tolist()
    assert span[0] == gen.special("bov") and span[-1] == gen.special("eov")
    frame = [CODE] * w + [gen.special("eol")]
    assert span[1 : 1 + h * (w + 1) + 1] == frame * h + [gen.special("eof")]
    img, _ = gen.template("t2i", 1)
    assert img[C:].tolist() == [gen.special("boi")] + frame * h + [gen.special("eoi")]
    i2t, _ = gen.template("i2t", 1)
    assert i2t[: len(img) - C].tolist() == img[C:].tolist() and (i2t[len(img) - C :] == TEXT).all()
    assert gen.total_vocab == gen.text.vocab_size + gen.config.vocab_size + 6
    with pytest.raises(ValueError, match="unknown task"):
        gen.template("v2t")


def test_mixed_batch_trains_every_task(tok):
    gen = build(tok, random=False)
    data = build_dataset("shapes-unified:tasks=t2i+t2v+i2t", size=32, seed=0)
    tb, cond = gen.prepare_batch(collate([data[i] for i in range(6)]))
    assert isinstance(tb, TaskBatch) and set(tb.groups) == {"t2i", "t2v", "i2t"} and tb.batch_size == 6
    assert tb.groups["t2v"][0].layout == FramesLayout(5, 4, 4) and tb.groups["i2t"][0].layout == FramesLayout(1, 4, 4)
    gen.train()
    loss, logs = gen(tb, cond)
    loss.backward()
    assert torch.isfinite(loss) and {"ce_t2i", "ce_t2v", "ce_i2t"} <= set(logs)
    assert not [n for n, p in gen.named_parameters() if p.grad is None]
    with pytest.raises(ValueError, match="tasks must be"):
        build_dataset("shapes-unified:tasks=t2i+x2y")


def test_context_noise_corrupts_image_inputs_only_while_training(tok):
    data = build_dataset("shapes-unified:tasks=t2i+t2v+i2t", size=32, seed=0)
    batch = collate([data[i] for i in range(6)])
    plain, noisy = build(tok, cond_dropout=0.0), build(tok, cond_dropout=0.0, context_noise=0.9)  # same weights
    tb, cond = plain.prepare_batch(batch)
    logs = {}
    for name, gen in (("plain", plain), ("noisy", noisy)):
        torch.manual_seed(1)
        logs[name] = gen.train()(tb, cond)[1]
    assert logs["noisy"]["ce_t2i"] != logs["plain"]["ce_t2i"]  # the image context was corrupted
    for task in ("ce_t2v", "ce_i2t"):  # videos and captions are not
        assert torch.equal(logs["noisy"][task], logs["plain"][task]), task
    assert torch.equal(plain.eval()(tb, cond)[0], noisy.eval()(tb, cond)[0])  # never outside training
    with pytest.raises(ValueError, match="context_noise"):
        build(tok, context_noise=1.0)
    two = build_dataset("shapes-unified:tasks=t2i,two_fraction=0.8", size=32, seed=0)
    share = sum(" and " in two[i]["caption"] for i in range(200)) / 200
    assert 0.7 <= share <= 0.9, share


def test_constrained_decoding_always_gives_a_valid_layout(tok):
    gen = build(tok)
    with torch.no_grad():  # an untrained model that loves special and text tokens
        gen.head.weight[: gen.code_offset] += 5.0
        gen.head.weight[gen.special_offset :] += 5.0
    cond = gen.make_condition(prompts=["a red circle moving right", "a cyan square moving up"])
    for k, task in ((5, None), (3, None), (1, "t2i")):
        out = gen.generate(cond, SamplerConfig(cfg_scale=3.0, temperature=2.0, seed=k), latent_frames=k, task=task)
        assert out.layout == FramesLayout(k, 4, 4) and int(out.ids.min()) >= 0 and int(out.ids.max()) < gen.config.vocab_size
        ids, _ = gen.build("t2i" if k == 1 else "t2v", out.ids, cond.text)
        tmpl, _ = gen.template("t2i" if k == 1 else "t2v", k)
        fixed = tmpl >= 0
        assert torch.equal(ids[:, fixed], tmpl[fixed].expand(2, -1)), "every special token where the layout puts it"
        assert tok.decode(out).shape[2] == (tok.config.frames if k == tok.layout.t else tok.frames_for(k))


def test_generation_cache_cfg_and_negative_prompt(tok):
    gen = build(tok)
    cond = gen.make_condition(prompts=["a red circle moving right"] * 2)
    s = SamplerConfig(cfg_scale=3.0, top_k=20, seed=4)
    a = gen.generate(cond, s).ids
    assert torch.equal(a, gen.generate(cond, SamplerConfig(cfg_scale=3.0, top_k=20, seed=4, use_cache=False)).ids)
    neg = gen.make_condition(prompts=["a blue square moving left"] * 2)
    assert not torch.equal(a, gen.generate(cond, s, negative=neg).ids)
    assert torch.equal(gen.generate(cond, SamplerConfig(seed=4)).ids, gen.generate(cond, SamplerConfig(seed=4), negative=neg).ids), "no guidance: no negative"


def test_grammar_constraint_walks_only_valid_captions():
    t = TextTokenizer(24, shapes_text_vocab())
    g = GrammarConstraint(t, shapes_caption_grammar(2))
    assert g.max_tokens() == 19  # two objects with two-token colours and two-word positions
    rng = torch.Generator().manual_seed(0)
    for _ in range(100):
        state, ids = g.start(), [t.sot]
        while state[0] != "end":
            allowed = g.allowed(state)
            ids.append(allowed[int(torch.randint(len(allowed), (1,), generator=rng))])
            state = g.step(state, ids[-1])
        assert parse_caption(t.decode(ids))
    v = GrammarConstraint(t, video_caption_grammar())
    state = v.start()
    for word in "a cyan circle moving up".split():
        for i in t.bpe_ids(word):
            state = v.step(state, i)
    assert v.allowed(state) == [t.eot]
    with pytest.raises(ValueError, match="not allowed"):
        v.step(v.start(), t.bpe_ids("red")[0])


def test_captions_are_grammar_valid_under_constraints(tok):
    gen = build(tok)
    images = build_dataset("shapes:objects=1-2", size=32, seed=0)
    x = torch.stack([images[i]["pixels"] for i in range(6)])
    caps = gen.caption(tok.encode(x))
    assert len(caps) == 6 and all(parse_caption(c) for c in caps)
    free = gen.caption(tok.encode(x), constraint=False)
    assert len(free) == 6 and all(isinstance(c, str) for c in free)
    video = gen.caption(tok.encode(x), constraint=GrammarConstraint(gen.text, video_caption_grammar()))
    assert all(parse_video_caption(c) for c in video)
    with pytest.raises(ValueError, match="one image"):
        gen.caption(tok.encode(torch.stack([x[:2]] * 3, 2)))


def test_pipeline_text_to_image_video_and_image_to_text(tok):
    pipe = Pipeline(build(tok), tok)
    assert pipe.is_video and pipe.max_frames == 8
    assert pipe(prompt="a red circle moving right", n=2, seed=0).shape == (2, 3, 8, 32, 32)
    assert pipe(prompt="a large red circle at the top left", frames=1, seed=0).shape == (1, 3, 1, 32, 32)
    images = pipe(prompt="a small blue square at the center", n=3, frames=1, seed=1)[:, :, 0]
    caps = pipe.caption(images)
    assert len(caps) == 3 and all(parse_caption(c) for c in caps)
    with pytest.raises(ValueError, match="not supported by this model"):
        pipe(prompt="a red circle moving right", frames=12)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        pipe.caption(torch.zeros(3, 32, 32))
