"""Matching a clip to a Vital preset with a trained checkpoint, optionally refined.

    python -m model.match clip.wav -o matched.vital --checkpoint runs/core/model.pt \
        --preview matched.wav --json report.json

The clip is read and prepared by ``model.audio_input``; the network predicts the
parameters, the note is cross-checked against a pitch (f0) estimate, and the
patch is written onto the synthmatch base preset with a name and comment that
say where it came from. Confidence: for a categorical parameter the predicted
class's probability; for a continuous one ``1 - spread / 0.29`` over
``mc_passes`` dropout samples (0.29 is the spread of a uniform guess).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from model.audio_input import FORMATS, AudioInputError, Clip, InputConfig, load_clip
from model.checkpoint import CheckpointError, load_checkpoint
from model.metrics import audio_distances, predictions
from model.network import Outputs
from synth.audio import write_wav
from synth.base import base_preset
from synth.preset import Preset, apply_patch, save_preset
from synth.render import RenderConfig, Renderer
from synth.space import Patch

log = logging.getLogger("model.match")
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "default" / "model.pt"
UNIFORM_STD = 0.2887  # standard deviation of U(0, 1)


@dataclass
class MatchResult:
    preset: Preset
    patch: Patch
    note: int
    note_source: str  # "model" or "f0"
    f0_note: float | None
    params: list[dict]  # name, value (raw), text (Vital's display), confidence
    preview: np.ndarray
    distance: dict[str, float]
    timings_ms: dict[str, float] = field(default_factory=dict)
    refinement: dict | None = None  # distance before and after, evaluations, seconds

    def report(self) -> dict:
        return {"preset_name": self.preset.data.get("preset_name"), "note": self.note,
                "note_source": self.note_source, "f0_note": self.f0_note,
                "distance": self.distance, "refinement": self.refinement,
                "timings_ms": self.timings_ms, "parameters": self.params}


def f0_midi(audio: np.ndarray, sample_rate: int) -> float | None:
    """Median f0 of the clip's voiced frames as a (fractional) MIDI note, or None."""
    import librosa

    head = audio[: sample_rate]  # the first second: the attack and the steady part
    loud = np.sqrt(np.mean(head ** 2)) > 1e-4
    f0 = librosa.yin(head, fmin=40.0, fmax=2100.0, sr=sample_rate, frame_length=4096)
    f0 = f0[np.isfinite(f0)]
    return float(librosa.hz_to_midi(np.median(f0))) if loud and f0.size else None


def _mean_logits(categorical: torch.Tensor, layout) -> torch.Tensor:
    """Mean class probabilities over the batch, as log-probabilities in the flat layout."""
    parts = [torch.log(torch.softmax(layout.logits(categorical, i), 1).mean(0, keepdim=True))
             for i in range(len(layout.classes))]
    return torch.cat(parts, dim=1)


