"""The Gradio demo, mounted at ``/demo`` by the ingress; it calls the same
``MatchService.match`` as ``POST /v1/match``.

Upload or record a clip, optionally describe it and set the search time; get the
preview, the ``.vital`` file, the parameter table with confidences and a tutorial.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import gradio as gr
import numpy as np

from model.search import DEFAULT_BUDGET_SECONDS
from serve.errors import ApiError
from serve.service import MatchService

INTRO = """# synthmatch
Give it a recording of **one note**; it builds a [Vital](https://vital.audio) preset that
sounds like it, renders a preview and explains how the sound is made. WAV, FLAC, OGG or MP3.
"""


def build_demo(service: MatchService) -> gr.Blocks:
    cfg = service.config
    out_dir = Path(tempfile.mkdtemp(prefix="synthmatch-demo-"))

    async def run(audio_path: str | None, description: str, seconds: float):
        if not audio_path:
            raise gr.Error("Upload or record a clip of one note first.")
        path = Path(audio_path)
        try:
            out = await service.match(path.read_bytes(), path.name,
                                      float(seconds), tutorial=True,
                                      description=description or "")
        except ApiError as exc:
            raise gr.Error(exc.message) from None
        r = out.result
        folder = Path(tempfile.mkdtemp(dir=out_dir))
        vital = folder / out.filename
        vital.write_text(r.preset.to_json())
        pcm = (np.clip(r.preview, -1, 1) * 32767).astype(np.int16)
        rows = [[p["name"], p["text"], p.get("confidence")] for p in r.params]
        summary = (f"**Note** {r.note} (from the {r.note_source})  ·  **distance to your clip** "
                   f"{r.distance['audio/mrstft']:.2f} (multi-resolution STFT; two renders of "
                   f"one preset differ by about 0.8)  ·  {r.timings_ms['total']:.0f} ms")
        if r.search:
            summary += (f"  ·  searched {r.search['seconds']:.1f} s: {r.search['rendered']} "
                        f"candidates rendered, the answer from "
                        f"{r.search['winner']['source']}")
        tutorial = out.tutorial.text if out.tutorial else ""
        return summary, (service.sample_rate, pcm), str(vital), rows, tutorial

    with gr.Blocks(title="synthmatch", analytics_enabled=False) as demo:
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column():
                clip = gr.Audio(sources=["upload", "microphone"], type="filepath",
                                label="Your clip (one note)", elem_id="clip")
                description = gr.Textbox(label="What is it? (optional, for the tutorial)",
                                         placeholder="a plucky bass", max_length=500)
                seconds = gr.Slider(0, cfg.max_budget_seconds,
                                    value=min(DEFAULT_BUDGET_SECONDS, cfg.max_budget_seconds),
                                    step=0.5, elem_id="budget",
                                    label="Search seconds (longer: closer; 0: the network's "
                                          "answer alone)")
                button = gr.Button("Match", variant="primary", elem_id="match")
            with gr.Column():
                summary = gr.Markdown(elem_id="summary")
                preview = gr.Audio(label="Preview (the preset, at the detected note)",
                                   interactive=False, elem_id="preview")
                vital = gr.File(label="The preset (.vital)", elem_id="vital")
        table = gr.Dataframe(headers=["parameter", "value (Vital's display)", "confidence"],
                             label="Parameters", interactive=False, elem_id="params")
        tutorial = gr.Markdown(label="Tutorial", elem_id="tutorial")
        button.click(run, [clip, description, seconds],
                     [summary, preview, vital, table, tutorial])
    demo.vibe_mode = False  # Gradio's AI code editor stays off whatever the environment says
    return demo
