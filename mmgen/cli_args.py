"""argparse pieces of the ``mmgen`` command line: finite floats, one-line errors, flags added lazily, --device.

Kept free of torch at import: ``mmgen --help`` must answer in well under a second.
"""
from __future__ import annotations

import argparse
import math

__all__ = ["finite_float", "OneLineErrorParser", "LazySubParsers", "lazy", "lazy_subparsers", "check_device", "check_floats", "one_line"]


def finite_float(text: str) -> float:
    """argparse type: a float that is neither NaN nor infinite."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return v


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse's errors in one line (``mmgen sample: error: ...``) and exit status 2, without the usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class LazySubParsers(argparse._SubParsersAction):
    """Runs a subparser's ``populate`` hook (flags that need torch) only when that subcommand is chosen."""

    def __call__(self, parser, namespace, values, option_string=None):
        chosen = self._name_parser_map.get(values[0])
        populate = getattr(chosen, "populate", None)
        if populate is not None:
            chosen.populate = None
            populate(chosen)
        super().__call__(parser, namespace, values, option_string)


def lazy(parser: argparse.ArgumentParser, populate) -> argparse.ArgumentParser:
    """Give ``parser`` flags from ``populate(parser)`` when (and only when) its subcommand runs."""
    parser.populate = populate
    return parser


def lazy_subparsers(parser: argparse.ArgumentParser) -> None:
    """Make ``parser.add_subparsers`` run each chosen subparser's ``populate`` hook."""
    parser.register("action", "parsers", LazySubParsers)


def check_device(name: str) -> None:
    """--device: a torch device this machine has, else a one-line error naming what to use."""
    import torch

    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r} is not a device; use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {name}: MPS is not available on this machine; use --device cpu")


def check_floats(args: argparse.Namespace) -> None:
    """NaN/inf in any float flag: one error naming it (float flags without ``finite_float`` included)."""
    for name, v in vars(args).items():
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"--{name.replace('_', '-')} must be a finite number, got {v}")


def one_line(e: BaseException) -> str:
    """An exception's message on one line (a KeyError's without the quotes repr adds)."""
    msg = e.args[0] if isinstance(e, KeyError) and e.args else e
    return " ".join(str(msg).split())
