"""The level a matched preset plays at, decided on purpose.

The clip is normalised to the training renders' level (``InputConfig.target_rms_dbfs``,
-35 dBFS) before the network reads it, so the network's answer plays at about that level,
whatever the clip's own: real Vital presets play about 12 dB louder (median), and a user
who opens the matched preset beside the original hears it much quieter. So the answer's
master volume is set after the match:

- to the clip's own level when that lies where real presets play (their 10th to 90th
  percentile at note 60, widened by ``MARGIN_DB`` each way): the clip is most likely a
  render of a preset, or a recording at a preset's level;
- to the real presets' median level otherwise (a clip recorded much quieter or louder says
  nothing about the level a preset should have).

Levels are the RMS of the audible part (``active_rms_dbfs``), the measure the clip's
normalisation uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synth.scales import volume_db, volume_raw
from synth.space import ParameterSpace, Patch

# RMS of the 30 real presets (../shared/real-presets) at note 60, velocity 0.8, 1.5 s note,
# 2 s render: 10th percentile, median, 90th percentile (BENCHMARKS.md, "answer level").
PRESET_RMS_DBFS = (-27.6, -23.2, -17.2)
MARGIN_DB = 6.0


def active_rms_dbfs(audio: np.ndarray) -> float:
    """RMS level in dBFS of ``audio`` up to its last non-zero sample (padding excluded)."""
    audio = np.asarray(audio)
    active = audio[: max(1, int(np.flatnonzero(audio).max(initial=0)) + 1)]
    rms = float(np.sqrt(np.mean(np.square(active, dtype=np.float64))))
    return 20.0 * np.log10(max(rms, 1e-12))


@dataclass(frozen=True)
class Level:
    """The level chosen for an answer. ``source``: ``"clip"`` (the clip's own level) or
    ``"typical"`` (real presets' median); ``clip_dbfs``: the clip's level as given;
    ``plays_dbfs``: the level the answer reaches (the target, unless its master volume
    ends first), once it is known."""

    target_dbfs: float
    source: str
    clip_dbfs: float
    plays_dbfs: float | None = None

    def to_dict(self) -> dict:
        return {"target_dbfs": round(self.target_dbfs, 2), "source": self.source,
                "clip_dbfs": round(self.clip_dbfs, 2),
                "plays_dbfs": None if self.plays_dbfs is None else round(self.plays_dbfs, 2)}


def choose_level(clip_dbfs: float) -> Level:
    """The level an answer to a clip at ``clip_dbfs`` (RMS, as given) plays at."""
    lo, median, hi = PRESET_RMS_DBFS
    if lo - MARGIN_DB <= clip_dbfs <= hi + MARGIN_DB:
        return Level(clip_dbfs, "clip", clip_dbfs)
    return Level(median, "typical", clip_dbfs)


def volume_for_level(space: ParameterSpace, patch: Patch, now_dbfs: float,
                     target_dbfs: float) -> tuple[float | None, float]:
    """The master volume (raw) that moves ``patch``, playing at ``now_dbfs``, to
    ``target_dbfs``, and the gain that gives (dB): less than asked where the volume's range
    ends. Vital's volume is the output gain, so the level moves by the gain exactly.
    ``(None, 0.0)`` for a space without the master volume (the answer plays as it is)."""
    if "volume" not in space.index:
        return None, 0.0
    volume = space.params[space.index["volume"]]
    before = volume_db(space.raw_from_patch(patch)["volume"])
    raw = float(np.clip(volume_raw(before + target_dbfs - now_dbfs), volume.lo, volume.hi))
    return raw, volume_db(raw) - before
