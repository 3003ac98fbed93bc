"""Generate across Ray nodes: renders/s with one worker node against two, the same cores in
all, in one run; then a projection to N nodes with its assumptions written out.

Each layout is a real multi-node Ray on this machine (``ray.cluster_utils.Cluster``): a head
with no CPUs of its own (the driver, Ray Data's scheduler and the progress counter live
there, as on a real head node) and the worker nodes, separate raylets with their own object
stores, whose logical CPUs add up to the machine's cores. The same job
(``distributed.generate``, core scope, the default render) runs on each, into a fresh folder;
what differs is only how many nodes the renders and the FLAC blocks travel between.

The projection multiplies the per-core rate measured here (bare vita, one thread, the same
draws) by the efficiency the two-node layout reached (its renders/s over cores x per-core
rate) and the cores of N nodes, and caps it where the assumed shared limits bind: the
driver's task dispatch (blocks of ``block_rows`` ids, each one task) and the write bandwidth
to the object store the dataset lands in (bytes per sample as measured).

    python benchmarks/cluster_scaling.py --samples 400
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks.generate

from benchmarks.generate import bare_loop  # noqa: E402
from distributed.generate import GenerateConfig, generate  # noqa: E402
from synth import Sampler, SamplerConfig  # noqa: E402


def run_layout(cpus_per_node: list[int], config: GenerateConfig) -> dict:
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for cpus in cpus_per_node:
        cluster.add_node(num_cpus=cpus)
    out = tempfile.mkdtemp(prefix="synthmatch-scaling-")
    shutil.rmtree(out)
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        cluster.wait_for_nodes()
        start = time.perf_counter()
        manifest = generate(config, out)
        seconds = time.perf_counter() - start
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(out, ignore_errors=True)
    return {"worker_nodes": len(cpus_per_node), "cpus_per_node": cpus_per_node,
            "seconds": round(seconds, 1),
            "renders_per_s": round(config.num_samples / seconds, 2),
            "rows_by_node": sorted(manifest["rows_by_node"].values(), reverse=True),
            "bytes_per_sample": manifest["bytes_per_sample"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=400)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2,
                        help="logical CPUs in all, split over the worker nodes (default: "
                             "this machine's cores); an even number")
    parser.add_argument("--node-cores", type=int, default=16,
                        help="physical cores of one projected node (default 16: a "
                             "c6i.8xlarge's 32 vCPUs)")
    parser.add_argument("--dispatch-tasks-per-s", type=float, default=200.0,
                        help="assumed tasks per second the driver's Ray Data scheduler "
                             "launches (default 200)")
    parser.add_argument("--write-mb-per-s", type=float, default=500.0,
                        help="assumed write bandwidth to the dataset's storage, MB/s "
                             "(default 500: S3 from one region, many parallel uploads)")
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if args.cores < 2 or args.cores % 2:
        parser.error("--cores must be an even number >= 2")
    config = GenerateConfig(num_samples=args.samples, num_renderers=args.cores)

    layouts = [run_layout([args.cores], config),
               run_layout([args.cores // 2, args.cores // 2], config)]
    sampler = Sampler(SamplerConfig())
    draws = [(s.patch, s.note, s.base) for s in (sampler.sample(i) for i in range(
        min(args.samples, 200)))]
    per_core = bare_loop(draws, 1, True, config.render)

    one, two = layouts
    efficiency = two["renders_per_s"] / (args.cores * per_core)
    bytes_per_sample = two["bytes_per_sample"]
    dispatch_cap = args.dispatch_tasks_per_s * config.block_rows
    write_cap = args.write_mb_per_s * 1e6 / bytes_per_sample
    projection = []
    for nodes in (1, 2, 4, 8, 16, 32, 64, 128):
        cores = nodes * args.node_cores
        rate = min(cores * per_core * efficiency, dispatch_cap, write_cap)
        bound = ("cores" if rate == cores * per_core * efficiency else
                 "driver dispatch" if rate == dispatch_cap else "write bandwidth")
        projection.append({"nodes": nodes, "cores": cores, "renders_per_s": round(rate),
                           "hours_per_million": round(1e6 / rate / 3600, 2),
                           "bound": bound})
    print(json.dumps({
        "samples": args.samples, "cores": args.cores, "layouts": layouts,
        "two_nodes_over_one": round(two["renders_per_s"] / one["renders_per_s"], 3),
        "bare_vita_renders_per_s_per_core": round(per_core, 2),
        "efficiency_two_nodes": round(efficiency, 3),
        "assumptions": {"node_cores": args.node_cores,
                        "dispatch_tasks_per_s": args.dispatch_tasks_per_s,
                        "block_rows": config.block_rows,
                        "write_mb_per_s": args.write_mb_per_s,
                        "bytes_per_sample": bytes_per_sample,
                        "dispatch_cap_renders_per_s": round(dispatch_cap),
                        "write_cap_renders_per_s": round(write_cap)},
        "projection": projection,
    }, indent=2))


if __name__ == "__main__":
    main()
