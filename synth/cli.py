"""``python -m synth``: inspect the parameter space, render presets, sample presets."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from synth.audio import write_wav
from synth.bank import BankError
from synth.config import ConfigError
from synth.files import write_text
from synth.lfo_shapes import LFO_BANK_PATH, build_lfo_manifest
from synth.preset import PresetError, apply_patch, load_preset, save_preset
from synth.prior import PRIOR_PATH, count
from synth.render import RenderConfig, Renderer, RenderError
from synth.sampling import Sampler, SamplerConfig
from synth.scopes import SCOPES
from synth.space import SpaceError, get_space
from synth.wavetables import BANK_PATH, build_manifest

log = logging.getLogger("synth")
REAL_PRESETS_CREDIT = ("Instatetragrammaton (instatetragrammaton/Patches, folder 'Matt Tytel "
                       "Vital/'), CC BY 4.0")


def error(message: object) -> int:
    """Print one clear ``error:`` line on stderr; return the exit code every synthmatch
    command gives for bad input (2). The commands' ``main`` functions all end this way."""
    print(f"error: {message}", file=sys.stderr)
    return 2


def fatal(message: object) -> None:
    """:func:`error`, then exit."""
    sys.exit(error(message))


def run_command(main: Callable[[], int | None]) -> None:
    """Run a command's ``main`` as the process and exit with its status.

    A reader that closes the pipe early (``python -m synth space | head``) ends the
    command quietly with status 0, as it would end ``cat``: stdout is pointed at
    ``/dev/null`` so that the interpreter's last flush raises nothing either.
    """
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    sys.exit(code)


def run_job(job: Callable[[], object], expected: tuple[type[BaseException], ...]) -> int:
    """Run a command's body; an ``expected`` error is one clear line and exit code 2."""
    try:
        job()
        return 0
    except expected as exc:
        return error(exc)


def _add_render_args(p: argparse.ArgumentParser) -> None:
    d = RenderConfig()
    p.add_argument("--note", type=int, default=60, help="MIDI note (default 60)")
    p.add_argument("--velocity", type=float, default=d.velocity,
                   help=f"velocity 0-1 (default {d.velocity})")
    p.add_argument("--note-dur", type=float, default=d.note_dur,
                   help=f"seconds the key is held (default {d.note_dur})")
    p.add_argument("--dur", type=float, default=d.render_dur,
                   help=f"seconds rendered (default {d.render_dur})")
    p.add_argument("--sample-rate", type=int, default=d.sample_rate,
                   help=f"Hz (default {d.sample_rate})")


def _render_config(args: argparse.Namespace) -> RenderConfig:
    return RenderConfig(sample_rate=args.sample_rate, note_dur=args.note_dur,
                        render_dur=args.dur, velocity=args.velocity)


def _add_presets_args(p: argparse.ArgumentParser, out: Path) -> None:
    """A command that reads a folder of real presets and writes a JSON file in synth/data."""
    p.add_argument("--presets", type=Path, required=True, help="folder of .vital presets")
    p.add_argument("-o", "--out", type=Path, default=out,
                   help=f"output JSON (default {out.relative_to(out.parents[2])})")
    p.add_argument("--credit", default=REAL_PRESETS_CREDIT,
                   help="the presets' author and licence, kept in the file")


def _preset_paths(folder: Path) -> list[Path]:
    paths = sorted(folder.glob("*.vital"))
    if not paths:
        raise PresetError(str(folder), "no .vital presets in this folder")
    return paths


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m synth",
        description="Vital parameter space, sampling and rendering for synthmatch.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("space", help="print a scope's parameters and counts",
                       description="Print the parameters of a scope, their ranges and "
                                   "mappings, and how many controls are left out and why.")
    p.add_argument("--scope", default="core", choices=sorted(SCOPES))
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = sub.add_parser("render", help="render a .vital preset to a WAV file",
                       description="Render one note of a .vital preset to a mono WAV file.")
    p.add_argument("preset", type=Path, help="a .vital file")
    p.add_argument("-o", "--out", type=Path, required=True, help="output .wav")
    _add_render_args(p)

    p = sub.add_parser("sample", help="sample a preset; write .vital and optionally .wav",
                       description="Draw sample INDEX of the sampler seeded with SEED, write "
                                   "it as a .vital preset and optionally render it to WAV "
                                   "at its sampled note.")
    p.add_argument("--scope", default="core", choices=sorted(SCOPES))
    p.add_argument("--seed", type=int, default=0, help="sampler seed (default 0)")
    p.add_argument("--index", type=int, default=0, help="sample index (default 0)")
    p.add_argument("--seed-presets", type=Path, default=None,
                   help="folder of .vital files to perturb (optional)")
    p.add_argument("--perturb-fraction", type=float, default=0.0,
                   help="share of samples perturbed from seed presets (default 0)")
    p.add_argument("-o", "--out", type=Path, required=True, help="output .vital")
    p.add_argument("--wav", type=Path, default=None, help="also render to this .wav")

    p = sub.add_parser("prior", help="count what real presets use (effects, routes)",
                       description="Count how many presets of a folder turn each effect and "
                                   "oscillator on and use each modulation route, and write "
                                   "the studio scope's prior (the route vocabulary and the "
                                   "sampler's rates) as JSON.")
    _add_presets_args(p, PRIOR_PATH)

    p = sub.add_parser("bank", help="write the wavetable and LFO shape banks' manifests",
                       description="Write the studio scope's banks: the wavetables (Vital's "
                                   "init saw, the basic shapes, the procedural family) and the "
                                   "LFO shapes (Vital's triangle and standard shapes), each "
                                   "with every distinct one of a folder of real presets (named "
                                   "by preset, slot and sha256; the data stays in the presets, "
                                   "read when first needed). The wavetable manifest also "
                                   "records how many harmonics each table plays at five "
                                   "frames, measured through vita (the sampler keeps "
                                   "harmonic-stripping morphs off sines).")
    p.add_argument("--presets", type=Path, required=True, help="folder of .vital presets")
    p.add_argument("--out-dir", type=Path, default=BANK_PATH.parent,
                   help="where wavetable_bank.json and lfo_shape_bank.json go (default "
                        f"{BANK_PATH.parent.relative_to(BANK_PATH.parents[2])})")
    p.add_argument("--credit", default=REAL_PRESETS_CREDIT,
                   help="the presets' author and licence, kept in the files")
    return parser


