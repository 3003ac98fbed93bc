"""A library of rendered patches indexed by how they sound: the matcher's retrieval proposer.

    python -m model.library --data data/core-30k --out model/default/library.npz

Each entry is a valid dataset row drawn on the synthmatch base preset: its patch (unit
values as float16, classes as small integers), the note it was rendered at, and a sound
embedding of its audio. The audio is prepared exactly as a user's clip is
(``model.audio_input.prepare_audio``: trimmed, cropped, brought to -35 dBFS), so the
embedding compares timbre and shape, not level. The embedding (``embed``) is the log-mel
front end of the checkpoint, pooled:

    log-mel (n_mels x frames) --mean over 4 equal time spans--> n_mels x 4   (attack .. release)
    mean over mels per frame  --mean over 32 equal spans------> 32           (loudness contour)

288 numbers for 64 mels, stored as float16 (576 bytes an entry; 30,000 entries are about
20 MB with the patches). Search is brute force (``torch.cdist``): about 5 ms for 30,000
entries on one core; an approximate index (faiss, usearch) pays off only past a few million.

The file is one ``.npz``: the arrays and a JSON header (``format``, the space id, the
feature config, the dataset it was made from and when), checked on load.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from model.audio_input import InputConfig, prepare_audio
from model.features import FeatureConfig, LogMel
from synth.audio import decode_flac
from synth.base import BASE_NAME
from synth.cli import error
from synth.files import atomic_path
from synth.space import ParameterSpace, Patch, SpaceError, get_space

log = logging.getLogger("model.library")
FORMAT = 1
FILENAME = "library.npz"  # beside the checkpoint it was built for
TIME_SPANS = 4  # per mel band: attack, early, late sustain, release (a 2 s window)
CONTOUR_POINTS = 32  # the loudness contour over the window


class LibraryError(ValueError):
    """A library file that cannot be used with this space or these features."""


@torch.no_grad()
def embed(frontend: LogMel, audio: np.ndarray) -> torch.Tensor:
    """Prepared clips ``(B, N)`` -> embeddings ``(B, n_mels * 4 + 32)`` float32. A read-only
    array (a Serve replica's, from Ray's object store) is copied: torch warns on every
    request otherwise."""
    mel = frontend(torch.from_numpy(np.require(audio, np.float32, "W")))  # (B, 1, M, T)
    spans = torch.nn.functional.adaptive_avg_pool2d(mel, (mel.shape[2], TIME_SPANS))
    contour = torch.nn.functional.adaptive_avg_pool1d(mel.mean(2), CONTOUR_POINTS)
    return torch.cat([spans.flatten(1), contour.flatten(1)], 1)


def embed_clips(frontend: LogMel, clips: list[np.ndarray], input_config: InputConfig | None = None,
                chunk: int = 256) -> np.ndarray:
    """Raw mono clips (any length, any level) -> embeddings ``(B, D)`` float16, each clip
    prepared as a user's clip is first."""
    n = frontend.config.num_samples
    out = [embed(frontend, np.stack([prepare_audio(c, n, input_config)[0]
                                     for c in clips[s:s + chunk]])).numpy().astype(np.float16)
           for s in range(0, len(clips), chunk)]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float16)


def _header(space: ParameterSpace, features: FeatureConfig, source: dict) -> dict:
    return {"format": FORMAT, "space_id": space.id, "scope": space.name,
            "features": features.to_dict(),
            "embedding": f"log-mel pooled: {TIME_SPANS} time spans per mel band + "
                         f"{CONTOUR_POINTS}-point loudness contour",
            "source": source,
            "made": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}


