"""The ingress's front door: ``503 Service Unavailable`` with ``Retry-After`` until the app
is ready, instead of requests that hang while the deployments start.

Serve routes requests to the ingress as soon as its replica is up. Loading the model,
building the API and the Gradio demo, and waiting for the ``Model``, ``Render`` and
``Search`` replicas take tens of seconds, so the ingress replica comes up with this
small ASGI app in front, builds the real one in the background, and hands every
request to it once it is ready. Until then each request (``/healthz`` too: the app is
not healthy yet) is answered at once with the API's error body and a ``Retry-After``.
A start that fails is answered ``500`` with the reason, and logged.

The same goes for a redeploy that changes the ingress: Serve stops its one replica before
it starts the new one (the demo's queue lives in the process, so there is one), and the new
one answers 503 while it builds. :func:`wait_until_ready` is the client's side: poll
``/healthz`` through the 503s.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("serve")

RETRY_AFTER_S = 5


class Gate:
    """ASGI app: answers 503 until ``build()`` has made the real app, then forwards to it.

    ``build`` runs once, as a background task started by the ASGI lifespan startup that
    Serve sends when the replica starts; the real app's own lifespan (Gradio's start-up)
    is run when it is built. Exception handlers that Serve adds to the ingress app are
    kept and added to the real app.
    """

    def __init__(self, build: Callable[[], Awaitable]):
        self._build = build
        self._app = None
        self._lifespan = None
        self._failure: str | None = None
        self._task: asyncio.Task | None = None
        self._handlers: list[tuple] = []

    @property
    def ready(self) -> bool:
        return self._app is not None

    def add_exception_handler(self, exc_class, handler) -> None:
        """Serve maps its own overload errors to 503 this way; kept for the real app."""
        self._handlers.append((exc_class, handler))

    async def _start(self) -> None:
        from uvicorn.config import Config
        from uvicorn.lifespan.on import LifespanOn

        try:
            app = await self._build()
            for exc_class, handler in self._handlers:
                app.add_exception_handler(exc_class, handler)
            # the real app's start-up (Gradio's queue), as Serve runs it for an ingress app
            lifespan = LifespanOn(Config(app, lifespan="on", log_config=None,
                                         access_log=False))
            await lifespan.startup()
            if lifespan.should_exit:
                raise RuntimeError("the app's start-up failed (see the log above)")
        except Exception as exc:  # the replica stays up to say why, rather than hang
            self._failure = f"{exc.__class__.__name__}: {exc}"
            log.error("synthmatch failed to start: %s", self._failure, exc_info=exc)
            return
        self._lifespan, self._app = lifespan, app
        log.info("synthmatch is ready")

    async def _lifespan_events(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._task = asyncio.ensure_future(self._start())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._task is not None and not self._task.done():
                    self._task.cancel()
                if self._lifespan is not None:
                    await self._lifespan.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            return await self._lifespan_events(receive, send)
        if self._app is not None:
            return await self._app(scope, receive, send)
        if scope["type"] != "http":  # a websocket before the app is ready: refuse it
            await send({"type": "websocket.close", "code": 1013})
            return
        from serve.errors import error_body

        if self._failure is None:
            status, code, headers = 503, "starting", [(b"retry-after",
                                                       str(RETRY_AFTER_S).encode())]
            message = ("synthmatch is starting (loading the model and the renderers); "
                       f"retry in {RETRY_AFTER_S} s")
        else:
            status, code, headers = 500, "startup_failed", []
            message = f"synthmatch failed to start ({self._failure}); see the server log"
        body = json.dumps(error_body(status, code, message)).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()), *headers]})
        await send({"type": "http.response.body", "body": body})


def wait_until_ready(base: str, timeout_s: float = 600.0, stop=None) -> bool:
    """Poll ``base``/healthz until it answers 200 (True); False when it answers that the
    start failed, on ``stop`` (a ``threading.Event``) or after ``timeout_s``."""
    import time
    import urllib.error
    import urllib.request

    host = base.replace("://0.0.0.0", "://127.0.0.1")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not (stop is not None and stop.is_set()):
        try:
            with urllib.request.urlopen(f"{host}/healthz", timeout=5):
                return True
        except urllib.error.HTTPError as exc:
            if exc.code != 503:
                return False
        except OSError:
            pass  # not listening yet
        time.sleep(0.5)
    return False
