"""Search the loss weights and label smoothing with Ray Tune; every trial is a Ray Train run.

    python -m tuning.sweep --data data/core-30k --out runs/sweep \\
        --config model/default/train.json --trials 8 --epochs 4

Each trial is ``distributed.train.fit`` (the same DDP training, data streaming and
checkpoints) with its own ``loss.categorical``, ``loss.note`` and ``loss.label_smoothing``,
drawn log-uniformly (the weights) and uniformly (the smoothing) from the sweep's ranges;
``loss.continuous`` stays at the base config's value, since it only sets the scale the other
two are measured against. Every epoch is one report to Tune.

Trials are compared by the validation MR-STFT distance of their predictions re-rendered
(``val/audio/mrstft``), not by their validation loss: the loss changes with the very
weights being searched, so the losses of two trials are not comparable. For the same
reason each trial keeps its best epoch by that distance (``select_by = "audio"``). ASHA
stops a trial whose distance is behind the others' at the same epoch.

Outputs in ``--out``: ``trials/<trial id>/`` (each trial's Train run: checkpoints,
``metrics.jsonl``), ``trials.csv`` (one row per trial: its values, epochs, best distance
and newest checkpoint, whose ``best.pt`` is the trial's best epoch), ``best.json`` (the
best trial's TrainConfig, ready for ``python -m distributed.train --config``) and
``model.pt`` (its best epoch's weights). Run the same command again to resume an
interrupted sweep: finished trials are kept, and unfinished ones go on from their last
checkpoint.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

from distributed.storage import resolve, write_atomic
from distributed.train import TrainConfig, driver_meta, fit
from model.checkpoint import FILENAME, CheckpointError
from synth.config import ConfigError, from_dict, load_config_file, require

log = logging.getLogger("tuning.sweep")
METRIC, MODE = "val/audio/mrstft", "min"
SEARCHED = ("categorical", "note", "label_smoothing")  # LossConfig fields under search
BEST = "best " + METRIC  # the trials.csv column: the least over a trial's epochs
SHOWN = (METRIC, "val/best", "val/loss", "epoch")  # the columns of Tune's trial table
TRIALS_DIR, EXPERIMENT = "trials", "tune"


class SweepError(RuntimeError):
    """A sweep in which no trial got as far as one validated epoch."""


@dataclass(frozen=True)
class SweepConfig:
    trials: int = 8
    # ranges searched: (low, high); weights log-uniform, smoothing uniform
    categorical: tuple[float, float] = (0.01, 1.0)
    note: tuple[float, float] = (0.01, 1.0)
    label_smoothing: tuple[float, float] = (0.0, 0.3)
    grace_epochs: int = 1  # epochs every trial runs before ASHA may stop it
    reduction_factor: int = 2  # ASHA keeps the best 1 / reduction_factor at each rung
    max_concurrent: int = 1  # trials at once; each takes its Train workers' CPUs
    seed: int = 0
    # the first trial uses the base config's own values (when they are in the ranges), so
    # the sweep says whether it found anything better than what you have
    include_base: bool = True

    def __post_init__(self):
        for name in ("categorical", "note", "label_smoothing"):
            value = getattr(self, name)
            require(isinstance(value, (list, tuple)) and len(value) == 2
                    and all(isinstance(x, (int, float)) for x in value), name, value,
                    "a range [low, high]")
            object.__setattr__(self, name, tuple(float(x) for x in value))
        require(self.trials >= 1, "trials", self.trials, ">= 1")
        for name in ("categorical", "note"):
            low, high = getattr(self, name)
            require(0 < low <= high, name, (low, high), "0 < low <= high (searched log-uniformly)")
        low, high = self.label_smoothing
        require(0 <= low <= high < 1, "label_smoothing", (low, high), "0 <= low <= high < 1")
        require(self.grace_epochs >= 1, "grace_epochs", self.grace_epochs, ">= 1")
        require(self.reduction_factor >= 2, "reduction_factor", self.reduction_factor, ">= 2")
        require(self.max_concurrent >= 1, "max_concurrent", self.max_concurrent, ">= 1")


def trial_config(base: TrainConfig, values: dict, out: Path) -> TrainConfig:
    """``base`` with a trial's searched loss values, its own run folder, and its best epoch
    chosen by the sweep's metric."""
    loss = dataclasses.replace(base.loss, **{k: float(values[k]) for k in SEARCHED})
    return dataclasses.replace(base, loss=loss, out=str(out), select_by="audio")


def _report_callback():
    """Tune's callback for Train reports, with the sweep's metric first in each report:
    Tune's trial table shows the first four metrics it finds."""
    from ray.tune.integration.ray_train import TuneReportCallback

    class Report(TuneReportCallback):
        def after_report(self, run_context, metrics, checkpoint):
            ordered = [{**{k: m[k] for k in SHOWN if k in m}, **m} for m in metrics]
            super().after_report(run_context, ordered, checkpoint)

    return Report()


