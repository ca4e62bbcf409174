"""The Arena tab: one prompt (or class) and one seed, every selected paradigm side by side, judged.

The tiles stream: the running model's tile shows its live preview and progress bar in place, so
the user watches each paradigm build its picture (scales, rows, blocks) next to the others. The
leaderboard of the session's arena runs lives in ``gr.State``: per browser tab, gone on reload.
"""
from __future__ import annotations

import logging
import time

import gradio as gr

from mmgen.app import arena as A
from mmgen.app import grammar, view
from mmgen.app import handlers as H
from mmgen.app.models import InputError, ModelRegistry
from mmgen.app.tab import chips, examples

__all__ = ["ArenaTab"]

log = logging.getLogger("mmgen.app")
MIN_INTERVAL = 0.25  # seconds between page updates while one model runs


class ArenaTab:
    def __init__(self, registry: ModelRegistry, limits: H.Limits, outdir) -> None:
        self.registry, self.limits = registry, limits
        names = A.default_models(registry)
        choices = [(f"{m.name} · {m.paradigm}" + (" · experimental" if m.experimental else ""), m.name)
                   for m in sorted(registry.list(), key=lambda m: names.index(m.name) if m.name in names else len(names))]
        classes = sorted((m for m in registry.list() if m.cond == "class"), key=lambda m: m.num_classes)  # a label valid for every one
        with gr.Row(equal_height=False):
            with gr.Column(scale=4, min_width=360):
                with gr.Row(equal_height=True):
                    self.prompt = gr.Textbox("a large red circle at the top left", label="Prompt, the same for every model (Enter generates)",
                                             lines=1, max_lines=1, elem_id="arena-prompt", scale=4, placeholder=grammar.IMAGE_PATTERN)
                    self.go = gr.Button("Generate all", variant="primary", elem_id="arena-generate", scale=1, min_width=110,
                                        interactive=bool(names))
                self.chips = chips("arena", False, self.prompt)
                self.motion = gr.Radio(grammar.video_words()["direction"], value="right", label="Motion (video models)", elem_id="arena-motion",
                                       elem_classes=["mmgen-chips"])
                with gr.Row():
                    self.seed = gr.Number(0, label="Seed (whole number)", elem_id="arena-seed", minimum=0, min_width=110)
                    labels = [(f"{i}: {n}", i) for i, n in enumerate(grammar.class_names(classes[0]))] if classes else [("0", 0)]
                    self.label = gr.Dropdown(labels, value=3 if len(labels) > 3 else 0, label="Class (class-conditional models)",
                                             elem_id="arena-label", visible=bool(classes))
                self.models = gr.CheckboxGroup(choices, value=names, label="Models (default: the same prompt through every paradigm)",
                                               elem_id="arena-models")
                examples("arena", False, self.prompt, outdir)
            with gr.Column(scale=7, min_width=480):
                self.status = gr.HTML("", elem_id="arena-status", elem_classes=["mmgen-status"], container=False, padding=False)
                self.tiles = gr.HTML(view.arena_html(None), elem_id="arena-tiles", container=False, padding=False)
                gr.Markdown("Leaderboard of this session's arena runs (judged: the shapes judge found every object right)")
                self.board = gr.HTML(view.leaderboard_html([]), elem_id="arena-leaderboard", container=False, padding=False)
                self.board_state = gr.State({})
        inputs = [self.models, self.prompt, self.motion, self.label, self.seed, self.board_state]
        outputs = [self.status, self.tiles, self.board, self.board_state]
        self.go.click(self.run, inputs, outputs, api_name="arena", show_progress="hidden")
        self.prompt.submit(self.run, inputs, outputs, show_progress="hidden", api_visibility="private")

    def run(self, models, prompt, motion, label, seed, board=None):
        """Stream (status, tiles, leaderboard, state); a shared-input error is one message in the status line."""
        yield view.progress_html(0, 1, "starting the arena …"), gr.skip(), gr.skip(), gr.skip()
        try:
            run, shown, last = None, -1, 0.0
            for run in A.run_arena(self.registry, models or [], prompt, motion, label, seed, self.limits):
                if run.done:
                    break
                t = run.tiles[max(run.current, 0)]
                if t.status == "running" and shown == run.current and time.perf_counter() - last < MIN_INTERVAL:
                    continue  # at most a few page updates a second while a model runs; every tile change is shown
                shown, last = run.current, time.perf_counter()
                yield view.now_html(run), view.arena_html(run), gr.skip(), gr.skip()
            board = A.record(board, run)
            yield f"<b>{run.status}</b>", view.arena_html(run), view.leaderboard_html(A.leaderboard(board)), board
        except InputError as e:
            yield view.error_html(H.user_message(e)), gr.skip(), gr.skip(), gr.skip()
        except Exception as e:  # a bug: a message in the page, the server goes on
            log.exception("arena failed")
            yield view.error_html(H.user_message(f"the arena failed: {e}")), gr.skip(), gr.skip(), gr.skip()
