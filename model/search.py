"""Anytime matching: propose candidates, render them, rank them by ear, refine with the time left.

One network answer is the average of the patches that sound like the clip, which no preset
is; the library holds real points of that set. So, given ``budget`` seconds:

    propose   the network's point answer, and the library's nearest entries to the clip
              (``model.library``), each at its own note and at the clip's f0
    rank      render each (a pool of threads, one vita synth each) and score it by auraloss's
              MR-STFT distance to the clip as the user gave it and will hear the answer,
              as the report measures it: from its onset (the clip was trimmed to its
              own), at the clip's own scale, at the level the matcher will set
              (``model.level``), as far as the patch's master volume reaches. A candidate
              that cannot get that loud is scored both as heard and at the level asked,
              and ranks by the worse: quieter is what the user gets, but auraloss's
              distance can reward a quiet wrong answer (its spectral-convergence term)
    refine    the evolution strategy (``model.refine``) from the best, until time is up

Ranking gets at most ``max_candidates`` renders and ``rank_share`` of the budget, or all of
it when the rest would not hold ``MIN_GENERATIONS`` of refinement (at the default 1 s,
refinement never bettered the best candidate in the half it had, and ranking for the whole
second answered closer: BENCHMARKS.md); refinement gets the rest. Every phase stops at the
deadline and the best so far is the answer, so a search overruns its budget by at most one
generation of refinement (when the first one takes longer than the time left), and never
answers worse than the best candidate it rendered, as far as renders tell: the refinement
renders that candidate again, and the answer's distance, like the start's it is compared
with, is the mean of its renders. Budget 0 is the point answer alone,
nothing rendered.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from model.audio_input import InputConfig, trim_onset
from model.level import active_rms_dbfs, volume_for_level
from model.library import Library, embed
from model.metrics import ClipDistance
from model.refine import Prepare, Refiner, prepared_distance
from synth.render import RenderConfig, Renderer
from synth.space import ParameterSpace, Patch

MAX_BUDGET_SECONDS = 30.0
DEFAULT_BUDGET_SECONDS = 1.0  # the interactive answer on 2 cores
POPULATION = 8  # candidates per generation of the refinement (model.refine)
MIN_GENERATIONS = 2  # refinement runs only when the time left holds this many


@dataclass
class Candidate:
    patch: Patch
    note: int
    source: str  # "point" (the network), "retrieval" (the library) or "refinement"
    library_id: int | None = None  # the dataset id of a library entry
    # MR-STFT to the clip, the render prepared as the clip was (onset, level); inf: silent
    distance: float = float("inf")


@dataclass
class SearchResult:
    best: Candidate
    rendered: int  # candidates rendered, refinement's included
    seconds: float
    best_by_source: dict[str, float] = field(default_factory=dict)
    refinement: dict | None = None

    def report(self, budget: float) -> dict:
        """The ``search`` part of the match report."""
        b = self.best

        def num(x: float) -> float | None:  # JSON has no inf: a silent render is null
            return round(float(x), 4) if np.isfinite(x) else None

        return {"budget_seconds": budget, "seconds": round(self.seconds, 3),
                "rendered": self.rendered,
                "winner": {"source": b.source, "library_id": b.library_id,
                           "distance": num(b.distance)},
                "best_by_source": {k: num(v) for k, v in self.best_by_source.items()},
                "refinement": self.refinement}


class Search:
    """Holds the renderers and the library; ``run`` answers one clip."""

    def __init__(self, space: ParameterSpace, render: RenderConfig, library: Library | None,
                 frontend=None, threads: int = 2, max_candidates: int = 64,
                 rank_share: float = 0.5, input_config: InputConfig | None = None):
        self.space, self.library, self.frontend = space, library, frontend
        self.num_samples, self.input_config = frontend.config.num_samples, input_config
        self.refiner = Refiner(space, render, threads)
        self.threads, self.max_candidates, self.rank_share = threads, max_candidates, rank_share
        self.silence_dbfs = render.silence_dbfs

    def warm(self) -> None:
        """Make each thread's synth and run the distance once, so that the first search
        spends its budget on candidates (about 0.5 s on 2 cores)."""
        target = ClipDistance(np.zeros(self.frontend.config.num_samples, np.float32))
        pool = self.refiner.pool
        barrier = threading.Barrier(self.threads)

        def touch(renderer: Renderer, _) -> None:
            barrier.wait(timeout=30)  # one item per thread: every thread makes its synth
            audio = renderer.render(self.space.default_patch(), 60).audio
            prepared_distance(target, audio, self.space.default_patch(), self.heard(-35.0),
                              self.silence_dbfs)

        pool.map(touch, range(self.threads))

    def heard(self, level_dbfs: float) -> Prepare:
        """(render, patch) -> the render as the user will hear the answer: from its onset,
        at ``level_dbfs`` (the level the matcher sets, in the clip's scale as given) as far
        as the patch's volume reaches; and, where the volume falls short, at the level
        asked as well (so that falling short never ranks better)."""
        def prepare(audio: np.ndarray, patch: Patch) -> list[np.ndarray]:
            onset = trim_onset(audio, self.num_samples, self.input_config)
            now = active_rms_dbfs(onset)
            _, gain = volume_for_level(self.space, patch, now, level_dbfs)
            versions = [onset * np.float32(10.0 ** (gain / 20.0))]
            if abs(gain - (level_dbfs - now)) > 0.5:
                versions.append(onset * np.float32(10.0 ** ((level_dbfs - now) / 20.0)))
            return versions

        return prepare

    def propose(self, clip: np.ndarray, point: Candidate, f0: float | None,
                k: int, left_out: Mapping[int, np.ndarray] | None = None) -> list[Candidate]:
        """The point answer, then the library's ``k`` nearest entries (nearest first), each
        at the note it was rendered at (the embedding hears pitch, so a near entry sounds
        near at its own note) and, where it differs, at the note that puts the entry's
        pitch on the clip's f0. An f0 estimate of a noisy or detuned sound can be far off,
        and so can an entry's note for a clip between the notes it holds: rendering both
        lets the ear decide. ``left_out``: bank classes the entries may not use, each sent
        to another (``ParameterSpace.left_out_classes``)."""
        out = [point]
        if self.library is None or k <= 0:
            return out
        with torch.no_grad():
            query = embed(self.frontend, clip[None])[0]
        idx, _ = self.library.nearest(query, k)
        for i in idx:
            patch = ParameterSpace.with_classes(self.library.patch(int(i)), left_out or {})
            entry = int(self.library.id[i])
            notes = [int(self.library.note[i])]
            if f0 is not None:
                notes.append(int(np.clip(round(f0 - self.space.pitch_offset(patch)), 0, 127)))
            for note in dict.fromkeys(notes):
                out.append(Candidate(patch, note, "retrieval", entry))
        return out

    def run(self, clip: np.ndarray, point: Candidate, f0: float | None, budget: float,
            level_dbfs: float = -35.0, given: np.ndarray | None = None,
            left_out: Mapping[int, np.ndarray] | None = None) -> SearchResult:
        """Search for up to ``budget`` seconds for the patch closest to ``clip`` (prepared,
        as ``Clip.audio``: the library is asked with it), compared with the clip ``given``
        (the clip at its own level, ``Matcher.given``; default ``clip``), the answer to be
        set to ``level_dbfs`` (``model.level.choose_level``, in the given clip's scale);
        ``left_out``: as ``propose``'s (``Matcher.leaving_out``)."""
        t0 = time.perf_counter()
        if budget <= 0:
            return SearchResult(point, 0, 0.0)
        deadline = t0 + budget
        rank_deadline = t0 + budget * self.rank_share
        # compare in the clip's scale as given, as the report does: the distance is not
        # scale-free (auraloss floors each STFT magnitude at 1e-4), and in the prepared
        # clip's scale (normalised to -35 dBFS) the quiet parts, a tail or a noise floor,
        # fall under that floor and go unheard: ranked there, answers scored 0.1-0.6
        # better than the report then measured
        target = ClipDistance(clip if given is None else given)
        heard = self.heard(level_dbfs)
        # nearest first: whatever the ranking phase has time for, it renders the most likely
        candidates = self.propose(clip, point, f0, self.max_candidates // 2, left_out)[
            : self.max_candidates]

        took: list[float] = []  # seconds per candidate scored so far

        def score(renderer: Renderer, c: Candidate) -> float:
            now = time.perf_counter()
            if c is not point and (now > deadline or (now > rank_deadline and refine_fits(now))):
                return float("nan")  # out of time: not rendered
            audio = renderer.render(c.patch, c.note).audio
            d = prepared_distance(target, audio, c.patch, heard, self.silence_dbfs)
            took.append(time.perf_counter() - now)
            return d

        def generation_seconds() -> float:
            """A generation of refinement takes as long as that many candidates' scoring,
            ``threads`` at a time."""
            per_wave = float(np.mean(took)) if took else 0.0
            return per_wave * np.ceil(POPULATION / self.threads)

        def refine_fits(now: float) -> bool:
            """Whether the time left holds ``MIN_GENERATIONS`` of refinement; if not (a small
            budget), ranking goes on to the deadline: one generation rarely improves on the
            best candidate, and a candidate more often does."""
            return deadline - now >= MIN_GENERATIONS * generation_seconds()

        scores = self.refiner.pool.map(score, candidates)
        rendered = [c for c, s in zip(candidates, scores, strict=True) if not np.isnan(s)]
        for c, s in zip(candidates, scores, strict=True):
            c.distance = s
        best = min(rendered, key=lambda c: c.distance)
        by_source: dict[str, float] = {}
        for c in rendered:
            by_source[c.source] = min(by_source.get(c.source, float("inf")), c.distance)
        result = SearchResult(best, len(rendered), 0.0, by_source)
        left = deadline - time.perf_counter()
        if left > 0 and np.isfinite(best.distance):
            r = self.refiner.refine(best.patch, best.note, target, max_evals=1_000_000,
                                    max_seconds=left, start_distance=best.distance,
                                    prepare=heard, population=POPULATION,
                                    generation_seconds=generation_seconds())
            result.rendered += r.evaluations - 1  # the start was not rendered again
            result.refinement = {"from": best.source, "distance_before": r.start_distance,
                                 "distance_after": r.best_distance,
                                 "evaluations": r.evaluations - 1,
                                 "seconds": round(r.seconds, 2)}
            # the start's mean over its renders, which the refinement took on: a candidate
            # ranks first on one render, often a lucky one
            if r.best_distance < r.start_distance:
                result.best = Candidate(r.patch, best.note, "refinement", best.library_id,
                                        r.best_distance)
                by_source["refinement"] = r.best_distance
            else:
                best.distance = r.start_distance
        result.seconds = time.perf_counter() - t0
        return result