def run_trial(config: dict, base: dict, sweep_out: str) -> None:
    """A Tune trial: one Ray Train run, reporting each epoch to Tune. ``config``: the
    values Tune drew; ``base``: the TrainConfig every trial starts from."""
    import ray.data
    from ray import tune

    # Tune's trial table is the sweep's progress; the trials' data progress bars would
    # interleave below it
    ray.data.DataContext.get_current().enable_progress_bars = False
    trial_id = tune.get_context().get_trial_id()
    cfg = trial_config(TrainConfig.from_dict(base), config,
                       Path(sweep_out) / TRIALS_DIR / trial_id)
    result = fit(cfg, callbacks=[_report_callback()])
    if result.error is not None:
        raise result.error


def trial_dirname(trial) -> str:
    """A trial's Tune folder is named by its id alone, like its Train run's folder."""
    return trial.trial_id


def _tuner(sweep: SweepConfig, base: TrainConfig, out: Path):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    # base and folder travel beside the searched values, so Tune's tables show only those
    trainable = tune.with_resources(  # the resources of the trial's driver only
        tune.with_parameters(run_trial, base=base.to_dict(), sweep_out=str(out)), {"cpu": 0.25})
    if tune.Tuner.can_restore(str(out / EXPERIMENT)):
        log.info("resuming the sweep in %s", out)
        return tune.Tuner.restore(str(out / EXPERIMENT), trainable=trainable,
                                  resume_errored=True)
    scheduler = ASHAScheduler(time_attr="training_iteration", max_t=base.epochs,
                              grace_period=min(sweep.grace_epochs, base.epochs),
                              reduction_factor=sweep.reduction_factor)
    first = {k: getattr(base.loss, k) for k in SEARCHED}
    in_ranges = all(getattr(sweep, k)[0] <= v <= getattr(sweep, k)[1] for k, v in first.items())
    if sweep.include_base and not in_ranges:
        log.info("the base config's loss values %s are outside the ranges: not a trial", first)
    space = {"categorical": tune.loguniform(*sweep.categorical),
             "note": tune.loguniform(*sweep.note),
             "label_smoothing": tune.uniform(*sweep.label_smoothing)}
    return tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(
            metric=METRIC, mode=MODE, scheduler=scheduler, num_samples=sweep.trials,
            trial_dirname_creator=trial_dirname,
            search_alg=BasicVariantGenerator(
                points_to_evaluate=[first] if sweep.include_base and in_ranges else None,
                random_state=sweep.seed, max_concurrent=sweep.max_concurrent)),
        run_config=tune.RunConfig(name=EXPERIMENT, storage_path=str(out),
                                  failure_config=tune.FailureConfig(max_failures=1)))


def summarise(results, base: TrainConfig, out: Path) -> list[tuple[dict, TrainConfig]]:
    """One row per trial, best first, with the trial's TrainConfig: its searched values, the
    epochs Tune saw, its best distance over them and its newest checkpoint (whose ``best.pt``
    holds that epoch's weights). Trials that reported nothing come last; ties go by id.

    Only what Tune saw counts: a trial that ASHA stops may finish the epoch it is in and
    log it to its ``metrics.jsonl`` after Tune has let it go."""
    rows = []
    for r in results:
        trial_id = Path(r.path).name
        history = r.metrics_dataframe
        scores = (history[METRIC].dropna().tolist()
                  if history is not None and METRIC in history else [])
        rows.append(({"trial_id": trial_id, **{k: r.config[k] for k in SEARCHED},
                      "epochs": len(scores),
                      BEST: min(scores) if scores else math.inf,
                      "checkpoint": (r.metrics or {}).get("checkpoint_path", ""),
                      "error": repr(r.error) if r.error else ""},
                     trial_config(base, r.config, out / TRIALS_DIR / trial_id)))
    rows.sort(key=lambda rc: (rc[0][BEST], rc[0]["trial_id"]))
    return rows


def write_outputs(rows: list[tuple[dict, TrainConfig]], out: Path) -> dict | None:
    """trials.csv; and best.json and model.pt of the best trial, if any trial reported."""
    loc = resolve(str(out))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0][0]))
    writer.writeheader()
    writer.writerows(row for row, _ in rows)
    write_atomic(loc.fs, loc.join("trials.csv"), buf.getvalue().encode())
    best, cfg = rows[0]
    if not math.isfinite(best[BEST]):
        return None
    doc = cfg.to_dict()
    doc.pop("out")
    write_atomic(loc.fs, loc.join("best.json"), (json.dumps(doc, indent=2) + "\n").encode())
    write_atomic(loc.fs, loc.join(FILENAME), (Path(best["checkpoint"]) / "best.pt").read_bytes())
    return best