@dataclass
class Library:
    """Entries (rows) of one space: ``embedding`` (N, D) float16, ``continuous`` (N, C)
    float16 unit values, ``categorical`` (N, K) class indices, ``note`` (N,), ``id`` (N,)
    the dataset ids; ``header``: where they came from."""

    embedding: np.ndarray
    continuous: np.ndarray
    categorical: np.ndarray
    note: np.ndarray
    id: np.ndarray
    header: dict

    def __post_init__(self):
        self._index = torch.from_numpy(self.embedding.astype(np.float32))

    def __len__(self) -> int:
        return len(self.id)

    def nearest(self, query: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` entries nearest one embedding ``(D,)``: their indices, nearest first,
        and their (L2) distances."""
        d = torch.cdist(query.reshape(1, -1).float(), self._index)[0]
        dist, idx = torch.topk(d, min(k, len(d)), largest=False)
        return idx.numpy(), dist.numpy()

    def patch(self, i: int) -> Patch:
        return Patch(self.continuous[i].astype(np.float64), self.categorical[i].astype(np.int64))

    def entry_space(self) -> ParameterSpace:
        """The parameter space the entries' patches are in (the header's scope), checked
        against this synthmatch's definition of it."""
        try:
            space = get_space(self.header["scope"])
            space.check_id(self.header["space_id"], "library")
        except (KeyError, SpaceError) as exc:
            raise LibraryError(f"library: {exc}") from None
        return space

    def check(self, space: ParameterSpace, features: FeatureConfig, what: str) -> None:
        """Refuse a library made in another space or with other features."""
        try:
            space.check_id(self.header["space_id"], what)
        except SpaceError as exc:
            raise LibraryError(str(exc)) from None
        if self.header["features"] != features.to_dict():
            raise LibraryError(f"{what} was embedded with features {self.header['features']}, "
                               f"but the model reads {features.to_dict()}")

    # -- file ------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write atomically (a reader never sees half a library)."""
        with atomic_path(Path(path)) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, embedding=self.embedding, continuous=self.continuous,
                         categorical=self.categorical, note=self.note, id=self.id,
                         header=np.frombuffer(json.dumps(self.header).encode(), np.uint8))

    @classmethod
    def load(cls, path: str | Path) -> Library:
        path = Path(path)
        if not path.is_file():
            raise LibraryError(f"{path}: no such file")
        try:
            with np.load(path) as z:
                header = json.loads(z["header"].tobytes())
                arrays = {k: z[k] for k in ("embedding", "continuous", "categorical", "note",
                                            "id")}
        except (OSError, KeyError, ValueError) as exc:
            raise LibraryError(f"{path}: not a synthmatch library ({exc})") from None
        if header.get("format") != FORMAT:
            raise LibraryError(f"{path}: library format {header.get('format')!r}; this "
                               f"synthmatch reads format {FORMAT}")
        return cls(header=header, **arrays)

    # -- building --------------------------------------------------------------------
    @classmethod
    def from_clips(cls, space: ParameterSpace, features: FeatureConfig, clips: list[np.ndarray],
                   patches: list[Patch], notes: list[int], ids: list[int] | None = None,
                   source: dict | None = None, input_config: InputConfig | None = None
                   ) -> Library:
        """A library of patches and the clips they made (at ``notes``), in memory."""
        cat = np.array([p.categorical for p in patches], np.int64)
        return cls(embedding=embed_clips(LogMel(features), clips, input_config),
                   continuous=np.array([p.continuous for p in patches], np.float16),
                   categorical=cat.astype(np.uint8 if cat.max(initial=0) < 256 else np.int16),
                   note=np.asarray(notes, np.int8),
                   id=np.asarray(range(len(patches)) if ids is None else ids, np.int64),
                   header=_header(space, features, source or {}))

    @classmethod
    def build(cls, data: str | Path, features: FeatureConfig, limit: int = 0,
              input_config: InputConfig | None = None, chunk: int = 256) -> Library:
        """Embed the valid base-preset rows of a local dataset (``distributed.generate``'s
        output folder), at most ``limit`` (0: all), in id order."""
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        files = sorted((Path(data) / "data").glob("*.parquet"))
        if not files:
            raise FileNotFoundError(f"{data}: no data/*.parquet files; not a synthmatch dataset")
        meta = json.loads((pq.read_schema(files[0]).metadata or {}).get(b"synthmatch", b"{}"))
        if "space_id" not in meta:
            raise LibraryError(f"{files[0]}: no synthmatch metadata; not a synthmatch dataset")
        space = get_space(meta["sampler"]["scope"])
        space.check_id(meta["space_id"], str(data))
        table = pq.read_table(files, columns=["id", "continuous", "categorical", "note",
                                              "base", "valid"]).sort_by("id")
        keep = pc.and_(table.column("valid"), pc.equal(table.column("base"), BASE_NAME))
        ids = table.filter(keep).column("id").to_numpy()
        if limit:
            ids = ids[:limit]
        if not len(ids):
            raise LibraryError(f"{data}: no valid rows on the synthmatch base preset")
        frontend = LogMel(features)
        wanted = set(ids.tolist())
        out = {"id": [], "continuous": [], "categorical": [], "note": [], "embedding": []}
        t0, done = time.perf_counter(), 0
        for file in files:  # one file at a time: a dataset's audio need not fit in memory
            part = pq.read_table(file, columns=["id", "continuous", "categorical", "note",
                                                "audio"])
            rows = [i for i, v in enumerate(part.column("id").to_pylist()) if v in wanted]
            part = part.take(rows)
            clips = [decode_flac(a)[0] for a in part.column("audio").to_pylist()]
            out["embedding"].append(embed_clips(frontend, clips, input_config, chunk))
            out["id"].append(part.column("id").to_numpy())
            out["note"].append(part.column("note").to_numpy())
            out["continuous"].append(np.array(part.column("continuous").to_pylist(), np.float16))
            out["categorical"].append(np.array(part.column("categorical").to_pylist(), np.int64))
            done += len(rows)
            log.info("embedded %d / %d rows (%.0f s)", done, len(ids), time.perf_counter() - t0)
        arrays = {k: np.concatenate(v) for k, v in out.items()}
        order = np.argsort(arrays["id"], kind="stable")
        arrays = {k: v[order] for k, v in arrays.items()}
        top = int(arrays["categorical"].max(initial=0))
        arrays["categorical"] = arrays["categorical"].astype(np.uint8 if top < 256 else np.int16)
        arrays["note"] = arrays["note"].astype(np.int8)
        arrays["id"] = arrays["id"].astype(np.int64)
        source = {"dataset": str(data), "sampler": meta.get("sampler"), "rows": int(len(ids))}
        return cls(header=_header(space, features, source), **arrays)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m model.library", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="a local dataset (distributed.generate --out)")
    p.add_argument("--out", type=Path, required=True, help="the library file (.npz)")
    p.add_argument("--checkpoint", type=Path,
                   help="the model whose features to embed with (default: the shipped model)")
    p.add_argument("--limit", type=int, default=0, help="at most this many rows (default all)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from model.checkpoint import CheckpointError, load_checkpoint
    from model.match import DEFAULT_CHECKPOINT

    try:
        ckpt = load_checkpoint(args.checkpoint or DEFAULT_CHECKPOINT)
        library = Library.build(args.data, ckpt.features, args.limit)
        # any scope: a network of a narrower one answers in the library's (``Matcher``)
        library.check(library.entry_space(), ckpt.features, args.data)
        library.save(args.out)
    except (CheckpointError, LibraryError, SpaceError, FileNotFoundError, OSError) as exc:
        return error(exc)
    log.info("wrote %s: %d entries of scope %s (%.1f MB)", args.out, len(library),
             library.header["scope"], args.out.stat().st_size / 1e6)
    return 0


if __name__ == "__main__":
    from synth.cli import run_command

    run_command(main)
