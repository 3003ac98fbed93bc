"""Run the matching API and the demo on a local Ray started in-process (or a cluster).

    python -m serve                      # http://127.0.0.1:8000 (/demo, /docs, /v1/...)
    python -m serve --port 8080 --checkpoint runs/core/model.pt --max-batch-size 16

For a cluster use ``serve deploy serve/production.yaml``; ``serve run serve.app:app``
also works for development.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import threading

from synth.cli import error
from synth.config import ConfigError


def main(argv: list[str] | None = None) -> int:
    from serve.config import ServeConfig

    p = argparse.ArgumentParser(prog="python -m serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--address", help="Ray cluster address (default: a local Ray in-process)")
    for f in dataclasses.fields(ServeConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
        elif "tuple" in str(f.type):
            p.add_argument(flag, nargs="*", default=list(f.default), metavar="ORIGIN")
        else:
            kind = {"float": float, "int": int}.get(str(f.type), str)
            p.add_argument(flag, type=kind, default=f.default, help=f"default {f.default!r}")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    config = {f.name: getattr(args, f.name) for f in dataclasses.fields(ServeConfig)}
    try:
        ServeConfig.from_dict(config)
    except ConfigError as exc:
        return error(exc)

    import ray
    from ray import serve

    from serve.app import build_app
    from serve.gate import wait_until_ready

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if args.address:
        ray.init(address=args.address)
    else:  # one logical CPU over the cores: the replicas take fractions, see serve.app
        ray.init(num_cpus=(os.cpu_count() or 1) + 1, include_dashboard=False)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        # Serve's own controller and proxy log warnings only: their INFO lines (each
        # replica added, every route of the demo in one line) are not for a user
        serve.start(http_options={"host": args.host, "port": args.port},
                    logging_config={"log_level": "WARNING"})
        serve.run(build_app(config), name="synthmatch", route_prefix="/", blocking=False)
        base = f"http://{args.host}:{args.port}"
        if not wait_until_ready(base, stop=stop):
            return error(f"the app did not start; {base}/healthz says why, the log above "
                         "has the details")
        print(f"synthmatch is serving on {base}: demo {base}/demo, API docs {base}/docs "
              "(Ctrl-C stops)", flush=True)
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
        ray.shutdown()
    return 0


if __name__ == "__main__":
    from synth.cli import run_command

    run_command(main)
