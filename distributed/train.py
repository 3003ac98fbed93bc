"""Train the matching model with Ray Train (PyTorch DDP), streaming the Parquet dataset.

    python -m distributed.train --data data/core-2k --out runs/core --workers 2 \
        --batch-size 32 --grad-accum 2 --epochs 20

One plain ``train_func(config)`` runs on every worker (Tune reuses it): Ray
Data streams each worker its shard (decoded from FLAC in Ray tasks, never on
the driver), the loss is accumulated over ``grad_accum`` micro-batches with
gradients synchronised only on the last, every epoch ends with validation, a
checkpoint through ``ray.train.report`` and a W&B / ``metrics.jsonl`` log line.
Run the same command again on the same ``--out`` and training resumes from
the latest checkpoint; a crashed worker is restarted from it too. ``--out`` is a
local folder (shared by every node on a cluster) or an object-store URI such as
``s3://bucket/runs/core``: Ray Train's storage, checkpoints, ``metrics.jsonl`` and
``model.pt`` all go there.

Fine-tuning through the synth (``model.sound``) adds a loss on the rendered sound of
patches drawn from the heads; it starts from a trained model:

    python -m distributed.train --data data/core-2k --out runs/core-sound \
        --config model/default/finetune.json --init-checkpoint runs/core/model.pt
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import math
import os
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import torch

from distributed import dataset as fmt
from distributed.storage import Location, append_text, read_bytes, resolve, write_atomic
from model.checkpoint import FILENAME, load_checkpoint, save_checkpoint, unwrap
from model.data import COLUMNS, audio_tensor, decode_batch
from model.features import FeatureConfig
from model.loss import LossConfig, MatchLoss, Targets
from model.metrics import AUDIO_METRICS, ParamMetrics, audio_distances, predictions
from model.network import MatchNet, ModelConfig
from model.sound import SoundConfig, SoundObjective
from synth.config import ConfigError, from_dict, load_config_file, require
from synth.render import RenderConfig
from synth.space import get_space

log = logging.getLogger("distributed.train")
STATE = "state.pt"
PLACEMENTS = ("PACK", "SPREAD", "STRICT_SPREAD")


@dataclass(frozen=True)
class TrainConfig:
    data: str
    out: str
    workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    # how Ray places the workers: "PACK" (as few nodes as fit), "SPREAD" (as many as
    # possible) or "STRICT_SPREAD" (one worker per node, or wait for nodes)
    placement: str = "PACK"
    batch_size: int = 32  # global: examples per optimizer step, over all workers
    grad_accum: int = 1  # micro-batches per step on each worker
    epochs: int = 20
    lr: float = 1e-3
    lr_schedule: str = "constant"  # or "cosine": lr * (1 + cos(pi * epoch / epochs)) / 2
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    val_fraction: float = 0.1
    patience: int = 5  # epochs without a better validation score before stopping
    # the validation score that picks the best epoch and drives early stopping: "loss", or
    # "audio" (MR-STFT distance of the audio_eval_presets re-rendered from the predictions,
    # each at its clip's note)
    select_by: str = "loss"
    audio_eval_presets: int = 8  # validation presets re-rendered each epoch
    shuffle_buffer: int = 256
    prefetch_batches: int = 4
    cache_decoded: str = "auto"  # "auto", "always" or "never"; see _cache
    max_failures: int = 2
    seed: int = 0
    wandb: bool = True
    wandb_project: str = "synthmatch"
    # fine-tuning: start from this checkpoint's weights (same space, features and model)
    init_checkpoint: str = ""
    # 0: an epoch is one pass over the training split; else an epoch is this many optimizer
    # steps, each epoch going on through the split where the last one stopped
    max_steps_per_epoch: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    sound: SoundConfig = field(default_factory=SoundConfig)  # model.sound; off by default

    def __post_init__(self):
        require(self.workers >= 1, "workers", self.workers, ">= 1")
        require(self.grad_accum >= 1, "grad_accum", self.grad_accum, ">= 1")
        require(self.batch_size >= 1 and self.batch_size % (self.workers * self.grad_accum) == 0,
                "batch_size", self.batch_size,
                f"a positive multiple of workers x grad_accum ({self.workers * self.grad_accum})")
        require(self.epochs >= 1, "epochs", self.epochs, ">= 1")
        require(0 < self.lr < 1, "lr", self.lr, "0 < lr < 1")
        require(self.select_by in ("loss", "audio"), "select_by", self.select_by,
                "'loss' or 'audio'")
        require(self.select_by != "audio" or self.audio_eval_presets >= 1,
                "audio_eval_presets", self.audio_eval_presets, ">= 1 with select_by = 'audio'")
        require(self.lr_schedule in ("constant", "cosine"), "lr_schedule", self.lr_schedule,
                "'constant' or 'cosine'")
        require(self.weight_decay >= 0, "weight_decay", self.weight_decay, ">= 0")
        require(0 < self.val_fraction < 1, "val_fraction", self.val_fraction, "0 < f < 1")
        require(self.patience >= 1, "patience", self.patience, ">= 1")
        require(self.placement in PLACEMENTS, "placement", self.placement,
                " or ".join(repr(p) for p in PLACEMENTS))
        require(0 < self.cpus_per_worker <= 64, "cpus_per_worker", self.cpus_per_worker,
                "0 < cpus <= 64")
        require(self.cache_decoded in ("auto", "always", "never"), "cache_decoded",
                self.cache_decoded, "'auto', 'always' or 'never'")
        require(self.max_steps_per_epoch >= 0, "max_steps_per_epoch", self.max_steps_per_epoch,
                ">= 0")

    @property
    def micro_batch(self) -> int:
        return self.batch_size // (self.workers * self.grad_accum)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        data = dict(data)
        nested = {"model": ModelConfig, "features": FeatureConfig, "loss": LossConfig,
                  "sound": SoundConfig}
        for key, typ in nested.items():
            value = data.get(key, {})
            data[key] = value if isinstance(value, typ) else from_dict(typ, value, key)
        return from_dict(cls, data, "train config")


# --- the training stream ------------------------------------------------------------

def one_pass(shard, cfg: TrainConfig, device, number: int):
    """The micro-batches of one pass over a training shard, shuffled locally by the pass's
    ``number``."""
    return shard.iter_torch_batches(
        batch_size=cfg.micro_batch, device=device, drop_last=True,
        prefetch_batches=cfg.prefetch_batches,
        local_shuffle_buffer_size=cfg.shuffle_buffer or None,
        local_shuffle_seed=cfg.seed + number)


class Passes:
    """A training shard's micro-batches, pass after pass: what capped epochs read.

    An epoch of ``max_steps_per_epoch`` steps takes the next micro-batches of this one
    stream, so successive epochs go on through the data where the last one stopped, and
    every row is seen before any is seen twice. (Ray Data's ``randomize_block_order``
    cannot do this: on a cached, materialized split it draws one block order and keeps it
    for every epoch.) ``number`` is the pass now being read. A pass with no full
    micro-batch ends the stream.
    """

    def __init__(self, shard, cfg: TrainConfig, device, first: int = 0):
        self.shard, self.cfg, self.device = shard, cfg, device
        self.number = first
        self._it = self._stream()

    def _stream(self):
        while True:
            empty = True
            for tensors in one_pass(self.shard, self.cfg, self.device, self.number):
                empty = False
                yield tensors
            if empty:
                return
            self.number += 1

    def __iter__(self):
        return self._it


# --- one optimizer step -------------------------------------------------------------

@dataclass
class Batch:
    audio: torch.Tensor
    target: Targets


def to_batch(tensors: dict[str, torch.Tensor]) -> Batch:
    return Batch(audio_tensor(tensors["audio"]), Targets(tensors["continuous"].float(),
                                           tensors["categorical"].long(), tensors["note"].long()))


def accumulation_step(model: torch.nn.Module, micro_batches: list[Batch], loss_fn: MatchLoss,
                      optimizer: torch.optim.Optimizer, grad_clip: float = 0.0,
                      autocast: contextlib.AbstractContextManager | None = None,
                      sound: SoundObjective | None = None) -> dict[str, float]:
    """One optimizer step over ``len(micro_batches)`` micro-batches.

    Each micro-batch's loss is divided by their number, so K micro-batches of B
    examples give the gradient of one batch of K*B. Under DDP, gradients are
    all-reduced only on the last micro-batch (``no_sync`` on the others). With
    ``sound``, its loss (``model.sound``), weighted by ``sound.config.weight``, joins the
    parameter losses.
    """
    k = len(micro_batches)
    ddp = isinstance(model, torch.nn.parallel.DistributedDataParallel)
    optimizer.zero_grad(set_to_none=True)
    totals: dict[str, float] = defaultdict(float)
    for j, mb in enumerate(micro_batches):
        sync = contextlib.nullcontext() if (not ddp or j == k - 1) else model.no_sync()
        with sync:
            with autocast or contextlib.nullcontext():
                out = model(mb.audio)
                losses = loss_fn(out, mb.target)
            if sound is not None:
                terms = sound(out, mb.audio, mb.target.note)
                losses["loss/total"] = (losses["loss/total"]
                                        + sound.config.weight * terms["loss/sound"])
                losses.update(terms)
            (losses["loss/total"] / k).backward()
        for key, value in losses.items():
            totals[key] += float(value.detach()) / k
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return dict(totals)


# --- the worker function ------------------------------------------------------------

def _all_reduce_sum(values: np.ndarray) -> np.ndarray:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        t = torch.tensor(values, dtype=torch.float64)
        torch.distributed.all_reduce(t)
        return t.numpy()
    return values


def _all_gather(value: str) -> list[str]:
    """``value`` from every rank, in rank order."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        out = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(out, value)
        return out
    return [value]


