"""The pipeline contract: sampler.json read in one place, keyword overrides, save_pretrained, the Hub, model cards."""
import json
import shutil
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import mmgen
from mmgen.model_card import model_card
from mmgen.pipeline import Pipeline, recommended_sampler
from mmgen.sampler import SamplerConfig

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "checkpoints" / "shapes-var"
PROMPT = "a large red circle at the top left"
SHIPPED = sorted(p for p in (ROOT / "checkpoints").glob("*") if (p / "config.json").is_file())
pytestmark = pytest.mark.skipif(not (VAR / "config.json").is_file(), reason="needs the shipped checkpoints")


@pytest.fixture(scope="module")
def pipe():
    return mmgen.load(VAR)


def hub_cache(root: Path, repo_id: str, folder: Path, commit: str = "0123456789abcdef0123456789abcdef01234567") -> Path:
    """A Hugging Face cache (HF_HUB_CACHE layout) holding ``folder`` as ``repo_id``'s main revision, made by hand."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(folder, repo / "snapshots" / commit, dirs_exist_ok=True)
    return root


# --- sampler.json: one reader, the default of every call --------------------------------------

def test_load_samples_with_the_folders_recommended_settings(pipe):
    rec = json.loads((VAR / "sampler.json").read_text())
    assert pipe.sampler == SamplerConfig(**rec) == recommended_sampler(VAR)
    a = pipe(prompt=PROMPT, n=2, seed=4)
    assert torch.equal(a, pipe(prompt=PROMPT, n=2, sampler=SamplerConfig(**rec, seed=4)))
    assert not torch.equal(a, pipe(prompt=PROMPT, n=2, sampler=SamplerConfig(seed=4)))  # the defaults differ: sampler.json is not ignored


def test_keyword_settings_merge_into_the_sampler_instead_of_being_dropped(pipe):
    s = SamplerConfig(temperature=0.6, seed=2)
    merged = pipe(prompt=PROMPT, n=2, sampler=s, cfg_scale=5.0)
    assert torch.equal(merged, pipe(prompt=PROMPT, n=2, sampler=replace(s, cfg_scale=5.0)))
    assert not torch.equal(merged, pipe(prompt=PROMPT, n=2, sampler=s))
    assert pipe.sampler_for(s, cfg_scale=5.0).cfg_scale == 5.0 and s.cfg_scale == 1.0  # the given config is not mutated
    with pytest.raises(TypeError, match=r"unknown sampler setting\(s\) \['cfg'\]; SamplerConfig fields"):
        pipe(prompt=PROMPT, cfg=5.0)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        pipe(prompt=PROMPT, temperature=0)


@pytest.mark.parametrize("content, message", [
    ('{"cfg_scale": 2.0, "temprature": 0.5}', r"unknown sampler field\(s\) \['temprature'\]"),
    ("{not json", "is not valid JSON"),
    ("[1, 2]", "must hold a JSON object"),
    ('{"top_p": 3}', "top_p must be in"),
])
def test_a_bad_sampler_json_is_a_clear_error(tmp_path, content, message):
    shutil.copytree(VAR, tmp_path / "m")
    (tmp_path / "m" / "sampler.json").write_text(content)
    with pytest.raises(ValueError, match=message):
        mmgen.load(tmp_path / "m")


def test_no_sampler_json_means_the_defaults(tmp_path):
    shutil.copytree(VAR, tmp_path / "m", ignore=shutil.ignore_patterns("sampler.json"))
    assert mmgen.load(tmp_path / "m").sampler == SamplerConfig()


# --- save_pretrained / the Hub ------------------------------------------------------------------

def test_save_pretrained_round_trip_keeps_settings_docs_and_images(pipe, tmp_path):
    pipe2 = Pipeline(pipe.generator, pipe.tokenizer, pipe.path, replace(pipe.sampler, top_k=7))
    out = pipe2.save_pretrained(tmp_path / "saved")
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer", "sampler.json", "README.md", "REPRODUCE.md", "metrics.json"} <= names
    again = Pipeline.from_pretrained(out)
    assert again.sampler == pipe2.sampler and again.sampler.top_k == 7
    assert torch.equal(again(prompt=PROMPT, n=2, seed=1), pipe2(prompt=PROMPT, n=2, seed=1))
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: mmgen") and "top_k=7" in card and "# saved" in card


def test_load_a_hub_repo_id_from_the_local_cache_offline(pipe, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = hub_cache(tmp_path / "hub", "someone/shapes-var", VAR)
    hub = mmgen.load("someone/shapes-var", cache_dir=cache)
    assert hub.path.is_relative_to(cache) and hub.sampler == pipe.sampler
    assert torch.equal(hub(prompt=PROMPT, n=2, seed=3), pipe(prompt=PROMPT, n=2, seed=3))


def test_offline_and_not_cached_is_one_line_naming_hf_hub_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError) as err:
        mmgen.load("someone/not-cached", cache_dir=tmp_path / "empty")
    msg = str(err.value)
    assert "HF_HUB_OFFLINE" in msg and "'someone/not-cached'" in msg and "\n" not in msg
    with pytest.raises(FileNotFoundError, match="does not exist"):  # a path that is not a repo id: a missing folder
        mmgen.load(tmp_path / "a" / "b" / "c")


def test_push_to_hub_uploads_the_whole_folder_and_loads_back(pipe, tmp_path, monkeypatch):
    """create_repo / upload_folder are replaced by a file-based 'Hub' (the cache layout): no network."""
    import huggingface_hub

    uploads = []

    def upload_folder(self, repo_id, folder_path, **kw):
        uploads.append(sorted(p.relative_to(folder_path).as_posix() for p in Path(folder_path).rglob("*")))
        hub_cache(tmp_path / "hub", repo_id, Path(folder_path))
        return f"file://{tmp_path / 'hub'}"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda self, repo_id, **kw: SimpleNamespace(repo_id=repo_id))
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    pipe.push_to_hub("me/var-copy")
    assert {"config.json", "model.safetensors", "sampler.json", "README.md", "tokenizer/model.safetensors"} <= set(uploads[0])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    back = mmgen.load("me/var-copy", cache_dir=tmp_path / "hub")
    assert 'mmgen.load("me/var-copy")' in (back.path / "README.md").read_text()
    assert torch.equal(back(prompt=PROMPT, n=2, seed=0), pipe(prompt=PROMPT, n=2, seed=0))


# --- model cards ------------------------------------------------------------------------------

def test_model_card_reports_the_folders_metrics_training_and_sampling(tmp_path):
    shutil.copytree(VAR, tmp_path / "m")
    (tmp_path / "m" / "metrics.json").write_text(json.dumps({"metrics": [{"name": "judge whole", "value": 0.875, "n": 40, "note": "made up"}]}))
    card = model_card(tmp_path / "m", name="x/m")
    assert "| judge whole | 0.875 | 40 | made up |" in card
    assert "tune_sampler.py" in card  # REPRODUCE.md's commands
    assert "mmgen sample --ckpt x/m" in card and "cfg_scale=1.5" in card and "pipeline_tag: text-to-image" in card
    (tmp_path / "m" / "metrics.json").unlink()
    assert "No measurements ship" in model_card(tmp_path / "m")


@pytest.mark.parametrize("folder", SHIPPED, ids=lambda p: p.name)
def test_shipped_model_cards_are_generated_and_current(folder):
    """Regenerate with ``python scripts/model_cards.py`` when a checkpoint, its sampler.json or its metrics change."""
    assert (folder / "README.md").read_text() == model_card(folder, name=f"checkpoints/{folder.name}")


def test_a_huge_prompt_is_named_short_in_the_error(pipe):
    prompt = "a large red circle at the top left " * 300
    with pytest.raises(ValueError) as err:
        pipe(prompt=prompt, n=1)
    assert len(str(err.value)) < 400 and f"({len(prompt)} characters)" in str(err.value)


def test_with_tokenizer_swaps_in_a_fine_tuned_decoder_and_refuses_other_ids(tmp_path):
    from mmgen.modeling import load_module
    from mmgen.pipeline import export_pipeline

    src = ROOT / "checkpoints" / "shapes-flextok"
    pipe = mmgen.load(src)
    tok = load_module(src / "tokenizer").float()
    with torch.no_grad():  # a "fine-tuned decoder": new decoder weights, the same encoder
        for p in tok.dec.parameters():
            p.add_(0.01)
    tok.config.cfg_scale = 2.5
    tok.save_pretrained(tmp_path / "dec")
    swapped = pipe.with_tokenizer(tmp_path / "dec")
    assert swapped.tokenizer.config.cfg_scale == 2.5 and pipe.generator.tokenizer is pipe.tokenizer  # ours stays bound
    assert torch.equal(next(swapped.generator.parameters()), next(pipe.generator.parameters()))
    assert torch.equal(next(swapped.tokenizer.dec.parameters()), next(tok.dec.parameters()))
    out = export_pipeline(src, tmp_path / "shipped", tokenizer=tmp_path / "dec")
    assert mmgen.load(out).tokenizer.config.cfg_scale == 2.5 and (out / "sampler.json").is_file()
    with torch.no_grad():  # another encoder maps images to other ids: the generator would read the wrong codes
        for p in tok.enc.parameters():
            p.add_(torch.randn_like(p))
    tok.save_pretrained(tmp_path / "enc")
    with pytest.raises(ValueError, match="other ids"):
        pipe.with_tokenizer(tmp_path / "enc")
    with pytest.raises(ValueError, match="does not match this generator"):  # another contract entirely
        pipe.with_tokenizer(ROOT / "checkpoints" / "shapes-raster" / "tokenizer")
