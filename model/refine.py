"""Gradient-free refinement of a predicted patch against the clip.

A separable evolution strategy (diagonal CMA-ES in spirit: a mean and one step
size per parameter) moves the continuous parameters in unit space; discrete
parameters and the note stay as predicted. Candidates are rendered in parallel
on a pool of threads, one ``Renderer`` (one ``vita.Synth``) each, and scored by
auraloss's multi-resolution STFT distance to the clip. The start point is
scored first and the best point ever seen is returned, so the result is never
worse than the prediction.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from model.metrics import audio_tensor
from synth.render import RenderConfig, Renderer, RenderPool
from synth.space import ParameterSpace, Patch


@dataclass
class RefineResult:
    patch: Patch
    start_distance: float
    best_distance: float
    evaluations: int
    seconds: float
    history: list[float]  # best distance after each generation


class Refiner:
    """Holds the thread pool of renderers; ``refine`` runs one search."""

    def __init__(self, space: ParameterSpace, render: RenderConfig, threads: int = 2):
        import auraloss

        self.space, self.render_config = space, render
        self.pool = RenderPool(space, render, threads)
        self.loss = auraloss.freq.MultiResolutionSTFTLoss()

    def score(self, patches: list[Patch], note: int, target: torch.Tensor) -> list[float]:
        def distance(renderer: Renderer, patch: Patch) -> float:
            audio = renderer.render(patch, note).audio
            a = audio_tensor(audio[: target.shape[-1]])
            with torch.no_grad():
                return float(self.loss(a, target[..., : a.shape[-1]]))

        return self.pool.map(distance, patches)

    def refine(self, start: Patch, note: int, clip: np.ndarray, *, max_evals: int = 200,
               max_seconds: float = 20.0, sigma: float = 0.1, population: int = 8,
               seed: int = 0) -> RefineResult:
        t0 = time.perf_counter()
        rng = np.random.default_rng(seed)
        target = audio_tensor(clip)
        best_x = start.continuous.copy()
        best = start_d = self.score([start], note, target)[0]
        evals, history = 1, [best]
        mean = best_x.copy()
        step = np.full_like(mean, sigma)
        mu = population // 2
        weights = np.log(mu + 0.5) - np.log(np.arange(1, mu + 1))
        weights /= weights.sum()
        while evals + population <= max_evals and time.perf_counter() - t0 < max_seconds:
            z = rng.standard_normal((population, len(mean)))
            xs = np.clip(mean + step * z, 0.0, 1.0)
            scores = self.score([Patch(x, start.categorical) for x in xs], note, target)
            evals += population
            order = np.argsort(scores)
            if scores[order[0]] < best:
                best, best_x = scores[order[0]], xs[order[0]].copy()
            elite = order[:mu]
            mean = weights @ xs[elite]
            # per-parameter step: follow the spread of the elite, within sane bounds
            spread = np.sqrt(weights @ (z[elite] ** 2))
            step = np.clip(step * (0.8 + 0.4 * spread), 0.005, 0.3)
            history.append(best)
        return RefineResult(Patch(best_x, start.categorical.copy()), start_d, best, evals,
                            time.perf_counter() - t0, history)
