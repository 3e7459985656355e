"""Train every registered defense with its defaults on mnist-5k and print the accuracy/time table of docs/results.md.

Usage::

    python benchmarks/train_zoo.py [--out-dir reports/zoo] [--seed 0] [--device auto]

Each defense trains alone (run nothing else meanwhile: times are wall-clock),
and its bundle is written to ``OUT_DIR/<defense>.pt``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import robench
from robench.core.devices import resolve_device
from robench.defenses import DEFENSES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=Path("reports/zoo"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--defense", action="append", help="only these (repeatable)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    print("| defense | clean test accuracy | training time (s) |")
    print("|---|---|---|")
    for name in args.defense or DEFENSES.names():
        bundle = robench.checkpoints.train_bundle(defense=name, seed=args.seed, device=device, progress=False)
        robench.save_bundle(args.out_dir / f"{name}.pt", bundle.model, bundle.meta)
        print(f"| `{name}` | {100 * bundle.meta.clean_accuracy:.2f}% | {bundle.meta.train_seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
