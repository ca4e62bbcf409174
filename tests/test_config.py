"""Typed key=value overrides and recipes."""
from dataclasses import dataclass, field
from typing import Literal

import pytest

from mmgen.config import apply_overrides, from_dict, parse_overrides


@dataclass
class Inner:
    depth: int = 2
    rate: float = 0.1


@dataclass
class Outer:
    name: str = "x"
    lr: float = 1e-3
    flag: bool = False
    sizes: tuple[int, ...] = (1, 2)
    mode: Literal["a", "b"] = "a"
    maybe: int | None = None
    inner: Inner = field(default_factory=Inner)


def test_overrides_are_typed():
    cfg = apply_overrides(Outer(), ["lr=3e-4", "flag=true", "sizes=[1,2,4]", "inner.depth=5", "mode=b", "maybe=7", "name=12"])
    assert cfg.lr == 3e-4 and cfg.flag is True and cfg.sizes == (1, 2, 4) and cfg.inner.depth == 5
    assert cfg.mode == "b" and cfg.maybe == 7 and cfg.name == "12"
    assert apply_overrides(cfg, ["maybe=none"]).maybe is None


@pytest.mark.parametrize("item,msg", [
    ("nope=1", "unknown Outer keys"),
    ("inner.nope=1", "unknown Inner keys"),
    ("inner.depth=2.5", "expects an integer"),
    ("flag=maybe", "expects a boolean"),
    ("mode=c", "is not one of"),
    ("lr=fast", "expects a number"),
])
def test_bad_overrides_name_the_problem(item, msg):
    with pytest.raises((KeyError, ValueError), match=msg):
        apply_overrides(Outer(), [item])


def test_parse_overrides_requires_equals():
    with pytest.raises(ValueError, match="key=value"):
        parse_overrides(["depth"])
    assert parse_overrides(["a.b=1", "a.c=2"]) == {"a": {"b": "1", "c": "2"}}


def test_from_dict_nested():
    assert from_dict(Outer, {"inner": {"rate": "0.5"}}).inner.rate == 0.5
