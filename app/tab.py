"""One generation tab (text to image, or text to video): controls on the left, results where the user looks.

Layout for a 1366x768 screen: the prompt and Generate sit at the top of the left column, the
progress bar and the live preview at the top of the right one; the grammar's words are chips
under the prompt, bounded settings are sliders in a closed accordion. Errors go to the status
line (which a new run resets), never as "Error" badges over every panel.
"""
from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import gradio as gr

from mmgen.app import grammar, view
from mmgen.app import handlers as H
from mmgen.app.models import InputError, ModelInfo, ModelRegistry
from mmgen.sampler import CFG_SCHEDULES, SamplerConfig

__all__ = ["GenerateTab", "chips"]

log = logging.getLogger("mmgen.app")
HISTORY = 24  # results kept in the session's history strip


def chips(prefix: str, video: bool, prompt: gr.Textbox) -> list[gr.Radio]:
    """The grammar's words as clickable chips; each click rewrites the prompt from the chosen words."""
    words = grammar.video_words() if video else grammar.image_words()
    radios = [gr.Radio(choices, value=None, label=slot, elem_id=f"{prefix}-chip-{slot}", elem_classes=["mmgen-chips"], container=False,
                       show_label=False, min_width=80) for slot, choices in words.items()]
    pattern = "a ${v[1]} ${v[2]} moving ${v[3]}" if video else "a ${v[1]} ${v[2]} ${v[3]} at the ${v[4]}"
    defaults = [c[0] for c in words.values()]
    js = f"(...v) => {{ const d = {defaults!r}; v = v.map((x, i) => i === 0 ? x : (x || d[i - 1])); return `{pattern}`; }}"
    for r in radios:
        r.input(None, [prompt, *radios], prompt, js=js, queue=False)
    return radios


def examples(prefix: str, video: bool, prompt: gr.Textbox, outdir: Path) -> list[gr.Button]:
    """Example prompts in full, each with a thumbnail of what it asks for; a click copies it into the prompt."""
    gr.Markdown("Examples (click to use; the picture is what the prompt asks for)")
    buttons = []
    with gr.Row(elem_classes=["mmgen-examples"]):
        for k, text in enumerate(grammar.video_example_prompts() if video else grammar.example_prompts()):
            icon = H.save_png(grammar.thumbnail(text), outdir)
            b = gr.Button(text, icon=icon, size="sm", variant="secondary", elem_id=f"{prefix}-example-{k}", min_width=150)
            b.click(None, None, prompt, js=f"() => {text!r}", queue=False)
            buttons.append(b)
    return buttons


