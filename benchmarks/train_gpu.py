"""Training on a GPU: the step that ``distributed.train --use-gpu`` runs, checked against the CPU.

CI and the development machine have no GPU, so this is where the ``--use-gpu`` path
(the model, log-mel features and loss on CUDA, bf16 autocast) is exercised. It uses
the training code itself (``accumulation_step``, ``MatchNet``, ``MatchLoss``, the
autocast ``train_func`` sets up), without Ray: the GPU machines it runs on carry no
Ray. In one run:

1. render ``--samples`` training samples as ``distributed.generate`` would (the
   ``core`` sampler and renderer, one synth per process);
2. agreement: from the same weights, on the same batch (dropout off), the loss and the
   gradient on the GPU in fp32 and in bf16 autocast against the CPU in fp32;
3. throughput: training examples/s on the GPU (bf16) at batch 32 and 256, against the
   CPU with all its threads at batch 32, measured in the same run;
4. fit: ``--steps`` GPU steps over the rendered samples; the loss must fall;
5. fine-tuning through the synth (``model.sound``, as ``model/default/finetune.json``
   sets it up, from the default model's weights): on the same 16 clips, the sound term's
   gradient on the GPU (bf16) against the CPU's, beside the CPU's against itself: the
   draws are the same, but their renders differ by vita's random oscillator phase, so
   each device runs ``--sound-repeats`` times and the runs are compared pairwise; then
   examples/s of such steps on the GPU against the CPU, with ``--render-threads`` synths
   rendering the draws.

    python benchmarks/train_gpu.py --samples 1024 --sound-repeats 6 --json train_gpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distributed.train import Batch, accumulation_step  # noqa: E402
from model.checkpoint import load_checkpoint  # noqa: E402
from model.features import FeatureConfig  # noqa: E402
from model.loss import LossConfig, MatchLoss, Targets  # noqa: E402
from model.match import DEFAULT_CHECKPOINT  # noqa: E402
from model.network import MatchNet, ModelConfig  # noqa: E402
from model.sound import SoundConfig, SoundObjective  # noqa: E402
from synth import RenderConfig, Renderer, Sampler, SamplerConfig, get_space  # noqa: E402

_worker: tuple[Sampler, Renderer] | None = None


def _render(index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int] | None:
    global _worker
    if _worker is None:
        sampler = Sampler(SamplerConfig(seed=7))
        _worker = (sampler, Renderer(sampler.space, RenderConfig()))
    sampler, renderer = _worker
    sample = sampler.sample(index)
    result = renderer.render(sample.patch, sample.note)
    if not result.valid:
        return None
    return result.audio, sample.patch.continuous, sample.patch.categorical, sample.note


def render_samples(n: int) -> tuple[torch.Tensor, Targets]:
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        rows = [r for r in pool.map(_render, range(n), chunksize=8) if r is not None]
    audio = torch.from_numpy(np.stack([r[0] for r in rows]).astype(np.float32))
    return audio, Targets(torch.from_numpy(np.stack([r[1] for r in rows]).astype(np.float32)),
                          torch.from_numpy(np.stack([r[2] for r in rows]).astype(np.int64)),
                          torch.tensor([r[3] for r in rows], dtype=torch.int64))


def batch(audio: torch.Tensor, target: Targets, idx: torch.Tensor, device) -> Batch:
    return Batch(audio[idx].to(device), Targets(target.continuous[idx].to(device),
                                                target.categorical[idx].to(device),
                                                target.note[idx].to(device)))


def gradient(model: MatchNet, b: Batch, loss_fn: MatchLoss, autocast=None,
             sound: SoundObjective | None = None) -> tuple[dict, torch.Tensor]:
    """The losses and the flattened gradient of one step (SGD, lr 0: the weights stay)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    losses = accumulation_step(model, [b], loss_fn, opt, 0.0, autocast, sound)
    return losses, torch.cat([p.grad.flatten().float().cpu() for p in model.parameters()])


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=0))


