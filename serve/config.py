"""The Serve app's settings: one typed, validated dataclass.

Set them in the deploy config (``user_config`` of the ``Api`` deployment, see
``serve/production.yaml``), as ``serve run serve.app:app key=value`` arguments, or
as ``python -m serve`` options. Secrets never live here: the bearer token is read
from the environment variable named by ``auth_token_env``.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from synth.config import from_dict, require


@dataclass(frozen=True)
class ServeConfig:
    checkpoint: str = ""  # model.pt on every node, or a URI ("": the shipped default model)
    max_upload_mb: float = 20.0  # larger request bodies are refused with 413
    max_clip_seconds: float = 30.0  # longer clips are refused with 422
    request_timeout_s: float = 30.0  # per request, the search budget added on top
    max_budget_seconds: float = 30.0  # the longest search a request may ask for
    auth_token_env: str = "SYNTHMATCH_API_TOKEN"  # when set and non-empty, /v1/* needs it
    cors_origins: tuple[str, ...] = ()  # CORS stays off unless origins are listed
    demo: bool = True  # mount the Gradio demo at /demo
    max_batch_size: int = 8  # the model deployment's request batch (1: no batching)
    batch_wait_ms: float = 5.0  # how long a batch waits to fill

    def __post_init__(self):
        object.__setattr__(self, "cors_origins", tuple(self.cors_origins))
        require(0 < self.max_upload_mb <= 1024, "max_upload_mb", self.max_upload_mb,
                "0 < MB <= 1024")
        require(0 < self.max_clip_seconds <= 600, "max_clip_seconds", self.max_clip_seconds,
                "0 < s <= 600")
        require(0 < self.request_timeout_s <= 3600, "request_timeout_s", self.request_timeout_s,
                "0 < s <= 3600")
        require(0 <= self.max_budget_seconds <= 30, "max_budget_seconds",
                self.max_budget_seconds, "0 <= s <= 30")
        require(self.auth_token_env.isidentifier(), "auth_token_env", self.auth_token_env,
                "an environment variable name")
        require(all(isinstance(o, str) and o for o in self.cors_origins), "cors_origins",
                self.cors_origins, "a list of origins such as https://example.com")
        require(1 <= self.max_batch_size <= 256, "max_batch_size", self.max_batch_size, "1..256")
        require(0 <= self.batch_wait_ms <= 1000, "batch_wait_ms", self.batch_wait_ms,
                "0..1000 ms")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    def auth_token(self) -> str | None:
        return os.environ.get(self.auth_token_env) or None

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["cors_origins"] = list(self.cors_origins)
        return d

    @classmethod
    def from_dict(cls, data: dict | None) -> ServeConfig:
        return from_dict(cls, dict(data or {}), "serve config")
