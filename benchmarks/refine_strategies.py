"""The search's refinement, its strategy swapped, on the same real-preset clips.

``sparse`` is the shipped strategy (``model.refine.Refiner``: a (1+λ) evolution strategy
whose children move a few audible parameters each, its parent re-rendered, a child that won
on luck sent back); ``unconfirmed`` is the same with the winning child kept whatever its
later renders say (as it was before 2026-12-08); ``any-knob`` is
the same with moves on any parameter, silent ones too (as it was before 2026-12-07);
``diagonal`` is the one before (every continuous parameter moved at once, a step per
parameter following the elite's spread, the best render ever seen kept), here as it was.
Each preset in ../shared/real-presets (every ``--every``-th) is rendered once at note 60
(velocity 0.8, 1.5 s note, 2 s render) to a WAV file, and that one clip goes through
``Matcher.match(budget_seconds=B)`` once per strategy, the strategies taking turns: the
comparison is paired, clip by clip. Distances are the report's (the preview against the
clip as given); ``measured`` is the search's own distance of its winner, which the report
should confirm.

    python benchmarks/real_presets.py ...           # the product's table, per budget
    python benchmarks/refine_strategies.py --budget 20 --every 2 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from model.match import DEFAULT_CHECKPOINT, Matcher
from model.metrics import ClipDistance
from model.refine import Parent, Prepare, Refiner, RefineResult
from synth import RenderConfig, Renderer, load_preset
from synth.space import Patch

PRESETS = Path(__file__).resolve().parents[2] / "shared" / "real-presets"


class DiagonalRefiner(Refiner):
    """The refinement before 2026-12-06: every continuous parameter moved at once."""

    def refine(self, start: Patch, note: int, clip: np.ndarray, *, max_evals: int = 200,
               max_seconds: float = 20.0, sigma: float = 0.1, population: int = 8,
               seed: int = 0, start_distance: float | None = None,
               prepare: Prepare | None = None,
               generation_seconds: float = 0.0) -> RefineResult:
        t0 = time.perf_counter()
        rng = np.random.default_rng(seed)
        target = ClipDistance(clip)
        best_x = start.continuous.copy()
        best = start_d = (self.score([start], note, target, prepare)[0]
                          if start_distance is None else start_distance)
        evals, history, last = 1, [best], generation_seconds
        mean = best_x.copy()
        step = np.full_like(mean, sigma)
        mu = population // 2
        weights = np.log(mu + 0.5) - np.log(np.arange(1, mu + 1))
        weights /= weights.sum()
        while (evals + population <= max_evals
               and time.perf_counter() - t0 + last <= max_seconds):
            g0 = time.perf_counter()
            z = rng.standard_normal((population, len(mean)))
            xs = np.clip(mean + step * z, 0.0, 1.0)
            scores = self.score([Patch(x, start.categorical) for x in xs], note, target,
                                prepare)
            evals += population
            order = np.argsort(scores)
            if scores[order[0]] < best:
                best, best_x = scores[order[0]], xs[order[0]].copy()
            elite = order[:mu]
            mean = weights @ xs[elite]
            spread = np.sqrt(weights @ (z[elite] ** 2))
            step = np.clip(step * (0.8 + 0.4 * spread), 0.005, 0.3)
            history.append(best)
            last = time.perf_counter() - g0
        return RefineResult(Patch(best_x, start.categorical.copy()), start_d, best, evals,
                            time.perf_counter() - t0, history)


class AnyKnobRefiner(Refiner):
    """The shipped strategy before 2026-12-07: a child's moves fall on any continuous
    parameter, a switched-off module's and a one-voice oscillator's unison knobs too."""

    def movable(self, patch: Patch) -> np.ndarray:
        return np.arange(len(patch.continuous))


class Unconfirmed(Parent):
    """A parent that keeps its place however its later renders go (before 2026-12-08): it
    is never sent back, and it is the answer whatever the one before it measured."""

    def rendered_again(self, distance: float) -> bool:
        self.renders.append(distance)
        return False

    def answer(self) -> tuple[np.ndarray, float]:
        return self.x, self.distance


class UnconfirmedRefiner(Refiner):
    """The shipped strategy before 2026-12-08: a child that wins on its one render keeps the
    parent's place whatever its later renders say, and the search weighs the answer against
    the start's one render that ranked it, not its mean."""

    parent = Unconfirmed

    def refine(self, start: Patch, note: int, clip, **kwargs) -> RefineResult:
        r = super().refine(start, note, clip, **kwargs)
        if kwargs.get("start_distance") is not None:
            r.start_distance = kwargs["start_distance"]
        return r


STRATEGIES = {"sparse": Refiner, "diagonal": DiagonalRefiner, "any-knob": AnyKnobRefiner,
              "unconfirmed": UnconfirmedRefiner}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    p.add_argument("--library", help="default: library.npz beside the checkpoint")
    p.add_argument("--presets", type=Path, default=PRESETS)
    p.add_argument("--every", type=int, default=2, help="every N-th preset (default 2: 15)")
    p.add_argument("--budget", type=float, default=20.0)
    p.add_argument("--strategies", nargs="+", choices=sorted(STRATEGIES),
                   default=["diagonal", "sparse"])
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    matcher = Matcher(args.checkpoint, library=args.library)
    search = matcher.searcher()
    refiners = {}
    for name in args.strategies:  # each with its pool of synths, made before any clock starts
        search.refiner = refiners[name] = STRATEGIES[name](matcher.space, matcher.render_config,
                                                           search.threads)
        search.warm()
    render = RenderConfig(note_dur=1.5, render_dur=2.0, velocity=0.8)
    target_renderer = Renderer(matcher.space, render)
    rows: dict[str, dict] = {}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for path in sorted(args.presets.glob("*.vital"))[:: args.every]:
            wav = Path(tmp) / f"{path.stem}.wav"
            preset = load_preset(path)
            sf.write(wav, target_renderer.render_preset(preset, 60).audio,
                     render.sample_rate, subtype="FLOAT")
            row = {}
            for name, refiner in refiners.items():
                search.refiner = refiner  # the search renders its candidates on its pool too
                with matcher.leaving_out(preset):  # its own tables, where a bank holds them
                    result = matcher.match(wav, budget_seconds=args.budget)
                s = result.search
                row[name] = {"distance": round(result.distance["audio/mrstft"], 4),
                             "measured": s["winner"]["distance"],
                             "winner": s["winner"]["source"], "rendered": s["rendered"]}
            rows[path.stem] = row
            print(path.stem, row, flush=True)
    out = {"budget": args.budget, "presets": len(rows),
           "seconds": round(time.perf_counter() - t_all), "median": {}, "mean": {},
           "median_measured": {}, "median_rendered": {}}
    for name in args.strategies:
        d = [r[name]["distance"] for r in rows.values()]
        out["median"][name] = round(statistics.median(d), 3)
        out["mean"][name] = round(float(np.mean(d)), 3)
        out["median_measured"][name] = round(statistics.median(
            r[name]["measured"] for r in rows.values()), 3)
        out["median_rendered"][name] = statistics.median(
            r[name]["rendered"] for r in rows.values())
    if len(args.strategies) == 2:
        a, b = args.strategies
        closer = sum(r[b]["distance"] < r[a]["distance"] for r in rows.values())
        out[f"{b} closer than {a}"] = f"{closer}/{len(rows)}"
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out | {"per_preset": rows}, indent=2))


if __name__ == "__main__":
    main()
