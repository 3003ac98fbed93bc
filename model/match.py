"""Matching a clip to a Vital preset: the network's answer, then a search within a budget.

    python -m model.match clip.wav -o matched.vital --budget 5 \
        --preview matched.wav --json report.json

The clip is read and prepared by ``model.audio_input``; the network predicts the
parameters, the note is cross-checked against a pitch (f0) estimate. With a budget
(``--budget SECONDS``, default 1 s, 0 to 30) ``model.search`` then renders the network's
answer and the nearest entries of the library shipped beside the checkpoint
(``library.npz``, ``model.library``), ranks them by the distance heard and refines the
best with the time left; budget 0 is the network's answer alone. The answer is written
onto the synthmatch base preset with a name and comment that say where it came from.
A categorical parameter takes the class of least expected distance in sound
(``model.decoding``) when a ``class_costs.json`` lies beside the checkpoint (the default
model has one), else its most probable class. Confidence: for a categorical parameter the
chosen class's probability; for a continuous one ``1 - spread / 0.29`` over ``mc_passes``
fixed dropout masks (0.29 is the spread of a uniform guess).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from model.audio_input import (
    FORMATS,
    AudioInputError,
    Clip,
    InputConfig,
    load_clip,
    trim_onset,
)
from model.checkpoint import CheckpointError, fetch, load_checkpoint
from model.decoding import choose_classes, costs_beside
from model.level import Level, active_rms_dbfs, choose_level, volume_for_level
from model.library import FILENAME as LIBRARY
from model.library import Library, LibraryError
from model.metrics import mrstft_distance
from model.search import DEFAULT_BUDGET_SECONDS, MAX_BUDGET_SECONDS, Candidate, Search
from model.tutorial import Tutorial, write_tutorial
from synth.audio import write_wav
from synth.bank import PRESETS_ENV
from synth.base import base_preset
from synth.cli import error
from synth.controls import display_text
from synth.files import write_text
from synth.preset import Preset, apply_patch, import_preset, save_preset
from synth.render import Renderer, silent
from synth.space import Patch

log = logging.getLogger("model.match")
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "default" / "model.pt"
UNIFORM_STD = 0.2887  # standard deviation of U(0, 1)


@dataclass
class Prediction:
    """The network's answer for one clip, before the note check and refinement."""

    patch: Patch
    note: int  # the note head's argmax
    note_prob: float
    # per parameter of the answer space (``Matcher.space``), in its order, in [0, 1]; NaN
    # where the network has no such parameter
    confidence: np.ndarray


@dataclass
class NoteChoice:
    note: int
    source: str  # "model" or "f0"
    f0_note: float | None


@dataclass
class MatchResult:
    preset: Preset
    patch: Patch
    note: int
    note_source: str  # "model" or "f0"
    f0_note: float | None
    params: list[dict]  # name, value (raw), text (Vital's display), confidence
    preview: np.ndarray
    distance: dict[str, float]
    timings_ms: dict[str, float] = field(default_factory=dict)
    refinement: dict | None = None  # distance before and after, evaluations, seconds
    level: Level | None = None  # the level the answer plays at, and why
    search: dict | None = None  # what the search rendered and where the answer came from

    def report(self, filename: str, *, tutorial: Tutorial | None = None, batch_size: int = 1,
               preview_wav: bytes | None = None) -> dict:
        """The match report: what ``model.match --json`` writes and ``POST /v1/match``
        answers, one schema for both (README, "The match report").

        Args:
            filename: the ``.vital`` file name the preset is (or is suggested to be) saved as.
            tutorial: the tutorial, when one was asked for.
            batch_size: how many clips shared the network's pass (1 on the CLI).
            preview_wav: the preview as WAV bytes, included base64-encoded when given.
        """
        out = {
            "preset": {"name": self.preset.data.get("preset_name"), "filename": filename,
                       "content": self.preset.to_json()},
            "note": self.note, "note_source": self.note_source,
            "f0_note": None if self.f0_note is None else round(self.f0_note, 2),
            "parameters": self.params,
            "distance": {k.split("/")[-1]: round(v, 4) for k, v in self.distance.items()},
            "refinement": self.refinement,
            "search": self.search,
            "level": None if self.level is None else self.level.to_dict(),
            "timings_ms": {k: round(v, 1) for k, v in self.timings_ms.items()},
            "batch_size": batch_size,
            "tutorial": None if tutorial is None else {
                "text": tutorial.text, "source": tutorial.source, "note": tutorial.note},
        }
        if preview_wav is not None:
            out["preview_wav_base64"] = base64.b64encode(preview_wav).decode()
        return out


