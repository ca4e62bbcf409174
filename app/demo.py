"""The Gradio page: a text-to-image tab and a text-to-video tab over the models of one folder.

Only layout and wiring live here; validation, generation and streaming are in ``handlers`` (no
gradio, unit-tested). Generation goes through gradio's queue with a concurrency limit, and runs
in worker threads, so a slow request never blocks the page; light events (model info, random
seed) skip the queue. Theme and CSS are launch/mount options in gradio 6: ``page_style()``.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import weakref
from dataclasses import asdict
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home; the demo works offline
import gradio as gr  # noqa: E402

from mmgen import SHIPPED  # noqa: E402
from mmgen.app import handlers as H  # noqa: E402
from mmgen.app.models import InputError, ModelInfo, ModelRegistry  # noqa: E402
from mmgen.sampler import CFG_SCHEDULES, SamplerConfig  # noqa: E402

__all__ = ["build_app", "launch", "page_style", "mount"]

log = logging.getLogger("mmgen.app")
CSS = "#t2i-result img, #t2v-result img, .mmgen-gallery img { image-rendering: pixelated; }"
FONTS = ["ui-sans-serif", "system-ui", "sans-serif"]  # local fonts: the page makes no outside requests


def page_style() -> dict:
    """Theme and CSS, for ``launch`` or ``gr.mount_gradio_app`` (gradio 6 takes them there)."""
    return {"theme": gr.themes.Default(font=FONTS, font_mono=["ui-monospace", "monospace"]), "css": CSS}


def _bar(up: H.Update) -> str:
    if up.final:
        return f"**{up.status}**"
    filled = round(20 * up.step / max(up.total, 1))
    return f"`[{'#' * filled}{'.' * (20 - filled)}]` {up.status}"


class _Tab:
    """The controls and outputs of one tab (image or video), and their events."""

    def __init__(self, registry: ModelRegistry, video: bool, limits: H.Limits, outdir: Path) -> None:
        self.registry, self.video, self.limits, self.outdir = registry, video, limits, outdir
        p = "t2v" if video else "t2i"
        models = registry.list(video=video)
        first = registry.default(video=video)
        rec = H.page_defaults(first) if first else asdict(SamplerConfig())
        text = first is None or first.cond == "text"
        with gr.Row():
            with gr.Column(scale=1):
                with gr.Row():
                    self.model = gr.Dropdown([(m.label(), m.name) for m in models], value=first.name if first else None, label="Model",
                                             elem_id=f"{p}-model", scale=5)
                    self.rescan = gr.Button("rescan", size="sm", scale=1, min_width=60)
                what = "text-to-video" if video else "image"
                hint = "A model whose config has a frames layout appears here." if video else "Train one (README: Usage) or pass --models-dir."
                self.none = gr.Markdown(f"**No {what} checkpoint found under `{registry.models_dir}`.** {hint}", visible=not models)
                self.info = gr.Markdown(first.markdown() if first else "", elem_id=f"{p}-info")
                self.prompt = gr.Textbox(label="Prompt", lines=2, elem_id=f"{p}-prompt", visible=text,
                                         placeholder="a red circle moving right" if video else "a large red circle at the top left")
                self.negative = gr.Textbox(label="Negative prompt (used as the CFG unconditional branch; needs CFG ≠ 1)",
                                           elem_id=f"{p}-negative", visible=text)
                self.label = gr.Dropdown(self._labels(first), value=0, label="Class label (this model is class-conditional: no prompt)",
                                         elem_id=f"{p}-label", visible=not text)
                with gr.Row():
                    self.seed = gr.Number(0, label="Seed", precision=0, elem_id=f"{p}-seed", scale=3)
                    self.random = gr.Button("random seed", size="sm", scale=1, min_width=60)
                    self.n = gr.Number(4, label=f"Samples (1–{limits.max_video_samples if video else limits.max_samples})",
                                       precision=0, elem_id=f"{p}-n", scale=3)
                    self.frames = gr.Number(first.frames if first and first.frames else 8, label=f"Frames (1–{limits.max_frames})",
                                            precision=0, visible=video, elem_id=f"{p}-frames", scale=3)
                with gr.Accordion("Sampler", open=True):
                    with gr.Row():
                        self.cfg = gr.Number(rec["cfg_scale"], label="CFG scale (1 = off, ≥ 0)", elem_id=f"{p}-cfg")
                        self.schedule = gr.Dropdown(list(CFG_SCHEDULES), value=rec["cfg_schedule"], label="CFG schedule")
                    with gr.Row():
                        self.temperature = gr.Number(rec["temperature"], label="Temperature (> 0)", elem_id=f"{p}-temperature")
                        self.top_k = gr.Number(rec["top_k"], label="Top-k (0 = off)", precision=0, elem_id=f"{p}-top-k")
                        self.top_p = gr.Number(rec["top_p"], label="Top-p, in (0, 1] (1 = off)", elem_id=f"{p}-top-p")
                    with gr.Row():
                        self.flow_steps = gr.Number(rec["flow_steps"], label="Flow steps (flow heads)", precision=0,
                                                    visible=bool(first and first.flow))
                        self.budget = gr.Number(rec["token_budget"], label="Token budget (FlexTok; 0 = all)", precision=0,
                                                visible=bool(first and first.flextok))
                self.go = gr.Button("Generate", variant="primary", elem_id=f"{p}-generate", interactive=first is not None)
                examples = H.video_example_prompts() if video else H.example_prompts()
                grammar = "shapes-video" if video else "shapes"
                gr.Examples([[e] for e in examples], inputs=[self.prompt], label=f"Example prompts ({grammar} grammar): click to use")
            with gr.Column(scale=1):
                self.status = gr.Markdown("", label="Status", elem_id=f"{p}-status")
                live_label = "Live: first frames as they are generated" if video else "Samples (sharpen live as they are generated)"
                self.live = gr.Image(label=live_label, type="filepath", interactive=False, elem_id=f"{p}-result", format="png")
                if video:
                    self.result = gr.Image(label="Video (animated GIF, all samples)", type="filepath", interactive=False, elem_id=f"{p}-video")
                else:
                    self.result = gr.Gallery(label="Individual samples (model resolution)", columns=4, height="auto",
                                             elem_id=f"{p}-gallery", elem_classes=["mmgen-gallery"], interactive=False)
                self.settings = gr.JSON(label="Exact sampler settings", elem_id=f"{p}-settings")
                self.file = gr.File(label="Download settings (JSON)", interactive=False, elem_id=f"{p}-settings-file")
        self._wire(p)

    @staticmethod
    def _labels(info: ModelInfo | None) -> list[tuple[str, int]]:
        n = info.num_classes if info is not None and info.cond == "class" else 0
        return [(str(i), i) for i in range(n)] or [("0", 0)]

    def _inputs(self) -> list:
        return [self.model, self.prompt, self.negative, self.label, self.seed, self.n, self.cfg, self.schedule, self.temperature,
                self.top_k, self.top_p, self.flow_steps, self.budget, self.frames]

    def _wire(self, p: str) -> None:
        outs = [self.status, self.live, self.result, self.settings, self.file]
        self.go.click(self.run, self._inputs(), outs, api_name=f"generate_{'video' if self.video else 'image'}", show_progress="minimal")
        self.prompt.submit(self.run, self._inputs(), outs, show_progress="minimal", api_visibility="private")
        self.random.click(None, None, self.seed, js="() => Math.floor(Math.random() * 2147483647)", queue=False)
        model_outs = [self.info, self.prompt, self.negative, self.label, self.cfg, self.schedule, self.temperature, self.top_k,
                      self.top_p, self.flow_steps, self.budget, self.frames]
        self.model.change(self.on_model, [self.model], model_outs, queue=False, api_visibility="private")
        self.rescan.click(self.on_rescan, None, [self.model, self.none, self.go], queue=False, api_visibility="private")

    def on_model(self, name: str | None):
        try:
            info = self.registry.info(name)
        except InputError as e:
            return [f"**{e}**"] + [gr.skip()] * 11
        rec, text = H.page_defaults(info), info.cond == "text"
        return [info.markdown(), gr.update(visible=text), gr.update(visible=text),
                gr.update(visible=info.cond == "class", choices=self._labels(info), value=0),
                rec["cfg_scale"], rec["cfg_schedule"], rec["temperature"], rec["top_k"],
                rec["top_p"], gr.update(visible=info.flow, value=rec["flow_steps"]),
                gr.update(visible=info.flextok, value=rec["token_budget"]), info.frames or 8]

    def on_rescan(self):
        self.registry.rescan()
        models = self.registry.list(video=self.video)
        first = self.registry.default(video=self.video)
        return (gr.update(choices=[(m.label(), m.name) for m in models], value=first.name if first else None),
                gr.update(visible=not models), gr.update(interactive=bool(models)))

    def run(self, model, prompt, negative, label, seed, n, cfg, schedule, temperature, top_k, top_p, flow_steps, budget, frames):
        """Stream (status, live image, result, settings, file) tuples; bad input becomes a message in the page."""
        req = H.Request(model, prompt, negative, label, seed, n, cfg, schedule, temperature, top_k, top_p, flow_steps, budget, frames)
        yield "loading the model / waiting for a free worker …", None, None, None, None
        try:
            scale = None
            for up in H.generate(self.registry, req, video=self.video, limits=self.limits):
                if scale is None:
                    scale = H.display_scale(self.registry.info(model).image_size)
                live = gr.skip() if up.images is None else H.save_png(H.grid(self._first_frames(up.images), scale), self.outdir)
                if not up.final:
                    yield _bar(up), live, gr.skip(), gr.skip(), gr.skip()
                    continue
                H.prune(self.outdir)
                if self.video:
                    import torch

                    result = str(H.write_gif(torch.from_numpy(up.images).movedim(-1, 1), self.outdir, scale))
                else:
                    result = [(H.save_png(img, self.outdir), f"#{i}") for i, img in enumerate(up.images)]
                yield _bar(up), live, result, up.settings, str(H.settings_file(up.settings, self.outdir))
        except InputError as e:
            raise gr.Error(str(e), duration=None, title="Invalid input", print_exception=False) from None
        except Exception as e:  # a bug or a broken checkpoint: a message in the page, the server goes on
            log.exception("generation failed")
            raise gr.Error(f"generation failed: {type(e).__name__}: {e}", duration=None) from None

    def _first_frames(self, images):
        """(B,H,W,3) -> (B,3,H,W) for the grid; a video shows its first frame while it is generated."""
        import torch

        x = torch.from_numpy(images)
        if x.ndim == 5:
            x = x[:, 0]
        return x.movedim(-1, 1)


def build_app(models_dir: str | Path | None = None, concurrency: int = 2, max_queue: int = 64, limits: H.Limits | None = None,
              preload: bool = True, device: str = "cpu") -> gr.Blocks:
    """The demo as a queued ``gr.Blocks``: launch it, or mount it with ``mount(fastapi_app, path)``.

    Args:
        models_dir: folder scanned for checkpoint folders (default: the shipped ``checkpoints/``).
        concurrency: generations running at once; more wait in the queue (at most ``max_queue``).
        preload: load the first image model in the background now, so the first click is fast.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    if models_dir is not None and not Path(models_dir).is_dir():
        raise FileNotFoundError(f"--models-dir {str(models_dir)!r} is not a folder; give a folder of checkpoint folders (default: the shipped checkpoints/)")
    registry = ModelRegistry(models_dir or SHIPPED, device=device)
    limits = limits or H.Limits()
    outdir = Path(tempfile.mkdtemp(prefix="mmgen-demo-"))
    with gr.Blocks(title="mmgen demo", analytics_enabled=False, delete_cache=(600, 3600)) as demo:
        gr.Markdown("# mmgen: autoregressive text-to-image and text-to-video\n"
                    f"Models from `{registry.models_dir}`: every paradigm on one shared transformer. Pick a model, "
                    "type a prompt (or click an example), press **Generate**; partial results stream in as they are sampled.")
        with gr.Tabs():
            with gr.Tab("Text to image", id="t2i"):
                image_tab = _Tab(registry, video=False, limits=limits, outdir=outdir)
            with gr.Tab("Text to video", id="t2v"):
                video_tab = _Tab(registry, video=True, limits=limits, outdir=outdir)
    demo.mmgen_registry, demo.mmgen_tabs = registry, {"image": image_tab, "video": video_tab}  # for tests and embedding code
    # the result files go with the app: when it is collected, or at interpreter exit at the latest
    demo.mmgen_outdir = outdir
    demo.mmgen_cleanup = weakref.finalize(demo, shutil.rmtree, outdir, ignore_errors=True)
    demo.queue(default_concurrency_limit=concurrency, max_size=max_queue)
    first = registry.default(video=False)
    if preload and first is not None and first.ok:
        threading.Thread(target=_preload, args=(registry, first.name), daemon=True).start()
    return demo


def _preload(registry: ModelRegistry, name: str) -> None:
    try:
        registry.get(name)
    except InputError as e:  # shown again, to the user, on the first request
        log.warning("could not preload %s: %s", name, e)


def mount(app, path: str = "/demo", **kwargs):
    """Mount the demo on an existing FastAPI ``app`` at ``path`` (``kwargs`` go to ``build_app``)."""
    return gr.mount_gradio_app(app, build_app(**kwargs), path=path, **page_style())


def launch(host: str = "127.0.0.1", port: int = 7860, models_dir: str | Path | None = None, share: bool = False,
           concurrency: int = 2, block: bool = True) -> gr.Blocks:
    """Serve the demo (localhost only unless ``host`` says otherwise) and print its address."""
    demo = build_app(models_dir, concurrency=concurrency)
    if threading.current_thread() is threading.main_thread():  # SIGTERM (kill, systemd) exits like Ctrl-C: temp files removed
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    demo.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=True, show_error=True, quiet=True,
                max_file_size="1mb", **page_style())
    print(f"mmgen demo ready: {demo.local_url}" + (f" (public: {demo.share_url})" if share and demo.share_url else ""), flush=True)
    if block:
        demo.block_thread()
    return demo
