"""The one decode loop: KV-cache equivalence through ``generate()`` on trained checkpoints, and the sampler contract.

Trained weights matter: with random weights the logits are near uniform and a cache whose
positions are off by one slot moves them by ~2e-4 only; a trained model's outputs move by far
more than the tolerance here.
"""
import copy
import functools
import math
from dataclasses import fields

import pytest
import torch

import mmgen
from mmgen.config import from_dict, to_dict
from mmgen.models import RasterConfig, RasterGenerator, UnifiedConfig, UnifiedGenerator, VARConfig, VARGenerator, XARConfig, XARGenerator
from mmgen.models.base import tokenizer_overrides
from mmgen.sampler import SamplerConfig

PROMPTS = ["a large red circle at the top left", "a small blue square at the bottom right"]
VIDEO_PROMPTS = ["a red circle moving right", "a small cyan triangle moving up"]
REL_TOL = 1e-4  # float32 cached vs full passes agree to ~1e-6 relative

# (checkpoint, sampler overrides, generate keyword arguments): each paradigm on its shipped weights, kept small
CASES = [
    ("shapes-raster", {}, {}),
    ("shapes-rar", {}, {}),
    ("digits-var", {}, {}),
    ("shapes-var", {}, {}),
    ("shapes-flextok", {"token_budget": 8}, {}),
    ("shapes-subobject", {}, {}),
    ("shapes-xar", {"flow_steps": 3}, {}),
    ("shapes-video-nbp", {}, {"latent_frames": 2}),
    ("shapes-video-raster", {}, {"latent_frames": 1}),
    ("shapes-unified", {}, {"latent_frames": 1}),
    ("shapes-unified", {"cfg_scale": 2.0}, {"latent_frames": 2}),
]


def condition(pipe):
    gen = pipe.generator
    if gen.config.cond == "class":
        return gen.make_condition(labels=[3, 7])
    return gen.make_condition(prompts=VIDEO_PROMPTS if pipe.is_video else PROMPTS)


def head_outputs(gen, run):
    """Every output of the model's head (logits or flow velocities) while ``run()`` runs."""
    seen = []
    handle = gen.head.register_forward_hook(lambda module, args, out: seen.append(out.detach().float().clone()))
    try:
        result = run()
    finally:
        handle.remove()
    return seen, result


def assert_same_outputs(ref, other, what):
    assert len(ref) == len(other) > 0, f"{what}: {len(other)} head calls against {len(ref)}"
    for i, (a, b) in enumerate(zip(ref, other)):
        assert a.shape == b.shape, f"{what}, step {i}: shape {tuple(b.shape)} against {tuple(a.shape)}"
        rel = ((a - b).norm() / a.norm().clamp_min(1e-12)).item()
        assert rel < REL_TOL, f"{what}, head call {i}: relative difference {rel:.2e} against the full recomputation"


