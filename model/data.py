"""Turning dataset rows into model inputs and targets.

Works on batches as Ray Data gives them (dicts of NumPy arrays) and on
plain pyarrow tables, so training (through Ray Data) and evaluation (with
pyarrow alone) decode rows the same way.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import torch

from synth.audio import decode_flac

COLUMNS = ["id", "continuous", "categorical", "note", "audio", "base", "strategy", "valid"]


def group_key(sample_id: int, base: str, strategy: str) -> str:
    """Rows of one preset family share a key: perturbations of a seed preset share the
    seed; every uniform sample is its own preset."""
    return f"seed:{base}" if strategy == "perturb" else f"id:{int(sample_id)}"


def is_validation(sample_id: int, base: str, strategy: str, fraction: float) -> bool:
    """The split is by preset (``group_key``), never by row, and stable across runs."""
    return zlib.crc32(group_key(sample_id, base, strategy).encode()) % 10_000 < fraction * 10_000


def decode_batch(batch: dict, num_samples: int, want_validation: bool | None = None,
                 fraction: float = 0.1, audio_dtype: str = "float32") -> dict[str, np.ndarray]:
    """Rows -> ``audio`` (B, N) float32, ``continuous`` (B, C) float32, ``categorical``
    (B, K) int64, ``note`` (B,) int64, ``id`` (B,). Invalid rows are dropped; with
    ``want_validation`` set, only the rows of that side of the split are kept.
    ``audio_dtype="int16"``: the stored 16-bit PCM as it is (half the memory; see
    ``audio_tensor``)."""
    keep = [i for i in range(len(batch["id"]))
            if batch["valid"][i] and (want_validation is None or is_validation(
                batch["id"][i], batch["base"][i], batch["strategy"][i], fraction)
                == want_validation)]
    audio = np.zeros((len(keep), num_samples), dtype=audio_dtype)
    for row, i in enumerate(keep):
        clip, _ = decode_flac(batch["audio"][i], audio_dtype)
        n = min(num_samples, len(clip))
        audio[row, :n] = clip[:n]
    return {
        "id": np.asarray(batch["id"])[keep].astype(np.int64),
        "audio": audio,
        "continuous": np.stack([np.asarray(batch["continuous"][i], np.float32) for i in keep])
        if keep else np.zeros((0, 0), np.float32),
        "categorical": np.stack([np.asarray(batch["categorical"][i], np.int64) for i in keep])
        if keep else np.zeros((0, 0), np.int64),
        "note": np.asarray(batch["note"])[keep].astype(np.int64),
    }


def read_rows(root: str | Path, columns: list[str] | None = COLUMNS):
    """All rows of a local dataset as a pyarrow table sorted by id (for evaluation); the
    training columns by default (files written before a column was added lack it)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted((Path(root) / "data").glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"{root}: no data/*.parquet files; not a synthmatch dataset")
    table = pq.read_table(files, columns=columns)
    if "audio" in table.column_names and pa.types.is_binary(table.schema.field("audio").type):
        # 64-bit offsets: sorting gathers the column into one array, and a large dataset's
        # audio (~73 KB a row) passes 32-bit binary's 2 GiB limit
        i = table.column_names.index("audio")
        table = table.set_column(i, "audio", table.column(i).cast(pa.large_binary()))
    return table.sort_by("id")


def audio_tensor(audio: torch.Tensor) -> torch.Tensor:
    """Decoded audio as float32: int16 PCM is scaled by 1/32768, exactly as libsndfile's
    float decoding does."""
    return audio.float() / 32768.0 if audio.dtype == torch.int16 else audio.float()
