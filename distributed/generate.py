"""Generate a training set: Ray Data renders sampled Vital presets into Parquet.

    sample ids -> render_ids (Ray Data tasks; one vita.Synth per worker process) -> write_parquet

Deterministic: row ``id`` is a pure function of the arguments and ``id`` (its
audio equal within vita's render noise). Resumable: files already written are
kept and only the missing ids are rendered; partial files of an interrupted run
are removed. ``manifest.json`` is written last. See ``distributed/dataset.py``
for the format.

    python -m distributed.generate --num-samples 2000 --out data/core-2k
    python -m distributed.generate --verify data/core-2k
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from distributed import dataset as fmt
from distributed.storage import Location, exists, read_bytes, resolve, sha256_of, write_atomic
from synth.audio import encode_flac
from synth.base import base_preset
from synth.config import ConfigError, from_dict, load_config_file, require
from synth.preset import PresetError, load_preset, parse_preset
from synth.render import RenderConfig, Renderer, RenderError
from synth.sampling import Sampler, SamplerConfig

log = logging.getLogger("distributed.generate")


class GenerateError(RuntimeError):
    """A generate job that cannot go on; the message says why and what to do."""


@dataclass(frozen=True)
class GenerateConfig:
    """A generate job. ``sampler``, ``render``, ``num_samples`` and ``max_attempts`` define
    the rows; the rest only how they are produced."""

    num_samples: int
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    max_attempts: int = 8  # draws per id before a row is kept as invalid
    # a draw peaking above this is turned down to it by its master volume (stored with the
    # row) instead of being rendered again to judge it against clipping: see
    # ``Renderer.render_current``. None: judge every draw as it comes.
    peak_ceiling_dbfs: float | None = -10.0
    rows_per_file: int = 500
    block_rows: int = 50  # ids per Ray Data input block: the unit of scheduling
    batch_size: int = 10  # ids per call of the renderer
    num_renderers: int | None = None  # render tasks at once; default: the cluster's CPUs less one

    def __post_init__(self):
        require(self.num_samples >= 1, "num_samples", self.num_samples, "a whole number >= 1")
        require(1 <= self.max_attempts <= 100, "max_attempts", self.max_attempts, "1..100")
        top = 20.0 * math.log10(self.render.clip_level) - self.render.verdict_margin_db
        require(self.peak_ceiling_dbfs is None
                or self.render.silence_dbfs < self.peak_ceiling_dbfs <= top,
                "peak_ceiling_dbfs", self.peak_ceiling_dbfs,
                f"above the silence level ({self.render.silence_dbfs} dBFS) and at least the "
                f"verdict margin under the clipping level ({top:g} dBFS), or unset")
        require(self.rows_per_file >= 1, "rows_per_file", self.rows_per_file, ">= 1")
        require(self.block_rows >= 1, "block_rows", self.block_rows, ">= 1")
        require(self.batch_size >= 1, "batch_size", self.batch_size, ">= 1")
        require(self.num_renderers is None or self.num_renderers >= 1, "num_renderers",
                self.num_renderers, ">= 1, or unset for the cluster's CPUs less one")

    def job(self) -> dict:
        """What makes the rows: a resumed run must match it exactly."""
        return {"num_samples": self.num_samples, "sampler": self.sampler.to_dict(),
                "render": self.render.to_dict(), "max_attempts": self.max_attempts,
                "peak_ceiling_dbfs": self.peak_ceiling_dbfs, "format_version": fmt.FORMAT_VERSION}

    @classmethod
    def from_dict(cls, data: dict) -> GenerateConfig:
        data = dict(data)
        sampler = from_dict(SamplerConfig, data.pop("sampler", {}), "sampler")
        render = from_dict(RenderConfig, data.pop("render", {}), "render")
        return from_dict(cls, {**data, "sampler": sampler, "render": render}, "generate config")


def _dbfs(x: float) -> float:
    return 20.0 * math.log10(max(x, 1e-10))


class SampleRenderer:
    """A batch of ids -> a batch of rendered rows, with one ``Sampler`` and ``Renderer`` (one
    ``vita.Synth``); :func:`render_ids` keeps one per Ray worker process.

    A draw that renders silent, clipping or non-finite, or fails to render, is
    replaced by the next deterministic draw of the same id (``attempt`` 1, 2, ...). A draw
    peaking above ``peak_ceiling_dbfs`` is turned down to it; its row keeps the volume it
    played at.
    """

    def __init__(self, sampler: dict, seeds: list[tuple[str, str]], render: dict,
                 max_attempts: int, tables: dict[str, dict[str, dict]] | None = None,
                 peak_ceiling_dbfs: float | None = None):
        presets = [parse_preset(text, source=name, name=name) for name, text in seeds]
        self.sampler = Sampler(SamplerConfig(**sampler), seed_presets=presets)
        space = self.sampler.space
        # the banks' harvested tables come from the driver (by settings list and class
        # index): a worker node need not mount the real presets folder they are read from
        banks = {key: space.banks[key].with_tables(t) for key, t in (tables or {}).items()}
        self.renderer = Renderer(space, RenderConfig(**render), bases=presets, banks=banks)
        self.max_attempts = max_attempts
        self.peak_ceiling_dbfs = peak_ceiling_dbfs

    def _row(self, sample_id: int) -> dict:
        cfg = self.renderer.config
        rejections: list[str] = []
        result = None
        start = time.perf_counter()
        for attempt in range(self.max_attempts):
            s = self.sampler.sample(sample_id, attempt)
            try:
                result = self.renderer.render(s.patch, s.note, base=s.base, velocity=s.velocity,
                                              ceiling_dbfs=self.peak_ceiling_dbfs)
            except RenderError as exc:
                log.warning("id %d, draw %d failed to render: %s", sample_id, attempt, exc)
                result = None
                rejections.append("error")
                continue
            if result.valid:
                break
            rejections.append(result.reason)
        valid = result is not None and result.valid
        if not valid:
            log.warning("id %d: all %d draws rejected (%s); kept as invalid", sample_id,
                        self.max_attempts, ";".join(rejections))
        audio = result.audio if result is not None else np.zeros(cfg.num_samples, np.float32)
        patch = s.patch
        if result is not None and result.volume_change_db:
            patch = self.sampler.space.with_volume_change(patch, result.volume_change_db)
        return {
            "id": sample_id, "continuous": patch.continuous.astype(np.float32),
            "categorical": patch.categorical.astype(np.int16), "note": s.note,
            "velocity": s.velocity, "base": s.base, "strategy": s.strategy,
            "attempts": attempt + 1, "rejections": ";".join(rejections), "valid": valid,
            "audio": encode_flac(audio, cfg.sample_rate), "num_frames": len(audio),
            "peak_dbfs": _dbfs(result.peak if result else 0.0),
            "rms_dbfs": _dbfs(result.rms if result else 0.0),
            "render_ms": 1000.0 * (time.perf_counter() - start),
        }

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = [self._row(int(i)) for i in batch["id"]]
        out = {}
        for key in rows[0]:
            values = [r[key] for r in rows]
            if key in ("continuous", "categorical"):
                out[key] = np.stack(values)
            elif key in ("base", "strategy", "rejections", "audio"):
                out[key] = np.array(values, dtype=object)
            else:
                out[key] = np.array(values)
        for key, dtype in (("note", np.int16), ("velocity", np.float32), ("attempts", np.int16),
                           ("num_frames", np.int32), ("peak_dbfs", np.float32),
                           ("rms_dbfs", np.float32), ("render_ms", np.float32)):
            out[key] = out[key].astype(dtype)
        return out


@functools.lru_cache(maxsize=1)
def _renderer_for(args: str) -> SampleRenderer:
    """This process's renderer for a job's arguments (JSON): built by its first task, kept
    for the next ones, as an actor would keep it."""
    return SampleRenderer(**json.loads(args))


def render_ids(batch: dict[str, np.ndarray], renderer_args: str,
               progress=None) -> dict[str, np.ndarray]:
    """Ray Data map function: a batch of ids -> rendered rows.

    Plain tasks rather than an actor pool: Ray retries a task whose worker died, and a
    task pool does not trip Ray 2.60's error-level line about restartable actors with
    arguments in the object store (ray-project/ray#57733), printed for every Ray Data
    actor. The synth is built once per worker process all the same (:func:`_renderer_for`).
    """
    import ray

    out = _renderer_for(renderer_args)(batch)
    out["node"] = np.full(len(batch["id"]), ray.get_runtime_context().get_node_id(), object)
    if progress is not None:
        progress.add.remote(len(batch["id"]))
    return out


class _Progress:
    """A Ray actor counting rendered rows, so the driver can report rate and time left."""

    def __init__(self):
        self.rows = 0

    def add(self, n: int) -> None:
        self.rows += n

    def get(self) -> int:
        return self.rows


class _Reporter:
    """Logs renders/s and time left every ``interval`` seconds while a job runs."""

    def __init__(self, counter, total: int, interval: float = 15.0):
        self.counter, self.total, self.interval = counter, total, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import ray

        start = time.perf_counter()
        while not self._stop.wait(self.interval):
            try:
                done = ray.get(self.counter.get.remote(), timeout=self.interval)
            except Exception as exc:  # progress is a nicety: never fail the job over it
                log.debug("no progress count: %s", exc)
                continue
            rate = done / (time.perf_counter() - start)
            left = (self.total - done) / rate if rate > 0 else float("inf")
            log.info("rendered %d/%d (%.1f renders/s, about %s left)", done, self.total, rate,
                     f"{left:.0f} s" if math.isfinite(left) else "? s")

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _check_job(loc: Location, config: GenerateConfig, grow: bool = False) -> None:
    """Record the job's arguments in a new dataset; in an existing one, refuse others. With
    ``grow``, a dataset of this job with fewer samples takes the new count: a sample is a
    function of the sampler's seed and its id, so its rows are the first of the larger job,
    and only the new ids are rendered."""
    path = loc.join(fmt.JOB_FILE)
    text = json.dumps(config.job(), indent=2)
    job = json.loads(text)  # as it reads back (tuples become lists)
    if not exists(loc.fs, path):
        write_atomic(loc.fs, path, text.encode())
        return
    recorded = json.loads(read_bytes(loc.fs, path))
    if recorded == job:
        return
    changed = sorted(k for k in set(job) | set(recorded) if job.get(k) != recorded.get(k))
    had = recorded.get("num_samples", 0)
    if changed == ["num_samples"] and job["num_samples"] > had:
        if not grow:
            raise GenerateError(
                f"{loc.uri} holds this job with {had} samples; pass --grow to add ids "
                f"{had}-{job['num_samples'] - 1}, or choose another --out")
        log.info("growing %s from %d to %d samples", loc.uri, had, job["num_samples"])
        # the manifest first: a crash between the two leaves an unfinished dataset of the
        # old job (a rerun finishes either), never a finished one under the new count
        if exists(loc.fs, loc.join(fmt.MANIFEST)):
            loc.fs.delete_file(loc.join(fmt.MANIFEST))
        write_atomic(loc.fs, path, text.encode())
        return
    raise GenerateError(
        f"{loc.uri} holds a dataset generated with other arguments ({', '.join(changed)} "
        "differ); resume it with the same arguments, or choose another --out")


def _existing_ids(loc: Location) -> np.ndarray:
    """Ids already on disk; removes unreadable files left by an interrupted run."""
    ids = []
    for path in fmt.data_files(loc):
        scan = fmt.scan_file(loc, path)
        if scan.error:
            log.warning("removing %s: %s (left by an interrupted run)", scan.name, scan.error)
            loc.fs.delete_file(path)
        else:
            ids.append(scan.ids)
    return np.unique(np.concatenate(ids)) if ids else np.zeros(0, np.int64)


def _file_metadata(config: GenerateConfig, sampler: Sampler) -> dict:
    space = sampler.space
    return {
        "format": fmt.FORMAT, "format_version": fmt.FORMAT_VERSION,
        "space_id": space.id, "space": space.definition(),
        "continuous": [p.name for p in space.continuous],
        "categorical": [p.name for p in space.categorical],
        "render": config.render.to_dict(), "sampler": config.sampler.to_dict(),
        "peak_ceiling_dbfs": config.peak_ceiling_dbfs,
        "bases": {p.name: p.digest for p in [base_preset(), *sampler.seed_presets]},
        "versions": fmt.package_versions(),
    }


def _render_missing(loc: Location, config: GenerateConfig, sampler: Sampler,
                    missing: np.ndarray) -> None:
    import pyarrow as pa
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from distributed.cluster import cluster_cpus

    num_blocks = max(1, math.ceil(len(missing) / config.block_rows))
    renderers = min(config.num_renderers or max(1, cluster_cpus() - 1), num_blocks)
    seeds = [(p.name, p.to_json()) for p in sampler.seed_presets]
    log.info("rendering %d samples, %d at a time, into %s", len(missing), renderers, loc.uri)
    # on the driver's node: a worker node lost mid-job must not take the counter with it
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    progress = ray.remote(num_cpus=0)(_Progress).options(scheduling_strategy=here).remote()
    ids = ray.data.from_arrow([pa.table({"id": chunk})
                               for chunk in np.array_split(missing, num_blocks)])
    tables = {key: {str(i): t for i, t in bank.resolved().items()}
              for key, bank in sampler.space.banks.items()}
    args = json.dumps({"sampler": config.sampler.to_dict(), "seeds": seeds,
                       "render": config.render.to_dict(), "max_attempts": config.max_attempts,
                       "tables": tables, "peak_ceiling_dbfs": config.peak_ceiling_dbfs})
    # by its importable name, also when this file runs as __main__ (python -m): the
    # workers import it, and its per-process renderer cache with it
    from distributed.generate import render_ids

    rows = ids.map_batches(
        render_ids, fn_kwargs={"renderer_args": args, "progress": progress},
        batch_size=config.batch_size, compute=ray.data.TaskPoolStrategy(size=renderers),
        num_cpus=1,
    )
    with _Reporter(progress, len(missing)):
        rows.write_parquet(
            loc.join(fmt.DATA_DIR), filesystem=loc.fs,
            schema=fmt.schema(sampler.space, _file_metadata(config, sampler)),
            min_rows_per_file=config.rows_per_file, compression="zstd",
            ray_remote_args={"num_cpus": 0},
        )
    ray.kill(progress)


def _finalize(loc: Location, config: GenerateConfig, sampler: Sampler, seconds: float,
              rendered: int) -> dict:
    """Check what is on disk, then write the manifest (last, atomically)."""
    import pyarrow.parquet as pq

    files, seen = [], np.zeros(config.num_samples, dtype=np.int32)
    reasons: Counter[str] = Counter()
    nodes: Counter[str] = Counter()
    valid = 0
    for path in fmt.data_files(loc):
        with loc.fs.open_input_file(path) as f:
            names = pq.read_schema(f).names  # files of an older run may lack "node"
            table = pq.read_table(f, columns=[c for c in ("id", "rejections", "valid", "node")
                                              if c in names])
        ids = table.column("id").to_numpy()
        if np.any(seen[ids]):
            raise GenerateError(f"{path}: holds ids already in another file; delete the "
                                "dataset's data/ folder and run again")
        seen[ids] += 1
        valid += int(np.sum(table.column("valid").to_numpy(zero_copy_only=False)))
        for text in table.column("rejections").to_pylist():
            reasons.update(r for r in text.split(";") if r)
        by_node = Counter(table.column("node").to_pylist() if "node" in names else [])
        nodes.update(by_node)
        files.append({"name": path.rsplit("/", 1)[-1], "rows": len(ids),
                      "min_id": int(ids.min()), "max_id": int(ids.max()),
                      "bytes": loc.fs.get_file_info(path).size,
                      "sha256": sha256_of(loc.fs, path), "nodes": dict(sorted(by_node.items()))})
    missing = np.flatnonzero(seen == 0)
    if missing.size:
        raise GenerateError(f"{missing.size} ids were not written (e.g. {missing[:5].tolist()}); "
                            "run the same command again to resume")
    total_bytes = sum(f["bytes"] for f in files)
    manifest = {
        "format": fmt.FORMAT, "version": fmt.FORMAT_VERSION,
        "space_id": sampler.space.id, "num_samples": config.num_samples,
        "id_range": [0, config.num_samples], "rows": int(seen.sum()), "valid_rows": valid,
        "rejected_draws": dict(reasons), "rows_by_node": dict(sorted(nodes.items())),
        "files": files, "bytes": total_bytes,
        "bytes_per_sample": round(total_bytes / config.num_samples, 1),
        "config": {**config.job(), "rows_per_file": config.rows_per_file},
        "versions": fmt.package_versions(),
        "timings": {"last_run_seconds": round(seconds, 2), "last_run_rendered": rendered,
                    "last_run_renders_per_s": round(rendered / seconds, 2) if seconds else None},
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_atomic(loc.fs, loc.join(fmt.MANIFEST), json.dumps(manifest, indent=2).encode())
    return manifest


def completed(config: GenerateConfig, out: str, grow: bool = False) -> dict | None:
    """The manifest when ``out`` holds this job finished already, else None; refuses a
    dataset made with other arguments (``grow``: see ``_check_job``). Needs no Ray: a rerun
    of a finished job ends here."""
    loc = resolve(out)
    _check_job(loc, config, grow)
    if not exists(loc.fs, loc.join(fmt.MANIFEST)):
        return None
    manifest = fmt.load_manifest(loc)
    log.info("%s is complete already: %d rows (manifest.json); --verify checks its files",
             loc.uri, manifest["rows"])
    return manifest


def generate(config: GenerateConfig, out: str, grow: bool = False) -> dict:
    """Run (or resume) a generate job into ``out``; returns the manifest. ``grow``: a
    dataset of this job with fewer samples is grown to ``config.num_samples``.

    Needs Ray initialised (see ``distributed.cluster.init_ray``).
    """
    loc = resolve(out)
    sampler = Sampler(config.sampler)
    done = completed(config, out, grow)
    if done is not None:
        return done
    start = time.perf_counter()
    present = _existing_ids(loc)
    missing = np.setdiff1d(np.arange(config.num_samples, dtype=np.int64), present)
    if present.size:
        log.info("resuming: %d of %d samples already written", present.size, config.num_samples)
    if missing.size:
        _render_missing(loc, config, sampler, missing)
    seconds = time.perf_counter() - start
    manifest = _finalize(loc, config, sampler, seconds, int(missing.size))
    log.info("wrote %d samples (%d rendered now) in %.1f s: %.1f renders/s, %.1f KB per sample",
             manifest["rows"], missing.size, seconds, missing.size / max(seconds, 1e-9),
             manifest["bytes_per_sample"] / 1e3)
    return manifest


def verify(path: str) -> bool:
    """``--verify``: print each problem, or what was checked; whether all is well."""
    loc = resolve(path)
    problems = fmt.verify(loc)
    for problem in problems:
        print(f"FAIL {problem}")
    if problems:
        print(f"{len(problems)} problem(s) in {path}")
        return False
    m = fmt.load_manifest(loc)
    files = f"{len(m['files'])} file" + ("s" if len(m["files"]) != 1 else "")
    print(f"OK {path}: {files} and {m['rows']} rows as manifest.json lists them "
          f"(each file's sha256, row count and space id {m['space_id']}; ids 0-"
          f"{m['num_samples'] - 1} each present once; no file the manifest does not list)")
    return True


def get_parser() -> argparse.ArgumentParser:
    d, s = GenerateConfig(num_samples=1), SamplerConfig()
    p = argparse.ArgumentParser(
        prog="python -m distributed.generate",
        description="Render sampled Vital presets into a Parquet dataset with Ray Data "
                    "(resumable; run the same command again to finish an interrupted job).")
    p.add_argument("--num-samples", type=int, help="how many samples (ids 0..N-1)")
    p.add_argument("--out", help="dataset folder: a local path or a URI such as s3://bucket/ds")
    p.add_argument("--grow", action="store_true",
                   help="add ids to a dataset made with the same arguments and fewer samples "
                        "(its rows stay; only the new ids are rendered)")
    p.add_argument("--verify", metavar="PATH", help="check a dataset against its manifest "
                                                    "and exit (non-zero if anything is wrong)")
    p.add_argument("--scope", help=f"parameter scope (default {s.scope})")
    p.add_argument("--seed", type=int, help=f"sampler seed (default {s.seed})")
    p.add_argument("--seed-presets", type=Path,
                   help="folder of .vital presets to perturb (for example ../shared/real-presets)")
    p.add_argument("--perturb-fraction", type=float,
                   help="share of samples perturbed from seed presets (default 0)")
    p.add_argument("--config", type=Path, help="JSON or TOML file with GenerateConfig keys and "
                                               "[sampler] / [render] sections")
    p.add_argument("--rows-per-file", type=int, help=f"default {d.rows_per_file}")
    p.add_argument("--renderers", type=int,
                   help="render tasks at once (default: cluster CPUs less one)")
    p.add_argument("--batch-size", type=int, help=f"ids per renderer call (default "
                                                  f"{d.batch_size})")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local "
                                     "Ray started in-process)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def config_from_args(args: argparse.Namespace) -> GenerateConfig:
    data = load_config_file(args.config) if args.config else {}
    sampler = dict(data.pop("sampler", {}))
    if args.num_samples is not None:
        data["num_samples"] = args.num_samples
    for key, value in (("rows_per_file", args.rows_per_file), ("num_renderers", args.renderers),
                       ("batch_size", args.batch_size)):
        if value is not None:
            data[key] = value
    for key, value in (("scope", args.scope), ("seed", args.seed),
                       ("perturb_fraction", args.perturb_fraction)):
        if value is not None:
            sampler[key] = value
    if args.seed_presets is not None:
        paths = sorted(args.seed_presets.glob("*.vital"))
        if not paths:
            raise ConfigError(f"{args.seed_presets}: no .vital presets to use as seeds")
        sampler["seed_presets"] = [str(p.resolve()) for p in paths]
        for path in paths:  # fail on a bad seed now, not in every render task
            load_preset(path)
    if "num_samples" not in data:
        raise ConfigError("--num-samples is required (or num_samples in --config)")
    return GenerateConfig.from_dict({**data, "sampler": sampler})


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from distributed.cluster import init_ray
    from synth.cli import error, run_job

    if args.verify:
        try:
            return 0 if verify(args.verify) else 1
        except (ConfigError, OSError) as exc:
            return error(exc)

    def job():
        if not args.out:
            raise ConfigError("--out is required (a folder or a URI)")
        config = config_from_args(args)
        if completed(config, args.out, args.grow) is None:  # a finished job starts no Ray
            init_ray(args.address)
            generate(config, args.out, args.grow)

    return run_job(job, (ConfigError, GenerateError, PresetError))


if __name__ == "__main__":
    from synth.cli import run_command

    run_command(main)