def _wandb_run(cfg: TrainConfig, run_id: str, out: Location):
    """The W&B run of rank 0 (offline without ``WANDB_API_KEY``), or None. ``out``: the
    resolved run folder."""
    if not cfg.wandb:
        return None
    import wandb

    if not os.environ.get("WANDB_API_KEY"):
        os.environ["WANDB_MODE"] = "offline"
    # W&B keeps its files in a local folder: the run folder, or this node's temp folder
    # when the run goes to an object store
    folder = out.path if out.is_local else os.path.join(tempfile.gettempdir(), "synthmatch-wandb",
                                                        run_id)
    os.makedirs(folder, exist_ok=True)
    return wandb.init(project=cfg.wandb_project, id=run_id, resume="allow", dir=folder,
                      config=cfg.to_dict(), reinit="finish_previous")


def train_func(config: dict) -> None:
    """Runs on every Ray Train worker. ``config``: a TrainConfig dict plus ``_meta``
    (space scope and id, render config, importance weights) filled in by the driver."""
    import ray
    import ray.train
    import ray.train.torch

    meta = config["_meta"]
    cfg = TrainConfig.from_dict({k: v for k, v in config.items() if k != "_meta"})
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    if device.type == "cpu":  # one intra-op thread per reserved CPU, or workers fight
        torch.set_num_threads(max(1, int(cfg.cpus_per_worker)))
    torch.manual_seed(cfg.seed + rank)
    space = get_space(meta["scope"])
    space.check_id(meta["space_id"], f"dataset {cfg.data}")
    # the node each rank runs on, logged with every epoch: where the work went, and, after
    # a node was lost and replaced, that the run went on on the new one
    nodes = _all_gather(ray.get_runtime_context().get_node_id())

    model = MatchNet(space, cfg.features, cfg.model)
    start_epoch, best, bad_epochs, data_pass = 0, math.inf, 0, -1
    optimizer_state = best_state = best_seen = None  # best_seen: the best epoch and its metrics
    # Ray's record, or the newest complete checkpoint on disk, whichever is newer: Ray
    # learns of a report only when its controller polls the worker, so a worker or a
    # driver killed just after a checkpoint was written can leave Ray without it.
    out = resolve(cfg.out)
    on_disk = latest_checkpoint(out.fs, out.join(meta["storage_name"]))
    candidates = [c for c in (ray.train.get_checkpoint(), on_disk and on_disk[0]) if c]
    states = []
    for c in candidates:
        c = ray.train.Checkpoint(c, filesystem=out.fs) if isinstance(c, str) else c
        with c.as_directory() as d:
            states.append((torch.load(Path(d) / STATE, map_location="cpu", weights_only=False),
                           torch.load(Path(d) / "best.pt", map_location="cpu",
                                      weights_only=False)))
    if states:
        state, best_payload = max(states, key=lambda sb: sb[0]["epoch"])
        best_state = best_payload["state_dict"]
        best_seen = {k: best_payload["training"][k] for k in ("epoch", "metrics")}
        model.load_state_dict(state["model"])
        optimizer_state = state["optimizer"]
        start_epoch, best, bad_epochs = state["epoch"] + 1, state["best"], state["bad_epochs"]
        data_pass = state.get("data_pass", state["epoch"])
    elif meta.get("init_state"):  # cfg.init_checkpoint's weights, read and checked by fit
        model.load_state_dict(meta["init_state"])
    model = ray.train.torch.prepare_model(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if optimizer_state:
        optimizer.load_state_dict(optimizer_state)
    importance = torch.tensor(meta["importance"]) if meta.get("importance") else None
    layout = unwrap(model).layout
    loss_fn = MatchLoss(layout, cfg.loss, importance)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else contextlib.nullcontext())
    run = _wandb_run(cfg, meta["run_id"], out) if rank == 0 else None
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")
    render_config = RenderConfig(**meta["render"])
    sound = (SoundObjective(space, layout, unwrap(model).frontend, render_config, cfg.sound,
                            seed=cfg.seed + rank) if cfg.sound.weight > 0 else None)

    # capped epochs read one stream; a resumed run starts a new pass after the last one read
    passes = (Passes(train_shard, cfg, device, first=data_pass + 1)
              if cfg.max_steps_per_epoch else None)
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        lr = epoch_lr(cfg, epoch)  # a function of the epoch alone: resuming needs no state
        for group_ in optimizer.param_groups:
            group_["lr"] = lr
        model.train()
        sums: dict[str, float] = defaultdict(float)
        steps = examples = 0
        group: list[Batch] = []
        batches = iter(passes if passes is not None else
                       one_pass(train_shard, cfg, device, epoch))
        waited = 0.0  # seconds spent waiting for data: ingest is the bottleneck if large
        while True:
            t_wait = time.perf_counter()
            tensors = next(batches, None)
            waited += time.perf_counter() - t_wait
            if tensors is None:
                break
            group.append(to_batch(tensors))
            if len(group) == cfg.grad_accum:
                for key, value in accumulation_step(model, group, loss_fn, optimizer,
                                                    cfg.grad_clip, autocast, sound).items():
                    sums[key] += value
                steps += 1
                examples += cfg.micro_batch * len(group)
                group = []
                if steps == cfg.max_steps_per_epoch:
                    break
        train_seconds = time.perf_counter() - t0
        val = _validate(model, val_shard, loss_fn, layout, cfg, device, autocast,
                        rank, render_config, space)
        metrics = {f"train/{k.split('/', 1)[1]}": v / max(steps, 1) for k, v in sums.items()}
        metrics.update(val)
        metrics.update({"epoch": epoch, "train/steps": steps, "train/lr": lr,
                        "train/pass": passes.number if passes is not None else epoch,
                        "train/examples_per_s": world * examples / max(train_seconds, 1e-9),
                        "train/data_wait_s": waited,
                        "epoch_seconds": time.perf_counter() - t0})
        score = val["val/loss"] if cfg.select_by == "loss" else val["val/audio/mrstft"]
        improved = score < best
        best, bad_epochs = (score, 0) if improved else (best, bad_epochs + 1)
        stop = bad_epochs >= cfg.patience
        metrics.update({"val/best": best, "early_stop": stop})
        if improved:
            best_state = {k: v.detach().cpu().clone()
                          for k, v in unwrap(model).state_dict().items()}
            best_seen = {"epoch": epoch, "metrics": metrics}
        _report(model, optimizer, best_state, best_seen, epoch, best, bad_epochs, metrics, cfg,
                space, rank, run, nodes, out)
        if stop:
            break
    if sound is not None:
        sound.close()
    if run is not None:
        run.finish()