def cmd_bank(args: argparse.Namespace) -> None:
    paths = _preset_paths(args.presets)
    for manifest, path in ((build_manifest(paths, args.credit), BANK_PATH),
                           (build_lfo_manifest(paths, args.credit), LFO_BANK_PATH)):
        out = args.out_dir / path.name
        write_text(out, json.dumps(manifest, indent=1) + "\n")
        kinds = [e["kind"] for e in manifest["entries"]]
        log.info("wrote %s (%d entries: %d built in, %d harvested from %d presets)", out,
                 len(kinds), len(kinds) - kinds.count("harvested"), kinds.count("harvested"),
                 len(paths))


def cmd_prior(args: argparse.Namespace) -> None:
    paths = _preset_paths(args.presets)
    prior = count(paths, args.credit)
    write_text(args.out, json.dumps(prior, indent=1) + "\n")
    log.info("wrote %s (%d presets, %d routes, vocabulary of %d)", args.out, prior["presets"],
             len(prior["routes"]), len(prior["vocabulary"]))


def cmd_space(args: argparse.Namespace) -> None:
    space = get_space(args.scope)
    rows = space.describe()
    excluded = space.excluded()
    if args.json:
        print(json.dumps({"id": space.id, "scope": space.name, "parameters": rows,
                          "excluded": excluded}, indent=2))
        return
    print(f"scope {space.name}: {space.scope.description}")
    print(f"space id {space.id}\n")
    print(f"{'name':36} {'module':12} {'kind':11} {'min':>9} {'max':>9} {'default':>9}  "
          f"{'scale':11} mapping")
    for r in rows:
        print(f"{r['name']:36} {r['module']:12} {r['kind']:11} {r['min']:9.4g} {r['max']:9.4g} "
              f"{r['default']:9.4g}  {r['scale']:11} {r['mapping']}")
    reasons: dict[str, int] = {}
    for reason in excluded.values():
        reasons[reason] = reasons.get(reason, 0) + 1
    print(f"\n{len(space.continuous)} continuous + {len(space.categorical)} categorical = "
          f"{len(space.params)} parameters ({len(space.routes)} of them modulation routes); "
          f"{len(excluded)} of {len(space.controls)} controls left out:")
    for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
        print(f"  {n:4d}  {reason}")


def cmd_render(args: argparse.Namespace) -> None:
    config = _render_config(args)
    preset = load_preset(args.preset)
    result = Renderer(get_space("core"), config).render_preset(preset, args.note)
    write_wav(args.out, result.audio, config.sample_rate)
    status = "ok" if result.valid else f"warning: {result.reason}"
    log.info("wrote %s (peak %.3f, rms %.4f, %s)", args.out, result.peak, result.rms, status)


def cmd_sample(args: argparse.Namespace) -> None:
    seeds = sorted(args.seed_presets.glob("*.vital")) if args.seed_presets else []
    if args.seed_presets and not seeds:
        fatal(f"{args.seed_presets}: no .vital files")
    sampler = Sampler(SamplerConfig(scope=args.scope, seed=args.seed, seed_presets=tuple(seeds),
                                    perturb_fraction=args.perturb_fraction))
    sample = sampler.sample(args.index)
    bases = {p.name: p for p in sampler.seed_presets}
    from synth.base import base_preset

    base = bases.get(sample.base) or base_preset()
    preset = apply_patch(base, sampler.space, sample.patch,
                         name=f"synthmatch sample {args.seed}-{args.index}",
                         comments=f"Sampled by synthmatch ({sample.strategy}, scope "
                                  f"{args.scope}, seed {args.seed}, index {args.index}, "
                                  f"base {sample.base}, note {sample.note}).")
    save_preset(preset, args.out)
    log.info("wrote %s (%s sample, base %s, note %d)", args.out, sample.strategy, sample.base,
             sample.note)
    if args.wav:
        renderer = Renderer(sampler.space, RenderConfig(velocity=sample.velocity),
                            bases=sampler.seed_presets)
        result = renderer.render(sample.patch, sample.note, base=sample.base)
        write_wav(args.wav, result.audio, renderer.config.sample_rate)
        status = "ok" if result.valid else f"warning: {result.reason}"
        log.info("wrote %s (peak %.3f, %s)", args.wav, result.peak, status)


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(message)s")
    try:
        {"space": cmd_space, "render": cmd_render, "sample": cmd_sample,
         "prior": cmd_prior, "bank": cmd_bank}[args.command](args)
    except BrokenPipeError:
        raise  # a closed stdout is no error: run_command ends quietly
    except (PresetError, SpaceError, ConfigError, RenderError, BankError, OSError) as exc:
        return error(exc)
    return 0
