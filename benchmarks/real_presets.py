"""Matching real presets through the product's own path, per search budget, against retrieval.

Each preset in ../shared/real-presets (by Instatetragrammaton, CC BY 4.0) is rendered at
note 60 (velocity 0.8, 1.5 s note, 2 s render, mono) ``--repeats`` times; each render is
written to a WAV file at the level it plays at and matched the way a user's clip is:

- ``retrieval``: the library's nearest entry to the clip (its embedding, ``model.library``)
  at the note it was rendered at, nothing rendered to choose it; finished by
  ``Matcher.finish`` like every answer (its level set by ``model.level``);
- ``point``: ``Matcher.match(budget_seconds=0)``, the network's answer alone;
- ``budget B``: ``Matcher.match(budget_seconds=B)``, the search (``model.search``).

In a scope with wavetable and LFO-shape banks (``studio``), the banks hold tables harvested
from these very presets; a preset is matched with its own left out (``Matcher.leaving_out``:
an answer that would use one gets the nearest other table), as the scope ceiling imports it.

Each distance is the one the match report gives (auraloss's ``MultiResolutionSTFTLoss()``
between the answer's preview, from its onset, and the clip as given): as it plays, and with
its level set to the clip's. Per preset the mean over the repeats; medians over presets.
``floor``: two renders of the preset, prepared the same way. Wall time: each match's total
(reading the clip to the finished report), median over every match of that method.

    python benchmarks/real_presets.py --budgets 0 1 5 20 --repeats 3 --json out.json

``--validation N``: the same table on the model's own validation split instead: the first N
validation ids of its training set (the split ``model.data.is_validation`` makes), each row
made again exactly as ``distributed.generate`` made it (the same draw, attempt and volume,
rendered at its own note), with no dataset on disk. The default model's training set is
``core`` seed 1 (its model card), its library seed 0, so no validation row is in the library.

    python benchmarks/real_presets.py --validation 30 --repeats 1 --json val.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from distributed.generate import SampleRenderer
from model.audio_input import trim_onset
from model.data import is_validation
from model.library import embed
from model.match import DEFAULT_CHECKPOINT, Matcher, NoteChoice, f0_midi
from model.metrics import mrstft_distance
from synth import RenderConfig, Renderer, SamplerConfig, load_preset
from synth.audio import decode_flac

PRESETS = Path(__file__).resolve().parents[2] / "shared" / "real-presets"


def retrieval_alone(matcher: Matcher, path: Path):
    """The library's nearest entry at its own note, finished as every answer is."""
    t0 = time.perf_counter()
    clip = matcher.load(path)
    lib = matcher.library
    with torch.no_grad():
        i = int(lib.nearest(embed(matcher.ckpt.model.frontend, clip.audio[None])[0], 1)[0][0])
    prediction = matcher.predict([clip.audio])[0]  # finish wants one; its values are unused
    note = NoteChoice(int(lib.note[i]), "library", f0_midi(clip.audio, clip.sample_rate))
    search = {"budget_seconds": 0, "winner": {"source": "retrieval",
                                               "library_id": int(lib.id[i])}}
    patch = matcher.space.with_classes(lib.patch(i), matcher.left_out)
    result = matcher.finish(clip, prediction, note, patch, None, None, search)
    result.timings_ms["total"] = 1000 * (time.perf_counter() - t0)
    return result


