"""Matching real presets: Vital's init preset, nearest neighbour, the model, the model refined.

Each of the presets in ../shared/real-presets (by Instatetragrammaton, CC BY 4.0) is
rendered at note 60, velocity 0.8, 1.5 s note, 2 s render, mono; each method's
answer is rendered at note 60 and compared with auraloss's
``MultiResolutionSTFTLoss()`` (default arguments). Reported: the median per method.
Two renders of the same real preset differ by about 0.85: the noise floor.

    python benchmarks/real_presets.py --checkpoint model/default/model.pt \
        --train-data data/core-6k --refine-seconds 20
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np

from model.checkpoint import load_checkpoint
from model.evaluate import Evaluator
from model.match import DEFAULT_CHECKPOINT
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
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    ckpt = load_checkpoint(args.checkpoint)
    render = RenderConfig(note_dur=1.5, render_dur=2.0, velocity=0.8)
    ev = Evaluator(ckpt, args.train_data, render)
    refiner = Refiner(ckpt.space, render) if args.refine_seconds > 0 else None
    target_renderer = Renderer(ckpt.space, render)
    paths = sorted(args.presets.glob("*.vital"))
    rows = {}
    for path in paths:
        preset = load_preset(path)
        target = target_renderer.render_preset(preset, 60).audio
        again = target_renderer.render_preset(preset, 60).audio
        answers = ev.answers(target[None])
        row = {"floor": mrstft_distance(again, target)}
        for method, (patches, _) in answers.items():
            row[method] = mrstft_distance(ev.render(patches[0], 60), target)
        if refiner is not None:
            r = refiner.refine(answers["model"][0][0], 60, target,
                               max_seconds=args.refine_seconds, max_evals=10_000)
            row["model+refine"] = mrstft_distance(ev.render(r.patch, 60), target)
        rows[path.stem] = {k: round(v, 4) for k, v in row.items()}
        print(path.stem, rows[path.stem], flush=True)
    methods = list(next(iter(rows.values())))
    summary = {m: round(statistics.median(r[m] for r in rows.values()), 3) for m in methods}
    wins = sum(1 for r in rows.values() if r["model"] < r["nearest"])
    result = {"presets": len(rows), "median_mrstft": summary,
              "model_beats_nearest_on": f"{wins}/{len(rows)}",
              "refine_seconds": args.refine_seconds, "per_preset": rows,
              "mean_mrstft": {m: round(float(np.mean([r[m] for r in rows.values()])), 3)
                              for m in methods}}
    print(json.dumps({k: v for k, v in result.items() if k != "per_preset"}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
