"""Training through the synth: a policy-gradient objective on the sound itself.

The parameter losses (``model.loss``) pull each parameter towards its conditional
median. Many patches of a space sound alike, so that median is a blend of them, and a
blend can sound far from all of them. This objective reads the network's heads as a
distribution over whole patches instead, and rewards the patches by how they sound:

1. draw ``samples`` patches per clip: each categorical parameter from its softmax,
   each continuous one from a normal of standard deviation ``sigma`` around its
   prediction (clamped to [0, 1] for the render);
2. render each draw with vita at the clip's note, in a pool of synths in threads
   (vita releases the GIL);
3. reward = minus the mean absolute log-mel difference between the draw's render
   and the clip (the features the network reads);
4. advantage = the reward minus the mean of its siblings' (the leave-one-out
   baseline, "RLOO": Kool, van Hoof and Welling, 2019), standardised over the batch;
   the loss ``-(advantage * log-probability of the draw)`` raises the probability of
   the draws that sound closer than their siblings.

Nothing is rendered at inference: the matcher still decodes the heads alone. The
gradient of the log-probability is summed over every parameter drawn and divided by
the square root of their number, so its scale does not grow with the space.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from model.features import LogMel
from model.loss import continuous_mask
from model.network import Outputs, SpaceLayout
from synth.config import require
from synth.render import RenderConfig, Renderer, RenderPool
from synth.space import ParameterSpace, Patch


@dataclass(frozen=True)
class SoundConfig:
    weight: float = 0.0  # of the sound loss beside the parameter losses; 0: off
    samples: int = 4  # patches drawn per clip (the leave-one-out baseline needs 2 or more)
    sigma: float = 0.08  # standard deviation of the continuous draws, in unit values
    render_threads: int = 1  # synths rendering in parallel on each worker

    def __post_init__(self):
        require(self.weight >= 0.0, "sound.weight", self.weight, ">= 0")
        require(self.samples >= 2, "sound.samples", self.samples, ">= 2")
        require(0.0 < self.sigma <= 0.5, "sound.sigma", self.sigma, "0 < sigma <= 0.5")
        require(1 <= self.render_threads <= 64, "sound.render_threads", self.render_threads,
                "1..64")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Draws:
    """``samples`` patches per clip: unit values before clamping ``(S, B, C)``, classes
    ``(S, B, K)``, and each draw's log-probability under the heads ``(B, S)`` (with grad)."""

    continuous: torch.Tensor
    categorical: torch.Tensor
    log_prob: torch.Tensor


class SoundObjective:
    """Renders draws from the heads and returns the policy-gradient loss on their sound."""

    def __init__(self, space: ParameterSpace, layout: SpaceLayout, frontend: LogMel,
                 render_config: RenderConfig, config: SoundConfig, seed: int = 0):
        if frontend.config.sample_rate != render_config.sample_rate:
            raise ValueError(f"features at {frontend.config.sample_rate} Hz, renders at "
                             f"{render_config.sample_rate} Hz")
        self.layout, self.frontend, self.config = layout, frontend, config
        self.generator = torch.Generator().manual_seed(seed)
        self.pool = RenderPool(space, render_config, config.render_threads)

    def draw(self, out: Outputs) -> Draws:
        s, sigma = self.config.samples, self.config.sigma
        mu = out.continuous.float()
        b, g = mu.shape[0], self.generator
        classes, log_prob = [], torch.zeros(b, s, device=mu.device)
        for i in range(len(self.layout.classes)):
            logp = torch.log_softmax(self.layout.logits(out.categorical, i).float(), 1)
            draw = torch.multinomial(logp.detach().exp().cpu(), s, replacement=True,
                                     generator=g).to(mu.device)  # (B, S)
            classes.append(draw.T)
            log_prob = log_prob + logp.gather(1, draw)
        categorical = torch.stack(classes, 2)  # (S, B, K)
        noise = torch.randn((s, *mu.shape), generator=g).to(mu.device) * sigma
        continuous = mu.detach()[None] + noise
        for j in range(s):  # a switched-off module's knobs make no sound: not drawn
            mask = continuous_mask(self.layout, categorical[j])
            log_prob[:, j] -= (((continuous[j] - mu) ** 2) * mask).sum(1) / (2 * sigma ** 2)
        return Draws(continuous, categorical, log_prob)

    def rewards(self, draws: Draws, clips: torch.Tensor, notes: torch.Tensor) -> torch.Tensor:
        """``(B, S)``: minus the mean absolute log-mel difference of each draw to its clip."""
        s, b = draws.categorical.shape[:2]
        unit = draws.continuous.clamp(0.0, 1.0).double().cpu().numpy()
        classes = draws.categorical.cpu().numpy()
        note = notes.cpu().numpy()
        jobs = [(Patch(unit[j, i], classes[j, i]), int(note[i]))
                for j in range(s) for i in range(b)]
        renders = torch.from_numpy(np.stack(self.pool.map(_render, jobs))).to(clips.device)
        fit = self.frontend.fit_length
        with torch.no_grad():  # the clips and the draws' renders through one frontend call
            feats = self.frontend(torch.cat([fit(clips.float()), fit(renders)])).flatten(1)
        diff = (feats[b:].view(s, b, -1) - feats[:b][None]).abs().mean(2)
        return -diff.T

    def __call__(self, out: Outputs, clips: torch.Tensor,
                 notes: torch.Tensor) -> dict[str, torch.Tensor]:
        """``clips``: the audio the network heard, mono ``(B, N)``; ``notes``: ``(B,)``."""
        draws = self.draw(out)
        reward = self.rewards(draws, clips, notes)
        return {"loss/sound": self.loss(draws, reward), "sound/reward": reward.mean()}

    def loss(self, draws: Draws, reward: torch.Tensor) -> torch.Tensor:
        """The policy-gradient surrogate for ``(B, S)`` rewards of ``draws``."""
        s = self.config.samples
        advantage = reward - (reward.sum(1, keepdim=True) - reward) / (s - 1)
        advantage = advantage / (advantage.std() + 1e-6)
        dims = self.layout.num_continuous + len(self.layout.classes)
        return -(advantage * draws.log_prob).mean() / dims ** 0.5

    def close(self) -> None:
        self.pool.close()


def _render(renderer: Renderer, job: tuple[Patch, int]) -> np.ndarray:
    patch, note = job
    return renderer.render(patch, note).audio
