"""The HTTP API (FastAPI), built inside the ingress replica around a ``MatchService``.

    POST /v1/match     multipart: audio (file), budget_seconds, tutorial, description, preview
    POST /v1/render    multipart: preset (.vital file), note, velocity -> audio/wav
    POST /v1/tutorial  multipart: preset (.vital file), note, description
    GET  /v1/info      model version, space id, scope, limits
    GET  /healthz      liveness
    GET  /docs         OpenAPI docs;  /demo: the Gradio demo

Hardening: request bodies over ``max_upload_mb`` are refused with 413 before they
are read (by Content-Length, or while streaming); ``/v1/*`` needs
``Authorization: Bearer <token>`` when the environment variable named by
``auth_token_env`` is set; every error is ``{"error": {"status", "code",
"message"}}``; CORS is off unless origins are configured; nothing logs headers or
bodies.
"""

from __future__ import annotations

import hmac
import json
import logging
import uuid
from typing import Annotated

from fastapi import FastAPI, File, Form, Request, Security, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.security import HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from model.search import DEFAULT_BUDGET_SECONDS
from serve.errors import CODES, ApiError, error_body
from serve.service import MatchService

log = logging.getLogger("serve")
API_PREFIX = "/v1/"


def _json_error(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, code, message), status_code=status, headers=headers)


async def _send_error(send, status: int, code: str, message: str, headers: dict | None = None):
    body = json.dumps(error_body(status, code, message)).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


class GuardMiddleware:
    """Bearer auth for ``/v1/*`` and the request-body size limit, before any route runs."""

    def __init__(self, app, service: MatchService):
        self.app, self.service = app, service

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        cfg = self.service.config
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        path = scope.get("path", "")
        token = cfg.auth_token()
        if token and path.startswith(API_PREFIX):
            given = headers.get("authorization", "")
            scheme, _, value = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(),
                                                                     token.encode()):
                what = "missing" if not given else "invalid"
                return await _send_error(send, 401, "unauthorized",
                                         f"{what} bearer token (Authorization: Bearer <token>)",
                                         {"WWW-Authenticate": "Bearer"})
        limit = cfg.max_upload_bytes
        too_large = (f"the request body is over the {cfg.max_upload_mb:g} MB limit")
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return await _send_error(send, 413, "payload_too_large", too_large)
        received = 0
        started = exceeded = False

        async def limited_receive():
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise _TooLarge
            return message

        async def guarded_send(message):
            # A form parser turns any error while reading into its own 400: once the limit
            # is passed, whatever the app answers is replaced by the 413.
            nonlocal started
            if exceeded:
                if not started:
                    started = True
                    await _send_error(send, 413, "payload_too_large", too_large)
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _TooLarge:
            pass
        if exceeded and not started:
            await _send_error(send, 413, "payload_too_large", too_large)


def build_api(service: MatchService) -> FastAPI:
    cfg = service.config
    app = FastAPI(
        title="synthmatch",
        summary="Match a recording of one note to a Vital preset.",
        description="Upload a clip of one note (WAV, FLAC, OGG or MP3); get a Vital preset, "
                    "its parameters with confidences, a preview and a tutorial. Errors are "
                    '`{"error": {"status", "code", "message"}}`.',
        version=service.model_version,
    )
    bearer = [Security(HTTPBearer(auto_error=False))]  # documents the scheme; checked above

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError):
        return _json_error(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException):
        code = CODES.get(exc.status_code, "error")
        return _json_error(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError):
        parts = []
        for e in exc.errors():
            where = ".".join(str(x) for x in e.get("loc", ()) if x not in ("body", "query"))
            parts.append(f"{where}: {e.get('msg', 'invalid')}")
        return _json_error(422, "invalid_request", "; ".join(parts) or "invalid request")

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception):
        ref = uuid.uuid4().hex[:12]
        log.error("request failed (ref %s): %s: %s", ref, exc.__class__.__name__, exc,
                  exc_info=exc)
        return _json_error(500, "internal_error", f"internal error (ref {ref}); the server "
                                                  "log has the details")

    @app.get("/", include_in_schema=False)
    async def root():
        return RedirectResponse("/demo/" if cfg.demo else "/docs")

    @app.get("/healthz", summary="Liveness")
    async def healthz():
        return {"status": "ok", "model": service.model_version}

    @app.get("/v1/info", summary="Model version, parameter space and limits",
             dependencies=bearer)
    async def info():
        return service.info()

    @app.post("/v1/match", summary="Match a clip of one note to a Vital preset",
              dependencies=bearer)
    async def match(
        audio: Annotated[UploadFile, File(description="WAV, FLAC, OGG or MP3")],
        budget_seconds: Annotated[float, Form(
            ge=0.0, description="search time (s): render the network's answer and the "
                                "library's nearest presets, keep the closest, refine it; "
                                "0: the network's answer alone")] = DEFAULT_BUDGET_SECONDS,
        tutorial: Annotated[bool, Form(description="include a tutorial")] = False,
        description: Annotated[str, Form(max_length=500, description="what the sound is "
                                                                     "(for the tutorial)")] = "",
        preview: Annotated[bool, Form(description="include the preview, base64 WAV")] = False,
    ):
        data = await audio.read()
        out = await service.match(data, audio.filename, budget_seconds, tutorial, description)
        return out.to_json(service.sample_rate, preview)

    @app.post("/v1/render", summary="Render a .vital preset to WAV", dependencies=bearer,
              response_class=Response,
              responses={200: {"content": {"audio/wav": {}}, "description": "16-bit WAV"}})
    async def render(preset: Annotated[UploadFile, File(description="a .vital preset")],
                     note: Annotated[int, Form(ge=0, le=127)] = 60,
                     velocity: Annotated[float, Form(ge=0.0, le=1.0)] = 0.8):
        data = await preset.read()
        wav = await service.render_preset(data, preset.filename, note, velocity)
        return Response(wav, media_type="audio/wav")

    @app.post("/v1/tutorial", summary="How to build a .vital preset in Vital, step by step",
              dependencies=bearer)
    async def tutorial(preset: Annotated[UploadFile, File(description="a .vital preset")],
                       note: Annotated[int | None, Form(ge=0, le=127)] = None,
                       description: Annotated[str, Form(max_length=500)] = ""):
        data = await preset.read()
        t = await service.tutorial(data, preset.filename, note, description)
        return {"text": t.text, "source": t.source, "note": t.note}

    app.add_middleware(GuardMiddleware, service=service)
    if cfg.cors_origins:  # outermost: preflights (which carry no token) are answered here
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cfg.cors_origins),
                           allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    if cfg.demo:
        import gradio as gr

        from serve.demo import build_demo

        app = gr.mount_gradio_app(app, build_demo(service), path="/demo",
                                  max_file_size=cfg.max_upload_bytes, show_error=True)
    return app
