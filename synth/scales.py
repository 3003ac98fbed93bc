"""How a continuous control's raw value maps to the unit interval the model learns.

Vital already stores most controls on a perceptual axis, so the raw value is
the right one to be linear in:

- filter cutoffs and other pitches are stored in semitones (log frequency);
- "exponential" controls (LFO and effect rates) store log2 of the shown value;
- "quartic" controls (envelope times) store the fourth root of seconds, which
  spreads 0.5 ms .. 32 s evenly enough to hear;
- "quadratic" controls (levels) store the square root of the amplitude.

Two families are not, and get their own warp:

- ``decibel``: the master ``volume`` ("square_root" scale) is shown as
  ``sqrt(raw) - 80`` dB; we are linear in those decibels.
- ``log_time``: a few times are stored linearly in seconds (LFO delay and
  fade-in, reverb pre-delay); a step from 0 to 10 ms is heard, 3.99 to 4 s is
  not, so we use ``log1p(t / knee) / log1p(max / knee)``.

Round trip: ``to_raw(to_unit(x)) == x`` exactly for every canonical raw value
in range. Raw values are canonically float32, as Vital holds them, with
magnitudes under ``FLUSH`` of the control's range flushed to zero: float64 unit
values cannot tell -1e-45 from 0 on a -80..0 dB axis, and neither can an ear.
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np

from synth.controls import Control

FLUSH = 1e-7  # relative to a control's range; see the module docstring
LOG_TIME_KNEE_S = 0.01  # below ~10 ms a time step stops being heard as "longer"


class Warp(StrEnum):
    LINEAR = "linear"
    DECIBEL = "decibel"
    LOG_TIME = "log_time"


def warp_for(control: Control) -> Warp:
    """The warp our mapping uses for a continuous control (see module docstring)."""
    if control.scale == "square_root" and control.min >= 0.0:
        return Warp.DECIBEL
    if control.scale == "linear" and control.units == "secs" and control.min == 0.0:
        return Warp.LOG_TIME
    return Warp.LINEAR




VOLUME_OFFSET_DB = 80.0  # Vital shows the master volume's raw value as sqrt(raw) - 80 dB


def volume_db(raw: float) -> float:
    """The master ``volume``'s raw value as the decibels Vital shows."""
    return float(np.sqrt(max(raw, 0.0))) - VOLUME_OFFSET_DB


def volume_raw(db: float) -> float:
    """The master ``volume``'s raw value for ``db`` decibels (-80 dB and up)."""
    return (max(db, -VOLUME_OFFSET_DB) + VOLUME_OFFSET_DB) ** 2


class UnitMap:
    """Vectorised raw <-> unit mapping for a fixed list of continuous parameters.

    Args:
        lo, hi: raw ranges, shape ``(P,)``.
        warps: one :class:`Warp` per parameter.
    """

    def __init__(self, lo: np.ndarray, hi: np.ndarray, warps: list[Warp]):
        self.lo = np.asarray(lo, dtype=np.float64)
        self.hi = np.asarray(hi, dtype=np.float64)
        if np.any(self.hi <= self.lo):
            raise ValueError("every continuous parameter needs max > min")
        codes = np.array([w.value for w in warps])
        self._db = codes == Warp.DECIBEL.value
        self._log = codes == Warp.LOG_TIME.value
        self._lin = ~(self._db | self._log)
        self._sqrt_lo = np.sqrt(np.maximum(self.lo, 0.0))
        self._sqrt_hi = np.sqrt(np.maximum(self.hi, 0.0))
        self._log_span = np.log1p(np.maximum(self.hi, 0.0) / LOG_TIME_KNEE_S)

    def canonical(self, raw: np.ndarray) -> np.ndarray:
        """Raw values rounded to float32 and flushed to zero near it, held in float64."""
        raw = np.asarray(raw, dtype=np.float64).astype(np.float32).astype(np.float64)
        return np.where(np.abs(raw) < FLUSH * (self.hi - self.lo), 0.0, raw)

    def to_unit(self, raw: np.ndarray) -> np.ndarray:
        """Raw values ``(..., P)`` -> unit values ``(..., P)`` in float64."""
        raw = np.asarray(raw, dtype=np.float64)
        out = (raw - self.lo) / (self.hi - self.lo)
        with np.errstate(invalid="ignore", divide="ignore"):
            db = (np.sqrt(np.maximum(raw, 0.0)) - self._sqrt_lo) / (self._sqrt_hi - self._sqrt_lo)
            log = np.log1p(np.maximum(raw, 0.0) / LOG_TIME_KNEE_S) / self._log_span
        out = np.where(self._db, db, out)
        return np.where(self._log, log, out)

    def to_raw(self, unit: np.ndarray) -> np.ndarray:
        """Unit values ``(..., P)`` -> canonical (float32-exact) raw values in float64."""
        unit = np.asarray(unit, dtype=np.float64)
        out = self.lo + unit * (self.hi - self.lo)
        db = (self._sqrt_lo + unit * (self._sqrt_hi - self._sqrt_lo)) ** 2
        log = LOG_TIME_KNEE_S * np.expm1(unit * self._log_span)
        out = np.where(self._db, db, out)
        out = np.where(self._log, log, out)
        # Rounding can step a hair outside the range; the range itself is exact.
        return self.canonical(np.clip(out, self.lo, self.hi))
