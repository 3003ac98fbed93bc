"""Banks: the tables a ``studio`` patch chooses from by class index, where Vital keeps a
shape rather than a number (an oscillator's wavetable, an LFO's shape).

A bank is a manifest (``synth/data/<name>.json``) listing its entries in class order:
*built-in* entries, made in code (for example Vital's init saw, or a procedural family
drawn from a few numbers), and *harvested* ones, the distinct tables of the real presets in
``../shared/real-presets`` (CC BY 4.0, credited in the manifest). Harvested tables are
referenced, not copied: the manifest names each one's preset, slot and sound sha256, and the
table is read from the presets folder the first time one is needed
(``SYNTHMATCH_PRESETS``, default ``../shared/real-presets`` beside the repository), or given
by a driver that read it (:meth:`Bank.resolved` / :meth:`Bank.with_tables`).

Import takes a preset's own table when the bank has it (the same :func:`sound_digest`),
else the nearest by the bank's fingerprint distance; ``left_out`` names the tables only one
preset contributed, for leave-one-out measurements. Where the presets folder is absent (a
user who has not fetched the presets), each harvested table that cannot be read has a
*stand-in*, its nearest built-in table, named in the manifest (:func:`stand_ins`) so that
no table need be read to know it.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PRESETS_ENV = "SYNTHMATCH_PRESETS"
DEFAULT_PRESETS = Path(__file__).resolve().parents[2] / "shared" / "real-presets"
VERSION = 1


class BankError(RuntimeError):
    """A bank or one of its tables cannot be used; the message names which and why."""


def sound_digest(table: dict, keys: Iterable[str]) -> str:
    """sha256 of the ``keys`` of ``table`` that make it sound as it does (not its name)."""
    blob = json.dumps({k: table.get(k) for k in keys}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True)
class Entry:
    """One bank table. ``sources``: for a harvested table, every preset slot that uses it
    (``{"preset", "sha256" (file), "digest" (preset JSON), "slot" (1-based)}``);
    ``recipe``: for a procedural one, the numbers it is made from."""

    index: int
    name: str
    kind: str  # "basic", "procedural" or "harvested"
    digest: str
    sources: tuple[dict, ...] = ()
    recipe: tuple[dict, ...] = ()

    @property
    def label(self) -> str:
        if self.kind == "harvested":
            return f"{self.name} ({self.sources[0]['preset']})"
        return self.name


class Bank:
    """The tables of one bank by class index.

    Subclasses say where in a preset the tables live (:attr:`settings_key`), what makes a
    table's sound (:attr:`sound_keys`), how built-in entries are made (:meth:`builtin`) and
    how near two tables sound (:meth:`fingerprint`, compared by mean absolute difference).

    Args:
        manifest: the parsed manifest.
        presets: where the harvested tables' presets are; ``None`` for ``$SYNTHMATCH_PRESETS``
            or ``../shared/real-presets`` beside the repository.
    """

    format: str = ""
    settings_key: str = ""
    sound_keys: tuple[str, ...] = ()
    what: str = "table"  # how a message names one table

    def __init__(self, manifest: dict, presets: str | os.PathLike | None = None):
        if manifest.get("format") != self.format or manifest.get("version") != VERSION:
            raise BankError(f"not a version-{VERSION} {self.format} manifest: "
                            f"{manifest.get('format')!r} version {manifest.get('version')!r}")
        self.manifest = manifest
        self.credit: str = manifest.get("credit", "")
        self.entries: tuple[Entry, ...] = tuple(
            Entry(i, e["name"], e["kind"], e["digest"], tuple(e.get("sources", ())),
                  tuple(e.get("recipe", ())))
            for i, e in enumerate(manifest["entries"]))
        self.presets = Path(presets or os.environ.get(PRESETS_ENV) or DEFAULT_PRESETS)
        self._tables = {e.index: self.builtin(e) for e in self.entries if e.kind != "harvested"}
        self._by_digest = {e.digest: e.index for e in self.entries}

    # -- what a subclass says -------------------------------------------------------------
    def builtin(self, entry: Entry) -> dict:
        raise NotImplementedError

    def fingerprint(self, table: dict) -> np.ndarray:
        raise NotImplementedError

    # -- the tables -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.entries)

    def digest(self, table: dict) -> str:
        return sound_digest(table, self.sound_keys)

    @functools.cached_property
    def id(self) -> str:
        """Identifies the bank's contents: a hash of its entries."""
        blob = json.dumps(self.manifest["entries"], sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def labels(self) -> list[str]:
        """The tables by class index, named as a user would know them."""
        return [e.label for e in self.entries]

    def index(self, name: str) -> int:
        """The class index of the built-in table ``name``."""
        for e in self.entries:
            if e.name == name and e.kind != "harvested":
                return e.index
        raise BankError(f"no built-in {self.what} named {name!r}")

    def table(self, index: int) -> dict:
        """A copy of table ``index``'s JSON, ready for ``settings[settings_key]``."""
        if not 0 <= index < len(self.entries):
            raise BankError(f"{self.what} class {index} is outside 0..{len(self.entries) - 1}")
        if index not in self._tables:
            self._harvest()
        return copy.deepcopy(self._tables[index])

    def _harvest(self) -> None:
        """Read every harvested table from the presets folder and check its digest."""
        for e in self.entries:
            if e.kind != "harvested" or e.index in self._tables:
                continue
            src = e.sources[0]
            path = self.presets / src["preset"]
            if not path.is_file():
                raise BankError(
                    f"{self.what} {e.index} ({e.label}) is read from {path}, which does not "
                    f"exist; set {PRESETS_ENV} to the folder of the real presets "
                    "(../shared/real-presets)")
            table = json.loads(path.read_bytes())["settings"][self.settings_key][src["slot"] - 1]
            if self.digest(table) != e.digest:
                raise BankError(f"{self.what} {e.index} ({e.label}) in {path} is not the one "
                                "the bank was built from (its digest differs)")
            self._tables[e.index] = table

    def resolved(self) -> dict[int, dict]:
        """The harvested tables by index, read now: to ship to workers that cannot see the
        presets folder, with :meth:`with_tables`."""
        self._harvest()
        return {e.index: copy.deepcopy(self._tables[e.index])
                for e in self.entries if e.kind == "harvested"}

    def with_tables(self, tables: dict) -> Bank:
        """This bank with harvested tables given rather than read (see :meth:`resolved`)."""
        bank = type(self)(self.manifest, self.presets)
        for i, t in tables.items():
            i = int(i)
            if not 0 <= i < len(bank) or bank.digest(t) != bank.entries[i].digest:
                raise BankError(f"{self.what} {i} given does not match the bank's digest")
            bank._tables[i] = t
        return bank

    def unreadable(self) -> frozenset[int]:
        """The harvested tables that cannot be read here: neither given
        (:meth:`with_tables`) nor read yet, and their preset is not in the presets folder."""
        return frozenset(e.index for e in self.entries if e.kind == "harvested"
                         and e.index not in self._tables
                         and not (self.presets / e.sources[0]["preset"]).is_file())

    def stand_in(self, index: int) -> int:
        """The built-in table that plays for harvested table ``index`` where it cannot be
        read (the manifest's ``stand_ins``, :func:`stand_ins`)."""
        known = self.manifest.get("stand_ins")
        if known is None:
            raise BankError(f"this {self.format} manifest names no built-in stand-ins for its "
                            "harvested tables; write it again with `python -m synth bank "
                            "--presets ../shared/real-presets`")
        return int(known[str(index)])

    # -- choosing -----------------------------------------------------------------------
    def find(self, table: dict) -> int | None:
        """The class index of ``table`` when the bank has it (same sound), else None."""
        return self._by_digest.get(self.digest(table))

    def left_out(self, preset_digest: str) -> frozenset[int]:
        """Harvested tables that only the preset with ``preset_digest`` uses: a
        leave-one-out import of that preset must not choose them."""
        return frozenset(e.index for e in self.entries if e.kind == "harvested"
                         and {s["digest"] for s in e.sources} == {preset_digest})

    def nearest(self, table: dict, exclude: frozenset[int] = frozenset()) -> int:
        """The bank table nearest ``table``: its own when the bank has it (and it is not
        excluded), else the least mean absolute fingerprint difference."""
        own = self.find(table)
        if own is not None and own not in exclude:
            return own
        target = self.fingerprint(table)
        best, best_d = -1, np.inf
        for e in self.entries:
            if e.index in exclude:
                continue
            d = float(np.mean(np.abs(target - self.fingerprint(self.table(e.index)))))
            if d < best_d:
                best, best_d = e.index, d
        return best


def harvest_entries(bank: type[Bank], builtin: list[dict], paths: list[Path],
                    slots: int) -> list[dict]:
    """Manifest entries: ``builtin`` and then every distinct table in the first ``slots``
    of ``settings[bank.settings_key]`` of the presets at ``paths`` that is not already
    there, with every preset slot that uses it."""
    from synth.preset import load_preset  # synth.preset imports the banks

    entries = list(builtin)
    known = {e["digest"]: e for e in entries}
    for path in sorted(paths):
        preset = load_preset(path)
        file_sha = hashlib.sha256(path.read_bytes()).hexdigest()
        for slot, table in enumerate(preset.settings.get(bank.settings_key, [])[:slots], 1):
            digest = sound_digest(table, bank.sound_keys)
            if digest not in known:
                known[digest] = {"name": table.get("name") or f"{path.stem} {slot}",
                                 "kind": "harvested", "digest": digest, "sources": []}
                entries.append(known[digest])
            if known[digest]["kind"] == "harvested":
                known[digest]["sources"].append({"preset": path.name, "sha256": file_sha,
                                                 "digest": preset.digest, "slot": slot})
    return entries


def stand_ins(bank: Bank) -> dict[str, int]:
    """Each harvested table's nearest built-in table (the bank's fingerprint distance),
    by index: what plays for it where the presets folder is absent. Kept in the manifest
    beside ``entries``, not in them (their hash is the bank's id): it follows from them."""
    harvested = frozenset(e.index for e in bank.entries if e.kind == "harvested")
    return {str(i): bank.nearest(bank.table(i), exclude=harvested) for i in sorted(harvested)}


def load_manifest(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise BankError(f"{path} is missing; write it with `python -m synth bank "
                        "--presets ../shared/real-presets`") from None
