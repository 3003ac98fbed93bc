"""Evaluation metrics, as namespaced dicts.

Parameter space: per-module MAE of the unit values (switched-off modules
masked), categorical accuracy, note accuracy. Audio: predictions re-rendered
with vita and compared with the target audio by auraloss's multi-resolution
STFT distance and the log-mel L1 distance.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

from model.loss import Targets, continuous_mask
from model.network import Outputs, SpaceLayout
from synth.audio import log_mel_distance
from synth.space import Patch


class ParamMetrics:
    """Accumulates parameter-space metrics over batches; ``result()`` gives the dict."""

    def __init__(self, layout: SpaceLayout):
        self.layout = layout
        self.abs_err: dict[str, float] = defaultdict(float)
        self.count: dict[str, float] = defaultdict(float)
        self.cat_correct = self.cat_total = self.note_correct = self.n = 0.0

    @torch.no_grad()
    def update(self, out: Outputs, target: Targets) -> None:
        mask = continuous_mask(self.layout, target.categorical)
        err = ((out.continuous.float() - target.continuous).abs() * mask).sum(0).cpu().numpy()
        cnt = mask.sum(0).cpu().numpy()
        for j, module in enumerate(self.layout.modules):
            self.abs_err[module] += float(err[j])
            self.count[module] += float(cnt[j])
        for i in range(len(self.layout.classes)):
            pred = self.layout.logits(out.categorical, i).argmax(1)
            self.cat_correct += float((pred == target.categorical[:, i]).sum())
            self.cat_total += float(pred.numel())
        self.note_correct += float((out.note.argmax(1) == target.note).sum())
        self.n += float(target.note.numel())

    def state(self) -> np.ndarray:
        """Sufficient statistics as one vector (for all-reduce across workers)."""
        mods = sorted(self.count)
        return np.array([self.abs_err[m] for m in mods] + [self.count[m] for m in mods]
                        + [self.cat_correct, self.cat_total, self.note_correct, self.n])

    def load_state(self, vec: np.ndarray) -> None:
        mods = sorted(self.count)
        k = len(mods)
        for i, m in enumerate(mods):
            self.abs_err[m], self.count[m] = float(vec[i]), float(vec[k + i])
        self.cat_correct, self.cat_total, self.note_correct, self.n = map(float, vec[2 * k:])

    def result(self) -> dict[str, float]:
        out = {f"mae/{m}": self.abs_err[m] / self.count[m] for m in sorted(self.count)
               if self.count[m] > 0}
        total_err, total_cnt = sum(self.abs_err.values()), sum(self.count.values())
        out["mae/all"] = total_err / max(total_cnt, 1.0)
        out["acc/categorical"] = self.cat_correct / max(self.cat_total, 1.0)
        out["acc/note"] = self.note_correct / max(self.n, 1.0)
        return out


def predictions(out: Outputs, layout: SpaceLayout) -> tuple[list[Patch], list[int]]:
    """Network outputs -> one Patch and MIDI note per example (argmax, clipped to range)."""
    cont = out.continuous.detach().float().clamp(0, 1).cpu().numpy().astype(np.float64)
    cats = np.stack([layout.logits(out.categorical, i).argmax(1).cpu().numpy()
                     for i in range(len(layout.classes))], axis=1).astype(np.int64)
    notes = out.note.argmax(1).cpu().numpy().tolist()
    return [Patch(c, k) for c, k in zip(cont, cats, strict=True)], notes


def answer_outputs(patches: list[Patch], notes: list[int], layout: SpaceLayout) -> Outputs:
    """Answers (patches and notes) as network outputs, so ``ParamMetrics`` scores any
    method's answer: the continuous values as they are, each chosen class and the note as
    a one-hot logit."""
    b = len(patches)
    categorical = torch.zeros(b, layout.offsets[-1])
    for j in range(len(layout.classes)):
        categorical[torch.arange(b), torch.tensor([layout.offsets[j] + int(p.categorical[j])
                                                   for p in patches])] = 1.0
    note = torch.zeros(b, 128)
    note[torch.arange(b), torch.tensor(notes, dtype=torch.long)] = 1.0
    continuous = torch.from_numpy(np.stack([p.continuous for p in patches])).float()
    return Outputs(continuous, categorical, note)


def audio_tensor(audio: np.ndarray) -> torch.Tensor:
    """Mono audio ``(N,)`` as a float32 tensor ``(1, 1, N)`` for auraloss. A read-only array
    (as Ray's object store hands out) is copied: torch would share it and warn."""
    a = np.ascontiguousarray(audio, dtype=np.float32)
    return torch.from_numpy(a if a.flags.writeable else a.copy())[None, None]


_mrstft = None


def _mrstft_loss():
    """The one ``auraloss.freq.MultiResolutionSTFTLoss()`` (default arguments), made on
    first use (auraloss is imported only where audio is compared)."""
    global _mrstft
    import auraloss

    if _mrstft is None:
        _mrstft = auraloss.freq.MultiResolutionSTFTLoss()
    return _mrstft


def mrstft_distance(pred: np.ndarray, target: np.ndarray) -> float:
    """auraloss's ``MultiResolutionSTFTLoss()`` (default arguments) between two mono renders."""
    n = min(len(pred), len(target))
    with torch.no_grad():
        return float(_mrstft_loss()(audio_tensor(pred[:n]), audio_tensor(target[:n])))


class ClipDistance:
    """``mrstft_distance(render, clip)`` for many renders against one clip, the clip's
    spectra computed once (the search scores hundreds of renders against one clip; half of
    each distance was the clip's STFTs again). Built from auraloss's own STFT losses, so it
    is the same number (``tests/test_match.py``); thread-safe: it only reads."""

    def __init__(self, clip: np.ndarray):
        self.loss, self.clip = _mrstft_loss(), np.ascontiguousarray(clip, dtype=np.float32)
        for f in self.loss.stft_losses:  # the terms computed below: auraloss's defaults
            assert not (f.perceptual_weighting or f.scale or f.scale_invariance or f.w_phs)
        with torch.no_grad():
            y = audio_tensor(self.clip)[0]
            self.spectra = [f.stft(y)[0] for f in self.loss.stft_losses]

    def __call__(self, render: np.ndarray) -> float:
        n = len(self.clip)
        if len(render) < n:  # shorter than the clip: compared with as much of it
            return mrstft_distance(render, self.clip)
        x = audio_tensor(render[:n])[0]
        total = 0.0
        with torch.no_grad():
            for f, y in zip(self.loss.stft_losses, self.spectra, strict=True):
                mag = f.stft(x)[0]
                total += float(f.w_sc * f.spectralconv(mag, y) + f.w_log_mag * f.logstft(mag, y)
                               + f.w_lin_mag * f.linstft(mag, y))
        return total / len(self.loss.stft_losses)


AUDIO_METRICS = ("audio/logmel_l1", "audio/mrstft")  # the keys of ``audio_distances``


def audio_distances(pred: np.ndarray, target: np.ndarray, sample_rate: int) -> dict[str, float]:
    """auraloss multi-resolution STFT distance and log-mel L1 between two mono renders
    (keys: ``AUDIO_METRICS``)."""
    n = min(len(pred), len(target))
    return {"audio/mrstft": mrstft_distance(pred, target),
            "audio/logmel_l1": log_mel_distance(pred[:n], target[:n], sample_rate)}
