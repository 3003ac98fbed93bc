"""Small helpers for typed, validated configuration dataclasses."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value that is unknown or out of its allowed range."""


def from_dict(cls: type[T], data: dict[str, Any], what: str | None = None) -> T:
    """Build dataclass ``cls`` from ``data``, refusing unknown keys by name."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{what or cls.__name__}: unknown key(s) {unknown}; "
                          f"allowed: {sorted(names)}")
    return cls(**data)


def require(ok: bool, what: str, value: Any, allowed: str) -> None:
    """Raise :class:`ConfigError` naming the field, its value and what is allowed."""
    if not ok:
        raise ConfigError(f"{what} = {value!r} is not allowed; expected {allowed}")


def load_config_file(path: Path) -> dict:
    """A config file of dataclass keys, nested sections as objects: TOML by its ``.toml``
    suffix, JSON otherwise. Unreadable, malformed or non-object files are one ConfigError."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror})") from None
    try:
        doc = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not valid {path.suffix[1:].upper() or 'JSON'} ({exc})") \
            from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected an object of config keys")
    return doc
