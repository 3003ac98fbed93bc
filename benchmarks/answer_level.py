"""The level matched presets play at, through the product's own path.

Each real preset is rendered at note 60 (velocity 0.8, 1.5 s note, 2 s render) and sent to
``model.match.Matcher`` as a WAV file's bytes, as a user sends a clip. For each answer:
its level against the original's, and its distance to the original as it plays
(auraloss's ``MultiResolutionSTFTLoss()``) and with its level set to the original's; once
as the network answers (its volume as predicted) and once as ``Matcher.finish`` ships it
(its level decided by ``model.level``). Medians over the presets.

    python benchmarks/answer_level.py --presets ../shared/real-presets
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
from pathlib import Path

import numpy as np
import soundfile as sf

from model.level import active_rms_dbfs
from model.match import DEFAULT_CHECKPOINT, Matcher, f0_midi
from model.metrics import mrstft_distance
from synth import RenderConfig, Renderer, load_preset


def _at_level(audio: np.ndarray, dbfs: float) -> np.ndarray:
    return audio * np.float32(10.0 ** ((dbfs - active_rms_dbfs(audio)) / 20.0))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    p.add_argument("--presets", type=Path, default=Path("../shared/real-presets"))
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    matcher = Matcher(args.checkpoint)
    render = RenderConfig(note_dur=1.5, render_dur=2.0, velocity=0.8)
    target_renderer = Renderer(matcher.space, render)
    rows = {}
    for path in sorted(args.presets.glob("*.vital")):
        original = target_renderer.render_preset(load_preset(path), 60).audio
        wav = io.BytesIO()
        sf.write(wav, original, render.sample_rate, format="WAV", subtype="FLOAT")
        clip = matcher.load(wav.getvalue(), f"{path.stem}.wav")
        prediction = matcher.predict([clip.audio])[0]
        note = matcher.choose_note(prediction, f0_midi(clip.audio, clip.sample_rate))
        matcher.renderer.apply(prediction.patch)
        as_predicted = matcher.renderer.render_current(note.note).audio
        shipped = matcher.finish(clip, prediction, note)
        level = active_rms_dbfs(original)
        row = {"original_dbfs": level}
        for name, answer in (("predicted", as_predicted), ("shipped", shipped.preview)):
            row[f"{name}_dbfs"] = active_rms_dbfs(answer)
            row[f"{name}_mrstft"] = mrstft_distance(answer, original)
            row[f"{name}_mrstft_level_matched"] = mrstft_distance(_at_level(answer, level),
                                                                  original)
        row["shipped_level_source"] = shipped.level.source
        rows[path.stem] = row
        print(path.stem, {k: round(v, 2) if isinstance(v, float) else v
                          for k, v in row.items()}, flush=True)
    numeric = [k for k in next(iter(rows.values())) if k != "shipped_level_source"]
    medians = {k: round(statistics.median(r[k] for r in rows.values()), 3) for k in numeric}
    medians["predicted_minus_original_db"] = round(statistics.median(
        r["predicted_dbfs"] - r["original_dbfs"] for r in rows.values()), 2)
    medians["shipped_minus_original_db"] = round(statistics.median(
        r["shipped_dbfs"] - r["original_dbfs"] for r in rows.values()), 2)
    sources = [r["shipped_level_source"] for r in rows.values()]
    report = {"presets": len(rows), "median": medians,
              "level_source": {s: sources.count(s) for s in sorted(set(sources))}}
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps({**report, "per_preset": rows}, indent=2))


if __name__ == "__main__":
    main()