@pytest.mark.parametrize("name,overrides,kw", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_cached_generate_matches_full_recomputation(shipped, name, overrides, kw):
    pipe, rec = shipped(name)
    gen = pipe.generator
    cond = condition(pipe)
    base = {**rec, **overrides, "seed": 5}
    if "top_k" in gen.sampler_fields:
        base["top_k"] = 1  # greedy: every variant follows the same path, so every step's outputs compare
    outputs = {}
    for variant in ({"use_cache": False}, {"use_cache": True}, {"static_cache": True}):
        outputs[str(variant)] = head_outputs(gen, lambda variant=variant: gen.generate(cond, SamplerConfig(**{**base, **variant}), **kw))
    (full, tokens), *others = outputs.values()
    for what, (seen, out) in zip(list(outputs)[1:], others):
        assert_same_outputs(full, seen, f"{name} {what}")
        if tokens.ids is not None:
            assert torch.equal(out.ids, tokens.ids)


def test_cached_caption_matches_full_recomputation(shipped):
    pipe, _ = shipped("shapes-unified")
    gen = pipe.generator
    images = gen.generate(condition(pipe), SamplerConfig(seed=1), latent_frames=1)
    full, a = head_outputs(gen, lambda: gen.caption(images, SamplerConfig(top_k=1, use_cache=False)))
    cached, b = head_outputs(gen, lambda: gen.caption(images))
    assert_same_outputs(full, cached, "caption")
    assert a == b and all(c.startswith("a ") for c in a)


# ----- the sampler contract
@functools.lru_cache(maxsize=None)
def tiny(cls):
    """A one-layer class-conditional generator of ``cls`` bound to its tiny tokenizer."""
    tok = mmgen.create_tokenizer({VARGenerator: "msvq-tiny", XARGenerator: "kl-tiny"}.get(cls, "vq-tiny"))
    name = {VARGenerator: "var-tiny-class", XARGenerator: "xar-tiny-class", RasterGenerator: "raster-tiny-class"}[cls]
    gen = mmgen.create_generator(name, **tokenizer_overrides(tok), transformer=dict(dim=32, depth=1, heads=2))
    return gen.bind_tokenizer(tok).eval()


@pytest.mark.parametrize("cls,field,value", [
    (VARGenerator, "token_budget", 4),
    (VARGenerator, "flow_steps", 10),
    (RasterGenerator, "flow_solver", "euler-maruyama"),
    (XARGenerator, "top_k", 5),
    (XARGenerator, "temperature", 0.7),
])
def test_a_field_the_model_ignores_is_an_error(cls, field, value):
    gen = tiny(cls)
    with pytest.raises(ValueError, match=rf"{cls.__name__} does not use SamplerConfig\.{field} \(got {value!r}"):
        gen.generate(gen.make_condition(labels=[1]), SamplerConfig(**{field: value}))
    assert field not in gen.sampler_fields


def test_every_field_is_read_by_some_generator():
    used = set().union(*(cls.sampler_fields for cls in (RasterGenerator, VARGenerator, XARGenerator, UnifiedGenerator)))
    assert used == {f.name for f in fields(SamplerConfig)}


def test_restrict_sampler_resets_only_the_fields_a_model_ignores():
    s = SamplerConfig(temperature=0.6, top_k=3, cfg_scale=2.0, flow_steps=4, seed=9)
    assert tiny(XARGenerator).restrict_sampler(s) == SamplerConfig(cfg_scale=2.0, flow_steps=4, seed=9)
    assert tiny(VARGenerator).restrict_sampler(s) == SamplerConfig(temperature=0.6, top_k=3, cfg_scale=2.0, seed=9)


@pytest.mark.parametrize("field", ["temperature", "top_p", "cfg_scale", "cfg_power"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_are_refused(field, value):
    with pytest.raises(ValueError, match=rf"{field} must be a finite number, got {value!r}"):
        SamplerConfig(**{field: value})


def test_sampler_rng_is_seeded():
    a, b = SamplerConfig(seed=3).rng("cpu"), SamplerConfig(seed=3).rng("cpu")
    assert torch.equal(torch.rand(4, generator=a), torch.rand(4, generator=b))
    assert not hasattr(SamplerConfig, "generator")


def test_latent_frames_only_for_video_models():
    gen = tiny(RasterGenerator)
    with pytest.raises(ValueError, match="generates images; latent_frames=2"):
        gen.generate(gen.make_condition(labels=[1]), latent_frames=2)


def test_caption_refuses_guidance(shipped):
    pipe, _ = shipped("shapes-unified")
    images = pipe.generator.generate(condition(pipe), SamplerConfig(seed=1), latent_frames=1)
    with pytest.raises(ValueError, match=r"UnifiedGenerator does not use SamplerConfig\.cfg_scale"):
        pipe.generator.caption(images, SamplerConfig(cfg_scale=2.0))


@pytest.mark.parametrize("cls,config", [
    (VARGenerator, VARConfig(transformer=dict(dim=32, depth=1, heads=2))),
    (XARGenerator, XARConfig(transformer=dict(dim=32, depth=1, heads=2))),
    (RasterGenerator, RasterConfig(transformer=dict(dim=32, depth=1, heads=2))),
])
def test_constructors_do_not_mutate_their_config(cls, config):
    config = from_dict(type(config), to_dict(config))  # typed nested transformer config
    before = copy.deepcopy(config)
    gen = cls(config)
    assert config == before
    if cls is not RasterGenerator:
        assert gen.config.transformer.adaln_dim == 32  # the model's own copy is completed: VAR and xAR are AdaLN-modulated


def test_unified_model_has_no_condition_embedding():
    gen = UnifiedGenerator(from_dict(UnifiedConfig, {"transformer": {"dim": 32, "depth": 1, "heads": 2}, "vocab_size": 16}))
    assert gen.cond_embed.embed is None
    assert not any(k.startswith("cond_embed.") for k in gen.state_dict())
