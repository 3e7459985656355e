"""The README's L-inf budget sweep (robench.app.budget_sweep): both committed models x six budgets.

    .venv/bin/python reports/sweep/run_sweep.py            # n = 100, every attack at its registered length
    .venv/bin/python reports/sweep/run_sweep.py --n 50 --budgets 0.1 0.2

Each (model, eps) is one resumable run under --out (its parts are reused by a rerun); the table
(CSV, Markdown) and the plot are computed from the runs' records and written next to this file.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from robench.app.budget_sweep import SWEEP_BUDGETS, sweep_config, sweep_markdown, sweep_plot, sweep_row, sweep_table
from robench.core.provenance import atomic_write_bytes
from robench.runs.runner import run

HERE = Path(__file__).resolve().parent
MODELS = {
    "softmax": HERE.parent / "regression" / "models" / "softmax.pt",
    "gm": HERE.parent / "regression" / "models" / "gm.pt",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budgets", type=float, nargs="+", default=list(SWEEP_BUDGETS))
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("build/sweep"))
    parser.add_argument("--results", type=Path, default=HERE, help="folder of budget_sweep.{csv,md,png}")
    args = parser.parse_args(argv)
    rows = []
    for name in args.models:
        for eps in args.budgets:
            tic = time.perf_counter()
            config = sweep_config(MODELS[name], eps, n=args.n, seed=args.seed, device=args.device, model_name=name)
            result = run(config, out=args.out / f"{name}-eps{eps:g}", progress=False, echo=lambda line: None)
            row = sweep_row(result.records, eps)
            rows.append(row)
            print(
                f"{name} eps {eps:g}: white-box worst case {100 * row['threat_worst_case']:.1f}%, "
                f"torchattacks APGD-CE+DLR {100 * row['library_worst_case']:.1f}% ({time.perf_counter() - tic:.0f} s)",
                flush=True,
            )
    table = sweep_table(rows)
    args.results.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.results / "budget_sweep.csv", table.to_csv(index=False).encode())
    atomic_write_bytes(args.results / "budget_sweep.md", sweep_markdown(table).encode())
    sweep_plot(table, args.results / "budget_sweep.png")
    print(sweep_markdown(table))
    return 0 if bool(table["within_goal"].all()) else 1


if __name__ == "__main__":
    sys.exit(main())
