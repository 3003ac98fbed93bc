"""The matching network: a small convolutional encoder and one head per parameter kind.

    log-mel (B,1,M,T) -> 4 x [conv3x3 -> GroupNorm -> GELU -> pool] -> pool to (16, 2)
      -> concat level stats -> MLP -> continuous (C, sigmoid) | categorical (sum K_i logits)
                                      | MIDI note (128 logits)

Only the first two blocks pool over frequency (the rest over time alone), and the
last pooling keeps 16 frequency bands: pitch and timbre live in fine frequency
detail, the envelope needs only a coarse time axis.

GroupNorm rather than BatchNorm: statistics per example make K micro-batches of
size B exactly equivalent to one batch of K*B (gradient accumulation). Per-example
normalisation hides the level, so the clip's mean and max log-mel are appended
to the embedding.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from model.features import FeatureConfig, LogMel
from synth.config import require
from synth.space import ParameterSpace


@dataclass(frozen=True)
class ModelConfig:
    channels: tuple[int, ...] = (16, 32, 64, 128)
    hidden: int = 256
    dropout: float = 0.1

    def __post_init__(self):
        object.__setattr__(self, "channels", tuple(self.channels))
        require(1 <= len(self.channels) <= 6 and all(c % 8 == 0 and c > 0 for c in self.channels),
                "channels", self.channels, "1-6 positive multiples of 8")
        require(self.hidden >= 8, "hidden", self.hidden, ">= 8")
        require(0.0 <= self.dropout < 1.0, "dropout", self.dropout, "0 <= p < 1")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Outputs:
    """Network outputs. ``continuous`` in [0, 1] ``(B, C)``; ``categorical`` logits
    ``(B, sum K_i)`` laid out by ``SpaceLayout.offsets``; ``note`` logits ``(B, 128)``."""

    continuous: torch.Tensor
    categorical: torch.Tensor
    note: torch.Tensor


class SpaceLayout:
    """Index bookkeeping between a ParameterSpace and the network's flat outputs."""

    def __init__(self, space: ParameterSpace):
        self.num_continuous = len(space.continuous)
        self.classes = [p.num_classes for p in space.categorical]
        self.offsets = [0]
        for k in self.classes:
            self.offsets.append(self.offsets[-1] + k)
        cat_index = {p.name: i for i, p in enumerate(space.categorical)}
        # index of the categorical "<module>_on" switch of each continuous parameter, or -1
        self.switch = torch.tensor([cat_index.get(p.switch, -1) if p.switch else -1
                                    for p in space.continuous], dtype=torch.long)
        self.modules = [p.module for p in space.continuous]

    def logits(self, categorical: torch.Tensor, i: int) -> torch.Tensor:
        return categorical[:, self.offsets[i]: self.offsets[i + 1]]


def _block(cin: int, cout: int, pool_freq: bool) -> nn.Sequential:
    pool = nn.MaxPool2d(2) if pool_freq else nn.MaxPool2d((1, 2))
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.GELU(),
                         pool)


class MatchNet(nn.Module):
    def __init__(self, space: ParameterSpace, features: FeatureConfig, config: ModelConfig):
        super().__init__()
        self.layout = SpaceLayout(space)
        self.frontend = LogMel(features)
        chans = (1, *config.channels)
        self.encoder = nn.Sequential(*[_block(a, b, i < 2) for i, (a, b) in enumerate(
            zip(chans, chans[1:], strict=False))])
        self.pool = nn.AdaptiveAvgPool2d((16, 2))
        embed = config.channels[-1] * 32 + 2
        self.trunk = nn.Sequential(nn.Linear(embed, config.hidden), nn.GELU(),
                                   nn.Dropout(config.dropout))
        self.continuous = nn.Linear(config.hidden, self.layout.num_continuous)
        self.categorical = nn.Linear(config.hidden, self.layout.offsets[-1])
        self.note = nn.Linear(config.hidden, 128)

    def embed(self, audio: torch.Tensor) -> torch.Tensor:
        """``audio``: mono ``(B, N)`` at the feature sample rate -> ``(B, E)`` embedding."""
        x = self.frontend(audio)
        level = torch.stack([x.mean(dim=(1, 2, 3)), x.amax(dim=(1, 2, 3))], dim=1)
        return torch.cat([self.pool(self.encoder(x)).flatten(1), level], dim=1)

    def heads(self, embedding: torch.Tensor) -> Outputs:
        """The MLP and the output heads (the only part with dropout)."""
        return self._outputs(self.trunk(embedding))

    def _outputs(self, h: torch.Tensor) -> Outputs:
        return Outputs(torch.sigmoid(self.continuous(h)), self.categorical(h), self.note(h))

    def heads_ensemble(self, embedding: torch.Tensor, passes: int, seed: int = 0) -> Outputs:
        """The heads under ``passes`` fixed dropout masks: outputs ``(B * passes, ...)``,
        clip-major. The masks come from ``seed`` alone and are the same for every clip, so
        the ensemble (Monte Carlo dropout made repeatable) gives a clip the same answer in
        any batch."""
        *body, dropout = self.trunk
        z = nn.Sequential(*body)(embedding)
        g = torch.Generator().manual_seed(seed)
        keep = (torch.rand(passes, z.shape[1], generator=g) >= dropout.p).to(z)
        return self._outputs((z[:, None, :] * keep / (1.0 - dropout.p)).reshape(-1, z.shape[1]))

    def forward(self, audio: torch.Tensor) -> Outputs:
        """``audio``: mono ``(B, N)`` at the feature sample rate."""
        return self.heads(self.embed(audio))