def epoch_lr(cfg: TrainConfig, epoch: int) -> float:
    if cfg.lr_schedule == "cosine":
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * epoch / cfg.epochs))
    return cfg.lr


def _validate(model, val_shard, loss_fn, layout, cfg, device, autocast, rank, render_config,
              space) -> dict[str, float]:
    from synth.render import Renderer

    model.eval()
    params = ParamMetrics(layout)
    loss_sums = np.zeros(5)  # total, continuous, categorical, note, n
    audio = defaultdict(float)
    audio_n = 0
    renderer = None
    with torch.no_grad():
        for tensors in val_shard.iter_torch_batches(batch_size=max(cfg.micro_batch, 8),
                                                    device=device):
            batch = to_batch(tensors)
            with autocast:
                out = model(batch.audio)
            losses = loss_fn(out, batch.target)
            n = len(batch.target.note)
            loss_sums += np.array([float(losses[k]) * n for k in (
                "loss/total", "loss/continuous", "loss/categorical", "loss/note")] + [n])
            params.update(out, batch.target)
            if rank == 0 and audio_n < cfg.audio_eval_presets:
                renderer = renderer or Renderer(space, render_config)
                # at the clip's own note, as model.evaluate does: the score judges the
                # timbre, not the note head (which the matcher overrides when unsure)
                patches, _ = predictions(out, layout)
                notes = batch.target.note.tolist()
                for patch, note, target in zip(patches, notes, batch.audio.cpu().numpy(),
                                               strict=True):
                    if audio_n >= cfg.audio_eval_presets:
                        break
                    pred = renderer.render(patch, note).audio
                    for key, value in audio_distances(pred, target,
                                                      render_config.sample_rate).items():
                        audio[key] += value
                    audio_n += 1
    loss_sums = _all_reduce_sum(loss_sums)
    params.load_state(_all_reduce_sum(params.state()))
    n = max(float(loss_sums[4]), 1.0)
    out = {"val/loss": float(loss_sums[0]) / n, "val/loss_continuous": float(loss_sums[1]) / n,
           "val/loss_categorical": float(loss_sums[2]) / n,
           "val/loss_note": float(loss_sums[3]) / n, "val/examples": int(loss_sums[4])}
    out.update({f"val/{k}": v for k, v in params.result().items()})
    # rank 0 renders; the sums are shared so every rank sees the same score (early stopping
    # must agree across ranks, or one would wait at the next report forever)
    keys = AUDIO_METRICS  # the same order on every rank, whether it rendered or not
    sums = _all_reduce_sum(np.array([audio[k] for k in keys] + [audio_n], dtype=np.float64))
    if sums[-1]:
        out.update({f"val/{k}": float(v) / float(sums[-1]) for k, v in zip(keys, sums[:-1],
                                                                         strict=True)})
    return out


