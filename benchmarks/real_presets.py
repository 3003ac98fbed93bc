"""Matching real presets: Vital's init preset, nearest neighbour, the model, the model refined.

Each of the presets in ../shared/real-presets (by Instatetragrammaton, CC BY 4.0) is
rendered at note 60, velocity 0.8, 1.5 s note, 2 s render, mono, and each method's
answer is compared with it by auraloss's ``MultiResolutionSTFTLoss()`` (default
arguments). Two renders of the same real preset differ by about 0.85: the noise floor.

Each answer is a preset and the note to play it at, as the product returns them:

- ``init``: Vital's init preset at the clip's f0 (``model.match.f0_midi``);
- ``nearest``: the training preset whose log-mel is nearest the clip's, at the note it
  was rendered at in the dataset (the sound that was found nearest);
- ``model``: ``model.match.Matcher`` alone, at the note it chooses (the clip's f0 minus
  the predicted patch's transpose, unless the note head is sure);
- ``model+refine``: the same, then ``--refine-seconds`` of search.

The ``@60`` columns play every answer at note 60 instead, the protocol of the
first benchmarks: it hears a preset transposed by an octave as an octave off.
Renders are not repeatable (random oscillator phase), and neither are the
predictions made from them; ``--repeats`` averages each distance over that many
target renders (refinement runs on the first).

    python benchmarks/real_presets.py --checkpoint model/default/model.pt \\
        --train-data data/core-30k --refine-seconds 20 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

import numpy as np

from model.evaluate import Evaluator
from model.match import DEFAULT_CHECKPOINT, Matcher, f0_midi
from model.metrics import mrstft_distance
from model.refine import Refiner
from synth import RenderConfig, Renderer, load_preset

PRESETS = Path(__file__).resolve().parents[2] / "shared" / "real-presets"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    p.add_argument("--train-data", required=True, help="training set for nearest neighbour")
    p.add_argument("--presets", type=Path, default=PRESETS)
    p.add_argument("--refine-seconds", type=float, default=20.0)
    p.add_argument("--repeats", type=int, default=3, help="target renders per preset")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    matcher = Matcher(args.checkpoint)
    render = RenderConfig(note_dur=1.5, render_dur=2.0, velocity=0.8)
    sr = render.sample_rate
    ev = Evaluator(matcher, args.train_data, render)
    refiner = Refiner(matcher.space, render) if args.refine_seconds > 0 else None
    target_renderer = Renderer(matcher.space, render)
    paths = sorted(args.presets.glob("*.vital"))
    rows = {}
    for path in paths:
        preset = load_preset(path)
        runs = defaultdict(list)
        for repeat in range(args.repeats):
            target = target_renderer.render_preset(preset, 60).audio
            again = target_renderer.render_preset(preset, 60).audio
            f0 = f0_midi(target, sr)
            prediction = matcher.predict([target])[0]
            note = matcher.choose_note(prediction, f0).note
            nn_patches, nn_notes = ev.nearest(target[None])
            answers = {"init": (None, 60 if f0 is None else int(round(f0))),
                       "nearest": (nn_patches[0], nn_notes[0]),
                       "model": (prediction.patch, note)}
            runs["floor"].append(mrstft_distance(again, target))
            for method, (patch, own) in answers.items():
                runs[method].append(mrstft_distance(ev.render(patch, own), target))
                runs[f"{method}@60"].append(mrstft_distance(ev.render(patch, 60), target))
            if refiner is not None and repeat == 0:
                r = refiner.refine(prediction.patch, note, target,
                                   max_seconds=args.refine_seconds, max_evals=10_000)
                runs["model+refine"].append(mrstft_distance(ev.render(r.patch, note), target))
        rows[path.stem] = {k: round(float(np.mean(v)), 4) for k, v in runs.items()}
        print(path.stem, rows[path.stem], flush=True)
    methods = list(next(iter(rows.values())))
    result = {
        "presets": len(rows), "repeats": args.repeats, "refine_seconds": args.refine_seconds,
        "median_mrstft": {m: round(statistics.median(r[m] for r in rows.values()), 3)
                          for m in methods},
        "mean_mrstft": {m: round(float(np.mean([r[m] for r in rows.values()])), 3)
                        for m in methods},
        "model_beats_nearest_on": f"{sum(r['model'] < r['nearest'] for r in rows.values())}"
                                  f"/{len(rows)}",
        "model_beats_nearest_on@60":
            f"{sum(r['model@60'] < r['nearest@60'] for r in rows.values())}/{len(rows)}",
        "per_preset": rows}
    print(json.dumps({k: v for k, v in result.items() if k != "per_preset"}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
