"""What the API and the demo both call: matching, rendering and tutorials over Serve handles.

A match request flows through the deployments of ``serve.app``:

    ingress: read + check the upload (model.audio_input)
      -> Model.predict (batched across requests)
      -> ingress: note check against the clip's f0
      -> Search.search (when the budget is over 0: model.search)
      -> Render.finish (display texts, preview render, distance, preset)
      -> ingress: tutorial (Claude or the offline template), JSON

Each stage is the same ``model.match.Matcher`` code the CLI runs in one process.
Every refusal is an :class:`ApiError` with its HTTP status.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.audio_input import FORMATS, AudioInputError, InputConfig, sniff_format
from model.checkpoint import fetch
from model.decoding import costs_path
from model.match import DEFAULT_CHECKPOINT, Matcher, MatchResult, f0_midi
from model.search import DEFAULT_BUDGET_SECONDS
from model.tutorial import Tutorial, write_tutorial
from serve.config import ServeConfig
from serve.errors import ApiError
from synth.audio import wav_bytes
from synth.preset import PresetError, parse_preset
from synth.render import RenderError

log = logging.getLogger("serve")


def safe_name(filename: str | None, fallback: str = "upload") -> str:
    """A client's file name, reduced to its last path part and harmless characters."""
    name = Path(str(filename or "")).name
    name = re.sub(r"[^A-Za-z0-9._ -]+", "_", name).strip(" .")[:80]
    return name or fallback


@dataclass
class MatchOutput:
    result: MatchResult
    tutorial: Tutorial | None
    filename: str  # suggested .vital file name
    batch_size: int  # how many requests shared the model pass

    def to_json(self, sample_rate: int, preview: bool) -> dict:
        """The match report (``MatchResult.report``: the CLI's ``--json`` schema)."""
        wav = wav_bytes(self.result.preview, sample_rate) if preview else None
        return self.result.report(self.filename, tutorial=self.tutorial,
                                  batch_size=self.batch_size, preview_wav=wav)


