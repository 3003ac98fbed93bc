"""Choosing categorical values when the network is unsure: minimum Bayes risk over sound.

The network gives each categorical parameter (a distortion type, a filter model,
the unison voices) a probability per class. Its most probable class is a poor
answer when the probabilities are flat: the argmax of near-equal guesses is as
likely to be a harsh distortion as none. Minimum Bayes risk (MBR) decoding
chooses instead the class whose expected distance, in sound, to the class that
is really there is smallest:

    choice = argmin_j  sum_k p(k) * cost[k, j]

where ``cost[k, j]`` is how far a render with class ``k`` is from the same
patch with class ``j``. With a confident head it is the argmax; with a flat
one it is the class that sounds least far from all the others (usually the
plainest). ``measure`` estimates the cost matrices from renders: for
``presets`` patches of the scope's own sampler, each class of each parameter
is rendered with everything else unchanged, and the mean log-mel L1 distance
(the model's own features) between each pair of classes is the cost.
Oscillator transposes (97 classes) keep the argmax: the note choice answers
for pitch.

    python -m model.decoding --checkpoint model/default/model.pt --presets 6

writes ``class_costs.json`` beside the checkpoint, where ``model.match.Matcher``
finds it.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from model.features import FeatureConfig, LogMel
from synth.cli import error
from synth.files import atomic_path
from synth.render import Renderer
from synth.sampling import Sampler, SamplerConfig
from synth.space import ParameterSpace, Patch

log = logging.getLogger("model.decoding")
FILENAME = "class_costs.json"
SKIPPED = ("_transpose",)  # parameter-name endings left to the argmax


@dataclass
class ClassCosts:
    """``costs[name]``: ``(K, K)`` mean distance between renders with class k and class j."""

    space_id: str
    presets: int
    costs: dict[str, np.ndarray]

    def save(self, path: Path) -> None:
        doc = {"space_id": self.space_id, "presets": self.presets,
               "metric": "mean log-mel L1 (model features) between renders differing in one "
                         "categorical parameter",
               "costs": {k: np.round(v, 4).tolist() for k, v in self.costs.items()}}
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(doc))

    @classmethod
    def load(cls, path: Path, space: ParameterSpace) -> ClassCosts:
        try:
            doc = json.loads(Path(path).read_text())
            recorded, presets = doc["space_id"], int(doc["presets"])
            costs = {k: np.asarray(v, dtype=np.float64) for k, v in doc["costs"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{path}: not a class costs file ({type(exc).__name__}: {exc}); "
                             "make it with python -m model.decoding") from exc
        space.check_id(recorded, str(path))
        for p in space.categorical:
            if p.name in costs and costs[p.name].shape != (p.num_classes, p.num_classes):
                raise ValueError(f"{path}: {p.name} costs have shape {costs[p.name].shape}, "
                                 f"expected ({p.num_classes}, {p.num_classes})")
        return cls(recorded, presets, costs)


def mbr(probs: np.ndarray, cost: np.ndarray | None) -> np.ndarray:
    """``probs`` ``(B, K)`` -> the class of least expected cost per row ``(B,)``;
    the argmax when ``cost`` is None."""
    if cost is None:
        return probs.argmax(1)
    return (probs @ cost).argmin(1)


def costs_path(checkpoint: str | Path) -> Path:
    """Where a checkpoint's class costs live: ``class_costs.json`` beside it."""
    return Path(checkpoint).with_name(FILENAME)


def costs_beside(checkpoint: str | Path, space: ParameterSpace) -> list[np.ndarray | None]:
    """Per categorical parameter of ``space``, its cost matrix from the ``class_costs.json``
    beside ``checkpoint``, or None (the argmax); all None when there is no such file."""
    path = costs_path(checkpoint)
    costs = ClassCosts.load(path, space) if path.exists() else None
    return [costs.costs.get(p.name) if costs else None for p in space.categorical]


def choose_classes(probs: list[np.ndarray], costs: list[np.ndarray | None]) -> np.ndarray:
    """Each categorical parameter's probabilities ``(B, K_i)`` and costs -> the chosen
    classes ``(B, number of parameters)``."""
    return np.stack([mbr(p, c) for p, c in zip(probs, costs, strict=True)], 1)


def measure(space: ParameterSpace, features: FeatureConfig, presets: int = 6, seed: int = 1,
            first_index: int = 1_000_000, names: tuple[str, ...] | None = None) -> ClassCosts:
    """Cost matrices from renders of ``presets`` patches of the scope's sampler (indices from
    ``first_index``, away from the ones a training set of that seed uses), for the
    categorical parameters ``names`` (default: all but the transposes)."""
    renderer = Renderer(space, features.render_config())
    sampler = Sampler(SamplerConfig(scope=space.name, seed=seed))
    frontend = LogMel(features)
    samples = [sampler.sample(first_index + m) for m in range(presets)]
    costs = {}
    t0 = time.perf_counter()
    for i, p in enumerate(space.categorical):
        if p.name.endswith(SKIPPED) if names is None else p.name not in names:
            continue
        total = np.zeros((p.num_classes, p.num_classes))
        for s in samples:
            audio = []
            for k in range(p.num_classes):
                classes = s.patch.categorical.copy()
                classes[i] = k
                audio.append(renderer.render(Patch(s.patch.continuous, classes), s.note).audio)
            with torch.no_grad():
                x = frontend(torch.from_numpy(np.stack(audio))).flatten(1)
            total += torch.cdist(x, x, p=1).double().numpy() / x.shape[1]
        costs[p.name] = total / len(samples)
        log.info("%s: %d classes (%.0f s)", p.name, p.num_classes, time.perf_counter() - t0)
    return ClassCosts(space.id, presets, costs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m model.decoding", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True,
                   help="model.pt: its space and features; class_costs.json goes beside it")
    p.add_argument("--presets", type=int, default=6, help="sampled patches (default 6)")
    p.add_argument("--seed", type=int, default=1, help="sampler seed (default 1)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from model.checkpoint import CheckpointError, load_checkpoint

    if args.presets < 1:
        p.error("--presets must be >= 1")
    try:
        ckpt = load_checkpoint(args.checkpoint)
    except (CheckpointError, OSError) as exc:
        return error(exc)
    costs = measure(ckpt.space, ckpt.features, args.presets, args.seed)
    out = costs_path(args.checkpoint)
    costs.save(out)
    log.info("wrote %s (%d parameters)", out, len(costs.costs))
    return 0


if __name__ == "__main__":
    from synth.cli import run_command

    run_command(main)