def _report(model, optimizer, best_state, best_seen, epoch, best, bad_epochs, metrics, cfg,
            space, rank, run, nodes: list[str], out: Location) -> None:
    """Checkpoint (rank 0) and report; every rank calls it, since report is a barrier.

    The checkpoint folder holds ``model.pt`` (this epoch), ``best.pt`` (the best
    validation score so far, with that epoch's number and metrics: ``best_seen``) and
    ``state.pt`` (optimizer and counters, for resuming). ``metrics.jsonl`` also gets
    ``nodes``: the Ray node id of each rank. ``out``: the resolved run folder (resolved
    once per worker: on an object store that builds a filesystem client).
    """
    import ray.train

    if rank != 0:
        ray.train.report(metrics)
        return
    training = {"epoch": epoch, "metrics": metrics, "data": cfg.data,
                "config": cfg.to_dict(), "saved": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                time.gmtime())}
    with tempfile.TemporaryDirectory() as d:
        bare = unwrap(model)
        for name, weights, info in ((FILENAME, bare, training),
                                    ("best.pt", best_state, {**training, **best_seen})):
            save_checkpoint(Path(d) / name, weights, space, cfg.features, cfg.model, cfg.loss,
                            info)
        torch.save({"model": bare.state_dict(), "optimizer": optimizer.state_dict(),
                    "epoch": epoch, "best": best, "bad_epochs": bad_epochs,
                    "data_pass": metrics["train/pass"]}, Path(d) / STATE)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))
    # Logged after the checkpoint is persisted: a logged epoch is a resumable one.
    append_text(out.fs, out.join("metrics.jsonl"), json.dumps({**metrics, "nodes": nodes}) + "\n")
    if run is not None:
        run.log(metrics, step=epoch)


