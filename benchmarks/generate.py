"""Generate throughput: renders written to Parquet per second, against a bare vita loop.

In one run, on this machine's cores:

1. bare vita: one thread per core, each with its own ``vita.Synth``, renders the
   presets the dataset ended up with (same ids, same draws, same notes),
   setting the controls, a 0.2 s warm-up render and the render, as synthmatch
   does (and once more without the warm-up); nothing is encoded or written;
2. ``distributed.generate`` on a local Ray started in-process: sampling,
   rendering in Ray Data tasks, FLAC encoding, Parquet writing, checksums and
   the manifest.

The ratio is (1) / (2) in renders per second. Also bytes per sample and the peak
resident memory of the driver and all its Ray processes together.

    python benchmarks/generate.py --samples 2000
    python benchmarks/generate.py --samples 2000 --scope studio
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow.parquet as pq
import vita

from distributed import dataset as fmt
from distributed.cluster import init_ray
from distributed.generate import GenerateConfig, generate
from distributed.storage import resolve
from synth import Renderer, Sampler, SamplerConfig


def _tree_rss_bytes(root: int) -> int:
    """Resident memory of ``root`` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            for line in (proc / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss[int(proc.name)] = int(line.split()[1]) * 1024
            children.setdefault(ppid, []).append(int(proc.name))
        except (OSError, ValueError, IndexError):
            continue
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


class PeakMemory:
    def __init__(self, interval: float = 0.5):
        self.peak, self._stop, self.interval = 0, threading.Event(), interval
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _tree_rss_bytes(os.getpid()))
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def bare_loop(draws, threads: int, warmup: bool, config, scope: str = "core") -> float:
    """Renders per second of plain vita threads over ``draws`` [(patch, note, base)]: each
    loads the base preset with the draw's wavetables where they differ from the last draw's
    (the JSON is made before the clock starts), sets the controls and renders."""
    space = Sampler(SamplerConfig(scope=scope)).space
    template = Renderer(space, config)
    text, slots = template.prepared_base()
    raws = [space.raw_from_patch(p) for p, _, _ in draws]
    choices = {p.name for p in space.categorical if p.bank}
    texts = []
    for patch, raw in zip((p for p, _, _ in draws), raws, strict=True):
        data = json.loads(text)
        for (key, slot), index in space.choices(patch).items():
            if key == "wavetables" and raw.get(f"osc_{slot}_on", 1.0) < 0.5:
                index = space.banks[key].index("Init")  # as Renderer does: off plays nothing
            data["settings"][key][slot - 1] = space.banks[key].table(index)
        texts.append(json.dumps(data) if choices else text)

    def work(part):
        synth = vita.Synth()
        synth.set_sample_rate(config.sample_rate)
        controls = synth.get_controls()
        loaded = None
        for k in part:
            if texts[k] != loaded:
                synth.load_json(texts[k])
                loaded = texts[k]
            for name, value in raws[k].items():
                if name in choices:
                    continue
                key = f"modulation_{slots[name]}_amount" if name in slots else name
                controls[key].set(value)
            if warmup:
                synth.render(0, 0.0, 0.0, config.warmup_s)
            synth.render(draws[k][1], config.velocity, config.note_dur, config.render_dur)

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, [range(t, len(draws), threads) for t in range(threads)]))
    return len(draws) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--scope", default="core", help="the sampler's scope (default core)")
    parser.add_argument("--out", default=None, help="dataset folder (default: a temporary one)")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    out = args.out or tempfile.mkdtemp(prefix="synthmatch-bench-")
    shutil.rmtree(out, ignore_errors=True)
    config = GenerateConfig(num_samples=args.samples, sampler=SamplerConfig(scope=args.scope))

    with PeakMemory() as mem:
        t0 = time.perf_counter()
        init_ray()
        t1 = time.perf_counter()
        manifest = generate(config, out)
        t2 = time.perf_counter()
    ray_init_s, generate_s = t1 - t0, t2 - t1

    # The presets the dataset holds: each id's accepted draw.
    table = pq.read_table(fmt.data_files(resolve(out)), columns=["id", "attempts"])
    sampler = Sampler(config.sampler)
    draws = []
    for i, a in zip(table.column("id").to_pylist(), table.column("attempts").to_pylist(),
                    strict=True):
        s = sampler.sample(i, a - 1)
        draws.append((s.patch, s.note, s.base))
    bare_warm = bare_loop(draws, cores, True, config.render, args.scope)
    bare_cold = bare_loop(draws, cores, False, config.render, args.scope)

    ours = args.samples / generate_s
    result = {
        "samples": args.samples, "scope": args.scope, "cores": cores,
        "generate_renders_per_s": round(ours, 2),
        "generate_renders_per_s_with_ray_init": round(args.samples / (generate_s + ray_init_s),
                                                      2),
        "bare_vita_renders_per_s": round(bare_warm, 2),
        "bare_vita_no_warmup_renders_per_s": round(bare_cold, 2),
        "ratio_vs_bare": round(ours / bare_warm, 3),
        "ratio_vs_bare_no_warmup": round(ours / bare_cold, 3),
        "rejected_draws": manifest["rejected_draws"],
        "bytes_per_sample": manifest["bytes_per_sample"],
        "peak_rss_mib_all_processes": round(mem.peak / 2**20, 1),
        "ray_init_s": round(ray_init_s, 1), "generate_s": round(generate_s, 1),
    }
    print(json.dumps(result, indent=2))
    if not args.out:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