def summary(values: list[float]) -> dict[str, float]:
    return {"mean": round(float(np.mean(values)), 4), "min": round(float(np.min(values)), 4),
            "max": round(float(np.max(values)), 4), "pairs": len(values)}


def throughput(model, audio, target, loss_fn, device, size: int, steps: int, autocast=None,
               sound: SoundObjective | None = None):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    g = torch.Generator().manual_seed(0)

    def step():
        idx = torch.randint(0, len(audio), (size,), generator=g)
        accumulation_step(model, [batch(audio, target, idx, device)], loss_fn, opt, 1.0,
                          autocast, sound)

    for _ in range(3):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return size * steps / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=512, help="samples to render (default 512)")
    p.add_argument("--steps", type=int, default=300, help="GPU steps of the fit (default 300)")
    p.add_argument("--render-threads", type=int, default=os.cpu_count() or 1,
                   help="synths rendering the sound objective's draws (default: all cores)")
    p.add_argument("--sound-repeats", type=int, default=4,
                   help="sound-objective steps per device for the agreement (default 4)")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("no CUDA device: this benchmark checks the --use-gpu training path")
    gpu, cpu = torch.device("cuda"), torch.device("cpu")
    space, features = get_space("core"), FeatureConfig()
    t = time.perf_counter()
    audio, target = render_samples(args.samples)
    render_s = time.perf_counter() - t
    loss_cfg = LossConfig()
    torch.manual_seed(0)
    reference = MatchNet(space, features, ModelConfig())
    bf16 = torch.autocast("cuda", dtype=torch.bfloat16)  # as train_func sets it up
    idx = torch.arange(min(32, len(audio)))

    def copy(device, state=None):
        m = MatchNet(space, features, ModelConfig()).to(device)
        m.load_state_dict(reference.state_dict() if state is None else state)
        return m.eval()  # dropout off: every run from ``state`` sees the same network

    losses_cpu, grad_cpu = gradient(copy(cpu), batch(audio, target, idx, cpu),
                                    MatchLoss(reference.layout, loss_cfg))
    losses_gpu, grad_gpu = gradient(copy(gpu), batch(audio, target, idx, gpu),
                                    MatchLoss(reference.layout, loss_cfg))
    losses_bf16, grad_bf16 = gradient(copy(gpu), batch(audio, target, idx, gpu),
                                      MatchLoss(reference.layout, loss_cfg), bf16)
    loss_cpu, loss_gpu, loss_bf16 = (x["loss/total"] for x in (losses_cpu, losses_gpu,
                                                                losses_bf16))

    # the sound objective, from the default model's weights as fine-tuning starts. The
    # same seed draws the same patches on every device; the renders still differ by their
    # random phase, so the runs on each device are repeated and compared pairwise.
    sound_cfg = SoundConfig(weight=6.0, samples=4, sigma=0.08,
                            render_threads=args.render_threads)
    trained = load_checkpoint(DEFAULT_CHECKPOINT).model.state_dict()
    def objective(model):
        return SoundObjective(space, model.layout, model.frontend, features.render_config(),
                              sound_cfg, seed=0)

    sound_devices = (("cpu", cpu, None), ("gpu_bf16", gpu, bf16))
    clips = {name: batch(audio, target, idx[:16], device) for name, device, _ in sound_devices}
    # the parameter losses' part of the gradient: the same in every repeat, subtracted to
    # leave the sound term's
    grad_params = {name: gradient(copy(device, trained), clips[name],
                                  MatchLoss(reference.layout, loss_cfg), autocast)[1]
                   for name, device, autocast in sound_devices}
    sound_runs: dict[str, list] = {name: [] for name, _, _ in sound_devices}
    for _ in range(args.sound_repeats):
        for name, device, autocast in sound_devices:
            model = copy(device, trained)
            sound = objective(model)
            losses, grad = gradient(model, clips[name], MatchLoss(model.layout, loss_cfg),
                                    autocast, sound)
            sound.close()
            sound_runs[name].append((losses, grad - grad_params[name]))
    cpu_runs, gpu_runs = sound_runs["cpu"], sound_runs["gpu_bf16"]
    cos_cpu_cpu = [cosine(x[1], y[1]) for i, x in enumerate(cpu_runs) for y in cpu_runs[i + 1:]]
    cos_gpu_cpu = [cosine(x[1], y[1]) for x in gpu_runs for y in cpu_runs]

    loss_fn = MatchLoss(reference.layout, loss_cfg)
    torch.set_num_threads(os.cpu_count() or 1)
    rate_cpu = throughput(copy(cpu), audio, target, loss_fn, cpu, 32, 10)
    rate_gpu_32 = throughput(copy(gpu), audio, target, loss_fn, gpu, 32, 50, bf16)
    rate_gpu_256 = throughput(copy(gpu), audio, target, loss_fn, gpu, 256, 20, bf16)
    sound_rates = {}
    for name, device, autocast in (("cpu", cpu, None), ("gpu_bf16", gpu, bf16)):
        model = copy(device, trained).train()
        sound = objective(model)
        sound_rates[name] = throughput(model, audio, target, loss_fn, device, 16, 10, autocast,
                                       sound)
        sound.close()

    torch.manual_seed(1)
    model = MatchNet(space, features, ModelConfig()).to(gpu).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(1)
    curve = []
    for _ in range(args.steps):
        i = torch.randint(0, len(audio), (32,), generator=g)
        curve.append(accumulation_step(model, [batch(audio, target, i, gpu)], loss_fn, opt,
                                       1.0, bf16)["loss/total"])
    first, last = float(np.mean(curve[:20])), float(np.mean(curve[-20:]))

    result = {
        "device": torch.cuda.get_device_name(0), "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(), "rendered": len(audio),
        "render_seconds": round(render_s, 1),
        "agreement": {
            "loss_cpu_fp32": round(loss_cpu, 6), "loss_gpu_fp32": round(loss_gpu, 6),
            "loss_gpu_bf16": round(loss_bf16, 6),
            "gradient_cosine_gpu_fp32_vs_cpu": round(cosine(grad_gpu, grad_cpu), 6),
            "gradient_cosine_gpu_bf16_vs_cpu": round(cosine(grad_bf16, grad_cpu), 6),
        },
        "examples_per_s": {"cpu_batch_32": round(rate_cpu, 1),
                           "gpu_bf16_batch_32": round(rate_gpu_32, 1),
                           "gpu_bf16_batch_256": round(rate_gpu_256, 1)},
        "ratio_gpu_batch_32_vs_cpu": round(rate_gpu_32 / rate_cpu, 2),
        "ratio_gpu_batch_256_vs_cpu": round(rate_gpu_256 / rate_cpu, 2),
        "sound": {
            "render_threads": args.render_threads,
            "repeats": args.sound_repeats,
            **{f"loss_sound_{k}": [round(r[0]["loss/sound"], 4) for r in v]
               for k, v in sound_runs.items()},
            **{f"reward_{k}": [round(r[0]["sound/reward"], 5) for r in v]
               for k, v in sound_runs.items()},
            "sound_term_gradient_cosine_cpu_vs_cpu": summary(cos_cpu_cpu),
            "sound_term_gradient_cosine_gpu_bf16_vs_cpu": summary(cos_gpu_cpu),
            "examples_per_s_cpu_batch_16": round(sound_rates["cpu"], 1),
            "examples_per_s_gpu_bf16_batch_16": round(sound_rates["gpu_bf16"], 1),
            "ratio_gpu_vs_cpu": round(sound_rates["gpu_bf16"] / sound_rates["cpu"], 2),
        },
        "fit": {"steps": args.steps, "loss_first_20": round(first, 4),
                "loss_last_20": round(last, 4), "fell": last < first},
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
