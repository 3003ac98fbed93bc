"""A library of rendered patches indexed by how they sound: the matcher's retrieval proposer.

    python -m model.library --data data/core-30k --out model/default/library.npz

Each entry is a valid dataset row drawn on the synthmatch base preset: its patch, the note
it was rendered at, and a sound embedding of its audio. The patch is kept one of two ways:

- ``drawn`` (what ``build`` makes of a dataset of uniform draws): the sampler is a pure
  function of (seed, id, attempt), so an entry keeps only its id, the draw that was kept
  (``attempt``) and the master volume the job set (it turns loud draws down), and its patch
  is drawn again on demand, exactly the one that was rendered (0.2-0.5 ms). A studio entry
  is then 590 bytes instead of 1.1 KB. The header keeps a few entries' patches as
  witnesses; a sampler that draws them differently (another synthmatch version) is refused
  on load rather than answering other patches;
- ``stored``: unit values as float16 and classes as small integers (``from_clips``, a
  dataset with perturbed seed presets, and format-1 files such as the shipped one).

The audio is prepared exactly as a user's clip is
(``model.audio_input.prepare_audio``: trimmed, cropped, brought to -35 dBFS), so the
embedding compares timbre and shape, not level. The embedding (``embed``) is the log-mel
front end of the checkpoint, pooled:

    log-mel (n_mels x frames) --mean over 4 equal time spans--> n_mels x 4   (attack .. release)
    mean over mels per frame  --mean over 32 equal spans------> 32           (loudness contour)

288 numbers for 64 mels, stored as float16 (576 bytes an entry; 30,000 core entries are
about 22 MB with their patches stored, 18 MB drawn). Search is brute force
(``torch.cdist``): about 5 ms for 30,000 entries on one core; an approximate index (faiss,
usearch) pays off only past a few million.

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
from synth.sampling import Sampler, SamplerConfig
from synth.space import ParameterSpace, Patch, SpaceError, get_space

log = logging.getLogger("model.library")
FORMAT = 2  # 2: patches stored or drawn; 1 (still read): stored
WITNESSES = 4  # drawn entries whose patches the header keeps, to check the sampler on load
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


def _header(space: ParameterSpace, features: FeatureConfig, source: dict,
            patches: str) -> dict:
    return {"format": FORMAT, "space_id": space.id, "scope": space.name,
            "features": features.to_dict(),
            "embedding": f"log-mel pooled: {TIME_SPANS} time spans per mel band + "
                         f"{CONTOUR_POINTS}-point loudness contour",
            "patches": patches, "source": source,
            "made": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}


def _same(patch: Patch, continuous, categorical) -> bool:
    """Whether ``patch`` is the row (or witness) ``continuous``, ``categorical`` (float32
    storage: within 1e-6)."""
    return (np.array_equal(patch.categorical, categorical)
            and np.allclose(patch.continuous, continuous, rtol=0, atol=1e-6))


def _small(classes: np.ndarray) -> np.ndarray:
    return classes.astype(np.uint8 if classes.max(initial=0) < 256 else np.int16)


def _sampler_of(config: dict | None) -> Sampler:
    """The sampler that drew a dataset's rows, to draw a library's patches again: uniform
    draws only (a perturbed seed preset's patch needs its preset file)."""
    if not config or config.get("perturb_fraction", 0.0) > 0.0:
        raise LibraryError("a library's patches can be drawn again only from a sampler of "
                           f"uniform draws; this dataset's sampler is {config}")
    try:
        return Sampler(SamplerConfig(**{**config, "seed_presets": []}))  # uniform: none used
    except (TypeError, ValueError) as exc:  # a sampler config of another synthmatch version
        raise LibraryError(f"cannot make the sampler that drew this library ({exc}); build "
                           "it again with python -m model.library") from None


@dataclass
class Library:
    """Entries (rows) of one space: ``embedding`` (N, D) float16, ``note`` (N,), ``id``
    (N,) the dataset ids; ``header``: where they came from. The patches either stored,
    ``continuous`` (N, C) float16 unit values and ``categorical`` (N, K) class indices, or
    drawn again (``header["patches"] == "drawn"``): ``attempt`` (N,) the sampler's draw that
    was kept and ``volume`` (N,) float32 the master volume's unit value."""

    embedding: np.ndarray
    note: np.ndarray
    id: np.ndarray
    header: dict
    continuous: np.ndarray | None = None
    categorical: np.ndarray | None = None
    attempt: np.ndarray | None = None
    volume: np.ndarray | None = None

    def __post_init__(self):
        self._index = torch.from_numpy(self.embedding.astype(np.float32))
        self._sampler: Sampler | None = None
        if self.drawn:
            self._sampler = _sampler_of(self.header["source"].get("sampler"))
            self._volume = self._sampler.space.index["volume"]  # continuous come first

    @property
    def drawn(self) -> bool:
        return self.header.get("patches") == "drawn"

    def __len__(self) -> int:
        return len(self.id)

    def nearest(self, query: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` entries nearest one embedding ``(D,)``: their indices, nearest first,
        and their (L2) distances."""
        d = torch.cdist(query.reshape(1, -1).float(), self._index)[0]
        dist, idx = torch.topk(d, min(k, len(d)), largest=False)
        return idx.numpy(), dist.numpy()

    def patch(self, i: int) -> Patch:
        """Entry ``i``'s patch (stored, or drawn again as it was rendered)."""
        if not self.drawn:
            return Patch(self.continuous[i].astype(np.float64),
                         self.categorical[i].astype(np.int64))
        return self._draw(i)[0]

    def _draw(self, i: int) -> tuple[Patch, int]:
        """Entry ``i`` drawn again: its patch (with the volume the job set) and note."""
        sample = self._sampler.sample(int(self.id[i]), int(self.attempt[i]))
        continuous = sample.patch.continuous.copy()
        continuous[self._volume] = float(self.volume[i])
        return Patch(continuous, sample.patch.categorical), sample.note

    def check_witnesses(self, what: str) -> None:
        """Refuse a drawn library whose witnesses this synthmatch's sampler draws otherwise."""
        for w in self.header.get("witnesses", []):
            i = int(np.searchsorted(self.id, w["id"]))
            if i >= len(self.id) or self.id[i] != w["id"]:
                raise LibraryError(f"{what}: witness entry {w['id']} is not in the library")
            if not _same(self.patch(i), w["continuous"], w["categorical"]):
                raise LibraryError(
                    f"{what}: its patches are drawn again from the sampler, and this "
                    f"synthmatch's sampler draws entry {w['id']} otherwise than the one that "
                    "made it (another version); build it again with python -m model.library")

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
        names = ("attempt", "volume") if self.drawn else ("continuous", "categorical")
        arrays = {k: getattr(self, k) for k in ("embedding", "note", "id", *names)}
        with atomic_path(Path(path)) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays,
                         header=np.frombuffer(json.dumps(self.header).encode(), np.uint8))

    @classmethod
    def load(cls, path: str | Path) -> Library:
        path = Path(path)
        if not path.is_file():
            raise LibraryError(f"{path}: no such file")
        try:
            with np.load(path) as z:
                header = json.loads(z["header"].tobytes())
                if header.get("format") not in (1, FORMAT):
                    raise LibraryError(f"{path}: library format {header.get('format')!r}; "
                                       f"this synthmatch reads formats 1 and {FORMAT}")
                names = (("attempt", "volume") if header.get("patches") == "drawn"
                         else ("continuous", "categorical"))
                arrays = {k: z[k] for k in ("embedding", "note", "id", *names)}
        except LibraryError:
            raise
        except (OSError, KeyError, ValueError) as exc:
            raise LibraryError(f"{path}: not a synthmatch library ({exc})") from None
        library = cls(header=header, **arrays)
        library.check_witnesses(str(path))
        return library

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
                   categorical=_small(cat),
                   note=np.asarray(notes, np.int8),
                   id=np.asarray(range(len(patches)) if ids is None else ids, np.int64),
                   header=_header(space, features, source or {}, "stored"))

    @classmethod
    def build(cls, data: str | Path, features: FeatureConfig, limit: int = 0,
              input_config: InputConfig | None = None, chunk: int = 256,
              patches: str = "drawn") -> Library:
        """Embed the valid base-preset rows of a local dataset (``distributed.generate``'s
        output folder), at most ``limit`` (0: all), in id order. ``patches``: ``"drawn"``
        (each row's patch drawn again, checked against the row: a dataset whose rows this
        synthmatch's sampler draws otherwise is refused) or ``"stored"``."""
        if patches not in ("drawn", "stored"):
            raise ValueError(f"patches must be 'drawn' or 'stored', not {patches!r}")
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
        out = {"id": [], "continuous": [], "categorical": [], "note": [], "embedding": [],
               "attempt": []}
        t0, done = time.perf_counter(), 0
        for file in files:  # one file at a time: a dataset's audio need not fit in memory
            part = pq.read_table(file, columns=["id", "continuous", "categorical", "note",
                                                "attempts", "audio"])
            rows = [i for i, v in enumerate(part.column("id").to_pylist()) if v in wanted]
            part = part.take(rows)
            clips = [decode_flac(a)[0] for a in part.column("audio").to_pylist()]
            out["embedding"].append(embed_clips(frontend, clips, input_config, chunk))
            out["id"].append(part.column("id").to_numpy())
            out["note"].append(part.column("note").to_numpy())
            out["continuous"].append(np.array(part.column("continuous").to_pylist(), np.float32))
            out["categorical"].append(np.array(part.column("categorical").to_pylist(), np.int64))
            out["attempt"].append(part.column("attempts").to_numpy() - 1)
            done += len(rows)
            log.info("embedded %d / %d rows (%.0f s)", done, len(ids), time.perf_counter() - t0)
        arrays = {k: np.concatenate(v) for k, v in out.items()}
        order = np.argsort(arrays["id"], kind="stable")
        arrays = {k: v[order] for k, v in arrays.items()}
        arrays["note"] = arrays["note"].astype(np.int8)
        arrays["id"] = arrays["id"].astype(np.int64)
        source = {"dataset": str(data), "sampler": meta.get("sampler"), "rows": int(len(ids))}
        header = _header(space, features, source, patches)
        rows = Patch(arrays.pop("continuous"), arrays.pop("categorical"))  # (N, C), (N, K)
        attempt = arrays.pop("attempt")
        if patches == "stored":
            return cls(header=header, continuous=rows.continuous.astype(np.float16),
                       categorical=_small(rows.categorical), **arrays)
        volume = space.index["volume"]  # continuous parameters come first
        header["witnesses"] = [{"id": int(arrays["id"][i]),
                                "continuous": rows.continuous[i].tolist(),
                                "categorical": rows.categorical[i].tolist()}
                               for i in range(min(WITNESSES, len(attempt)))]
        library = cls(header=header, attempt=attempt.astype(np.uint8),
                      volume=rows.continuous[:, volume].astype(np.float32), **arrays)
        for i in range(len(library)):  # every patch drawn again is the row's
            patch, note = library._draw(i)
            if not _same(patch, rows.continuous[i], rows.categorical[i]) or note != library.note[i]:
                raise LibraryError(
                    f"{data}: row {library.id[i]} is not the patch this synthmatch's sampler "
                    "draws for it (a dataset made by another version); build with "
                    "--patches stored")
        log.info("every patch drawn again is its row's (%d rows)", len(library))
        return library


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m model.library", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="a local dataset (distributed.generate --out)")
    p.add_argument("--out", type=Path, required=True, help="the library file (.npz)")
    p.add_argument("--checkpoint", type=Path,
                   help="the model whose features to embed with (default: the shipped model)")
    p.add_argument("--limit", type=int, default=0, help="at most this many rows (default all)")
    p.add_argument("--patches", choices=("drawn", "stored"), default="drawn",
                   help="drawn (default): keep each row's id, draw and volume, and draw its "
                        "patch again on demand; stored: keep the patches (needed for a "
                        "dataset with perturbed seed presets)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from model.checkpoint import CheckpointError, load_checkpoint
    from model.match import DEFAULT_CHECKPOINT

    try:
        ckpt = load_checkpoint(args.checkpoint or DEFAULT_CHECKPOINT)
        library = Library.build(args.data, ckpt.features, args.limit, patches=args.patches)
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
