"""Perceptual importance of each continuous parameter, measured with Ray.

For M presets drawn by the dataset's own sampler, each continuous parameter is
moved by ``delta`` in unit space (towards the middle of its range), the preset
is re-rendered, and the auraloss multi-resolution STFT distance to the
unmoved render is measured, less the render noise floor (two renders of the
unmoved preset). A parameter's importance is its mean distance over presets,
normalised to mean 1 over the scope and clipped to [``min_weight``,
``max_weight``], so the loss can weight each parameter by how far it moves
the sound. Each preset is one Ray task.

    python -m distributed.importance --data data/core-2k --presets 16

Writes ``importance.json`` beside the dataset (atomically); training reads it
with ``loss.importance = true``.
"""

from __future__ import annotations

import argparse
import json
import logging

import numpy as np

from distributed import dataset as fmt
from distributed.storage import resolve, write_atomic
from synth.config import ConfigError
from synth.render import RenderConfig, Renderer
from synth.sampling import Sampler, SamplerConfig
from synth.space import Patch

log = logging.getLogger("distributed.importance")


def preset_sensitivity(sampler_config: dict, render_config: dict, index: int,
                       delta: float) -> np.ndarray:
    """Distance moved by each continuous parameter of preset ``index``, shape ``(C,)``."""
    from model.metrics import mrstft_distance

    sampler = Sampler(SamplerConfig(**sampler_config))
    cfg = RenderConfig(**render_config)
    renderer = Renderer(sampler.space, cfg, bases=sampler.seed_presets)
    s = sampler.sample(index)
    ref = renderer.render(s.patch, s.note, base=s.base).audio
    again = renderer.render(s.patch, s.note, base=s.base).audio
    floor = mrstft_distance(again, ref)
    out = np.zeros(len(s.patch.continuous))
    for j, u in enumerate(s.patch.continuous):
        moved = s.patch.continuous.copy()
        moved[j] = u + delta if u + delta <= 1.0 else u - delta
        audio = renderer.render(Patch(moved, s.patch.categorical), s.note, base=s.base).audio
        out[j] = max(mrstft_distance(audio, ref) - floor, 0.0)
    return out


def measure(data: str, num_presets: int = 16, delta: float = 0.1,
            min_weight: float = 0.05, max_weight: float = 5.0) -> dict:
    """Run the measurement on Ray (needs ``ray.init``) and write ``importance.json``."""
    import ray

    loc = resolve(data)
    manifest = fmt.load_manifest(loc)
    job = manifest["config"]
    sampler_cfg = dict(job["sampler"], perturb_fraction=0.0, seed_presets=[])
    space = Sampler(SamplerConfig(**sampler_cfg)).space
    space.check_id(manifest["space_id"], data)
    task = ray.remote(num_cpus=1)(preset_sensitivity)
    refs = [task.remote(sampler_cfg, job["render"], i, delta) for i in range(num_presets)]
    raw = np.mean(ray.get(refs), axis=0)
    weights = raw / max(raw.mean(), 1e-12)
    # Clipped both ways: no parameter is ignored, and none (volume, say) drowns the rest.
    weights = np.clip(weights, min_weight, max_weight)
    weights = weights / weights.mean()
    names = [p.name for p in space.continuous]
    doc = {"space_id": space.id, "presets": num_presets, "delta": delta,
           "min_weight": min_weight, "max_weight": max_weight,
           "metric": "auraloss MultiResolutionSTFTLoss, less floor",
           "weights": dict(zip(names, weights.round(5).tolist(), strict=True)),
           "raw_distance": dict(zip(names, raw.round(5).tolist(), strict=True))}
    write_atomic(loc.fs, loc.join("importance.json"), json.dumps(doc, indent=2).encode())
    top = sorted(doc["weights"].items(), key=lambda kv: -kv[1])[:5]
    log.info("wrote %s/importance.json; most important: %s", data,
             ", ".join(f"{k} {v:.2f}" for k, v in top))
    return doc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m distributed.importance",
                                description="Measure how far each continuous parameter moves "
                                            "the rendered sound; write importance.json beside "
                                            "the dataset.")
    p.add_argument("--data", required=True, help="dataset folder or URI")
    p.add_argument("--presets", type=int, default=16, help="presets to measure (default 16)")
    p.add_argument("--delta", type=float, default=0.1, help="step in unit space (default 0.1)")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else local)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                                                   "%(message)s")
    from distributed.cluster import init_ray
    from synth.cli import run_job

    def job():
        if args.presets < 1 or not 0 < args.delta <= 0.5:
            raise ConfigError(f"--presets must be >= 1 and --delta in (0, 0.5]; got "
                              f"{args.presets} and {args.delta}")
        init_ray(args.address)
        measure(args.data, args.presets, args.delta)

    return run_job(job, (ConfigError, FileNotFoundError, ValueError))


if __name__ == "__main__":
    from synth.cli import run_command

    run_command(main)
