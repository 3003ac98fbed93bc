"""How close a scope can get to real presets: each preset imported into the scope, applied
to the base preset and rendered, against the preset itself.

This is the ceiling of any matcher in that scope: a perfect model answers the preset's own
values for the scope's parameters and the base preset's for everything else. In a scope
whose oscillators choose wavetables (``studio``), each takes the nearest bank table, with
the preset left out: the tables the bank holds only because this preset uses them are not
chosen (``import_preset(..., leave_out=True)``); elsewhere the base's wavetables play.
Routes outside ``studio``'s vocabulary from a macro, the mod wheel or the velocity are folded
into the values they set (``synth.preset.fold_constant_routes``); ``--renders`` more than 3
narrows the run-to-run spread of the median (the oscillators' random phase).

Distance: auraloss's ``MultiResolutionSTFTLoss()`` (default arguments) between mono renders
at note 60, velocity 0.8, 1.5 s note, 2 s render; the preset and its import are rendered
``--renders`` times each and render ``i`` is compared with render ``i``. The noise floor is
the preset against its own other renders.

    python benchmarks/scope_ceiling.py --presets ../shared/real-presets --scopes core full studio
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import auraloss
import numpy as np
import torch

from synth import RenderConfig, Renderer, apply_patch, base_preset, get_space, load_preset
from synth.preset import dropped_routes, import_preset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", type=Path, default=Path("../shared/real-presets"))
    parser.add_argument("--scopes", nargs="+", default=["core", "full", "studio"])
    parser.add_argument("--renders", type=int, default=3)
    parser.add_argument("--note", type=int, default=60)
    parser.add_argument("--json", type=Path, help="also write the per-preset table here")
    args = parser.parse_args()

    config = RenderConfig(velocity=0.8, note_dur=1.5, render_dur=2.0)
    loss = auraloss.freq.MultiResolutionSTFTLoss()
    spaces = {name: get_space(name) for name in args.scopes}
    renderer = Renderer(spaces[args.scopes[0]], config)
    base = base_preset()
    t0 = time.perf_counter()

    def renders(preset) -> list[torch.Tensor]:
        return [torch.from_numpy(renderer.render_preset(preset, args.note).audio)[None, None]
                for _ in range(args.renders)]

    def distance(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
        with torch.no_grad():
            return float(np.mean([float(loss(x, y)) for x, y in zip(a, b, strict=True)]))

    rows = {}
    for path in sorted(args.presets.glob("*.vital")):
        preset = load_preset(path)
        own = renders(preset)
        row = {"floor": distance(own, own[1:] + own[:1])}
        for name, space in spaces.items():
            patch = import_preset(preset, space, leave_out=bool(space.banks))
            imported = apply_patch(base, space, patch)
            row[name] = distance(renders(imported), own)
            row[f"{name}_dropped_routes"] = len(dropped_routes(preset, space))
        rows[path.stem] = row
        print(path.stem, {k: round(v, 3) for k, v in row.items()}, flush=True)

    columns = ["floor", *args.scopes]
    medians = {c: round(float(np.median([r[c] for r in rows.values()])), 3) for c in columns}
    report = {"presets": len(rows), "renders": args.renders, "note": args.note,
              "median": medians, "seconds": round(time.perf_counter() - t0, 1)}
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps({**report, "per_preset": rows}, indent=2))


if __name__ == "__main__":
    main()
