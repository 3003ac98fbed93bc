"""The checkpoint: a self-contained, versioned artifact.

One ``torch.save`` file holding the weights, the model, feature and loss
configs, the parameter space (scope, id, definition) and training metadata.
``load_checkpoint`` needs no dataset, and refuses a file of another format
version or another parameter space with a message that says which. ``fetch`` brings
a checkpoint stored as a URI (``s3://bucket/runs/core/model.pt``, where training
with ``--out s3://...`` leaves it) to a local cache, with the files beside it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from model.features import FeatureConfig
from model.loss import LossConfig
from model.network import MatchNet, ModelConfig
from synth.config import from_dict
from synth.files import atomic_path
from synth.space import ParameterSpace, SpaceError, get_space

FORMAT = "synthmatch-checkpoint"
VERSION = 1
FILENAME = "model.pt"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used here; the message names the file and why."""


@dataclass
class Checkpoint:
    model: MatchNet
    space: ParameterSpace
    features: FeatureConfig
    model_config: ModelConfig
    loss: LossConfig
    training: dict  # epochs, metrics, data, when


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The bare model inside a DDP wrapper (Ray wraps only with several workers)."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module | dict, space: ParameterSpace,
                    features: FeatureConfig, model_config: ModelConfig, loss: LossConfig,
                    training: dict) -> Path:
    """Write the artifact atomically. ``model``: a module or its state dict."""
    path = Path(path)
    state = model if isinstance(model, dict) else unwrap(model).state_dict()
    state = {k: v.detach().cpu() for k, v in state.items()}
    payload = {
        "format": FORMAT, "version": VERSION,
        "space": {"scope": space.name, "id": space.id, "definition": space.definition()},
        "features": features.to_dict(), "model": model_config.to_dict(), "loss": loss.to_dict(),
        "training": training, "state_dict": state,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def cache_dir() -> Path:
    """Where fetched checkpoints are kept: ``$SYNTHMATCH_CACHE``, else ~/.cache/synthmatch."""
    root = os.environ.get("SYNTHMATCH_CACHE") or Path.home() / ".cache" / "synthmatch"
    return Path(root) / "checkpoints"


def fetch(checkpoint: str | os.PathLike) -> Path:
    """A local path to ``checkpoint``: a path as it is; a URI (any pyarrow filesystem:
    ``s3://``, ``gs://``, with credentials or ``endpoint_override`` in it as
    ``distributed.generate`` takes them) downloaded into :func:`cache_dir`, together with
    the class costs and the search library that lie beside it. A file already in the cache
    is downloaded again only when the store's copy changed size or modification time (so
    the replicas that Serve starts on one node download a model once; a same-size rewrite
    within the store's one-second time resolution would go unseen)."""
    text = str(checkpoint)
    if "://" not in text:
        return Path(checkpoint)
    import pyarrow.fs as pafs

    from model.decoding import FILENAME as COSTS
    from model.library import FILENAME as LIBRARY

    try:
        fs, path = pafs.FileSystem.from_uri(text)
        info = fs.get_file_info(path)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{text}: cannot be read ({exc})") from None
    if info.type == pafs.FileType.Directory:
        path = f"{path.rstrip('/')}/{FILENAME}"
    elif info.type == pafs.FileType.NotFound:
        raise CheckpointError(f"{text}: no such checkpoint file")
    folder, name = path.rsplit("/", 1)
    local = cache_dir() / hashlib.sha256(text.encode()).hexdigest()[:16]
    local.mkdir(parents=True, exist_ok=True)
    for file in (name, COSTS, LIBRARY):
        source = fs.get_file_info(f"{folder}/{file}")
        stamp = local / f".{file}.source"  # the store's size and time of the cached copy
        if source.type != pafs.FileType.File:
            for gone in (local / file, stamp):  # gone from the store: not used here
                gone.unlink(missing_ok=True)
            continue
        seen = f"{source.size} {source.mtime_ns}"
        if (local / file).is_file() and stamp.is_file() and stamp.read_text() == seen:
            continue
        with fs.open_input_stream(source.path) as f, atomic_path(local / file) as tmp:
            tmp.write_bytes(f.read())
        with atomic_path(stamp) as tmp:  # after the file: a crash between leaves no stamp
            tmp.write_text(seen)
    return local / name


def load_checkpoint(path: str | os.PathLike, map_location: str = "cpu") -> Checkpoint:
    """The checkpoint at ``path`` (a file, a run folder holding ``model.pt``, or a URI)."""
    path = fetch(path)
    if path.is_dir():
        path = path / FILENAME
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # torch raises many types for a damaged file
        raise CheckpointError(f"{path}: not a readable checkpoint ({exc.__class__.__name__})") \
            from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a synthmatch checkpoint")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {payload.get('version')}; "
                              f"this synthmatch reads version {VERSION}")
    try:
        space = get_space(payload["space"]["scope"])
        space.check_id(payload["space"]["id"], str(path))
    except SpaceError as exc:
        raise CheckpointError(str(exc)) from None
    features = from_dict(FeatureConfig, payload["features"], "features")
    model_config = from_dict(ModelConfig, payload["model"], "model")
    model = MatchNet(space, features, model_config)
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return Checkpoint(model, space, features, model_config,
                      from_dict(LossConfig, payload["loss"], "loss"), payload["training"])
