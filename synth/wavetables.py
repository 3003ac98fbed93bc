"""The wavetable bank: the wavetables a ``studio`` oscillator chooses from, by class index.

A Vital wavetable is JSON (``settings.wavetables[i]`` of a preset): groups of components
such as a "Wave Source" (keyframes of 2,048 samples, base64 float32) or a "Line Source"
(drawn lines), which Vital turns into 257 frames the oscillator's wave frame moves across.
The bank holds three families, in this order of class index:

- **basic**: Vital's init saw (what every new Vital patch plays) and the basic shapes of
  the synthmatch base preset (sine -> triangle -> saw -> square);
- **procedural**: tables drawn from a few numbers (:class:`Spectrum`: harmonic slope,
  odd/even balance, a formant's position, width and height, a pulse-width comb), one
  spectrum at the first frame and another at the last, morphed spectrally between;
- **harvested**: every distinct wavetable of the real presets in ``../shared/real-presets``
  (CC BY 4.0, credited in ``synth/data/wavetable_bank.json``), referenced, not copied
  (see :mod:`synth.bank`).

``python -m synth bank --presets ../shared/real-presets`` writes the manifest. A patch
names its wavetables by class index; the renderer loads them and ``apply_patch`` writes
them into the exported ``.vital``, so the file opens in Vital with them.

Importing a preset takes its own table when the bank has it (same sound digest), else the
nearest bank table by :func:`fingerprint` distance: the harmonic spectra of five frames.
"""

from __future__ import annotations

import atexit
import base64
import bisect
import copy
import functools
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import vita

from synth.bank import VERSION, Bank, BankError, Entry, harvest_entries, load_manifest, stand_ins
from synth.bank import sound_digest as _sound_digest

BANK_PATH = Path(__file__).resolve().parent / "data" / "wavetable_bank.json"
FORMAT = "synthmatch-wavetable-bank"
WAVE_SIZE = 2048  # samples per wavetable frame, Vital's fixed size
LAST_FRAME = 256  # Vital's frames are 0..256
PROCEDURAL_COUNT = 32
PROCEDURAL_SEED = 0x7AB1E
_SHAPE_POSITIONS = (0, 85, 170, 256)  # basic shapes' keyframes


_SOUND_KEYS = ("groups", "full_normalize", "remove_all_dc")


def sound_digest(table: dict) -> str:
    """sha256 of what makes a wavetable sound as it does (its components and normalisation;
    not its name, author or version)."""
    return _sound_digest(table, _SOUND_KEYS)


@functools.cache
def _init_table_json() -> str:
    return json.dumps(json.loads(vita.Synth().to_json())["settings"]["wavetables"][0])


def init_table() -> dict:
    """Vital's init wavetable: one saw frame."""
    return json.loads(_init_table_json())


def wave_table(name: str, keyframes: list[tuple[int, np.ndarray]], *,
               spectral: bool = False) -> dict:
    """A one-component "Wave Source" table from ``(position, wave)`` keyframes, each wave of
    :data:`WAVE_SIZE` samples; ``spectral`` morphs between keyframes in the frequency
    domain (Vital's "spectral" interpolation) rather than crossfading the waves."""
    table = init_table()
    table["name"] = name
    component = table["groups"][0]["components"][0]
    component["interpolation"] = 1 if spectral else 0
    component["keyframes"] = [
        {"position": int(pos),
         "wave_data": base64.b64encode(np.asarray(w, "<f4").tobytes()).decode("ascii")}
        for pos, w in keyframes
    ]
    return table


def basic_shapes() -> list[np.ndarray]:
    """Sine, triangle, saw and square, one period each."""
    t = np.arange(WAVE_SIZE) / WAVE_SIZE
    sine = np.sin(2 * np.pi * t)
    triangle = 1.0 - 4.0 * np.abs(((t + 0.25) % 1.0) - 0.5)
    saw = 1.0 - 2.0 * ((t + 0.5) % 1.0)  # Vital's init saw: 0 at the start, falling
    square = np.where(t < 0.5, 1.0, -1.0)
    return [w.astype("<f4") for w in (sine, triangle, saw, square)]


def basic_shapes_table(template: dict | None = None) -> dict:
    """The basic-shapes table: sine -> triangle -> saw -> square across the frames.
    ``template`` (a table whose other fields are kept) defaults to the init table."""
    table = copy.deepcopy(template) if template is not None else init_table()
    table["name"] = "Basic Shapes"
    table["groups"][0]["components"][0]["keyframes"] = [
        {"position": pos, "wave_data": base64.b64encode(w.tobytes()).decode("ascii")}
        for pos, w in zip(_SHAPE_POSITIONS, basic_shapes(), strict=True)
    ]
    return table


