"""The synthmatch dataset format: Parquet files of (parameters, audio) and a manifest.

Layout under the dataset root::

    generate.json        the job's arguments, written first (resume refuses other arguments)
    data/*.parquet       the rows, written by Ray Data
    manifest.json        written last and atomically: counts, files, checksums, timings

A dataset without ``manifest.json`` is unfinished: running the same job again
renders only the missing ids.

Columns (one row per sample id; ``C``/``K`` are the scope's continuous and
categorical parameter counts, in ``ParameterSpace`` order):

    id           int64     sample id, 0 <= id < num_samples
    continuous   fixed_size_list<float32>[C]   unit values in [0, 1]
    categorical  fixed_size_list<int16>[K]     class indices
    note         int16     MIDI note played
    velocity     float32   0..1
    base         string    base preset the patch applies to ("synthmatch-base" or a seed's name)
    strategy     string    "uniform" or "perturb"
    attempts     int16     draws until a valid render (1 = the first); see ``rejections``
    rejections   string    reasons of the rejected draws, ";"-separated ("" if none)
    valid        bool      false only if every allowed draw was rejected
    audio        binary    mono 16-bit FLAC at the render config's sample rate
    num_frames   int32     samples in ``audio``
    peak_dbfs    float32   peak level
    rms_dbfs     float32   loudness: RMS level over the whole render
    render_ms    float32   time spent rendering this row (all attempts)
    node         string    the Ray node that rendered the row (its node id): provenance

Every file's Parquet metadata holds, under the key ``synthmatch``, JSON with
the format version, the space id and definition, the render and sampler
configs, the seed presets' digests and the package versions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from distributed.storage import Location, exists, list_files, read_bytes, sha256_of
from synth.space import ParameterSpace

FORMAT = "synthmatch-dataset"
FORMAT_VERSION = 1
METADATA_KEY = b"synthmatch"
MANIFEST = "manifest.json"
JOB_FILE = "generate.json"
DATA_DIR = "data"


def schema(space: ParameterSpace, file_metadata: dict | None = None) -> pa.Schema:
    """The Parquet schema for ``space``, with ``file_metadata`` under ``synthmatch``."""
    fields = [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("continuous", pa.list_(pa.float32(), len(space.continuous))),
        pa.field("categorical", pa.list_(pa.int16(), len(space.categorical))),
        pa.field("note", pa.int16()),
        pa.field("velocity", pa.float32()),
        pa.field("base", pa.string()),
        pa.field("strategy", pa.string()),
        pa.field("attempts", pa.int16()),
        pa.field("rejections", pa.string()),
        pa.field("valid", pa.bool_()),
        pa.field("audio", pa.binary()),
        pa.field("num_frames", pa.int32()),
        pa.field("peak_dbfs", pa.float32()),
        pa.field("rms_dbfs", pa.float32()),
        pa.field("render_ms", pa.float32()),
        pa.field("node", pa.string()),
    ]
    meta = {METADATA_KEY: json.dumps(file_metadata).encode()} if file_metadata else None
    return pa.schema(fields, metadata=meta)


def package_versions() -> dict[str, str]:
    out = {}
    for name in ("synthmatch", "vita", "ray", "pyarrow", "numpy", "soundfile"):
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def read_file_metadata(loc: Location, path: str) -> dict:
    """The ``synthmatch`` metadata of one Parquet file."""
    with loc.fs.open_input_file(path) as f:
        meta = pq.read_schema(f).metadata or {}
    if METADATA_KEY not in meta:
        raise ValueError(f"{path}: no synthmatch metadata; not a synthmatch dataset file")
    return json.loads(meta[METADATA_KEY])


@dataclass
class FileScan:
    """What one data file holds."""

    name: str
    rows: int = 0
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    error: str = ""  # unreadable (for example a partial file from an interrupted run)


def scan_file(loc: Location, path: str) -> FileScan:
    name = path.rsplit("/", 1)[-1]
    try:
        with loc.fs.open_input_file(path) as f:
            ids = pq.read_table(f, columns=["id"]).column("id").to_numpy()
    except (OSError, pa.ArrowException) as exc:
        return FileScan(name, error=f"unreadable ({exc.__class__.__name__}: {exc})")
    return FileScan(name, len(ids), ids.astype(np.int64))


def data_files(loc: Location) -> list[str]:
    return [i.path for i in list_files(loc.fs, loc.join(DATA_DIR), ".parquet")]


def load_manifest(loc: Location) -> dict:
    path = loc.join(MANIFEST)
    if not exists(loc.fs, path):
        raise FileNotFoundError(f"{loc.uri}: no {MANIFEST}; the dataset is unfinished (run the "
                                "same generate command again to resume it) or not a dataset")
    manifest = json.loads(read_bytes(loc.fs, path))
    if manifest.get("format") != FORMAT or manifest.get("version") != FORMAT_VERSION:
        raise ValueError(f"{loc.uri}: {MANIFEST} is format {manifest.get('format')!r} version "
                         f"{manifest.get('version')!r}; this code reads {FORMAT!r} version "
                         f"{FORMAT_VERSION}")
    return manifest


def verify(loc: Location) -> list[str]:
    """Check a dataset against its manifest. Returns the problems found ([] if none)."""
    try:
        manifest = load_manifest(loc)
    except (FileNotFoundError, ValueError) as exc:
        return [str(exc)]
    problems = []
    listed = {f["name"]: f for f in manifest["files"]}
    on_disk = {p.rsplit("/", 1)[-1]: p for p in data_files(loc)}
    for name in sorted(set(on_disk) - set(listed)):
        problems.append(f"{DATA_DIR}/{name}: not in the manifest")
    seen = np.zeros(manifest["num_samples"], dtype=np.int32)
    for name, entry in listed.items():
        where = f"{DATA_DIR}/{name}"
        if name not in on_disk:
            problems.append(f"{where}: missing")
            continue
        digest = sha256_of(loc.fs, on_disk[name])
        if digest != entry["sha256"]:
            problems.append(f"{where}: checksum mismatch (corrupted or changed since written)")
            continue
        scan = scan_file(loc, on_disk[name])
        if scan.error:
            problems.append(f"{where}: {scan.error}")
            continue
        if scan.rows != entry["rows"]:
            problems.append(f"{where}: {scan.rows} rows, the manifest says {entry['rows']}")
        meta = read_file_metadata(loc, on_disk[name])
        if meta.get("space_id") != manifest["space_id"]:
            problems.append(f"{where}: space {meta.get('space_id')!r}, the manifest says "
                            f"{manifest['space_id']!r}")
        out = scan.ids[(scan.ids < 0) | (scan.ids >= len(seen))]
        if out.size:
            problems.append(f"{where}: ids out of range, e.g. {int(out[0])}")
        np.add.at(seen, scan.ids[(scan.ids >= 0) & (scan.ids < len(seen))], 1)
    if not any("checksum" in p or "missing" in p or "unreadable" in p for p in problems):
        dup, miss = np.flatnonzero(seen > 1), np.flatnonzero(seen == 0)
        if dup.size:
            problems.append(f"{dup.size} duplicated ids, e.g. {dup[:5].tolist()}")
        if miss.size:
            problems.append(f"{miss.size} missing ids, e.g. {miss[:5].tolist()}")
    return problems