# --- the driver ---------------------------------------------------------------------

def dataset_meta(data: str) -> dict:
    """Scope, space id and render config of a dataset, from its manifest and files."""
    loc = resolve(data)
    manifest = fmt.load_manifest(loc)
    file_meta = fmt.read_file_metadata(loc, fmt.data_files(loc)[0])
    return {"scope": file_meta["space"]["scope"], "space_id": manifest["space_id"],
            "render": file_meta["render"], "num_samples": manifest["num_samples"]}


def _cache(cfg: TrainConfig, num_rows: int) -> bool:
    """Whether to keep the decoded dataset in Ray's object store across epochs.

    Streaming re-reads and re-decodes every epoch and costs 2-3 s before the first
    batch of each epoch on a 2-core machine; on small data that is a third of the
    epoch. "auto" caches when the decoded audio takes under a quarter of the object
    store (never on the driver), and streams otherwise.
    """
    import ray

    if cfg.cache_decoded != "auto":
        return cfg.cache_decoded == "always"
    decoded = num_rows * cfg.features.num_samples * 2  # int16 PCM
    store = ray.cluster_resources().get("object_store_memory", 0)
    return decoded < 0.25 * store


def build_datasets(cfg: TrainConfig, num_rows: int = 0) -> dict:
    import ray

    loc = resolve(cfg.data)
    num = cfg.features.num_samples
    raw = ray.data.read_parquet(loc.join(fmt.DATA_DIR), filesystem=loc.fs).select_columns(COLUMNS)
    kwargs = {"batch_size": 32, "batch_format": "numpy"}
    sets = {
        "train": raw.map_batches(decode_batch, fn_kwargs={
            "num_samples": num, "want_validation": False, "fraction": cfg.val_fraction,
            "audio_dtype": "int16"},
            **kwargs),
        "val": raw.map_batches(decode_batch, fn_kwargs={
            "num_samples": num, "want_validation": True, "fraction": cfg.val_fraction,
            "audio_dtype": "int16"},
            **kwargs),
    }
    if _cache(cfg, num_rows):
        log.info("caching the decoded dataset in Ray's object store (cache_decoded=%s)",
                 cfg.cache_decoded)
        sets = {k: v.materialize() for k, v in sets.items()}
    return sets