# --- the procedural family --------------------------------------------------------------
@dataclass(frozen=True)
class Spectrum:
    """A harmonic spectrum from a few numbers. Harmonic ``k``'s amplitude is
    ``k ** -slope`` (1: a saw), times ``even`` for even ``k`` (0: odd harmonics only, as a
    square), times a formant bump of ``boost_db`` at harmonic ``formant`` (a Gaussian of
    ``width`` octaves), times a pulse-width comb ``1 - comb + comb * |sin(pi k pulse)|``."""

    slope: float
    even: float
    formant: float
    width: float
    boost_db: float
    pulse: float
    comb: float

    def amplitudes(self, harmonics: int = 256) -> np.ndarray:
        k = np.arange(1, harmonics + 1, dtype=np.float64)
        a = k ** -self.slope
        a[1::2] *= self.even
        bump = np.exp(-0.5 * (np.log2(k / self.formant) / self.width) ** 2)
        a *= 10.0 ** (self.boost_db * bump / 20.0)
        a *= 1.0 - self.comb + self.comb * np.abs(np.sin(np.pi * k * self.pulse))
        return a / a.max()

    def wave(self) -> np.ndarray:
        """One period of the sum of sines with these amplitudes, peak 1, float32."""
        spectrum = np.zeros(WAVE_SIZE // 2 + 1, dtype=np.complex128)
        a = self.amplitudes()
        spectrum[1:len(a) + 1] = -0.5j * WAVE_SIZE * a  # irfft -> sum_k a_k sin(2 pi k t)
        w = np.fft.irfft(spectrum, WAVE_SIZE)
        return (w / np.max(np.abs(w))).astype("<f4")

    @staticmethod
    def draw(rng: np.random.Generator) -> Spectrum:
        return Spectrum(
            slope=round(float(rng.uniform(0.4, 2.2)), 3),
            even=round(float(rng.choice([0.0, 1.0, rng.uniform(0.0, 1.0)])), 3),
            formant=round(float(2.0 ** rng.uniform(1.0, 5.0)), 3),
            width=round(float(rng.uniform(0.3, 1.5)), 3),
            boost_db=round(float(rng.uniform(0.0, 24.0)), 3),
            pulse=round(float(rng.uniform(0.05, 0.5)), 3),
            comb=round(float(rng.choice([0.0, rng.uniform(0.3, 1.0)])), 3),
        )


def procedural_recipes(count: int = PROCEDURAL_COUNT,
                       seed: int = PROCEDURAL_SEED) -> list[tuple[Spectrum, Spectrum]]:
    """``count`` (first frame, last frame) spectrum pairs, drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    return [(Spectrum.draw(rng), Spectrum.draw(rng)) for _ in range(count)]


def procedural_table(name: str, start: Spectrum, end: Spectrum) -> dict:
    return wave_table(name, [(0, start.wave()), (LAST_FRAME, end.wave())], spectral=True)


# --- the bank ---------------------------------------------------------------------------
class WavetableBank(Bank):
    """The oscillators' wavetables by class index (``settings.wavetables``)."""

    format = FORMAT
    settings_key = "wavetables"
    sound_keys = _SOUND_KEYS
    what = "wavetable"

    def builtin(self, entry: Entry) -> dict:
        if entry.kind == "basic":
            return init_table() if entry.name == "Init" else basic_shapes_table()
        start, end = (Spectrum(**r) for r in entry.recipe)
        return procedural_table(entry.name, start, end)

    def fingerprint(self, table: dict) -> np.ndarray:
        return fingerprint(json.dumps(table))

    @functools.cached_property
    def _harmonics(self) -> dict:
        harmonics = self.manifest.get("harmonics", {})
        if len(harmonics.get("counts", ())) != len(self.entries):
            raise BankError("the wavetable bank's manifest has no harmonic counts for its "
                            "tables; write it again with `python -m synth bank --presets "
                            "../shared/real-presets`")
        return harmonics

    def sine_like(self, index: int, frame: float) -> bool:
        """Whether table ``index`` plays at most 2 harmonics (within 30 dB of the loudest)
        around ``frame`` (0..256): at both measured frames beside it (the manifest's
        ``harmonics``). A spectral morph that takes harmonics away can leave such a frame
        with nothing to play."""
        frames, counts = self._harmonics["frames"], self._harmonics["counts"][index]
        hi = min(bisect.bisect_left(frames, frame), len(frames) - 1)
        lo = hi - 1 if hi > 0 and frames[hi] != frame else hi
        return max(counts[lo], counts[hi]) <= 2


# --- spectral fingerprints --------------------------------------------------------------
FINGERPRINT_FRAMES = (0, 64, 128, 192, 256)
FINGERPRINT_HARMONICS = 48
_PROBE_NOTE = 48  # 130.8 Hz: 48 harmonics reach 6.3 kHz
_FLOOR_DB = -60.0
AUDIBLE_HARMONIC_DB = -30.0  # a harmonic this far under the loudest counts as not there


@functools.cache
def _probe() -> tuple[vita.Synth, dict]:
    """A synth playing Vital's init preset (oscillator 1 alone, no filter, no effects).
    Dropped at exit: a synth still alive when the interpreter tears vita's module down makes
    nanobind abort the process."""
    synth = vita.Synth()
    data = json.loads(synth.to_json())
    atexit.register(_probe.cache_clear)
    return synth, data


@functools.lru_cache(maxsize=512)
def fingerprint(table_json: str) -> np.ndarray:
    """The harmonic spectrum, in dB under its loudest harmonic and floored at -60 dB, of
    oscillator 1 playing ``table_json`` at frames 0, 64, 128, 192 and 256; shape
    ``(5, 48)``. Rendered through vita, so it holds for any component type."""
    synth, data = _probe()
    data = copy.deepcopy(data)
    data["settings"]["wavetables"][0] = json.loads(table_json)
    data["settings"]["osc_1_random_phase"] = 0.0
    if not synth.load_json(json.dumps(data)):
        raise BankError("vita could not load a wavetable to fingerprint it")
    frame = synth.get_controls()["osc_1_wave_frame"]
    sr, n = 44100, 8192
    f0 = 440.0 * 2.0 ** ((_PROBE_NOTE - 69) / 12.0)
    window = np.hanning(n)
    bins = np.round(np.arange(1, FINGERPRINT_HARMONICS + 1) * f0 * n / sr).astype(int)
    rows = []
    for pos in FINGERPRINT_FRAMES:
        frame.set(float(pos))
        synth.render(0, 0.0, 0.0, 0.15)  # let the frame control's smoothing settle
        audio = synth.render(_PROBE_NOTE, 1.0, 0.4, 0.4).mean(axis=0)[-n:]
        mag = np.abs(np.fft.rfft(audio * window))
        peaks = np.max(np.stack([mag[bins - 1], mag[bins], mag[bins + 1]]), axis=0)
        db = 20.0 * np.log10(np.maximum(peaks, 1e-12) / max(peaks.max(), 1e-12))
        rows.append(np.maximum(db, _FLOOR_DB))
    return np.stack(rows)


def harmonic_counts(fp: np.ndarray) -> list[int]:
    """How many harmonics sound within :data:`AUDIBLE_HARMONIC_DB` of the loudest, at each
    fingerprint frame: 1 for a sine."""
    return [int(n) for n in (fp > AUDIBLE_HARMONIC_DB).sum(axis=1)]


def fingerprint_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute dB difference between two fingerprints (what :meth:`Bank.nearest`
    minimises)."""
    return float(np.mean(np.abs(a - b)))


# --- building and loading the manifest --------------------------------------------------
def build_manifest(paths: list[Path], credit: str = "") -> dict:
    """The bank manifest: basic tables, the procedural family, and every distinct
    wavetable of the presets at ``paths`` that is not already in the bank."""
    builtin: list[dict] = [
        {"name": "Init", "kind": "basic", "digest": sound_digest(init_table())},
        {"name": "Basic Shapes", "kind": "basic", "digest": sound_digest(basic_shapes_table())},
    ]
    for i, (start, end) in enumerate(procedural_recipes()):
        name = f"Procedural {i + 1:02d}"
        builtin.append({"name": name, "kind": "procedural",
                        "digest": sound_digest(procedural_table(name, start, end)),
                        "recipe": [asdict(start), asdict(end)]})
    manifest = {"format": FORMAT, "version": VERSION, "credit": credit,
                "procedural": {"count": PROCEDURAL_COUNT, "seed": PROCEDURAL_SEED},
                "entries": harvest_entries(WavetableBank, builtin, paths, slots=3)}
    # what the sampler needs to know of each table's sound; kept out of "entries", whose
    # hash is the bank's id, since it follows from the tables
    bank = WavetableBank(manifest, presets=paths[0].parent if paths else None)
    manifest["harmonics"] = {"frames": list(FINGERPRINT_FRAMES), "within_db": AUDIBLE_HARMONIC_DB,
                             "counts": [harmonic_counts(bank.fingerprint(bank.table(i)))
                                        for i in range(len(bank))]}
    manifest["stand_ins"] = stand_ins(bank)
    return manifest


@functools.cache
def get_bank() -> WavetableBank:
    """The shipped bank (``synth/data/wavetable_bank.json``)."""
    return WavetableBank(load_manifest(BANK_PATH))


__all__ = ["BankError", "Spectrum", "WavetableBank", "basic_shapes_table", "build_manifest",
           "fingerprint", "get_bank", "harmonic_counts", "init_table", "sound_digest", "wave_table"]
