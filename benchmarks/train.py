"""Training throughput: Ray Data ingest against in-memory tensors, and 1 worker against 2.

In one run, on the same dataset, model and batch size:

1. ``in-memory``: the training loop (``accumulation_step``) over tensors already
   decoded in memory, no Ray, one torch thread;
2. ``ray 1 worker``: ``distributed.train`` with one Ray Train worker (1 CPU, one
   torch thread) reading the Parquet through Ray Data (FLAC decoding in Ray
   tasks), with the default ``cache_decoded="auto"`` (small data: decoded once,
   kept in the object store);
3. ``ray 2 workers``: the same with two DDP workers;
4. ``ray 1 worker, streaming``: ``cache_decoded="never"``: re-read and decoded
   every epoch, as large datasets are.

Samples per second are measured over the training part of each epoch after the
first (warm-up) epoch. Ingest is not the bottleneck if (2) / (1) >= 0.9.

    python -m distributed.generate --num-samples 1000 --out /tmp/bench-data
    python benchmarks/train.py --data /tmp/bench-data --epochs 3
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from distributed.cluster import init_ray
from distributed.train import Batch, TrainConfig, accumulation_step, dataset_meta, fit
from model.data import decode_batch, read_rows
from model.loss import MatchLoss, Targets
from model.network import MatchNet
from synth import get_space


def in_memory(cfg: TrainConfig, epochs: int) -> float:
    torch.set_num_threads(1)
    table = read_rows(cfg.data)
    batch = {n: table.column(n).to_numpy(zero_copy_only=False)
             for n in ("id", "note", "valid", "base", "strategy", "audio")}
    batch["continuous"] = table.column("continuous").to_pylist()
    batch["categorical"] = table.column("categorical").to_pylist()
    rows = decode_batch(batch, cfg.features.num_samples, False, cfg.val_fraction)
    audio = torch.from_numpy(rows["audio"])
    target = Targets(torch.from_numpy(rows["continuous"]), torch.from_numpy(rows["categorical"]),
                     torch.from_numpy(rows["note"]))
    space = get_space(dataset_meta(cfg.data)["scope"])
    model = MatchNet(space, cfg.features, cfg.model)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    loss = MatchLoss(model.layout, cfg.loss)
    mb, k = cfg.micro_batch, cfg.grad_accum
    rates = []
    for _ in range(epochs):
        perm = torch.randperm(len(audio))
        n = (len(audio) // (mb * k)) * mb * k
        t = time.perf_counter()
        for s in range(0, n, mb * k):
            idx = [perm[s + j * mb: s + (j + 1) * mb] for j in range(k)]
            micro = [Batch(audio[i], Targets(target.continuous[i], target.categorical[i],
                                             target.note[i])) for i in idx]
            accumulation_step(model, micro, loss, opt, cfg.grad_clip)
        rates.append(n / (time.perf_counter() - t))
    return statistics.median(rates[1:]) if len(rates) > 1 else rates[0]


def with_ray(cfg: TrainConfig) -> float:
    out = Path(tempfile.mkdtemp(prefix="synthmatch-train-bench-"))
    try:
        fit(TrainConfig.from_dict({**cfg.to_dict(), "out": str(out)}))
        lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        rates = [x["train/examples_per_s"] for x in lines[1:]] or \
            [lines[0]["train/examples_per_s"]]
        return statistics.median(rates)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--grad-accum", type=int, default=2)
    args = p.parse_args()
    base = TrainConfig(data=args.data, out="unused", epochs=args.epochs,
                       batch_size=args.batch_size, grad_accum=args.grad_accum, wandb=False,
                       audio_eval_presets=0, patience=args.epochs + 1, shuffle_buffer=0)
    memory = in_memory(base, args.epochs)
    init_ray()
    one = with_ray(base)
    two = with_ray(TrainConfig.from_dict({**base.to_dict(), "workers": 2,
                                          "grad_accum": max(1, args.grad_accum // 2)}))
    streaming = with_ray(TrainConfig.from_dict({**base.to_dict(), "cache_decoded": "never"}))
    print(json.dumps({
        "data": args.data, "epochs": args.epochs, "global_batch": args.batch_size,
        "in_memory_samples_per_s": round(memory, 1),
        "ray_1_worker_samples_per_s": round(one, 1),
        "ray_2_workers_samples_per_s": round(two, 1),
        "ray_1_worker_streaming_every_epoch_samples_per_s": round(streaming, 1),
        "ratio_ray_ingest_vs_in_memory": round(one / memory, 3),
        "ratio_ray_streaming_vs_in_memory": round(streaming / memory, 3),
        "ratio_2_vs_1_workers": round(two / one, 3),
        "note": "examples/s over the training part of each epoch after the first",
        "params": int(sum(np.prod(t.shape) for t in MatchNet(
            get_space("core"), base.features, base.model).state_dict().values())),
    }, indent=2))


if __name__ == "__main__":
    main()
