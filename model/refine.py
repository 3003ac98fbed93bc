"""Gradient-free refinement of a predicted patch against the clip.

A separable evolution strategy (diagonal CMA-ES in spirit: a mean and one step
size per parameter) moves the continuous parameters in unit space; discrete
parameters and the note stay as predicted. Candidates are rendered in parallel
on a pool of threads, one ``Renderer`` (one ``vita.Synth``) each, and scored by
auraloss's multi-resolution STFT distance to the clip, each render first made what the
user will hear when ``prepare`` is given (``model.search``: its onset lined up with the
trimmed clip's, its level the one the matcher will set, as far as the patch's volume
reaches). The start point is scored
first (unless its distance is given) and the best point ever seen is returned, so the
result is never worse than the start. A generation starts only while the time left
holds one as long as the last, so a search ends close to ``max_seconds``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
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


# (render, its patch) -> the versions of the render to compare; the distance is the largest
Prepare = Callable[[np.ndarray, Patch], list[np.ndarray]]


def prepared_distance(loss, audio: np.ndarray, patch: Patch, target: torch.Tensor,
                      prepare: Prepare, silence_dbfs: float) -> float:
    """The largest ``loss`` between a version of the render from ``prepare(audio, patch)``
    and ``target``; inf for a silent render (peak at or under ``silence_dbfs``)."""
    peak = float(np.max(np.abs(audio), initial=0.0))
    if 20 * np.log10(max(peak, 1e-12)) <= silence_dbfs:
        return float("inf")
    out = 0.0
    for version in prepare(audio, patch):
        a = audio_tensor(version[: target.shape[-1]])
        with torch.no_grad():
            out = max(out, float(loss(a, target[..., : a.shape[-1]])))
    return out


class Refiner:
    """Holds the thread pool of renderers; ``refine`` runs one search."""

    def __init__(self, space: ParameterSpace, render: RenderConfig, threads: int = 2):
        import auraloss

        self.space, self.render_config = space, render
        self.pool = RenderPool(space, render, threads)
        self.loss = auraloss.freq.MultiResolutionSTFTLoss()

    def score(self, patches: list[Patch], note: int, target: torch.Tensor,
              prepare: Prepare | None = None) -> list[float]:
        """Each patch's distance to ``target`` at ``note`` (each render through ``prepare``
        first, when given), rendered on the pool."""
        def distance(renderer: Renderer, patch: Patch) -> float:
            audio = renderer.render(patch, note).audio
            if prepare is not None:
                return prepared_distance(self.loss, audio, patch, target, prepare,
                                         self.render_config.silence_dbfs)
            a = audio_tensor(audio[: target.shape[-1]])
            with torch.no_grad():
                return float(self.loss(a, target[..., : a.shape[-1]]))

        return self.pool.map(distance, patches)

    def refine(self, start: Patch, note: int, clip: np.ndarray, *, max_evals: int = 200,
               max_seconds: float = 20.0, sigma: float = 0.1, population: int = 8,
               seed: int = 0, start_distance: float | None = None,
               prepare: Prepare | None = None,
               generation_seconds: float = 0.0) -> RefineResult:
        """Search from ``start`` at ``note`` towards ``clip``; ``evaluations`` counts the
        start. ``start_distance``: the start's distance when already measured (the same
        way: through ``prepare`` when it is given). ``generation_seconds``: how long
        a generation is expected to take, so that the first starts only if it fits too."""
        t0 = time.perf_counter()
        rng = np.random.default_rng(seed)
        target = audio_tensor(clip)
        best_x = start.continuous.copy()
        best = start_d = (self.score([start], note, target, prepare)[0]
                          if start_distance is None else start_distance)
        evals, history, last = 1, [best], generation_seconds
        mean = best_x.copy()
        step = np.full_like(mean, sigma)
        mu = population // 2
        weights = np.log(mu + 0.5) - np.log(np.arange(1, mu + 1))
        weights /= weights.sum()
        while (evals + population <= max_evals
               and time.perf_counter() - t0 + last <= max_seconds):
            g0 = time.perf_counter()
            z = rng.standard_normal((population, len(mean)))
            xs = np.clip(mean + step * z, 0.0, 1.0)
            scores = self.score([Patch(x, start.categorical) for x in xs], note, target,
                                prepare)
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
            last = time.perf_counter() - g0
        return RefineResult(Patch(best_x, start.categorical.copy()), start_d, best, evals,
                            time.perf_counter() - t0, history)