class MatchService:
    """Holds the deployment handles and the ingress's own (synth-free) Matcher."""

    def __init__(self, model, render, search, config: ServeConfig):
        self.model, self.render, self.search = model, render, search
        self.config = config
        path = fetch(config.checkpoint) if config.checkpoint else DEFAULT_CHECKPOINT
        self.matcher = Matcher(path, InputConfig(max_seconds=config.max_clip_seconds))
        self.sample_rate = self.matcher.render_config.sample_rate
        # the weights and the class costs beside them (both decide the answer)
        costs = costs_path(path)
        digest = hashlib.sha256(path.read_bytes())
        if costs.exists():
            digest.update(costs.read_bytes())
        self.model_version = digest.hexdigest()[:12]
        self.checkpoint_name = path.name
        # the f0 estimate's first call compiles (numba): do it now, not on a request
        tone = np.sin(2 * np.pi * 220 * np.arange(self.sample_rate) / self.sample_rate)
        f0_midi(tone.astype(np.float32), self.sample_rate)

    # -- info -------------------------------------------------------------------------

    def info(self) -> dict:
        ckpt, cfg = self.matcher.ckpt, self.config
        metrics = ckpt.training.get("metrics", {})
        return {
            "model": {"version": self.model_version, "checkpoint": self.checkpoint_name,
                      "space_id": ckpt.space.id, "scope": ckpt.space.name,
                      "parameters": len(ckpt.space.params),
                      "continuous": len(ckpt.space.continuous),
                      "categorical": len(ckpt.space.categorical),
                      "validation": {k: metrics[k] for k in sorted(metrics)
                                     if k.startswith(("val/mae/all", "val/acc"))}},
            "audio": {"sample_rate": self.sample_rate, "window_s": ckpt.features.duration_s,
                      "formats": FORMATS},
            "limits": {"max_upload_mb": cfg.max_upload_mb,
                       "max_clip_seconds": cfg.max_clip_seconds,
                       "max_budget_seconds": cfg.max_budget_seconds,
                       "request_timeout_s": cfg.request_timeout_s},
            "auth": cfg.auth_token() is not None,
        }

    # -- helpers ----------------------------------------------------------------------

    async def _call(self, response, deadline: float, what: str):
        """Await a deployment call, within what is left of the request's time."""
        left = deadline - time.monotonic()
        try:
            if left <= 0:
                raise TimeoutError
            return await asyncio.wait_for(response, left)
        except TimeoutError:
            response.cancel()
            raise ApiError(504, "timeout", f"{what} did not finish within the request's "
                                           f"{self.config.request_timeout_s:g} s limit") from None

    def _check_upload(self, data: bytes, name: str) -> None:
        if not data:
            raise ApiError(422, "invalid_audio", f"{name}: the upload is empty")
        if sniff_format(data[:16]) is None:
            raise ApiError(415, "unsupported_media_type",
                           f"{name}: not an audio file; send {FORMATS}")

    def _parse_preset(self, data: bytes, name: str):
        if not data:
            raise ApiError(422, "invalid_preset", f"{name}: the upload is empty")
        try:
            return parse_preset(data, source=name)
        except PresetError as exc:
            raise ApiError(422, "invalid_preset", str(exc)) from None

    # -- the three operations -----------------------------------------------------------

    async def match(self, data: bytes, filename: str | None,
                    budget_seconds: float = DEFAULT_BUDGET_SECONDS, tutorial: bool = False,
                    description: str = "") -> MatchOutput:
        cfg = self.config
        name = safe_name(filename, "upload")
        if not 0.0 <= budget_seconds <= cfg.max_budget_seconds:
            raise ApiError(422, "invalid_request",
                           f"budget_seconds = {budget_seconds:g}; allowed 0 to "
                           f"{cfg.max_budget_seconds:g}")
        start = time.monotonic()
        deadline = start + cfg.request_timeout_s + budget_seconds
        self._check_upload(data, name)
        try:
            clip = await asyncio.to_thread(self.matcher.load, data, name)
        except AudioInputError as exc:
            raise ApiError(422, "invalid_audio", str(exc)) from None
        t_read = time.monotonic()
        # the f0 estimate runs here while the model replica predicts, as in Matcher.match
        f0 = asyncio.ensure_future(asyncio.to_thread(f0_midi, clip.audio, clip.sample_rate))
        try:
            prediction, batch_size = await self._call(self.model.predict.remote(clip.audio),
                                                      deadline, "the model")
        finally:
            t_pred = time.monotonic()
            f0_note = await f0
        note = self.matcher.choose_note(prediction, f0_note)
        patch, search = prediction.patch, None
        t_note = time.monotonic()
        if budget_seconds > 0:
            patch, note, search = await self._call(
                self.search.search.remote(clip, prediction, note, f0_note, budget_seconds),
                deadline, "the search")
        t_search = time.monotonic()
        timings = {"read": t_read - start, "predict": t_pred - t_read, "f0": t_note - t_pred,
                   "search": t_search - t_note}
        result: MatchResult = await self._call(
            self.render.finish.remote(clip, prediction, note, patch,
                                      None if search is None else search["refinement"],
                                      {k: 1000 * v for k, v in timings.items()}, search),
            deadline, "rendering")
        tut = None
        if tutorial:
            tut = await asyncio.to_thread(write_tutorial, result.params, self.matcher.modules,
                                          result.note, description)
        result.timings_ms["total"] = 1000 * (time.monotonic() - start)
        stem = Path(name).stem or "upload"
        return MatchOutput(result, tut, f"synthmatch-{stem}.vital", batch_size)

    async def render_preset(self, data: bytes, filename: str | None, note: int,
                            velocity: float) -> bytes:
        name = safe_name(filename, "preset.vital")
        preset = self._parse_preset(data, name)
        deadline = time.monotonic() + self.config.request_timeout_s
        try:
            audio = await self._call(self.render.render_preset.remote(preset, note, velocity),
                                     deadline, "rendering")
        except RenderError as exc:
            raise ApiError(422, "invalid_preset", f"{name}: {exc}") from None
        return wav_bytes(audio, self.sample_rate)

    async def tutorial(self, data: bytes, filename: str | None, note: int | None,
                       description: str) -> Tutorial:
        name = safe_name(filename, "preset.vital")
        preset = self._parse_preset(data, name)
        deadline = time.monotonic() + self.config.request_timeout_s
        try:
            params = await self._call(self.render.parameters.remote(preset), deadline,
                                      "reading the preset")
        except PresetError as exc:
            raise ApiError(422, "invalid_preset", str(exc)) from None
        return await asyncio.to_thread(write_tutorial, params, self.matcher.modules, note,
                                       description)

