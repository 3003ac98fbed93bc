"""How many uniformly sampled presets render silent, clipping or non-finite, and why.

Renders N sampled presets of a scope (default: 2,000 of ``core``) at their
sampled notes with the default render config, as ``distributed.generate`` does
(a louder render turned down to the -10 dBFS peak ceiling; ``--no-ceiling`` for
the plain verdict), on a pool of threads (one Renderer each; vita releases the
GIL), and counts the rejections by reason.

``--explain`` then renders every silent draw again with one thing changed at a
time (each oscillator's distortion, spectral morph, destination and level; each
filter switched; each effect off; every route at 0; the amplitude envelope at
once and full) and prints the changes that make it audible (peak over -50 dBFS):
what a sampling rule would have to prevent.

    python benchmarks/audibility.py --samples 2000 --scope core
    python benchmarks/audibility.py --samples 600 --scope studio --explain
"""

from __future__ import annotations

import argparse
import collections
import json
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from synth import Renderer, Sampler, SamplerConfig

CEILING_DBFS = -10.0  # distributed.generate's default peak ceiling
AUDIBLE_DBFS = -50.0  # what --explain counts as brought back
EFFECTS = ("chorus", "compressor", "delay", "distortion", "eq", "filter_fx", "flanger",
           "phaser", "reverb")


def one_changes(raw: dict, space) -> dict[str, dict[str, float]]:
    """The single changes ``--explain`` tries on a draw's raw values, by name."""
    changes: dict[str, dict[str, float]] = {}
    for n in (1, 2, 3):
        p = f"osc_{n}_"
        if not raw.get(p + "on"):
            continue
        changes[f"osc {n} distortion none"] = {p + "distortion_type": 0.0}
        changes[f"osc {n} spectral morph none"] = {p + "spectral_morph_type": 0.0}
        changes[f"osc {n} to direct out"] = {p + "destination": 4.0}
        changes[f"osc {n} level full"] = {p + "level": 1.0}
    for n in (1, 2):
        if f"filter_{n}_on" in raw:
            changes[f"filter {n} switched"] = {f"filter_{n}_on": 1.0 - raw[f"filter_{n}_on"]}
    for effect in EFFECTS:
        if raw.get(f"{effect}_on"):
            changes[f"{effect} off"] = {f"{effect}_on": 0.0}
    changes["every route at 0"] = {route.name: 0.0 for route in space.routes}
    changes["amplitude envelope at once and full"] = {
        "env_1_delay": 0.0, "env_1_attack": 0.0, "env_1_hold": 0.0, "env_1_sustain": 1.0}
    return {name: {k: v for k, v in change.items() if k in raw}
            for name, change in changes.items()}


def explain(sampler: Sampler, peaks: dict[int, float], ceiling: float | None
            ) -> dict[int, dict]:
    """Per silent draw (``peaks``: id -> the peak it rendered at): the single changes that
    bring it over -50 dBFS."""
    space, renderer = sampler.space, Renderer(sampler.space)

    def peak_db(raw: dict, s) -> float:
        patch = space.patch_from_raw(raw, where="--explain")
        r = renderer.render(patch, s.note, base=s.base, ceiling_dbfs=ceiling)
        return round(20 * float(np.log10(max(r.peak, 1e-12))), 1)

    out = {}
    for i, peak in peaks.items():
        s = sampler.sample(i)
        raw = space.raw_from_patch(s.patch)
        found = {}
        for name, change in one_changes(raw, space).items():
            db = peak_db({**raw, **change}, s)
            if db > AUDIBLE_DBFS:
                found[name] = db
        out[i] = {"note": s.note, "peak_dbfs": round(20 * float(np.log10(max(peak, 1e-12))), 1),
                  "audible_when": found}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--scope", default="core")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-ceiling", action="store_true",
                        help="judge loud renders against clipping instead of turning them down")
    parser.add_argument("--explain", action="store_true",
                        help="find the single changes that make each silent draw audible")
    args = parser.parse_args()
    ceiling = None if args.no_ceiling else CEILING_DBFS

    sampler = Sampler(SamplerConfig(scope=args.scope, seed=args.seed))
    indices = list(range(args.samples))

    def work(part: list[int]) -> list[tuple[int, str, float]]:
        renderer = Renderer(sampler.space)
        out = []
        for i in part:
            s = sampler.sample(i)
            r = renderer.render(s.patch, s.note, base=s.base, ceiling_dbfs=ceiling)
            out.append((i, r.reason, r.peak))
        return out

    t = time.perf_counter()
    with ThreadPoolExecutor(args.threads) as pool:
        parts = [indices[k::args.threads] for k in range(args.threads)]
        results = [x for part in pool.map(work, parts) for x in part]
    seconds = time.perf_counter() - t
    reasons = collections.Counter(r or "valid" for _, r, _ in results)
    peaks = np.array([p for _, r, p in results if r != "non-finite"])
    rejected = args.samples - reasons["valid"]
    report = {
        "scope": args.scope, "samples": args.samples, "seed": args.seed,
        "peak_ceiling_dbfs": ceiling,
        "reasons": dict(reasons), "rejected_pct": round(100.0 * rejected / args.samples, 2),
        "peak_dbfs_percentiles_5_50_95": np.round(
            20 * np.log10(np.maximum(np.percentile(peaks, [5, 50, 95]), 1e-9)), 1).tolist(),
        "seconds": round(seconds, 1),
    }
    if args.explain:
        report["silent"] = explain(sampler, {i: p for i, r, p in sorted(results)
                                             if r == "silent"}, ceiling)
        causes = collections.Counter(name.split(" ", 2)[-1] if name.startswith("osc ") else name
                                     for d in report["silent"].values()
                                     for name in d["audible_when"])
        report["silent_brought_back_by"] = dict(causes.most_common())
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