def f0_midi(audio: np.ndarray, sample_rate: int) -> float | None:
    """Median f0 of the clip's voiced frames as a (fractional) MIDI note, or None."""
    import librosa

    head = audio[: sample_rate]  # the first second: the attack and the steady part
    loud = np.sqrt(np.mean(head ** 2)) > 1e-4
    f0 = librosa.yin(head, fmin=40.0, fmax=2100.0, sr=sample_rate, frame_length=4096)
    f0 = f0[np.isfinite(f0)]
    return float(librosa.hz_to_midi(np.median(f0))) if loud and f0.size else None


class Matcher:
    """Loads a checkpoint once and turns clips into presets.

    ``match`` runs every stage in this process. The stages are public so that a
    service can run them apart (the Serve app batches ``predict`` across requests
    and renders on other replicas): ``load`` -> ``predict`` -> ``choose_note`` ->
    ``refine`` (optional) -> ``finish``.
    """

    def __init__(self, checkpoint: str | Path | None = None,
                 input_config: InputConfig | None = None, mc_passes: int = 8,
                 library: str | Path | None = None, use_library: bool = True):
        """``library``: the search's retrieval library (default: ``library.npz`` beside the
        checkpoint, when there is one); ``use_library=False``: search without one."""
        path = fetch(checkpoint) if checkpoint else DEFAULT_CHECKPOINT  # a URI: a local copy
        if checkpoint is None and not path.exists():
            raise CheckpointError(f"{path}: no default model is shipped yet; pass --checkpoint")
        self.ckpt = load_checkpoint(path)
        # the network answers in its own space; the answers (search, refinement, preset)
        # are in the library's, which may be wider (a core network, a studio library): the
        # network's answer is then carried over as a preset would be (``lift``)
        self.net_space = self.space = self.ckpt.space
        self.library: Library | None = None
        lib_path = Path(library) if library else path.parent / LIBRARY
        if use_library and (library or lib_path.exists()):
            self.library = Library.load(lib_path)
            self.space = self.library.entry_space()
            self.library.check(self.space, self.ckpt.features, str(lib_path))
            log.debug("library %s: %d entries of scope %s", lib_path, len(self.library),
                      self.space.name)
        if self.space is not self.net_space:
            lost = [p.name for p in self.net_space.params if p.name not in self.space.index]
            if lost:
                log.warning("the network's %s answers lose %s in the library's %s space",
                            self.net_space.name, ", ".join(lost), self.space.name)
        # each answer parameter's index among the network's (-1: the network has none)
        self._net_index = np.array([self.net_space.index.get(p.name, -1)
                                    for p in self.space.params])
        self._search: Search | None = None
        # per categorical parameter: its cost matrix for MBR decoding, or None (argmax)
        self.class_costs = costs_beside(path, self.net_space)
        self.input_config = input_config or InputConfig()
        self.mc_passes = mc_passes
        self.render_config = self.ckpt.features.render_config()
        self._renderer: Renderer | None = None
        self._refiner = None
        self._modules = {p.name: p.module for p in self.space.params}
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="matcher")
        # bank tables this machine cannot read (no real presets folder): every answer plays
        # each one's built-in stand-in instead
        self.stand_ins, unread = self.space.stand_in_classes()
        if self.stand_ins:
            log.warning("the real presets folder %s is absent: %s harvested from it cannot be "
                        "read, so answers play the nearest built-in table in their place; set "
                        "%s to that folder (../shared/real-presets) for them",
                        next(iter(self.space.banks.values())).presets,
                        " and ".join(f"{n} {key}" for key, n in unread.items()),
                        PRESETS_ENV)
        # bank classes no answer may use, each sent to another: the stand-ins, and within
        # ``leaving_out`` a preset's own tables
        self.left_out: dict[int, np.ndarray] = self.stand_ins

    @property
    def renderer(self) -> Renderer:
        """This matcher's own synth, made on first use (a predict-only replica needs none)."""
        if self._renderer is None:
            self._renderer = Renderer(self.space, self.render_config)
        return self._renderer

    @property
    def modules(self) -> dict[str, str]:
        """Parameter name -> Vital module, for grouping (the tutorial)."""
        return self._modules

    def load(self, source, name: str | None = None) -> Clip:
        f = self.ckpt.features
        return load_clip(source, f.sample_rate, f.num_samples, self.input_config, name)

    @torch.no_grad()
    def predict(self, audio: list[np.ndarray] | np.ndarray) -> list[Prediction]:
        """Predict a batch of prepared clips (``Clip.audio``) in one pass.

        The encoder runs once per clip; the dropout part of the network (the MLP and
        heads) runs under ``mc_passes`` fixed dropout masks (``MatchNet.heads_ensemble``):
        the mean is the prediction, the spread the continuous parameters' confidence (a
        small ensemble for the price of one encoder pass). The masks are the same for every
        clip, so a clip gets the same answer in any batch. Each categorical parameter
        takes the class of least expected cost over its mean probabilities
        (``model.decoding.mbr``; the argmax without class costs); its confidence is that
        class's mean probability.
        """
        model, layout = self.ckpt.model, self.ckpt.model.layout
        x = torch.from_numpy(np.stack([np.asarray(a, dtype=np.float32) for a in audio]))
        b, k = x.shape[0], max(1, self.mc_passes)
        h = model.embed(x)
        out = model.heads_ensemble(h, k) if k > 1 else model.heads(h)
        cont = out.continuous.view(b, k, -1)
        spread = cont.std(dim=1).numpy() if k > 1 else np.zeros((b, layout.num_continuous))
        cat_probs = [torch.softmax(layout.logits(out.categorical, i), 1).view(b, k, -1).mean(1)
                     for i in range(len(layout.classes))]
        note_probs = torch.softmax(out.note, 1).view(b, k, -1).mean(1)
        continuous = cont.mean(1).clamp(0, 1).numpy().astype(np.float64)
        notes = note_probs.argmax(1).tolist()
        probs = [p.numpy().astype(np.float64) for p in cat_probs]
        chosen = choose_classes(probs, self.class_costs)
        patches = [Patch(continuous[i], chosen[i]) for i in range(b)]
        cont_conf = np.clip(1.0 - spread / UNIFORM_STD, 0.0, 1.0)
        cat_conf = np.stack([p[np.arange(b), chosen[:, j]] for j, p in enumerate(probs)], 1)
        confidence = np.concatenate([cont_conf, cat_conf], 1).astype(np.float64)
        if self.space is not self.net_space:
            patches = [self.lift(patch) for patch in patches]
            confidence = np.where(self._net_index >= 0, confidence[:, self._net_index], np.nan)
        patches = [self.space.with_classes(patch, self.left_out) for patch in patches]
        return [Prediction(patches[i], notes[i], float(note_probs[i, notes[i]]), confidence[i])
                for i in range(b)]

    @contextlib.contextmanager
    def leaving_out(self, preset: Preset):
        """Within: no answer uses a wavetable or LFO shape the banks hold only because
        ``preset`` gave it; each is sent to the nearest other table of its bank
        (``ParameterSpace.left_out_classes``), in the network's answer and in every library
        entry the search proposes (the search moves no class). For measuring on a real
        preset the banks harvested from, as the scope ceiling leaves its tables out
        (``benchmarks/real_presets.py``). A matcher measuring this way answers one clip
        at a time; in scopes without banks it changes nothing."""
        # the tables are read to find the nearest others, so this needs the presets folder,
        # and where it is present no table stands in
        self.left_out = self.space.left_out_classes(preset.digest)
        try:
            yield self
        finally:
            self.left_out = self.stand_ins

    def lift(self, patch: Patch) -> Patch:
        """A patch of the network's space in the answer space: written onto the base
        preset and imported, as any preset is (``synth.preset.import_preset``), so that it
        plays the same."""
        return import_preset(apply_patch(base_preset(), self.net_space, patch), self.space,
                             warn=False)  # the routes it loses were named once, at load

    def choose_note(self, prediction: Prediction, f0: float | None) -> NoteChoice:
        """The note to play the predicted patch at.

        The pitch heard is the note plus the patch's transpose and tune
        (``ParameterSpace.pitch_offset``), so the clip's f0 estimate (``f0_midi``) minus
        that offset is the note that makes the patch sound at the clip's pitch. The note
        head's answer is used only when it is sure (probability 0.5 or more) or there is no
        f0 estimate: an unsure head a semitone off would put the preview out of tune.
        """
        if f0 is None or prediction.note_prob >= 0.5:
            return NoteChoice(prediction.note, "model", f0)
        from_f0 = f0 - self.space.pitch_offset(prediction.patch)
        return NoteChoice(int(np.clip(round(from_f0), 0, 127)), "f0", f0)

    def searcher(self) -> Search:
        """This matcher's search: its render threads and the library; made and warmed on
        first use (a replica that never searches needs none)."""
        if self._search is None:
            self._search = Search(self.space, self.render_config, self.library,
                                  self.ckpt.model.frontend, input_config=self.input_config)
            self._search.warm()
        return self._search

    def search(self, clip: Clip, prediction: Prediction, note: NoteChoice, f0: float | None,
               budget_seconds: float) -> tuple[Patch, NoteChoice, dict | None]:
        """Search for up to ``budget_seconds`` from the network's answer and the library's
        nearest entries (``model.search``): the patch found, the note it plays at, and the
        ``search`` report (None for budget 0, the network's answer alone)."""
        if not 0.0 <= budget_seconds <= MAX_BUDGET_SECONDS:
            raise ValueError(f"budget {budget_seconds:g} s; allowed 0 to "
                             f"{MAX_BUDGET_SECONDS:g} s")
        if budget_seconds == 0:
            return prediction.patch, note, None
        point = Candidate(prediction.patch, note.note, "point")
        given = self.given(clip)
        level = choose_level(active_rms_dbfs(given))  # as finish will set it
        # Rank as the user will hear the answer: at the clip's own level when the answer is
        # set to it; when the clip's level says nothing of a preset's (``"typical"``: the
        # answer is set to real presets' level, far from the clip's), at the clip's level
        # all the same, or the level gap would outweigh every difference in timbre.
        rank_dbfs = level.target_dbfs if level.source == "clip" else level.clip_dbfs
        found = self.searcher().run(clip.audio, point, f0, budget_seconds, rank_dbfs, given,
                                    self.left_out)
        best = found.best
        if best.library_id is not None:  # the note was chosen for the entry, from the f0
            note = NoteChoice(best.note, "f0" if f0 is not None else "library", f0)
        return best.patch, note, found.report(budget_seconds)

    def refine(self, clip: Clip, patch: Patch, note: int, seconds: float,
               evals: int = 400) -> tuple[Patch, dict]:
        """Search from ``patch`` for up to ``seconds`` / ``evals`` renders; never worse."""
        from model.refine import Refiner

        if self._refiner is None:
            self._refiner = Refiner(self.space, self.render_config)
        r = self._refiner.refine(patch, note, clip.audio, max_evals=evals, max_seconds=seconds)
        return r.patch, {"distance_before": r.start_distance, "distance_after": r.best_distance,
                         "evaluations": r.evaluations, "seconds": round(r.seconds, 2)}

    def parameters(self, patch: Patch, confidence: np.ndarray | None = None) -> list[dict]:
        """Each parameter's name, raw value, Vital's display text and confidence."""
        renderer = self.renderer
        renderer.apply(patch)
        raw = self.space.raw_from_patch(patch)
        rows = []
        for i, p in enumerate(self.space.params):
            if p.control is not None:
                text = display_text(p.control, renderer.synth.get_control_text(p.name))
            elif p.bank is not None:  # a wavetable or LFO shape, by its bank's name for it
                text = self.space.banks[p.bank].labels[int(raw[p.name])]
            else:  # a route's amount
                text = f"{raw[p.name]:+.3f}"
            known = confidence is not None and np.isfinite(confidence[i])
            row = {"name": p.name, "value": raw[p.name], "text": text,
                   "confidence": round(float(confidence[i]), 4) if known else None}
            rows.append(row)
        return rows

    @staticmethod
    def given(clip: Clip) -> np.ndarray:
        """The clip as given (trimmed and cropped, at its own level): the preparation's gain
        undone."""
        return clip.audio * np.float32(10.0 ** (-clip.gain_db / 20.0))

    def set_level(self, patch: Patch, now_dbfs: float, level: Level) -> tuple[Patch, float]:
        """``patch``, playing at ``now_dbfs``, with its master volume moved so that it plays
        at ``level``; and the gain applied (dB; less than asked where the volume's range
        ends). Vital's volume is the output gain: the level moves by the gain exactly."""
        volume, gain = volume_for_level(self.space, patch, now_dbfs, level.target_dbfs)
        if volume is None:
            return patch, 0.0
        raw = self.space.raw_from_patch(patch)
        raw["volume"] = volume
        return self.space.patch_from_raw(raw, where="level"), gain

    def finish(self, clip: Clip, prediction: Prediction, note: NoteChoice,
               patch: Patch | None = None, refinement: dict | None = None,
               timings_ms: dict | None = None, search: dict | None = None) -> MatchResult:
        """The preview render at the chosen note, the answer's level (``model.level``),
        display texts, the distances to the clip and the named preset, for ``patch``
        (default: the prediction's). Confidences are the network's, so they are given only
        for an answer grown from the network's (not for a library entry's)."""
        t0 = time.perf_counter()
        patch = prediction.patch if patch is None else patch
        given = self.given(clip)
        level = choose_level(active_rms_dbfs(given))  # level.clip_dbfs: the clip's level
        self.renderer.apply(patch)
        rendered = self.renderer.render_current(note.note).audio
        # the preview from its onset, as the clip was read: a slow attack is heard in time
        # with the clip, and the level is the one of what is compared
        onset = trim_onset(rendered, len(clip.audio), self.input_config)
        gain_db = 0.0  # a silent answer has no level to move; a quiet one has, as the
        # search heard it (model.search: an answer 40 dB under its level once played so)
        if not silent(rendered, self.render_config.silence_dbfs):
            patch, gain_db = self.set_level(patch, active_rms_dbfs(onset), level)
        # the output gain scales the render: no second render for the preview
        preview = rendered * np.float32(10.0 ** (gain_db / 20.0))
        aligned = onset * np.float32(10.0 ** (gain_db / 20.0))
        level = dataclasses.replace(level, plays_dbfs=active_rms_dbfs(aligned))
        from_library = search is not None and search["winner"]["library_id"] is not None
        params = self.parameters(patch, None if from_library else prediction.confidence)
        t1 = time.perf_counter()
        # auraloss's multi-resolution STFT distance: the project's one audio metric, with
        # a known noise floor (two renders of one preset: about 0.8); as the answer plays
        # (from its onset) against the clip as given, and with the answer at the clip's level
        matched = aligned * np.float32(10.0 ** ((level.clip_dbfs
                                                 - active_rms_dbfs(aligned)) / 20.0))
        distance = {"audio/mrstft": mrstft_distance(aligned, given),
                    "audio/mrstft_level_matched": mrstft_distance(matched, given)}
        stem = Path(clip.source).name
        origin = ("" if search is None else
                  f", found by a {search['budget_seconds']:g} s search: "
                  f"{search['winner']['source']}"
                  + ("" if not from_library else
                     f" from library entry {search['winner']['library_id']}"))
        preset = apply_patch(base_preset(), self.space, patch,
                             name=f"synthmatch {Path(stem).stem}"[:64],
                             comments=f"Made by synthmatch from the clip '{stem}' (model "
                                      f"{self.space.id}, note {note.note}{origin}). Starts "
                                      "from synthmatch's base preset (Vital's init with a "
                                      "basic-shapes wavetable).")
        timings = dict(timings_ms or {})
        timings["render"] = 1000 * (t1 - t0)
        timings["distance_and_preset"] = 1000 * (time.perf_counter() - t1)
        return MatchResult(preset, patch, note.note, note.source, note.f0_note, params, preview,
                           distance, timings, refinement, level, search)

    def match(self, source, name: str | None = None,
              budget_seconds: float = DEFAULT_BUDGET_SECONDS) -> MatchResult:
        """Match a clip, searching for up to ``budget_seconds`` (0: the network's answer)."""
        t0 = time.perf_counter()
        clip = self.load(source, name)
        t1 = time.perf_counter()
        f0_job = self._pool.submit(f0_midi, clip.audio, clip.sample_rate)  # beside the network
        prediction = self.predict([clip.audio])[0]
        t2 = time.perf_counter()
        f0 = f0_job.result()
        note = self.choose_note(prediction, f0)
        t3 = time.perf_counter()
        patch, note, search = self.search(clip, prediction, note, f0, budget_seconds)
        t4 = time.perf_counter()
        timings = {"read": 1000 * (t1 - t0), "predict": 1000 * (t2 - t1),
                   "f0": 1000 * (t3 - t2), "search": 1000 * (t4 - t3)}
        refinement = None if search is None else search["refinement"]
        result = self.finish(clip, prediction, note, patch, refinement, timings, search)
        result.timings_ms["total"] = 1000 * (time.perf_counter() - t0)
        return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m model.match", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("audio", type=Path, help=f"a clip of one note ({FORMATS})")
    p.add_argument("-o", "--out", type=Path, required=True, help="output .vital preset")
    p.add_argument("--checkpoint", help="model.pt, its folder or a URI such as "
                                        "s3://bucket/run/model.pt (default: the shipped model)")
    p.add_argument("--preview", type=Path, help="also render the preset here (.wav)")
    p.add_argument("--json", type=Path, help="also write the report (parameters, confidences, "
                                             "note, distance, timings)")
    p.add_argument("--budget", type=float, default=DEFAULT_BUDGET_SECONDS, metavar="SECONDS",
                   help="search time: render the network's answer and the library's nearest "
                        "presets, keep the closest, refine it (0 to "
                        f"{MAX_BUDGET_SECONDS:g}; default {DEFAULT_BUDGET_SECONDS:g}; 0: the "
                        "network's answer alone)")
    p.add_argument("--library", type=Path,
                   help="the search's library (default: library.npz beside the checkpoint)")
    p.add_argument("--tutorial", action="store_true",
                   help="print a tutorial for building the preset in Vital (Claude with "
                        "ANTHROPIC_API_KEY set, else an offline one)")
    p.add_argument("--max-seconds", type=float, default=InputConfig().max_seconds,
                   help="longest clip accepted (default 30 s)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if not 0 <= args.budget <= MAX_BUDGET_SECONDS:
            p.error(f"--budget {args.budget:g}: allowed 0 to {MAX_BUDGET_SECONDS:g} seconds")
        matcher = Matcher(args.checkpoint, InputConfig(max_seconds=args.max_seconds),
                          library=args.library)
        result = matcher.match(args.audio, budget_seconds=args.budget)
        save_preset(result.preset, args.out)
        if args.preview:
            write_wav(args.preview, result.preview, matcher.render_config.sample_rate)
        tutorial = None
        if args.tutorial:
            tutorial = write_tutorial(result.params, matcher.modules, result.note)
            if tutorial.source == "offline":
                log.warning("offline tutorial from a template (%s); set ANTHROPIC_API_KEY "
                            "for one written by Claude", tutorial.note)
            print(tutorial.text)
        if args.json:
            report = result.report(args.out.name, tutorial=tutorial)
            write_text(args.json, json.dumps(report, indent=2))
    except BrokenPipeError:
        raise  # a closed stdout is no error: run_command ends quietly
    except (AudioInputError, CheckpointError, LibraryError, ValueError, OSError) as exc:
        return error(exc)
    found = ("" if result.search is None else
             f"; {result.search['rendered']} candidates rendered, the answer from "
             f"{result.search['winner']['source']}")
    log.info("wrote %s (note %d from %s, MR-STFT distance %.3f, %.0f ms%s)", args.out,
             result.note, result.note_source, result.distance["audio/mrstft"],
             result.timings_ms["total"], found)
    return 0


if __name__ == "__main__":
    from synth.cli import run_command

    run_command(main)
