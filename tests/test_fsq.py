"""Finite scalar quantization: levels, codebook size, id round trip, straight-through gradient, bad input."""
import math

import pytest
import torch

from mmgen.tokenizers_vis.fsq import FSQ


@pytest.mark.parametrize("levels", [[8, 5, 5, 5], [8, 8, 8, 5, 5, 5], [2, 3, 4]])
def test_codebook_size_levels_and_round_trip(levels):
    q = FSQ(levels)
    assert q.codebook_size == math.prod(levels) and q.dim == len(levels)
    codes = q.codebook()
    assert codes.shape == (q.codebook_size, len(levels)) and codes.min() >= -1 and codes.max() <= 1
    assert torch.equal(q.codes_to_ids(codes), torch.arange(q.codebook_size))  # ids <-> codes is a bijection
    assert len({tuple(c) for c in codes.tolist()}) == q.codebook_size
    z = torch.randn(4096, len(levels)) * 4  # wide inputs reach every level of every channel
    out, ids = q(z)
    for i, L in enumerate(levels):
        assert out[:, i].unique().numel() == L, f"channel {i} must take exactly {L} values"
    torch.testing.assert_close(q.ids_to_codes(ids), out)
    assert torch.equal(q.codes_to_ids(out), ids)


def test_quantization_is_nearest_level_of_the_bounded_input():
    q = FSQ([8, 5])
    z = torch.randn(256, 2)
    out, _ = q(z)
    bounded = q.bound(z)
    torch.testing.assert_close(out * q._half_width, bounded.round())
    assert (out * q._half_width - bounded).abs().max() <= 0.5 + 1e-6


def test_straight_through_gradient():
    q = FSQ([8, 5, 5, 5])
    z = torch.randn(8, 4, requires_grad=True)
    w = torch.randn(8, 4)
    out, _ = q(z)
    (grad,) = torch.autograd.grad((out * w).sum(), z)
    zz = z.detach().clone().requires_grad_(True)
    (ref,) = torch.autograd.grad((q.bound(zz) / q._half_width * w).sum(), zz)  # rounding passes the gradient as is
    torch.testing.assert_close(grad, ref)
    assert grad.abs().sum() > 0


@pytest.mark.parametrize("levels", [[], [1, 5], [8, 2.5], "abc", [8, -3]])
def test_bad_levels_are_clear_errors(levels):
    with pytest.raises(ValueError, match="levels"):
        FSQ(levels)


def test_bad_ids_and_shapes():
    q = FSQ([8, 5, 5, 5])
    with pytest.raises(ValueError, match=r"must lie in \[0, 1000\)"):
        q.ids_to_codes(torch.tensor([1000]))
    with pytest.raises(ValueError, match="integers"):
        q.ids_to_codes(torch.tensor([1.0]))
    with pytest.raises(ValueError, match="last dimension 4"):
        q(torch.randn(2, 3))
