"""Load on the Serve app: match requests at a fixed concurrency, batched against unbatched.

Starts a local Ray and Serve in this process (the default model), then for each
setting of the model deployment's request batching (``max_batch_size`` 1 = off,
and 8) sends ``--warmup`` requests, then ``--requests`` timed ones from
``--concurrency`` client threads: POST /v1/match with a 2 s WAV rendered from a
sampled preset, ``budget_seconds`` = ``--budget`` (0: the network's answer alone, no
search), no tutorial. Reports errors, p50/p95/p99 latency,
throughput and the model batch sizes seen, and the batched/unbatched ratios.

    python benchmarks/serve_load.py --requests 200 --concurrency 8 --json out.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import requests
import soundfile as sf

from synth import Renderer, Sampler, SamplerConfig


def _clips(n: int) -> list[bytes]:
    sampler = Sampler(SamplerConfig(seed=123))
    renderer = Renderer(sampler.space)
    out, i = [], 0
    while len(out) < n:
        s = sampler.sample(i)
        i += 1
        r = renderer.render(s.patch, s.note)
        if r.valid:
            buf = io.BytesIO()
            sf.write(buf, r.audio, 44100, format="WAV")
            out.append(buf.getvalue())
    return out


def _run(base: str, clips: list[bytes], n: int, concurrency: int, budget: float) -> dict:
    def one(i: int):
        t0 = time.perf_counter()
        r = requests.post(f"{base}/v1/match",
                          files={"audio": (f"c{i}.wav", clips[i % len(clips)])},
                          data={"budget_seconds": str(budget)}, timeout=300)
        ms = 1000 * (time.perf_counter() - t0)
        ok = r.status_code == 200
        return ms, ok, (r.json().get("batch_size", 0) if ok else 0)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        rows = list(pool.map(one, range(n)))
    wall = time.perf_counter() - t0
    lat = np.array([r[0] for r in rows])
    return {"requests": n, "errors": sum(1 for r in rows if not r[1]),
            "p50_ms": round(float(np.percentile(lat, 50)), 1),
            "p95_ms": round(float(np.percentile(lat, 95)), 1),
            "p99_ms": round(float(np.percentile(lat, 99)), 1),
            "throughput_rps": round(n / wall, 2),
            "mean_batch_size": round(statistics.mean(r[2] for r in rows if r[1]), 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--warmup", type=int, default=24)
    p.add_argument("--batch-size", type=int, default=8, help="the batched setting")
    p.add_argument("--budget", type=float, default=0.0,
                   help="each request's budget_seconds (default 0: no search)")
    p.add_argument("--json")
    args = p.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray import serve

    from serve.app import build_app
    from serve.gate import wait_until_ready

    clips = _clips(16)
    ray.init(num_cpus=(os.cpu_count() or 1) + 1, include_dashboard=False, log_to_driver=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    base = f"http://127.0.0.1:{port}"
    results = {}
    try:
        for name, size in (("unbatched", 1), ("batched", args.batch_size)):
            serve.run(build_app({"max_batch_size": size, "demo": False}), name="synthmatch",
                      route_prefix="/")
            assert wait_until_ready(base), "the app did not start"
            _run(base, clips, args.warmup, args.concurrency, args.budget)
            results[name] = _run(base, clips, args.requests, args.concurrency, args.budget)
            print(name, json.dumps(results[name]), flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()
    b, u = results["batched"], results["unbatched"]
    summary = {"concurrency": args.concurrency, "cpus": os.cpu_count(), **results,
               "batched_over_unbatched": {
                   "throughput": round(b["throughput_rps"] / u["throughput_rps"], 3),
                   "p50": round(b["p50_ms"] / u["p50_ms"], 3),
                   "p99": round(b["p99_ms"] / u["p99_ms"], 3)}}
    print(json.dumps(summary, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
