"""How many uniformly sampled presets render silent, clipping or non-finite.

Renders N sampled presets of a scope (default: 2,000 of ``core``) at their
sampled notes with the default render config, on a pool of threads (one
Renderer each; vita releases the GIL), and counts the rejections by reason.

    python benchmarks/audibility.py --samples 2000 --scope core
"""

from __future__ import annotations

import argparse
import collections
import json
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from synth import Renderer, Sampler, SamplerConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--scope", default="core")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    sampler = Sampler(SamplerConfig(scope=args.scope, seed=args.seed))
    indices = list(range(args.samples))

    def work(part: list[int]) -> list[tuple[str, float]]:
        renderer = Renderer(sampler.space)
        out = []
        for i in part:
            s = sampler.sample(i)
            r = renderer.render(s.patch, s.note, base=s.base)
            out.append((r.reason, r.peak))
        return out

    t = time.perf_counter()
    with ThreadPoolExecutor(args.threads) as pool:
        parts = [indices[k::args.threads] for k in range(args.threads)]
        results = [x for part in pool.map(work, parts) for x in part]
    seconds = time.perf_counter() - t
    reasons = collections.Counter(r or "valid" for r, _ in results)
    peaks = np.array([p for r, p in results if r != "non-finite"])
    rejected = args.samples - reasons["valid"]
    print(json.dumps({
        "scope": args.scope, "samples": args.samples, "seed": args.seed,
        "reasons": dict(reasons), "rejected_pct": round(100.0 * rejected / args.samples, 2),
        "peak_dbfs_percentiles_5_50_95": np.round(
            20 * np.log10(np.maximum(np.percentile(peaks, [5, 50, 95]), 1e-9)), 1).tolist(),
        "seconds": round(seconds, 1),
    }, indent=2))


if __name__ == "__main__":
    main()
