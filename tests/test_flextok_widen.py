"""Widening a trained FlexTok's FSQ: the same decodes, old ids as the low digits, new channels that learn."""
import pytest
import torch

import mmgen
from mmgen.modeling import load_module
from mmgen.models.widen import widen_generator
from mmgen.tokenizers_vis.flextok_widen import widen_fsq, widen_id_map

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

SMALL = dict(num_registers=8, encoder=dict(dim=32, depth=1, heads=2), decoder=dict(dim=32, depth=2, heads=2), flow_steps=2)


def scenes(n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, 32, 32, generator=g) * 2 - 1


def trained_like() -> torch.nn.Module:
    """A tiny FlexTok with every reader of the codes switched on and no zero-initialised layer left at zero."""
    tok = mmgen.create_tokenizer("flextok-tiny", **SMALL, levels=[4, 3], prior_mlp=16, code_mlp=16, coarse_weight=1.0, id_embed=True)
    torch.manual_seed(1)
    for p in tok.parameters():
        if p.dim() > 1 and p.abs().sum() == 0:
            torch.nn.init.normal_(p, std=0.2)
    return tok.eval()


def test_widened_tokenizer_decodes_like_the_old_one_and_keeps_old_ids_as_low_digits(tmp_path):
    old = trained_like()
    new = widen_fsq(old, [5, 2]).eval()
    assert tuple(new.config.levels) == (4, 3, 5, 2) and new.vocab_size == 12 * 10 and tuple(old.config.levels) == (4, 3)
    x = scenes(4)
    old_ids, new_ids = old.encode(x).ids, new.encode(x).ids
    assert torch.equal(new_ids % old.vocab_size, old_ids)
    assert (new_ids >= old.vocab_size).any()  # the new channels take values other than their first level
    torch.testing.assert_close(new.decode(new_ids), old.decode(old_ids))
    high = torch.randint(0, 10, old_ids.shape) * old.vocab_size + old_ids  # any new digits: the same picture
    torch.testing.assert_close(new.decode(high), old.decode(old_ids))
    assert torch.equal(widen_id_map(old.vocab_size, new.vocab_size)[new_ids], old_ids)
    new.save_pretrained(tmp_path / "w")
    torch.testing.assert_close(load_module(tmp_path / "w").decode(new_ids), new.decode(new_ids))


def test_the_new_channels_get_a_gradient_on_the_first_step():
    new = widen_fsq(trained_like(), [5]).train()
    torch.manual_seed(0)
    loss, _ = new.loss(scenes(4))
    loss.backward()
    assert new.code_in.weight.grad[:, -1].abs().sum() > 0  # the decoder can learn to read the new channel
    assert new.prior[0].weight.grad.view(16, 8, 4)[..., 2].abs().sum() > 0


def test_bad_widening_is_a_clear_error():
    with pytest.raises(ValueError, match="levels"):
        widen_fsq(trained_like(), [1])
    with pytest.raises(ValueError, match="multiple"):
        widen_id_map(12, 30)


def test_widened_generator_predicts_the_old_distribution_spread_over_the_new_digits():
    from mmgen.models.base import tokenizer_overrides
    from mmgen.tokens import Tokens

    old_tok = trained_like()
    gen = mmgen.create_generator("raster-tiny-flextok", **tokenizer_overrides(old_tok), transformer=dict(dim=32, depth=1, heads=2))
    torch.nn.init.normal_(gen.head.weight, std=0.5)
    gen = gen.bind_tokenizer(old_tok).eval()
    new_tok = widen_fsq(old_tok, [3]).eval()
    wide = widen_generator(gen, new_tok).eval()
    assert wide.config.vocab_size == 36 and wide.config.token_dim == 3 and gen.config.vocab_size == 12
    new_ids = new_tok.encode(scenes(2)).ids
    old_ids = new_ids % 12
    cond = gen.make_condition(prompts=["a red circle", "a blue square"])
    lo = gen.logits(Tokens(old_tok.layout, ids=old_ids), cond)
    lw = wide.logits(Tokens(new_tok.layout, ids=new_ids), cond)
    torch.testing.assert_close(lw, lo[..., widen_id_map(12, 36)])  # any new digit in the context reads as its old id
    p_old = lo.softmax(-1)
    p_new = lw.softmax(-1).view(*lw.shape[:-1], 3, 12).sum(-2)  # summed over the new digit
    torch.testing.assert_close(p_new, p_old)
    with pytest.raises(ValueError, match="multiple"):
        widen_generator(gen, mmgen.create_tokenizer("flextok-tiny", **SMALL, levels=[5, 5]))  # 25 is no multiple of 12
