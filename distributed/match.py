"""Match a folder of clips with Ray Data: presets and a results table.

    python -m distributed.match --input clips/ --out matched/ [--checkpoint model.pt]
        [--budget SECONDS]

Clip files (WAV, FLAC, OGG, MP3) are read as bytes by Ray Data, matched in Ray Data
tasks (each worker process loads the checkpoint once), and each preset is written
to ``OUT/presets/<clip stem>_<format>.vital``. ``OUT/results.csv`` has one row per clip:
the preset, note, distance, where the answer came from (``model.search``: the network's
point answer, a library entry or refinement) and how many candidates were rendered,
timings, or the error that stopped it (a bad clip
never stops the job).
"""

from __future__ import annotations

import argparse
import csv
import functools
import io
import json
import logging
from pathlib import PurePosixPath

import numpy as np

from distributed.storage import resolve, write_atomic
from model.search import DEFAULT_BUDGET_SECONDS
from synth.config import ConfigError

log = logging.getLogger("distributed.match")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
FIELDS = ["clip", "preset", "note", "note_source", "mrstft", "answer_from", "rendered",
          "total_ms", "error"]


class ClipMatcher:
    """Clip bytes -> presets written, result rows returned; :func:`match_clips` keeps one
    per Ray worker process."""

    def __init__(self, checkpoint: str | None, out: str, budget_seconds: float):
        from model.match import Matcher

        self.matcher = Matcher(checkpoint)
        self.out = resolve(out)
        self.budget_seconds = budget_seconds

    def _one(self, path: str, data: bytes) -> dict:
        from model.audio_input import AudioInputError

        name = PurePosixPath(path).name
        row = dict.fromkeys(FIELDS, "")
        row["clip"] = name
        try:
            r = self.matcher.match(bytes(data), name=name, budget_seconds=self.budget_seconds)
        except (AudioInputError, ValueError) as exc:
            row["error"] = str(exc)
            return row
        # clip.wav -> clip_wav.vital: clips that differ only by format don't collide
        preset_name = f"{PurePosixPath(name).stem}_{PurePosixPath(name).suffix[1:]}.vital"
        write_atomic(self.out.fs, self.out.join("presets", preset_name),
                     json.dumps(r.preset.data).encode())
        row.update(preset=f"presets/{preset_name}", note=r.note,
                   note_source=r.note_source, mrstft=round(r.distance["audio/mrstft"], 4),
                   answer_from="point" if r.search is None else r.search["winner"]["source"],
                   rendered=0 if r.search is None else r.search["rendered"],
                   total_ms=round(r.timings_ms["total"], 1))
        return row

    def __call__(self, batch: dict) -> dict:
        rows = [self._one(p, d) for p, d in zip(batch["path"], batch["bytes"], strict=True)]
        return {k: np.array([str(r[k]) for r in rows], dtype=object) for k in FIELDS}


@functools.lru_cache(maxsize=1)
def _matcher_for(checkpoint: str | None, out: str, budget_seconds: float) -> ClipMatcher:
    return ClipMatcher(checkpoint, out, budget_seconds)


def match_clips(batch: dict, checkpoint: str | None, out: str, budget_seconds: float) -> dict:
    """Ray Data map function; plain tasks, as in ``distributed.generate.render_ids`` (Ray
    retries a task whose worker died; no actor-restart error line), with the checkpoint
    loaded once per worker process."""
    return _matcher_for(checkpoint, out, budget_seconds)(batch)


def run(input_uri: str, out: str, checkpoint: str | None = None,
        budget_seconds: float = DEFAULT_BUDGET_SECONDS, workers: int | None = None
        ) -> list[dict]:
    """Match every clip under ``input_uri``; returns the result rows. Needs Ray."""
    import ray

    from distributed.cluster import cluster_cpus

    src = resolve(input_uri)
    from distributed.storage import list_files

    clips = [i.path for i in list_files(src.fs, src.path, "")
             if i.path.lower().endswith(AUDIO_SUFFIXES)]
    if not clips:
        raise ConfigError(f"{input_uri}: no {', '.join(AUDIO_SUFFIXES)} files")
    workers = min(workers or max(1, cluster_cpus() - 1), len(clips))
    ds = ray.data.read_binary_files(clips, filesystem=src.fs, include_paths=True)
    from distributed.match import match_clips  # by its importable name, also as __main__

    results = ds.map_batches(match_clips, fn_kwargs={
        "checkpoint": checkpoint, "out": out, "budget_seconds": budget_seconds},
        batch_size=4, compute=ray.data.TaskPoolStrategy(size=workers), num_cpus=1)
    rows = sorted(results.take_all(), key=lambda r: r["clip"])  # small rows, no audio
    dest = resolve(out)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(dest.fs, dest.join("results.csv"), buf.getvalue().encode())
    failed = sum(1 for r in rows if r["error"])
    log.info("matched %d of %d clips into %s (%d failed; see results.csv)", len(rows) - failed,
             len(rows), out, failed)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m distributed.match", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, help="folder or URI of clips")
    p.add_argument("--out", required=True, help="folder or URI for presets/ and results.csv")
    p.add_argument("--checkpoint", help="model.pt (default: the shipped model)")
    p.add_argument("--budget", type=float, default=DEFAULT_BUDGET_SECONDS, metavar="SECONDS",
                   help="search time per clip (model.match's --budget; default "
                        f"{DEFAULT_BUDGET_SECONDS:g}, 0: the network's answer alone)")
    p.add_argument("--workers", type=int,
                   help="match tasks at once (default: cluster CPUs less one)")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else local)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                                                   "%(message)s")
    from distributed.cluster import init_ray
    from model.checkpoint import CheckpointError
    from synth.cli import run_job

    def job():
        init_ray(args.address)
        run(args.input, args.out, args.checkpoint, args.budget, args.workers)

    return run_job(job, (ConfigError, CheckpointError, FileNotFoundError))


if __name__ == "__main__":
    from synth.cli import run_command

    run_command(main)