def load_importance(cfg: TrainConfig, space) -> list[float] | None:
    if not cfg.loss.importance:
        return None
    loc = resolve(cfg.data)
    path = loc.join("importance.json")
    from distributed.storage import exists, read_bytes

    if not exists(loc.fs, path):
        raise ConfigError(f"loss.importance is on but {cfg.data} has no importance.json; run "
                          f"python -m distributed.importance --data {cfg.data}")
    doc = json.loads(read_bytes(loc.fs, path))
    space.check_id(doc["space_id"], f"{cfg.data}/importance.json")
    return [float(doc["weights"][p.name]) for p in space.continuous]


def init_state(cfg: TrainConfig, space) -> dict[str, torch.Tensor]:
    """The weights of ``cfg.init_checkpoint``; refused if its space, features or network
    differ from ``cfg``'s."""
    ckpt = load_checkpoint(cfg.init_checkpoint)  # CheckpointError names a bad file
    space.check_id(ckpt.space.id, cfg.init_checkpoint)
    for key, mine, theirs in (("features", cfg.features, ckpt.features),
                              ("model", cfg.model, ckpt.model_config)):
        if mine != theirs:
            raise ConfigError(f"init_checkpoint {cfg.init_checkpoint} has {key} {theirs}, "
                              f"but this run's config has {mine}")
    return ckpt.model.state_dict()


