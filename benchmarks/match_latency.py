"""Latency of matching a 2 s clip at a search budget (default 0), after the model is loaded.

Times ``Matcher.match`` end to end (read and prepare the clip, predict with the
confidence passes, f0 cross-check, Vital display texts, preview render and
distance) on WAV clips rendered from sampled presets; reports the median and
the stages, and against it, in the same run, the median of one bare render of
the matched patch (the floor for any match that returns a preview).

    python benchmarks/match_latency.py --checkpoint model/default/model.pt --runs 30
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import soundfile as sf

from model.match import Matcher
from synth import Renderer, Sampler, SamplerConfig


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--budget", type=float, default=0.0, help="search seconds (default 0)")
    args = p.parse_args()
    matcher = Matcher(args.checkpoint)
    sampler = Sampler(SamplerConfig(seed=99))
    renderer = Renderer(sampler.space)
    tmp = Path(tempfile.mkdtemp())
    clips = []
    i = 0
    while len(clips) < args.runs:
        s = sampler.sample(i)
        i += 1
        result = renderer.render(s.patch, s.note)
        if not result.valid:  # a silent draw is not a clip anyone would upload
            continue
        path = tmp / f"clip{i}.wav"
        sf.write(path, result.audio, 44100)
        clips.append(path)
    matcher.match(clips[0], budget_seconds=args.budget)  # warm-up: first-call costs
    timings, bare = [], []
    for path in clips:
        result = matcher.match(path, budget_seconds=args.budget)
        timings.append(result.timings_ms)
        # Baseline, same run: one bare render of the matched patch at its note, the
        # least any match that returns a preview must spend.
        t0 = time.perf_counter()
        renderer.render(result.patch, result.note)
        bare.append(1000 * (time.perf_counter() - t0))
    out = {k: round(statistics.median(t[k] for t in timings), 1) for k in timings[0]}
    base = statistics.median(bare)
    print(json.dumps({"runs": args.runs, "median_ms": out,
                      "bare_render_median_ms": round(base, 1),
                      "total_over_bare_render": round(out["total"] / base, 2)}, indent=2))


if __name__ == "__main__":
    main()
