"""Renderer throughput against bare vita loops over the same presets, in one run.

Each loop renders the same sampled ``core`` presets (applied on the synthmatch
base preset) at their sampled notes, single-threaded, with the default render
config (44.1 kHz, 1.5 s note, 2 s render). Loops are interleaved round by round
so that machine noise hits all of them alike; the figure is the ratio of
renders per second.

- ``bare+warmup``: vita calls only, doing what the renderer does (set each
  control through ``get_controls`` handles, a 0.2 s warm-up render, the render);
  the ratio against it is the cost of our Python layer.
- ``bare``: the same without the warm-up: faster, but each render starts with a
  ~100 ms glide from the previous preset (see ``synth/render.py``).
- ``bare load_json``: what a plain vita user writes: ``load_json`` of each
  exported preset, then render.

    python benchmarks/render_throughput.py --presets 150 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import vita

from synth import RenderConfig, Renderer, Sampler, SamplerConfig, apply_patch, base_preset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    cfg = RenderConfig()
    sampler = Sampler(SamplerConfig(seed=args.seed))
    space = sampler.space
    samples = sampler.samples(range(args.presets))
    renderer = Renderer(space, cfg)
    base = base_preset()
    raws = [space.raw_from_patch(s.patch) for s in samples]
    jsons = [apply_patch(base, space, s.patch).to_json() for s in samples]

    synth = vita.Synth()
    synth.set_sample_rate(cfg.sample_rate)
    text, slots = renderer.prepared_base(base.name)  # the base with the routes connected
    synth.load_json(text)
    controls = synth.get_controls()
    keyed = [[(controls[f"modulation_{slots[k]}_amount"] if k in slots else controls[k], v)
              for k, v in raw.items()] for raw in raws]

    def ours():
        for s in samples:
            renderer.render(s.patch, s.note)

    def bare(warm: bool):
        def run():
            for s, pairs in zip(samples, keyed, strict=True):
                for handle, value in pairs:
                    handle.set(value)
                if warm:
                    synth.render(0, 0.0, 0.0, cfg.warmup_s)
                synth.render(s.note, cfg.velocity, cfg.note_dur, cfg.render_dur)
        return run

    plain = vita.Synth()
    plain.set_sample_rate(cfg.sample_rate)

    def bare_load_json():
        for s, text in zip(samples, jsons, strict=True):
            plain.load_json(text)
            plain.render(s.note, cfg.velocity, cfg.note_dur, cfg.render_dur)

    loops = {"synthmatch Renderer": ours, "bare+warmup": bare(True), "bare": bare(False),
             "bare load_json": bare_load_json}
    rates: dict[str, list[float]] = {k: [] for k in loops}
    for _ in range(args.rounds):
        for name, fn in loops.items():
            t = time.perf_counter()
            fn()
            rates[name].append(args.presets / (time.perf_counter() - t))
    ours_rate = rates["synthmatch Renderer"]
    result = {
        "presets": args.presets, "rounds": args.rounds, "machine": platform.machine(),
        "renders_per_s": {k: round(statistics.median(v), 2) for k, v in rates.items()},
        "ratio_vs": {
            k: round(statistics.median(a / b for a, b in zip(ours_rate, v, strict=True)), 3)
            for k, v in rates.items() if k != "synthmatch Renderer"},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
