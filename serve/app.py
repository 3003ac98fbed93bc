"""The Ray Serve application: the matching API and the Gradio demo.

    serve run serve.app:app                       # the default model, on 127.0.0.1:8000
    serve run serve.app:build_app max_batch_size=1 checkpoint=runs/core/model.pt
    serve deploy serve/production.yaml            # to a running cluster
    python -m serve                               # a local Ray started in-process

Deployments (each one's resources and autoscaling are overridable in the deploy
config):

- ``Api``: the ingress (FastAPI: ``/v1/*``, ``/healthz``, ``/docs``, the demo at
  ``/demo``); reads and checks uploads, checks the note, writes tutorials. One
  replica: the Gradio demo keeps its queue in the process.
- ``Model``: the network; ``predict`` batches concurrent requests into one pass
  (``@serve.batch``), autoscaled on queued requests.
- ``Render``: display texts, the preview render and its distance, ``/v1/render``;
  CPU-bound (vita), autoscaled.
- ``Search``: the search within the request's budget (``model.search``); each call holds
  a replica for its seconds.

Nothing runs at import: the module only describes the deployments; the
checkpoint is loaded in each replica's constructor.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging

import numpy as np
from ray import serve

from model.audio_input import Clip
from model.match import Matcher, MatchResult, NoteChoice, Prediction
from model.metrics import mrstft_distance
from serve.config import ServeConfig
from synth.base import base_preset
from synth.preset import Preset, import_preset
from synth.space import Patch

log = logging.getLogger("serve")
# The stages behind the ingress log no line per call: the ingress's access log has one line
# per HTTP request, which is what an operator reads.
QUIET = {"enable_access_log": False}


def _matcher(checkpoint: str) -> Matcher:
    return Matcher(checkpoint or None)


@serve.deployment(
    max_ongoing_requests=32,
    autoscaling_config={"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 8,
                        "upscale_delay_s": 5, "downscale_delay_s": 60},
    ray_actor_options={"num_cpus": 0.5},
    logging_config=QUIET,
)
class Model:
    """The network. Concurrent ``predict`` calls are answered from one batched pass."""

    def __init__(self, checkpoint: str = ""):
        self.matcher = _matcher(checkpoint)
        self.matcher.predict([np.zeros(self.matcher.ckpt.features.num_samples, np.float32)])

    def reconfigure(self, config: dict) -> None:
        """``user_config``: ``max_batch_size`` (1 turns batching off), ``batch_wait_ms``."""
        cfg = ServeConfig.from_dict({k: config[k] for k in ("max_batch_size", "batch_wait_ms")
                                     if k in config})
        self.predict_batch.set_max_batch_size(cfg.max_batch_size)
        self.predict_batch.set_batch_wait_timeout_s(cfg.batch_wait_ms / 1000)
        log.info("model batching: up to %d requests, %.1f ms wait", cfg.max_batch_size,
                 cfg.batch_wait_ms)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def predict_batch(self, audio: list[np.ndarray]) -> list[tuple[Prediction, int]]:
        predictions = await asyncio.to_thread(self.matcher.predict, audio)
        return [(p, len(audio)) for p in predictions]

    def ready(self) -> bool:
        """Answers once the replica is up (the ingress waits for it before serving)."""
        return True

    async def predict(self, audio: np.ndarray) -> tuple[Prediction, int]:
        """One clip's prediction and the size of the batch it was part of."""
        return await self.predict_batch(audio)


@serve.deployment(
    max_ongoing_requests=4,
    autoscaling_config={"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 2},
    ray_actor_options={"num_cpus": 0.5},
    logging_config=QUIET,
)
class Render:
    """vita work: the preview render and its distance, presets, display texts."""

    def __init__(self, checkpoint: str = ""):
        self.matcher = _matcher(checkpoint)
        # first-call costs (the synth, auraloss) now, not on the first request
        self.matcher.renderer.render_preset(base_preset(), 60)
        mrstft_distance(np.zeros(4096, np.float32), np.zeros(4096, np.float32))

    def ready(self) -> bool:
        return True

    def finish(self, clip: Clip, prediction: Prediction, note: NoteChoice, patch: Patch,
               refinement: dict | None, timings_ms: dict,
               search: dict | None = None) -> MatchResult:
        return self.matcher.finish(clip, prediction, note, patch, refinement, timings_ms,
                                   search)

    def render_preset(self, preset: Preset, note: int, velocity: float) -> np.ndarray:
        return self.matcher.renderer.render_preset(preset, note, velocity=velocity).audio

    def parameters(self, preset: Preset) -> list[dict]:
        """A preset's in-scope parameters with Vital's display texts (for a tutorial)."""
        return self.matcher.parameters(import_preset(preset, self.matcher.space))


@serve.deployment(
    max_ongoing_requests=1,
    autoscaling_config={"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 1},
    ray_actor_options={"num_cpus": 0.5},
    logging_config=QUIET,
)
class Search:
    """The search within a request's budget (one at a time per replica)."""

    def __init__(self, checkpoint: str = ""):
        self.matcher = _matcher(checkpoint)
        self.matcher.searcher()  # its synths and the distance made now, not on a request

    def ready(self) -> bool:
        return True

    def search(self, clip: Clip, prediction: Prediction, note: NoteChoice, f0: float | None,
               budget_seconds: float) -> tuple[Patch, NoteChoice, dict | None]:
        return self.matcher.search(clip, prediction, note, f0, budget_seconds)


@serve.deployment(num_replicas=1, max_ongoing_requests=64,
                  ray_actor_options={"num_cpus": 0.5})
@serve.ingress()
class Api:
    """The HTTP ingress. It comes up at once with a :class:`serve.gate.Gate` in front,
    which answers 503 with ``Retry-After`` while the FastAPI app (and the demo) is built
    in the background and the other deployments start."""

    def __init__(self, model, render, search, config: dict | None = None):
        self.config = ServeConfig.from_dict(config)
        self.handles = (model, render, search)

    async def _build(self):
        from serve.api import build_api
        from serve.service import MatchService

        model, render, search = self.handles
        service = await asyncio.to_thread(MatchService, model, render, search, self.config)
        app = await asyncio.to_thread(build_api, service)
        # every stage answers before the first request is let in
        await asyncio.gather(model.ready.remote(), render.ready.remote(), search.ready.remote())
        return app

    def __serve_build_asgi_app__(self):
        from serve.gate import Gate

        return Gate(self._build)


def _coerce(field: dataclasses.Field, value):
    """``serve run ... key=value`` passes strings: read them as the field's type."""
    if not isinstance(value, str) or field.type in ("str", str):
        return value
    if field.type in ("bool", bool):
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        return value
    if "tuple" in str(field.type):
        return tuple(v for v in value.split(",") if v)
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def build_app(args: dict | None = None):
    """The application, from a dict of ``ServeConfig`` keys (strings accepted)."""
    fields = {f.name: f for f in dataclasses.fields(ServeConfig)}
    args = {k: _coerce(fields[k], v) if k in fields else v for k, v in (args or {}).items()}
    config = ServeConfig.from_dict(args)  # unknown keys and bad values are refused here
    ckpt = config.checkpoint
    batching = {"max_batch_size": config.max_batch_size, "batch_wait_ms": config.batch_wait_ms}
    return Api.bind(Model.options(user_config=batching).bind(ckpt), Render.bind(ckpt),
                    Search.bind(ckpt), config.to_dict())


app = build_app()