def _own_placement_groups(live: bool = True) -> set[str]:
    """The ids of this driver's placement groups (an id ends with its job's id): the live
    ones, or with ``live=False`` every one, removed too."""
    import ray
    from ray.util import placement_group_table

    job = ray.get_runtime_context().get_job_id()
    return {i for i, g in placement_group_table().items()
            if i.endswith(job) and not (live and g["state"] == "REMOVED")}


def _release_placement_groups(before: set[str], timeout_s: float = 60.0) -> None:
    """Remove the placement groups the sweep's trials left, and wait until their CPUs are
    back. A trial's Ray Train run reserves its workers' CPUs in a group owned by this
    driver's job; when Tune ends the trial, the group outlives it (Ray 2.60) and holds those
    CPUs until the driver exits: a second sweep or training from the same Python process
    would wait for them for ever. Removal is asynchronous (a group reads REMOVED before its
    bundles are returned), so this waits for the bundles' resources to leave the cluster."""
    import ray
    from ray.util import remove_placement_group
    from ray.util.placement_group import PlacementGroup

    left = _own_placement_groups() - before
    for i in left:
        remove_placement_group(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(i))))
    ours = _own_placement_groups(live=False) - before  # Tune's own trial groups too
    deadline = time.monotonic() + timeout_s
    while held := [k for k in ray.cluster_resources() if any(k.endswith(i) for i in ours)]:
        if time.monotonic() > deadline:
            log.warning("%d placement group bundles still reserved %.0f s after the sweep "
                        "removed them: %s", len(held), timeout_s, ", ".join(sorted(held)))
            break
        time.sleep(0.2)
    if left:
        log.debug("released %d placement groups the trials left", len(left))


def sweep(base: TrainConfig, config: SweepConfig, out: str) -> list[dict]:
    """Run (or resume) a sweep into ``out``; returns the trials.csv rows, best first."""
    if not resolve(out).is_local:
        raise ConfigError(f"--out {out}: the sweep writes to a local folder (the data may be "
                          "a URI)")
    folder = Path(out).resolve()
    # fail here, in one line, on what would fail every trial: one trial's config (the
    # ranges' low ends) and what the Train driver reads (dataset, importance, init weights)
    driver_meta(trial_config(base, {k: getattr(config, k)[0] for k in SEARCHED}, folder))
    folder.mkdir(parents=True, exist_ok=True)
    before = _own_placement_groups()
    try:
        rows = summarise(_tuner(config, base, folder).fit(), base, folder)
    finally:
        _release_placement_groups(before)
    best = write_outputs(rows, folder)
    if best is None:
        raise SweepError(f"no trial reported a {METRIC} (the first error: {rows[0][0]['error']}"
                         f"); see {folder / 'trials.csv'} and the trials' logs under {folder}")
    log.info("best of %d trials: %s (categorical %.4g, note %.4g, label_smoothing %.3f), "
             "%s %.4f; its config: %s", len(rows), best["trial_id"], best["categorical"],
             best["note"], best["label_smoothing"], METRIC, best[BEST],
             folder / "best.json")
    return [row for row, _ in rows]


def get_parser() -> argparse.ArgumentParser:
    d = SweepConfig()
    p = argparse.ArgumentParser(prog="python -m tuning.sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="dataset folder or URI")
    p.add_argument("--out", required=True, help="sweep folder; run again to resume")
    p.add_argument("--config", type=Path,
                   help="the base TrainConfig JSON every trial starts from (e.g. "
                        "model/default/train.json)")
    p.add_argument("--sweep-config", type=Path, help="JSON file of SweepConfig keys")
    p.add_argument("--trials", type=int, help=f"trials (default {d.trials})")
    p.add_argument("--epochs", type=int, help="epochs per trial at most (default: the base "
                                              "config's)")
    p.add_argument("--max-concurrent", type=int,
                   help=f"trials at once (default {d.max_concurrent})")
    p.add_argument("--no-wandb", action="store_true", help="only each trial's metrics.jsonl")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else local)")
    return p


def configs_from_args(args: argparse.Namespace) -> tuple[TrainConfig, SweepConfig]:
    base = load_config_file(args.config) if args.config else {}
    base.update(data=args.data, out=args.out)
    if args.epochs is not None:
        base["epochs"] = args.epochs
    if args.no_wandb:
        base["wandb"] = False
    sweep_doc = load_config_file(args.sweep_config) if args.sweep_config else {}
    for key in ("trials", "max_concurrent"):
        if getattr(args, key) is not None:
            sweep_doc[key] = getattr(args, key)
    return TrainConfig.from_dict(base), from_dict(SweepConfig, sweep_doc, "sweep config")


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from distributed.cluster import init_ray
    from synth.cli import run_job

    def job():
        base, config = configs_from_args(args)
        init_ray(args.address, dashboard=True)
        sweep(base, config, args.out)

    return run_job(job, (ConfigError, CheckpointError, FileNotFoundError, ValueError,
                         SweepError))


if __name__ == "__main__":
    from synth.cli import run_command

    run_command(main)
