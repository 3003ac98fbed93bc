"""Evaluate a checkpoint on a dataset split or on real presets, beside two baselines.

    python -m model.evaluate --checkpoint runs/core/model.pt --data data/core-2k
    python -m model.evaluate --checkpoint runs/core/model.pt --presets ../shared/real-presets

For each target clip, three answers are rendered with vita at the same note and
compared with the target audio (auraloss multi-resolution STFT, log-mel L1):

- ``init``: Vital's init preset (what you start from in Vital);
- ``nearest``: the training preset whose log-mel is nearest the target's;
- ``model``: the checkpoint's prediction, as ``model.match.Matcher`` makes it (its
  dropout ensemble, and its class costs when a ``class_costs.json`` lies beside the
  checkpoint).

On a dataset split the parameter-space metrics (MAE, accuracies) of the model's and
the nearest neighbour's answers are given too: side by side they show how far a
sound's closeness is from its parameters' (a neighbour can sound close with other
parameters).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from model.checkpoint import CheckpointError
from model.data import decode_batch, read_rows
from model.loss import Targets
from model.match import Matcher
from model.metrics import ParamMetrics, answer_outputs, audio_distances
from synth.cli import error
from synth.files import write_text
from synth.preset import PresetError, load_preset
from synth.render import RenderConfig, Renderer
from synth.space import Patch

log = logging.getLogger("model.evaluate")
METHODS = ("init", "nearest", "model")


def _rows(root: str, want_validation: bool, fraction: float, limit: int, num_samples: int,
          chunk: int = 1024):
    """Decoded rows of one side of the split, on the synthmatch base preset, at most
    ``limit`` (0: all). Yields dicts of arrays ``chunk`` source rows at a time, so a large
    training set never sits decoded in memory at once."""
    table = read_rows(root)
    taken = 0
    for start in range(0, table.num_rows, chunk):
        part = table.slice(start, chunk)
        batch = {name: part.column(name).to_numpy(zero_copy_only=False)
                 for name in ("id", "note", "valid", "base", "strategy", "audio")}
        batch["continuous"] = part.column("continuous").to_pylist()
        batch["categorical"] = part.column("categorical").to_pylist()
        rows = decode_batch(batch, num_samples, want_validation, fraction)
        base_ok = np.array([b == "synthmatch-base" for b in batch["base"]])[
            np.isin(batch["id"], rows["id"])]
        keep = np.flatnonzero(base_ok)
        if limit:
            keep = keep[: limit - taken]
        taken += len(keep)
        yield {k: v[keep] for k, v in rows.items()}
        if limit and taken >= limit:
            return


def _all_rows(*args, **kwargs) -> dict[str, np.ndarray]:
    parts = list(_rows(*args, **kwargs))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


class Evaluator:
    """Scores the model and the baselines against target clips."""

    def __init__(self, matcher: Matcher, train_data: str | None, render: RenderConfig,
                 max_train: int = 0):
        self.matcher, self.ckpt, self.render_cfg = matcher, matcher.ckpt, render
        ckpt = self.ckpt
        self.renderer = Renderer(ckpt.space, render)
        self.init = Renderer(ckpt.space, render)
        self.init.synth.load_init_preset()
        self.train = None
        if train_data:
            fraction = ckpt.training.get("config", {}).get("val_fraction", 0.1)
            self.train, feats = {"continuous": [], "categorical": [], "id": [], "note": []}, []
            for part in _rows(train_data, False, fraction, max_train,
                              ckpt.features.num_samples):
                feats.append(self._features(part["audio"]))
                for k in self.train:
                    self.train[k].append(part[k])
            self.train = {k: np.concatenate(v) for k, v in self.train.items()}
            self.train_feats = torch.cat(feats)
            log.info("nearest-neighbour baseline over %d training presets",
                     len(self.train["id"]))

    @torch.no_grad()
    def _features(self, audio: np.ndarray) -> torch.Tensor:
        feats = [self.ckpt.model.frontend(torch.from_numpy(audio[i:i + 64])).flatten(1)
                 for i in range(0, len(audio), 64)]
        return torch.cat(feats)

    @torch.no_grad()
    def answers(self, audio: np.ndarray) -> dict[str, tuple[Patch | None, list[int]]]:
        """Per method: a patch per clip (None: the init preset) and the note to play (the
        model's note head; for ``nearest``, the note the neighbour was rendered at)."""
        predicted = [p for i in range(0, len(audio), 64)
                     for p in self.matcher.predict(list(audio[i:i + 64]))]
        patches, notes = [p.patch for p in predicted], [p.note for p in predicted]
        result = {"model": (patches, notes), "init": ([None] * len(audio), notes)}
        if self.train is not None:
            result["nearest"] = self.nearest(audio)
        return result

    @torch.no_grad()
    def nearest(self, audio: np.ndarray) -> tuple[list[Patch], list[int]]:
        """The training presets whose log-mel is nearest each clip's, and the notes they
        were rendered at."""
        if self.train is None:
            raise ValueError("no training data was given for the nearest-neighbour baseline")
        nearest = torch.cdist(self._features(audio), self.train_feats).argmin(1).numpy()
        return ([Patch(self.train["continuous"][j].astype(np.float64),
                       self.train["categorical"][j]) for j in nearest],
                [int(self.train["note"][j]) for j in nearest])

    def render(self, patch: Patch | None, note: int) -> np.ndarray:
        if patch is None:
            return self.init.render_current(note).audio
        return self.renderer.render(patch, note).audio

    def score(self, audio: np.ndarray, notes: list[int], answers: dict | None = None
              ) -> dict[str, list[dict]]:
        """Audio distances per method per clip. ``notes``: the note each answer is played at
        (the target's own, so every method is judged on timbre at the right pitch);
        ``answers``: ``answers(audio)`` when already made."""
        scores: dict[str, list[dict]] = defaultdict(list)
        for method, (patches, _) in (answers or self.answers(audio)).items():
            for patch, note, target in zip(patches, notes, audio, strict=True):
                pred = self.render(patch, int(note))
                scores[method].append(audio_distances(pred, target, self.render_cfg.sample_rate))
        return scores


def summarise(scores: dict[str, list[dict]]) -> dict[str, dict[str, float]]:
    return {m: {f"median {k.split('/')[1]}": float(np.median([s[k] for s in v]))
                for k in v[0]} for m, v in scores.items()}


def evaluate_data(ev: Evaluator, data: str, limit: int) -> dict:
    fraction = ev.ckpt.training.get("config", {}).get("val_fraction", 0.1)
    rows = _all_rows(data, True, fraction, limit, ev.ckpt.features.num_samples)
    if not len(rows["id"]):
        raise ValueError(f"{data}: no validation rows on the synthmatch base preset")
    answers = ev.answers(rows["audio"])
    target = Targets(torch.from_numpy(rows["continuous"]), torch.from_numpy(rows["categorical"]),
                     torch.from_numpy(rows["note"]))
    params = {}
    for method in ("model", "nearest"):
        if method in answers:
            metrics = ParamMetrics(ev.ckpt.model.layout)
            metrics.update(answer_outputs(*answers[method], ev.ckpt.model.layout), target)
            params[method] = metrics.result()
    scores = ev.score(rows["audio"], rows["note"].tolist(), answers)
    return {"clips": len(rows["id"]), "audio": summarise(scores), "params": params}


def evaluate_presets(ev: Evaluator, folder: Path, note: int) -> dict:
    paths = sorted(folder.glob("*.vital"))
    if not paths:
        raise ValueError(f"{folder}: no .vital presets")
    target_renderer = Renderer(ev.ckpt.space, ev.render_cfg)
    audio = np.stack([target_renderer.render_preset(load_preset(p), note).audio for p in paths])
    n = ev.ckpt.features.num_samples
    audio = np.pad(audio, ((0, 0), (0, max(0, n - audio.shape[1]))))[:, :n]
    scores = ev.score(audio, [note] * len(paths))
    per = {p.stem: {m: scores[m][i]["audio/mrstft"] for m in scores}
           for i, p in enumerate(paths)}
    return {"clips": len(paths), "note": note, "audio": summarise(scores), "per_preset": per}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m model.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="model.pt from distributed.train")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="a local dataset: evaluate on its validation split")
    src.add_argument("--presets", type=Path, help="a folder of .vital presets")
    p.add_argument("--train-data", help="training set for the nearest-neighbour baseline "
                                        "(default: the checkpoint's)")
    p.add_argument("--limit", type=int, default=64, help="clips from --data (default 64)")
    p.add_argument("--note", type=int, default=60, help="note for --presets (default 60)")
    p.add_argument("--json", type=Path, help="also write the report here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        matcher = Matcher(args.checkpoint)
        ckpt = matcher.ckpt
        train_data = args.train_data or ckpt.training.get("data")
        if train_data and not (Path(train_data) / "data").is_dir():
            log.warning("training data %s not found here; no nearest-neighbour baseline",
                        train_data)
            train_data = None
        # the answers are rendered as the matcher renders its previews
        ev = Evaluator(matcher, train_data, matcher.render_config)
        report = (evaluate_data(ev, args.data, args.limit) if args.data
                  else evaluate_presets(ev, args.presets, args.note))
    except (CheckpointError, PresetError, FileNotFoundError, ValueError) as exc:
        return error(exc)
    print(f"{'method':10} " + " ".join(f"{k:>20}" for k in report["audio"]["model"]))
    for method in METHODS:
        if method in report["audio"]:
            print(f"{method:10} " + " ".join(f"{v:20.3f}" for v in
                                               report["audio"][method].values()))
    if "params" in report:
        names = list(report["params"]["model"])
        print(f"{'method':10} " + " ".join(f"{k:>16}" for k in names))
        for method, values in report["params"].items():
            print(f"{method:10} " + " ".join(f"{values[k]:16.3f}" for k in names))
    if args.json:
        write_text(args.json, json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    from synth.cli import run_command

    run_command(main)