def latest_checkpoint(fs: pafs.FileSystem, folder: str) -> tuple[str, int] | None:
    """The complete checkpoint with the highest epoch under ``folder`` (a path in ``fs``,
    local or an object store), and its epoch.

    Ray records its checkpoints in a snapshot that a killed driver may never write;
    the checkpoint folders themselves are in storage, so the driver looks for them.
    """
    best = None
    found = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
    for d in (i.path for i in found if i.type == pafs.FileType.Directory
              and i.base_name.startswith("checkpoint_")):
        names = {i.base_name for i in fs.get_file_info(pafs.FileSelector(d))
                 if i.type == pafs.FileType.File}
        if not {STATE, FILENAME, "best.pt"} <= names:
            continue
        try:
            epoch = torch.load(io.BytesIO(read_bytes(fs, f"{d}/{STATE}")), map_location="cpu",
                               weights_only=False)["epoch"]
        except Exception:  # a folder cut short by the kill: not a checkpoint
            continue
        if best is None or epoch > best[1]:
            best = (d, epoch)
    return best


def driver_meta(cfg: TrainConfig) -> dict:
    """What the driver reads and checks before training: the dataset's space and render
    config, the importance weights, the initial weights. Raises ConfigError (or
    CheckpointError, FileNotFoundError) naming what does not fit."""
    meta = dataset_meta(cfg.data)
    space = get_space(meta["scope"])
    space.check_id(meta["space_id"], f"dataset {cfg.data}")
    if meta["render"]["sample_rate"] != cfg.features.sample_rate:
        raise ConfigError(f"features.sample_rate = {cfg.features.sample_rate} but the dataset "
                          f"is rendered at {meta['render']['sample_rate']} Hz")
    if cfg.init_checkpoint:  # read here, so workers on other machines need not see the file
        meta["init_state"] = init_state(cfg, space)
    meta["importance"] = load_importance(cfg, space)
    return meta


