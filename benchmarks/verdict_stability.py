"""How often a draw's validity verdict changes between renders of the same draw.

vita starts each oscillator at a random phase, so a draw whose peak lies near the silence
(-60 dBFS) or clipping (0 dBFS) threshold can be judged valid in one render and not in
the next, and a generate job would then keep another draw for that id. This renders the
first N draws of a scope once, keeps those whose peak is less than BAND dB above the
silence threshold or below the clipping level (quiet draws judged silent included), renders
each of them REPEATS more times and counts the draws whose verdicts disagree: with
every render judged as it comes (``verdict_margin_db = 0``, the old rule) and with the
shipped rule (a render near a threshold is judged on a steady render with the
oscillators' random phase off). It also reports what the shipped rule costs: the share of
all draws that needed the second, steady render.

    python benchmarks/verdict_stability.py --samples 1500 --repeats 10 --band 15
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from synth import RenderConfig, Renderer, Sampler, SamplerConfig
from synth.render import near_threshold


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=1500)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--band", type=float, default=15.0,
                        help="dB above the silence threshold and below the clipping level")
    parser.add_argument("--scope", default="core")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    sampler = Sampler(SamplerConfig(scope=args.scope, seed=args.seed))
    shipped = RenderConfig()
    old = dataclasses.replace(shipped, verdict_margin_db=0.0)
    band = dataclasses.replace(shipped, verdict_margin_db=args.band)
    t0 = time.perf_counter()

    def scan(part: list[int]) -> list[tuple[int, bool, bool]]:
        renderer = Renderer(sampler.space, old)
        out = []
        for i in part:
            s = sampler.sample(i)
            r = renderer.render(s.patch, s.note, base=s.base, velocity=s.velocity)
            out.append((i, near_threshold(r, band), near_threshold(r, shipped)))
        return out

    parts = np.array_split(np.arange(args.samples), args.threads)
    with ThreadPoolExecutor(args.threads) as pool:
        scanned = [row for rows in pool.map(scan, [p.tolist() for p in parts]) for row in rows]
    near = [i for i, in_band, _ in scanned if in_band]
    steady_share = sum(needs for _, _, needs in scanned) / len(scanned)

    def verdicts(part: list[int]) -> list[tuple[int, set, set]]:
        renderers = {"old": Renderer(sampler.space, old),
                     "shipped": Renderer(sampler.space, shipped)}
        out = []
        for i in part:
            s = sampler.sample(i)
            seen = {name: {r.render(s.patch, s.note, base=s.base, velocity=s.velocity).reason
                           for _ in range(args.repeats)} for name, r in renderers.items()}
            out.append((i, seen["old"], seen["shipped"]))
        return out

    parts = [p.tolist() for p in np.array_split(np.array(near, dtype=int), args.threads)]
    with ThreadPoolExecutor(args.threads) as pool:
        seen = [row for rows in pool.map(verdicts, parts) for row in rows]
    report = {
        "scope": args.scope, "seed": args.seed, "draws_scanned": args.samples,
        "band_db": args.band, "draws_near_a_threshold": len(near), "repeats": args.repeats,
        "unstable_draws_old_rule": sum(len(o) > 1 for _, o, _ in seen),
        "unstable_draws_shipped_rule": sum(len(n) > 1 for _, _, n in seen),
        "unstable": {i: {"old": sorted(o), "shipped": sorted(n)} for i, o, n in seen
                     if len(o) > 1 or len(n) > 1},
        "steady_render_share_of_all_draws": round(steady_share, 4),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