class Matcher:
    """Loads a checkpoint once; ``match`` turns a clip into a preset."""

    def __init__(self, checkpoint: str | Path | None = None,
                 input_config: InputConfig | None = None, mc_passes: int = 8):
        path = Path(checkpoint) if checkpoint else DEFAULT_CHECKPOINT
        if checkpoint is None and not path.exists():
            raise CheckpointError(f"{path}: no default model is shipped yet; pass --checkpoint")
        self.ckpt = load_checkpoint(path)
        self.input_config = input_config or InputConfig()
        self.mc_passes = mc_passes
        feats = self.ckpt.features
        self.render_config = RenderConfig(sample_rate=feats.sample_rate,
                                          render_dur=feats.duration_s,
                                          note_dur=round(feats.duration_s * 0.75, 3))
        self.renderer = Renderer(self.ckpt.space, self.render_config)
        self._refiner = None

    def load(self, source, name: str | None = None) -> Clip:
        f = self.ckpt.features
        return load_clip(source, f.sample_rate, f.num_samples, self.input_config, name)

    @torch.no_grad()
    def match(self, source, name: str | None = None, refine_seconds: float = 0.0,
              refine_evals: int = 400) -> MatchResult:
        """Match a clip; with ``refine_seconds`` > 0, refine the prediction by search."""
        t0 = time.perf_counter()
        clip = self.load(source, name)
        t1 = time.perf_counter()
        model, layout, space = self.ckpt.model, self.ckpt.model.layout, self.ckpt.space
        x = torch.from_numpy(clip.audio)[None]
        if self.mc_passes > 1:
            # One batched pass with dropout on: its mean is the prediction, its spread the
            # continuous confidence (a small ensemble at the cost of one forward pass).
            model.train()
            mc = model(x.expand(self.mc_passes, -1))
            model.eval()
            spread = mc.continuous.std(dim=0).numpy()
            out = Outputs(mc.continuous.mean(0, keepdim=True),
                          _mean_logits(mc.categorical, layout),
                          torch.log(torch.softmax(mc.note, 1).mean(0, keepdim=True)))
        else:
            out = model(x)
            spread = np.zeros(len(space.continuous))
        patches, notes = predictions(out, layout)
        patch, note = patches[0], notes[0]
        note_prob = float(torch.softmax(out.note[0], 0)[note])
        t2 = time.perf_counter()
        f0 = f0_midi(clip.audio, clip.sample_rate)
        note_source = "model"
        if f0 is not None and abs(note - f0) > 1.0 and note_prob < 0.5:
            note, note_source = int(np.clip(round(f0), 0, 127)), "f0"
        refinement = None
        if refine_seconds > 0:
            from model.refine import Refiner

            if self._refiner is None:
                self._refiner = Refiner(space, self.render_config)
            r = self._refiner.refine(patch, note, clip.audio, max_evals=refine_evals,
                                     max_seconds=refine_seconds)
            patch = r.patch
            refinement = {"distance_before": r.start_distance, "distance_after": r.best_distance,
                          "evaluations": r.evaluations, "seconds": round(r.seconds, 2)}
        cont_conf = np.clip(1.0 - spread / UNIFORM_STD, 0.0, 1.0)
        cat_conf = [float(torch.softmax(layout.logits(out.categorical, i)[0], 0).max())
                    for i in range(len(layout.classes))]
        self.renderer.apply(patch)
        raw = space.raw_from_patch(patch)
        params = []
        for i, p in enumerate(space.params):
            conf = cont_conf[i] if i < len(space.continuous) else cat_conf[i - len(
                space.continuous)]
            text = (self.renderer.synth.get_control_text(p.name) if p.control is not None
                    else f"{raw[p.name]:+.3f}")
            params.append({"name": p.name, "value": raw[p.name], "text": text,
                           "confidence": round(float(conf), 4)})
        preview = self.renderer.render(patch, note).audio
        t3 = time.perf_counter()
        distance = audio_distances(preview, clip.audio, clip.sample_rate)
        stem = Path(clip.source).name
        preset = apply_patch(base_preset(), space, patch,
                             name=f"synthmatch {Path(stem).stem}"[:64],
                             comments=f"Made by synthmatch from the clip '{stem}' (model "
                                      f"{space.id}, note {note}). Starts from synthmatch's base "
                                      "preset (Vital's init with a basic-shapes wavetable).")
        return MatchResult(preset, patch, note, note_source, f0, params, preview, distance, {
            "read": 1000 * (t1 - t0), "predict": 1000 * (t2 - t1),
            "refine_and_render": 1000 * (t3 - t2),
            "total": 1000 * (time.perf_counter() - t0)}, refinement)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m model.match", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("audio", type=Path, help=f"a clip of one note ({FORMATS})")
    p.add_argument("-o", "--out", type=Path, required=True, help="output .vital preset")
    p.add_argument("--checkpoint", type=Path, help="model.pt (default: the shipped model)")
    p.add_argument("--preview", type=Path, help="also render the preset here (.wav)")
    p.add_argument("--json", type=Path, help="also write the report (parameters, confidences, "
                                             "note, distance, timings)")
    p.add_argument("--refine-seconds", type=float, default=0.0,
                   help="refine the prediction by search for up to this long (default 0: off)")
    p.add_argument("--refine-evals", type=int, default=400,
                   help="and for at most this many rendered candidates (default 400)")
    p.add_argument("--tutorial", action="store_true",
                   help="print a tutorial for building the preset in Vital (Claude with "
                        "ANTHROPIC_API_KEY set, else an offline one)")
    p.add_argument("--max-seconds", type=float, default=InputConfig().max_seconds,
                   help="longest clip accepted (default 30 s)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        matcher = Matcher(args.checkpoint, InputConfig(max_seconds=args.max_seconds))
        result = matcher.match(args.audio, refine_seconds=args.refine_seconds,
                               refine_evals=args.refine_evals)
        save_preset(result.preset, args.out)
        if args.preview:
            write_wav(args.preview, result.preview, matcher.render_config.sample_rate)
        report = result.report()
        if args.tutorial:
            from model.tutorial import write_tutorial

            modules = {p.name: p.module for p in matcher.ckpt.space.params}
            tutorial = write_tutorial(result.params, modules, result.note)
            report["tutorial"] = {"text": tutorial.text, "source": tutorial.source,
                                  "note": tutorial.note}
            print(tutorial.text)
        if args.json:
            args.json.write_text(json.dumps(report, indent=2))
    except (AudioInputError, CheckpointError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    log.info("wrote %s (note %d from %s, MR-STFT distance %.3f, %.0f ms)", args.out, result.note,
             result.note_source, result.distance["audio/mrstft"], result.timings_ms["total"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