class ValidationRows:
    """The model's validation rows, rendered again as its dataset's job rendered them."""

    def __init__(self, seed: int, fraction: float):
        self.fraction = fraction
        self.maker = SampleRenderer(SamplerConfig(seed=seed).to_dict(), [],
                                    RenderConfig().to_dict(), max_attempts=8,
                                    peak_ceiling_dbfs=-10.0)

    def ids(self, n: int) -> list[int]:
        out, i = [], 0
        while len(out) < n:
            if is_validation(i, "", "uniform", self.fraction):
                out.append(i)
            i += 1
        return out

    def render(self, sample_id: int) -> np.ndarray:
        row = self.maker._row(sample_id)
        assert row["valid"], f"validation id {sample_id} has no valid draw"
        return decode_flac(row["audio"])[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    p.add_argument("--library", help="default: library.npz beside the checkpoint")
    p.add_argument("--presets", type=Path, default=PRESETS)
    p.add_argument("--budgets", type=float, nargs="+", default=[0, 1, 5, 20])
    p.add_argument("--repeats", type=int, default=3, help="renders (clips) per preset")
    p.add_argument("--limit", type=int, default=0, help="the first N presets (default all)")
    p.add_argument("--validation", type=int, default=0, metavar="N",
                   help="the model's first N validation rows instead of the real presets")
    p.add_argument("--train-seed", type=int, default=1,
                   help="the sampler seed of the model's training set (default 1: the "
                        "default model's)")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    matcher = Matcher(args.checkpoint, library=args.library)
    if matcher.library is None:
        p.error("no library: build one with python -m model.library")
    matcher.searcher()  # warm: its synths made before the first clock starts
    render = RenderConfig(note_dur=1.5, render_dur=2.0, velocity=0.8)
    target_renderer = Renderer(matcher.space, render)
    n = matcher.ckpt.features.num_samples
    if args.validation:
        fraction = matcher.ckpt.training.get("config", {}).get("val_fraction", 0.1)
        rows_again = ValidationRows(args.train_seed, fraction)
        paths = [f"val-{i}" for i in rows_again.ids(args.validation)]
    else:
        paths = sorted(args.presets.glob("*.vital"))[: args.limit or None]
    methods = ["retrieval"] + [f"budget {b:g}" if b else "point" for b in args.budgets]
    rows, walls, rendered = {}, defaultdict(list), defaultdict(list)
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for path in paths:
            if args.validation:
                sample_id = int(path.split("-")[1])
                target_of = again_of = lambda i=sample_id: rows_again.render(i)  # noqa: E731
            else:
                preset = load_preset(path)
                target_of = again_of = lambda p=preset: target_renderer.render_preset(
                    p, 60).audio
            leaving_out = (contextlib.nullcontext if args.validation
                           else lambda p=preset: matcher.leaving_out(p))
            name = path if args.validation else path.stem
            runs = defaultdict(list)
            winners = defaultdict(list)
            for repeat in range(args.repeats):
                target, again = target_of(), again_of()
                runs["floor"].append(mrstft_distance(trim_onset(again, n), trim_onset(target, n)))
                wav = Path(tmp) / f"{name}-{repeat}.wav"
                sf.write(wav, target, render.sample_rate, subtype="FLOAT")
                for method, budget in zip(methods, [None, *args.budgets], strict=True):
                    with leaving_out():
                        result = (retrieval_alone(matcher, wav) if budget is None
                                  else matcher.match(wav, budget_seconds=budget))
                    runs[method].append(result.distance["audio/mrstft"])
                    runs[f"{method} level-matched"].append(
                        result.distance["audio/mrstft_level_matched"])
                    walls[method].append(result.timings_ms["total"] / 1000)
                    if result.search and budget:
                        # the search's own distance of its answer (null: silent), beside the
                        # report's of it as it played
                        measured = result.search["winner"]["distance"]
                        runs[f"{method} measured"].append(
                            float("inf") if measured is None else measured)
                        winners[method].append(result.search["winner"]["source"])
                        rendered[method].append(result.search["rendered"])
            rows[name] = {k: round(float(np.mean(v)), 4) for k, v in runs.items()}
            rows[name]["winners"] = {k: Counter(v) for k, v in winners.items()}
            print(name, {k: v for k, v in rows[name].items() if k != "winners"}, flush=True)
    columns = [k for k in next(iter(rows.values())) if k != "winners"]
    median = {c: round(statistics.median(r[c] for r in rows.values()), 3) for c in columns}
    wins = {m: f"{sum(r[m] < r['retrieval'] for r in rows.values())}/{len(rows)}"
            for m in methods[1:]}
    sources = defaultdict(Counter)
    for r in rows.values():
        for m, counts in r["winners"].items():
            sources[m].update(counts)
    result = {"clips_from": (f"validation split of seed {args.train_seed}" if args.validation
                             else str(args.presets)),
              "presets": len(rows), "repeats": args.repeats, "budgets": args.budgets,
              "library": matcher.library.header | {"entries": len(matcher.library)},
              "seconds": round(time.perf_counter() - t_all),
              "median": median,
              "closer_than_retrieval_on": wins,
              "median_wall_s": {m: round(statistics.median(v), 3) for m, v in walls.items()},
              # how much the machine rendered in the budget: runs on other days differ by it
              "median_rendered": {m: statistics.median(v) for m, v in rendered.items()},
              "answer_from": {m: dict(v) for m, v in sources.items()},
              "per_preset": {k: {c: v for c, v in r.items() if c != "winners"}
                             for k, r in rows.items()}}
    print(json.dumps({k: v for k, v in result.items() if k not in ("per_preset", "library")},
                     indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
