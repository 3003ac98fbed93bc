"""Gradient-free refinement of a patch against the clip.

A (1+λ) evolution strategy with sparse mutations: each generation draws ``population``
children of the best patch so far, each moving a few of its audible continuous parameters
(1 + Poisson(3) of them, chosen at random among those ``ParameterSpace.audible`` says can
change its sound: not a switched-off module's, not a one-voice oscillator's unison knobs)
by a Gaussian step in unit space; the best child replaces the parent when it is closer, and
the step grows after a success and shrinks after a failure. Discrete parameters and the
note stay as given. A patch has tens to hundreds of continuous parameters, most of which
matter little to one sound, and a search gets a few hundred renders: moving all of them at
once (a diagonal CMA-ES, which this replaced) spends the renders on noise in the ones that
don't matter; moving a few at a time finds the ones that do: on 15 real presets at a 20 s
budget its answers were closer than the diagonal strategy's on 12 (BENCHMARKS.md,
"refinement strategies").

Candidates are rendered in parallel on a pool of threads, one ``Renderer`` (one
``vita.Synth``) each, and scored by auraloss's multi-resolution STFT distance to the clip,
each render first made what the user will hear when ``prepare`` is given (``model.search``:
its onset lined up with the trimmed clip's, its level the one the matcher will set, as far
as the patch's volume reaches).

Renders differ (random oscillator phase), and some patches' very much (oscillators at one
pitch, for one, add or cancel by chance). A strategy that keeps the best render it has seen
finds such a patch's lucky render, and the answer then plays far from what the search
measured (seen on a real preset: 1.54 measured, 2.21 in the report, the answer 10 dB under
the level asked). So a parent's distance is the mean of its renders: it is rendered again
beside its children until it has ``RENDERS_PER_PARENT``, and a child must beat that mean.
A child wins on one render, the best of its generation's, so often by luck alone: it takes
the parent's place on probation (``Parent``), and if its mean over ``RENDERS_PER_PARENT``
renders is worse than the last parent that held its place, that one comes back.
The distance returned is the returned patch's mean. The start point is scored first (unless
its distance is given). A generation starts only while the time left holds one as long as
the last, so a search ends close to ``max_seconds``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from model.metrics import ClipDistance
from synth.render import RenderConfig, Renderer, RenderPool, silent
from synth.space import ParameterSpace, Patch

MEAN_MOVED = 4  # continuous parameters a child moves, on average (1 + Poisson(3))
MIN_STEP, MAX_STEP = 0.0075, 0.45  # the step's range, in unit space
RENDERS_PER_PARENT = 3  # a parent is rendered again, in its children's generations, up to this


@dataclass
class RefineResult:
    patch: Patch
    start_distance: float  # the mean of the start's renders
    best_distance: float  # the mean of the answer's renders
    evaluations: int
    seconds: float
    history: list[float]  # the answer's distance after each generation


class Parent:
    """The strategy's parent under render noise: its point ``x`` and its distance, the mean
    of its ``renders``. A child closer on its one render than that mean takes the parent's
    place (``challenge``) on probation; once it has ``RENDERS_PER_PARENT`` renders
    (``rendered_again``), it stays if its mean is no worse than that of the last parent that
    held its place (the one before it, or the start), else that one comes back."""

    def __init__(self, x: np.ndarray, distance: float):
        self.x, self.renders = x, [distance]
        self.held: tuple[np.ndarray, list[float]] | None = None  # the last one that held

    @property
    def distance(self) -> float:
        return float(np.mean(self.renders))

    @property
    def held_distance(self) -> float:
        """The mean of the last one that held (inf when none is kept)."""
        return float(np.mean(self.held[1])) if self.held is not None else float("inf")

    @property
    def settled(self) -> bool:
        """Whether it has all its renders (it is no longer rendered again)."""
        return len(self.renders) >= RENDERS_PER_PARENT

    def challenge(self, x: np.ndarray, distance: float) -> bool:
        """A child's one render: whether it took the parent's place."""
        if not distance < self.distance:
            return False
        if self.held is None or self.settled:  # else the one on probation was never confirmed
            self.held = (self.x, self.renders)
        self.x, self.renders = x, [distance]
        return True

    def rendered_again(self, distance: float) -> bool:
        """One more render of the parent: whether that sent it back for the last one that
        held (its mean, now settled, was worse)."""
        self.renders.append(distance)
        if not self.settled or self.held is None:
            return False
        back = self.distance > self.held_distance
        if back:
            self.x, self.renders = self.held
        self.held = None
        return back

    def answer(self) -> tuple[np.ndarray, float]:
        """The point to answer with and its distance: the parent, or, while it is on
        probation and its mean so far is worse, the last one that held."""
        if self.held_distance < self.distance:
            return self.held[0], self.held_distance
        return self.x, self.distance


# (render, its patch) -> the versions of the render to compare; the distance is the largest
Prepare = Callable[[np.ndarray, Patch], list[np.ndarray]]


def prepared_distance(distance: ClipDistance, audio: np.ndarray, patch: Patch,
                      prepare: Prepare, silence_dbfs: float) -> float:
    """The largest ``distance`` to the clip of a version of the render from
    ``prepare(audio, patch)``; inf for a silent render (peak at or under ``silence_dbfs``)."""
    if silent(audio, silence_dbfs):
        return float("inf")
    return max(distance(version) for version in prepare(audio, patch))


class Refiner:
    """Holds the thread pool of renderers; ``refine`` runs one search."""

    parent = Parent  # how a parent keeps its place (``benchmarks/refine_strategies.py``)

    def __init__(self, space: ParameterSpace, render: RenderConfig, threads: int = 2):
        self.space, self.render_config = space, render
        self.pool = RenderPool(space, render, threads)

    def score(self, patches: list[Patch], note: int, target: ClipDistance,
              prepare: Prepare | None = None) -> list[float]:
        """Each patch's distance to ``target``'s clip at ``note`` (each render through
        ``prepare`` first, when given), rendered on the pool."""
        def distance(renderer: Renderer, patch: Patch) -> float:
            audio = renderer.render(patch, note).audio
            if prepare is not None:
                return prepared_distance(target, audio, patch, prepare,
                                         self.render_config.silence_dbfs)
            return target(audio)

        return self.pool.map(distance, patches)

    def movable(self, patch: Patch) -> np.ndarray:
        """The continuous parameters a child of ``patch`` may move: the audible ones
        (``ParameterSpace.audible``), or all when none is."""
        audible = np.flatnonzero(self.space.audible(patch))
        return audible if audible.size else np.arange(len(patch.continuous))

    def refine(self, start: Patch, note: int, clip: np.ndarray | ClipDistance, *,
               max_evals: int = 200,
               max_seconds: float = 20.0, sigma: float = 0.15, population: int = 8,
               seed: int = 0, start_distance: float | None = None,
               prepare: Prepare | None = None,
               generation_seconds: float = 0.0) -> RefineResult:
        """Search from ``start`` at ``note`` towards ``clip`` (or a ``ClipDistance`` to it,
        its spectra already computed); ``evaluations`` counts the start. ``sigma``: the
        first step (unit space). ``start_distance``: the start's distance when already
        measured (the same way: through ``prepare`` when it is given).
        ``generation_seconds``: how long a generation is expected to take, so that the
        first starts only if it fits too. The result's ``start_distance`` is the start's mean
        over its renders (the one given or made first, and the refinement's)."""
        t0 = time.perf_counter()
        rng = np.random.default_rng(seed)
        target = clip if isinstance(clip, ClipDistance) else ClipDistance(clip)
        start_d = (self.score([start], note, target, prepare)[0]
                   if start_distance is None else start_distance)
        parent = self.parent(start.continuous.copy(), start_d)
        start_renders = parent.renders  # the start's, as long as it is rendered again
        evals, history, last = 1, [start_d], generation_seconds
        dims, step = len(parent.x), sigma
        movable = self.movable(start)
        while (dims and evals + population <= max_evals
               and time.perf_counter() - t0 + last <= max_seconds):
            g0 = time.perf_counter()
            again = population > 1 and not parent.settled
            children = []
            for _ in range(population - again):
                moved = rng.choice(movable, min(len(movable), 1 + rng.poisson(MEAN_MOVED - 1)),
                                   replace=False)
                x = parent.x.copy()
                x[moved] = np.clip(x[moved] + step * rng.standard_normal(len(moved)), 0, 1)
                children.append(x)
            scores = self.score([Patch(x, start.categorical) for x in children]
                                + [Patch(parent.x, start.categorical)] * again, note, target,
                                prepare)
            evals += population
            # the parent rendered once more: a lucky render does not last
            if again and parent.rendered_again(scores.pop()):  # its success was luck
                movable = self.movable(Patch(parent.x, start.categorical))
                step = max(step * 0.85, MIN_STEP)
            i = int(np.argmin(scores))
            if parent.challenge(children[i], scores[i]):  # a success: take it, reach further
                movable = self.movable(Patch(parent.x, start.categorical))
                step = min(step * 1.3, MAX_STEP)
            else:
                step = max(step * 0.85, MIN_STEP)
            history.append(parent.answer()[1])
            last = time.perf_counter() - g0
        x, distance = parent.answer()
        return RefineResult(Patch(x, start.categorical.copy()), float(np.mean(start_renders)),
                            distance, evals, time.perf_counter() - t0, history)
