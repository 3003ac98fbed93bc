"""Retrieval over a dataset of each scope, on real presets, in one run.

For each dataset given (``scope=path``, made by ``python -m distributed.generate``), every
valid row drawn on the synthmatch base (no perturbed seed presets: those would be the real
presets themselves) is a library entry, indexed by its log-mel (``model.features.LogMel``,
the clip brought to -35 dBFS RMS first, so that the index compares timbre, not level). Each
preset in ``--presets`` is rendered ``--renders`` times at ``--note``; its first render is
the query, and the nearest entry is played back at the note its row was rendered at and at
``--note``, ``--renders`` times, each render compared with the preset's render of the same
index by auraloss's ``MultiResolutionSTFTLoss()`` (default arguments).

Two distances per answer: as it plays (the row's own level), and level-matched (the answer
scaled to the preset render's RMS), since a dataset's levels are set by its sampling rules,
not by the sound asked for. Medians over the presets; the floor is the preset against its
own other renders.

    python benchmarks/retrieval_scopes.py --presets ../shared/real-presets \\
        --data core=data/core-10k studio=data/studio-10k
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import auraloss
import numpy as np
import pyarrow.parquet as pq
import torch

from distributed import dataset as fmt
from distributed.storage import resolve
from model.features import FeatureConfig, LogMel
from synth import Patch, RenderConfig, Renderer, get_space, load_preset
from synth.audio import decode_flac
from synth.base import BASE_NAME

QUERY_RMS_DBFS = -35.0


def _level(audio: np.ndarray, dbfs: float) -> np.ndarray:
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    return audio * np.float32(10.0 ** (dbfs / 20.0) / max(rms, 1e-9))


class Library:
    """One dataset's base-preset rows and their log-mel index."""

    def __init__(self, path: str, frontend: LogMel, limit: int = 0):
        loc = resolve(path)
        # no sort_by or take over the whole table: 30,000 rows of audio pass 32-bit binary's
        # 2 GiB, which concatenating the column would need
        table = pq.read_table(fmt.data_files(loc), filesystem=loc.fs,
                              columns=["id", "continuous", "categorical", "note", "base",
                                       "valid", "audio"])
        meta = fmt.read_file_metadata(loc, fmt.data_files(loc)[0])
        self.space = get_space(meta["sampler"]["scope"])
        self.space.check_id(meta["space_id"], path)
        ids = table.column("id").to_numpy()
        keep = np.flatnonzero(np.array(table.column("valid").to_pylist())
                              & (np.array(table.column("base").to_pylist()) == BASE_NAME))
        keep = keep[np.argsort(ids[keep], kind="stable")]
        if limit:
            keep = keep[:limit]
        self.size = len(keep)
        self.continuous = np.array(table.column("continuous").take(keep).to_pylist(), np.float64)
        self.categorical = np.array(table.column("categorical").take(keep).to_pylist(), np.int64)
        self.notes = np.array(table.column("note").take(keep).to_pylist())
        column = table.column("audio")
        starts = np.cumsum([0] + [len(c) for c in column.chunks])

        def row_audio(j: int) -> bytes:  # one row, from its chunk
            c = int(np.searchsorted(starts, j, side="right") - 1)
            return column.chunks[c][int(j - starts[c])].as_py()

        feats = []
        with torch.no_grad():
            for i in range(0, len(keep), 256):
                audio = [row_audio(j) for j in keep[i:i + 256]]
                clips = np.stack([_level(decode_flac(a)[0], QUERY_RMS_DBFS) for a in audio])
                feats.append(frontend(torch.from_numpy(clips)).flatten(1))
        self.features = torch.cat(feats)

    def nearest(self, features: torch.Tensor) -> int:
        return int(torch.cdist(features, self.features).argmin(1)[0])

    def patch(self, j: int) -> Patch:
        return Patch(self.continuous[j], self.categorical[j])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", type=Path, default=Path("../shared/real-presets"))
    parser.add_argument("--data", nargs="+", required=True, metavar="NAME=PATH",
                        help="datasets to retrieve from, each named (for example core=...)")
    parser.add_argument("--limit", type=int, default=0,
                        help="use each dataset's first N library rows (default: all)")
    parser.add_argument("--renders", type=int, default=3)
    parser.add_argument("--note", type=int, default=60)
    parser.add_argument("--json", type=Path, help="also write the per-preset table here")
    args = parser.parse_args()

    config = RenderConfig(velocity=0.8, note_dur=1.5, render_dur=2.0)
    loss = auraloss.freq.MultiResolutionSTFTLoss()
    frontend = LogMel(FeatureConfig())
    t0 = time.perf_counter()
    libraries = {}
    for item in args.data:
        name, _, path = item.partition("=")
        if not path:
            parser.error(f"--data {item!r}: expected NAME=PATH")
        libraries[name] = Library(path, frontend, args.limit)
        print(f"{name}: {libraries[name].size} library rows ({path}, scope "
              f"{libraries[name].space.name}); {time.perf_counter() - t0:.0f} s", flush=True)
    renderers = {name: Renderer(lib.space, config) for name, lib in libraries.items()}
    own = Renderer(get_space("core"), config)

    def distance(a: list[np.ndarray], b: list[np.ndarray]) -> float:
        with torch.no_grad():
            return float(np.mean([float(loss(torch.from_numpy(x)[None, None],
                                              torch.from_numpy(y)[None, None]))
                                  for x, y in zip(a, b, strict=True)]))

    rows = {}
    for path in sorted(args.presets.glob("*.vital")):
        preset = load_preset(path)
        target = [own.render_preset(preset, args.note).audio for _ in range(args.renders)]
        target_rms_db = 20 * np.log10(max(float(np.sqrt(np.mean(target[0] ** 2))), 1e-9))
        with torch.no_grad():
            query = frontend(torch.from_numpy(_level(target[0], QUERY_RMS_DBFS))[None])
        row = {"floor": distance(target[1:] + target[:1], target)}
        for name, lib in libraries.items():
            j = lib.nearest(query.flatten(1))
            for label, note in ((name, int(lib.notes[j])), (f"{name}@{args.note}", args.note)):
                got = [renderers[name].render(lib.patch(j), note).audio
                       for _ in range(args.renders)]
                row[label] = distance(got, target)
                row[f"{label} level-matched"] = distance(
                    [_level(g, target_rms_db) for g in got], target)
        rows[path.stem] = row
        print(path.stem, {k: round(v, 3) for k, v in row.items()}, flush=True)

    columns = list(next(iter(rows.values())))
    print(f"\nmedians over {len(rows)} presets ({time.perf_counter() - t0:.0f} s):")
    for col in columns:
        print(f"  {col:28s} {np.median([r[col] for r in rows.values()]):.3f}")
    for name in libraries:
        for other in libraries:
            if other != name:
                wins = sum(r[f"{name} level-matched"] < r[f"{other} level-matched"]
                           for r in rows.values())
                print(f"  {name} closer than {other} (level-matched): {wins}/{len(rows)}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