def fit(cfg: TrainConfig, storage_name: str = "ray", callbacks: list | None = None):
    """Train (or resume) into ``cfg.out``; returns the Ray Train Result. Needs Ray.

    ``callbacks``: Ray Train callbacks (``tuning.sweep`` passes Tune's report callback)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    out = resolve(cfg.out)
    out.fs.create_dir(out.path, recursive=True)
    if out.is_local:  # the workers see the same absolute path, whatever their directory
        cfg = dataclasses.replace(cfg, out=out.path)
    meta = driver_meta(cfg)
    name = out.path if out.is_local else f"{out.fs.type_name}://{out.path}"
    meta["run_id"] = "sm-" + hashlib.sha256(name.encode()).hexdigest()[:10]
    meta["storage_name"] = storage_name
    found = latest_checkpoint(out.fs, out.join(storage_name))
    if found:
        log.info("resuming after epoch %d from %s", found[1], found[0])
    trainer = TorchTrainer(
        train_func,
        train_loop_config={**cfg.to_dict(), "_meta": meta},
        scaling_config=ScalingConfig(num_workers=cfg.workers, use_gpu=cfg.use_gpu,
                                     resources_per_worker={"CPU": cfg.cpus_per_worker},
                                     placement_strategy=cfg.placement),
        run_config=RunConfig(name=storage_name, storage_path=out.path,
                             storage_filesystem=None if out.is_local else out.fs,
                             checkpoint_config=CheckpointConfig(num_to_keep=2),
                             failure_config=FailureConfig(max_failures=cfg.max_failures),
                             callbacks=callbacks),
        datasets=build_datasets(cfg, meta["num_samples"]),
    )
    result = trainer.fit()
    if result.checkpoint is not None:
        with result.checkpoint.as_directory() as d:
            write_atomic(out.fs, out.join(FILENAME), (Path(d) / "best.pt").read_bytes())
        log.info("best model: %s (val %s %.4f)", out.join(FILENAME), cfg.select_by,
                 result.metrics.get("val/best", float("nan")))
    return result


def get_parser() -> argparse.ArgumentParser:
    d = TrainConfig(data="", out="")
    p = argparse.ArgumentParser(prog="python -m distributed.train",
                                description="Train the matching model with Ray Train DDP.")
    p.add_argument("--data", help="dataset folder or URI (from distributed.generate)")
    p.add_argument("--out", help="run folder or URI (s3://...): checkpoints, metrics.jsonl, "
                                 "model.pt; run again on the same one to resume")
    p.add_argument("--workers", type=int, help=f"Ray Train workers (default {d.workers})")
    p.add_argument("--use-gpu", action="store_true", help="one GPU per worker, bf16 autocast")
    p.add_argument("--placement", choices=PLACEMENTS,
                   help=f"how workers are placed on nodes (default {d.placement}; "
                        "STRICT_SPREAD: one per node)")
    p.add_argument("--cpus-per-worker", type=float,
                   help=f"CPUs each worker reserves (default {d.cpus_per_worker:g})")
    p.add_argument("--batch-size", type=int, help=f"global batch per step (default "
                                                  f"{d.batch_size})")
    p.add_argument("--grad-accum", type=int, help=f"micro-batches per step (default "
                                                  f"{d.grad_accum})")
    p.add_argument("--epochs", type=int, help=f"default {d.epochs}")
    p.add_argument("--lr", type=float, help=f"default {d.lr}")
    p.add_argument("--config", type=Path, help="JSON file of TrainConfig keys, with [model], "
                                               "[features], [loss] and [sound] objects")
    p.add_argument("--init-checkpoint", help="fine-tune: start from this model.pt's weights")
    p.add_argument("--no-wandb", action="store_true", help="only the local metrics.jsonl")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else local)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    data = load_config_file(args.config) if args.config else {}
    for key in ("data", "out", "workers", "batch_size", "grad_accum", "epochs", "lr",
                "init_checkpoint", "placement", "cpus_per_worker"):
        value = getattr(args, key)
        if value is not None:
            data[key] = value
    if args.use_gpu:
        data["use_gpu"] = True
    if args.no_wandb:
        data["wandb"] = False
    for key in ("data", "out"):
        if not data.get(key):
            raise ConfigError(f"--{key} is required")
    return TrainConfig.from_dict(data)


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from distributed.cluster import init_ray
    from synth.cli import run_job

    def job():
        cfg = config_from_args(args)
        init_ray(args.address)
        fit(cfg)

    return run_job(job, (ConfigError, FileNotFoundError, ValueError))


if __name__ == "__main__":
    from synth.cli import run_command

    run_command(main)