class GenerateTab:
    """The controls and outputs of one tab (image or video), and their events."""

    def __init__(self, registry: ModelRegistry, video: bool, limits: H.Limits, outdir: Path) -> None:
        self.registry, self.video, self.limits, self.outdir = registry, video, limits, outdir
        p = self.prefix = "t2v" if video else "t2i"
        models = registry.list(video=video)
        first = registry.default(video=video)
        rec = H.page_defaults(first) if first else asdict(SamplerConfig())
        text = first is None or first.cond == "text"
        max_n = limits.max_video_samples if video else limits.max_samples
        with gr.Row(equal_height=False):
            with gr.Column(scale=5, min_width=380):
                self.model = gr.Dropdown([(m.label(), m.name) for m in models], value=first.name if first else None, label="Model", elem_id=f"{p}-model")
                what = "video" if video else "image"
                self.none = gr.Markdown(f"**No {what} model was found in the models folder.** Train one (README: Usage) or pass --models-dir.",
                                        visible=not models)
                with gr.Row(equal_height=True):
                    self.prompt = gr.Textbox("a red circle moving right" if video else "a large red circle at the top left",
                                             label="Prompt (Enter generates)", lines=1, max_lines=1, elem_id=f"{p}-prompt", visible=text, scale=4,
                                             placeholder=grammar.VIDEO_PATTERN if video else grammar.IMAGE_PATTERN)
                    self.label = gr.Dropdown(self._labels(first), value=0, label="Class", elem_id=f"{p}-label", visible=not text, scale=4)
                    self.go = gr.Button("Generate", variant="primary", elem_id=f"{p}-generate", interactive=first is not None, scale=1, min_width=110)
                self.chips = chips(p, video, self.prompt)
                with gr.Row():
                    self.seed = gr.Number(0, label="Seed (whole number)", elem_id=f"{p}-seed", minimum=0, scale=2, min_width=120)
                    self.n = gr.Slider(1, max_n, value=2 if video else 4, step=1, label="Samples", elem_id=f"{p}-n", scale=3)
                    self.frames = gr.Slider(1, limits.max_frames, value=first.frames if first and first.frames else 8, step=1, label="Frames",
                                            visible=video, elem_id=f"{p}-frames", scale=3)
                self.examples = examples(p, video, self.prompt, outdir)
                with gr.Accordion("Sampler settings (start at the model's recommended ones)", open=False):
                    self.negative = gr.Textbox(label="Negative prompt (the unconditional side of CFG; needs CFG ≠ 1)", elem_id=f"{p}-negative", visible=text)
                    with gr.Row():
                        self.cfg = gr.Slider(0, limits.max_cfg, value=rec["cfg_scale"], step=0.1, label="CFG scale (1 = off)", elem_id=f"{p}-cfg")
                        self.schedule = gr.Dropdown(list(CFG_SCHEDULES), value=rec["cfg_schedule"], label="CFG schedule", elem_id=f"{p}-schedule")
                    with gr.Row():
                        self.temperature = gr.Slider(0.05, limits.max_temperature, value=rec["temperature"], step=0.05, label="Temperature",
                                                     elem_id=f"{p}-temperature")
                        self.top_k = gr.Slider(0, 1024, value=rec["top_k"], step=1, label="Top-k (0 = off)", elem_id=f"{p}-top-k")
                        self.top_p = gr.Slider(0.05, 1, value=rec["top_p"], step=0.05, label="Top-p (1 = off)", elem_id=f"{p}-top-p")
                    with gr.Row():
                        self.flow_steps = gr.Slider(1, limits.max_flow_steps, value=rec["flow_steps"], step=1, label="Flow steps",
                                                    visible=bool(first and first.flow), elem_id=f"{p}-flow-steps")
                        self.budget = gr.Slider(0, 256, value=rec["token_budget"], step=1, label="Token budget (0 = all)",
                                                visible=bool(first and first.flextok), elem_id=f"{p}-budget")
                with gr.Accordion("Model details", open=False):
                    self.info = gr.Markdown(first.markdown() if first else "", elem_id=f"{p}-info")
                with gr.Accordion("Advanced", open=False):
                    self.rescan = gr.Button("Rescan the models folder", size="sm", elem_id=f"{p}-rescan")
            with gr.Column(scale=6, min_width=420):
                self.status = gr.HTML("", elem_id=f"{p}-status", elem_classes=["mmgen-status"], container=False, padding=False)
                self.live = gr.Image(show_label=False, type="filepath", interactive=False, elem_id=f"{p}-result", format="png", height=210,
                                     elem_classes=["mmgen-pixels"], buttons=[])
                if video:
                    self.result = gr.Video(label="Video (MP4, all samples)", show_label=False, elem_id=f"{p}-video", autoplay=True, loop=True,
                                           interactive=False, height=250)
                    self.strip = gr.Gallery(show_label=False, columns=8, height=130, object_fit="contain", elem_id=f"{p}-frames-strip", elem_classes=["mmgen-strip"],
                                            interactive=False, allow_preview=True)
                    self.gif = gr.File(label="Download as GIF", interactive=False, elem_id=f"{p}-gif", height=60)
                else:
                    self.result = gr.Gallery(show_label=False, columns=8, height=175, object_fit="contain", elem_id=f"{p}-gallery", elem_classes=["mmgen-pixels"],
                                             interactive=False)
                gr.Markdown("History (this session; click one to enlarge)")
                self.history = gr.Gallery(show_label=False, columns=8, height=175, object_fit="contain", elem_id=f"{p}-history", elem_classes=["mmgen-pixels"],
                                          interactive=False)
                self.history_state = gr.State([])
                with gr.Accordion("Exact settings and the command that reproduces them", open=False):
                    self.settings = gr.JSON(show_label=False, elem_id=f"{p}-settings")
                    self.file = gr.File(label="Download settings (JSON)", interactive=False, elem_id=f"{p}-settings-file")
        self._wire()

    @staticmethod
    def _labels(info: ModelInfo | None) -> list[tuple[str, int]]:
        if info is None or info.cond != "class":
            return [("0", 0)]
        return [(f"{i}: {name}", i) for i, name in enumerate(grammar.class_names(info))]

    def _inputs(self) -> list:
        return [self.model, self.prompt, self.negative, self.label, self.seed, self.n, self.cfg, self.schedule, self.temperature,
                self.top_k, self.top_p, self.flow_steps, self.budget, self.frames, self.history_state]

    def _outputs(self) -> list:
        extra = [self.strip, self.gif] if self.video else []
        return [self.status, self.live, self.result, *extra, self.settings, self.file, self.history, self.history_state]

    def _wire(self) -> None:
        api = f"generate_{'video' if self.video else 'image'}"
        self.go.click(self.run, self._inputs(), self._outputs(), api_name=api, show_progress="hidden")
        self.prompt.submit(self.run, self._inputs(), self._outputs(), show_progress="hidden", api_visibility="private")
        model_outs = [self.info, self.prompt, self.negative, self.label, self.cfg, self.schedule, self.temperature, self.top_k,
                      self.top_p, self.flow_steps, self.budget, self.frames]
        self.model.change(self.on_model, [self.model], model_outs, queue=False, api_visibility="private")
        self.rescan.click(self.on_rescan, None, [self.model, self.none, self.go], queue=False, api_visibility="private")

    def on_model(self, name: str | None):
        try:
            info = self.registry.info(name)
        except InputError as e:
            return [f"**{H.user_message(e)}**"] + [gr.skip()] * 11
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

    def _skip(self, status: str) -> tuple:
        return (status,) + (gr.skip(),) * (len(self._outputs()) - 1)

    def run(self, model, prompt, negative, label, seed, n, cfg, schedule, temperature, top_k, top_p, flow_steps, budget, frames, history=None):
        """Stream the outputs; bad input becomes a message in the status line (the other panels keep their content)."""
        req = H.Request(model, prompt, negative, label, seed, n, cfg, schedule, temperature, top_k, top_p, flow_steps, budget, frames)
        shown = gr.update(visible=True)  # a video hides its live preview when the player takes over; the next run shows it again
        yield (view.progress_html(0, 1, "loading the model / waiting for a free worker …"), shown) + (gr.skip(),) * (len(self._outputs()) - 2)
        try:
            scale = None
            for up in H.generate(self.registry, req, video=self.video, limits=self.limits):
                if scale is None:
                    scale = H.display_scale(self.registry.info(model).image_size)
                live = gr.skip() if up.images is None else H.save_png(H.grid(self._first_frames(up.images), scale), self.outdir)
                if not up.final:
                    yield (view.progress_html(up.step, up.total, up.status), live) + (gr.skip(),) * (len(self._outputs()) - 2)
                    continue
                yield self._final(up, live, scale, list(history or []))
        except InputError as e:
            yield self._skip(view.error_html(H.user_message(e)))
        except Exception as e:  # a bug or a broken checkpoint: a message in the page, the server goes on
            log.exception("generation failed")
            yield self._skip(view.error_html(H.user_message(f"generation failed: {e}")))

    def _final(self, up: H.Update, live: str, scale: int, history: list) -> tuple:
        import torch

        H.prune(self.outdir)
        what = up.settings.get("prompt") or f"class {up.settings.get('label')}"
        history = ([(live, f"{up.settings['model']} · {what}")] + history)[:HISTORY]
        file = str(H.settings_file(up.settings, self.outdir))
        status = f"<b>{up.status}</b>"
        if not self.video:
            gallery = [H.save_png(img, self.outdir) for img in up.images]
            return status, live, gallery, up.settings, file, history, history
        video = torch.from_numpy(up.images).movedim(-1, 1)  # (B,3,T,H,W)
        mp4 = str(H.write_mp4(video, self.outdir, scale))
        gif = str(H.write_gif(video, self.outdir, scale))
        strip = [H.save_png(view.upscale(frame, 2), self.outdir) for frame in up.images[0]]  # no captions: they would cover the picture
        return status, gr.update(value=live, visible=False), mp4, strip, gif, up.settings, file, history, history

    def _first_frames(self, images):
        """(B,H,W,3) -> (B,3,H,W) for the grid; a video shows its first frame while it is generated."""
        import torch

        x = torch.from_numpy(images)
        if x.ndim == 5:
            x = x[:, 0]
        return x.movedim(-1, 1)
