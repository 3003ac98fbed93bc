"""How much sound-alike patches share their parameters, in a library.

For a held-out part of a library (``model.library``: patches and the pooled log-mel
embedding of their renders), each entry's nearest neighbour by sound among the rest is
found, and its parameters compared with the entry's own: the mean absolute difference of
the continuous unit values, and the share of categorical parameters with the same class.
The same against a random entry, and against a constant guess (each continuous parameter's
mean, each categorical's most common class). Where the neighbour by sound is no nearer in
parameters than a random entry, the sound does not pin the parameters down, and a model of
the parameters given the sound (a regression, or a generative model of the patch) has
little to learn from it beyond the population.

    python benchmarks/sound_alike_parameters.py --library model/default/library.npz
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from model.library import Library
from model.match import DEFAULT_CHECKPOINT


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--library", type=Path, default=DEFAULT_CHECKPOINT.parent / "library.npz")
    p.add_argument("--held-out", type=int, default=2000, help="entries compared (the last N)")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    lib = Library.load(args.library)
    space = lib.entry_space()
    n = len(lib)
    test, rest = np.arange(n - args.held_out, n), np.arange(n - args.held_out)
    emb = torch.from_numpy(lib.embedding.astype(np.float32))
    near = rest[torch.cdist(emb[test], emb[rest]).argmin(1).numpy()]
    rand = np.random.default_rng(0).choice(rest, len(test))
    patches = [lib.patch(i) for i in range(n)]  # stored or drawn again
    cont = np.stack([q.continuous for q in patches])
    cat = np.stack([q.categorical for q in patches]).astype(np.int64)
    common = np.array([np.bincount(cat[rest, j]).argmax() for j in range(cat.shape[1])])

    def compare(other_cont: np.ndarray, other_cat: np.ndarray) -> dict:
        same = (other_cat == cat[test]).mean(0)
        return {"continuous_mean_abs_diff": round(float(np.abs(other_cont - cont[test]).mean()), 4),
                "categorical_same_class": round(float(same.mean()), 4),
                "per_categorical": {q.name: round(float(s), 3)
                                    for q, s in zip(space.categorical, same, strict=True)}}

    out = {"library": str(args.library), "entries": n, "held_out": len(test),
           "scope": space.name,
           "nearest_by_sound": compare(cont[near], cat[near]),
           "random_entry": compare(cont[rand], cat[rand]),
           "constant_guess": compare(np.broadcast_to(cont[rest].mean(0), cont[test].shape),
                                     np.broadcast_to(common, cat[test].shape))}
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "per_categorical"}
                      if isinstance(v, dict) else v for k, v in out.items()}, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
