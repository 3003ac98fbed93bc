"""The training loss: weighted continuous regression, categorical cross-entropy, note.

    loss = w_c * L1(continuous, masked by module switches, per-parameter weights)
           (averaged over all B x C entries)
         + w_k * mean_i CE(categorical_i, label smoothing)
         + w_n * CE(note, label smoothing)

Returned as a dict of namespaced terms (``"loss/continuous"``, ...) and their
weighted sum ``"loss/total"``. Weights and smoothing live in ``LossConfig``
because Ray Tune searches them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from model.network import Outputs, SpaceLayout
from synth.config import require


@dataclass(frozen=True)
class LossConfig:
    continuous: float = 1.0
    categorical: float = 0.1
    note: float = 0.1
    label_smoothing: float = 0.1
    importance: bool = False  # weight continuous terms by the dataset's importance.json

    def __post_init__(self):
        for name in ("continuous", "categorical", "note"):
            value = getattr(self, name)
            require(value >= 0.0, name, value, ">= 0")
        require(self.continuous + self.categorical + self.note > 0, "loss weights",
                (self.continuous, self.categorical, self.note), "not all zero")
        require(0.0 <= self.label_smoothing < 1.0, "label_smoothing", self.label_smoothing,
                "0 <= s < 1")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Targets:
    """A batch's targets: ``continuous`` (B, C) float in [0, 1]; ``categorical`` (B, K) long;
    ``note`` (B,) long."""

    continuous: torch.Tensor
    categorical: torch.Tensor
    note: torch.Tensor


def continuous_mask(layout: SpaceLayout, categorical: torch.Tensor) -> torch.Tensor:
    """(B, C) float: 1 where the parameter's module is on (or has no switch), else 0.

    A switched-off module's knobs make no sound, so their error teaches nothing.
    """
    switch = layout.switch.to(categorical.device)
    has = switch >= 0
    state = categorical[:, switch.clamp(min=0)] == 1  # class 1 of "<module>_on" is "On"
    return torch.where(has, state, torch.ones_like(state)).float()


class MatchLoss:
    def __init__(self, layout: SpaceLayout, config: LossConfig,
                 importance: torch.Tensor | None = None):
        self.layout, self.config = layout, config
        if importance is not None and importance.shape != (layout.num_continuous,):
            raise ValueError(f"importance has shape {tuple(importance.shape)}, expected "
                             f"({layout.num_continuous},)")
        self.importance = importance

    def __call__(self, out: Outputs, target: Targets) -> dict[str, torch.Tensor]:
        cfg = self.config
        mask = continuous_mask(self.layout, target.categorical)
        err = (out.continuous.float() - target.continuous).abs() * mask
        if self.importance is not None:
            err = err * self.importance.to(err.device)
        # A mean over every entry, masked ones counting as zero error: the same
        # normaliser in every micro-batch keeps gradient accumulation exact.
        cont = err.mean()
        cat = torch.stack([
            F.cross_entropy(self.layout.logits(out.categorical, i).float(),
                            target.categorical[:, i], label_smoothing=cfg.label_smoothing)
            for i in range(len(self.layout.classes))]).mean()
        note = F.cross_entropy(out.note.float(), target.note, label_smoothing=cfg.label_smoothing)
        total = cfg.continuous * cont + cfg.categorical * cat + cfg.note * note
        return {"loss/total": total, "loss/continuous": cont, "loss/categorical": cat,
                "loss/note": note}
