"""One error shape for every failure the API answers.

    {"error": {"status": 422, "code": "invalid_audio", "message": "clip.wav: is silent ..."}}
"""

from __future__ import annotations


class ApiError(Exception):
    """A request the service refuses or could not finish; ``status`` is the HTTP code."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}

    def body(self) -> dict:
        return error_body(self.status, self.code, self.message)


def error_body(status: int, code: str, message: str) -> dict:
    return {"error": {"status": status, "code": code, "message": message}}


# HTTP status -> stable code, for errors raised by the framework (404, 405, ...)
CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
         405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type",
         422: "invalid_request", 429: "too_many_requests", 500: "internal_error",
         503: "unavailable", 504: "timeout"}
