"""The white-box threat's worst case at an L-inf budget beside torchattacks' AutoAttack (standard) on the same inputs.

    .venv/bin/python benchmarks/worst_case_vs_autoattack.py gm 0.1 50 --threads 1

Runs ``robench run --threat white-box --budget linf:EPS`` restricted to the threat's L-inf attacks
(PGD-10/-50 un/targeted and APGD-CE/-DLR on the defense's adaptive objective at the threat's own
eps 0.3, plus APGD-CE/-DLR at EPS: the threat's per-budget copies) on the first N of robench's
seeded test subset, no cascade, and reads the worst case at ``Linf EPS`` (``survival``: the
clean-correct samples no output inside the ball misclassified). The threat's C&W attacks are left
out to keep the run short: a worst case is a minimum over attacks, so the whole threat's can only
be lower or equal (no cascade), and the comparison below is conservative for robench.

Then ``torchattacks.AutoAttack(norm="Linf", eps=EPS, version="standard", seed=0)`` on the same
images (APGD-CE, APGD-T, FAB-T, Square 5,000 queries) and its robust accuracy over the same
clean-correct images, with a 95% percentile-bootstrap interval (1,000 resamples, seed 0). Prints
both, their difference in points, and the wall time of each side. The goal: robench's worst case
at most AutoAttack's + 1 point.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from autoattack_check import torchattacks_autoattack

from robench.core.threads import set_threads
from robench.runs.runner import run
from robench.scoring.budgets import Budget
from robench.scoring.metrics import metric_value
from robench.scoring.worst_case import worst_case_label, worst_case_records
from robench.specs.run_config import RunConfig

MODELS = Path(__file__).resolve().parent.parent / "reports" / "regression" / "models"
LINF_ATTACKS = ("PGD-10-un", "PGD-50-un", "PGD-10-tar", "PGD-50-tar", "APGD-CE", "APGD-DLR")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=["softmax", "gm"])
    parser.add_argument("eps", type=float)
    parser.add_argument("n", type=int)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    set_threads(args.threads)
    path = MODELS / f"{args.model}.pt"

    tic = time.perf_counter()
    config = RunConfig(
        model=path,
        threat="white-box",
        n=args.n,
        batch_size=args.n,
        seed=0,
        device="cpu",
        attacks=LINF_ATTACKS,
        detectors=("max-prob",),
        sanity=False,
        cascade="none",
        budgets=(f"linf:{args.eps!r}",),
    )
    result = run(config, progress=False, echo=lambda line: None)
    label = worst_case_label(Budget("linf", args.eps))
    worst = worst_case_records(result.records)
    ours = metric_value("survival", worst[worst["attack"] == label])
    ran = sorted(set(result.records["attack"]))
    print(
        f"robench white-box worst case at {label[len('worst-case ') :]}: {ours:.3f} ({time.perf_counter() - tic:.0f} s)"
    )
    print(f"  attacks: {', '.join(ran)}")

    tic = time.perf_counter()
    robust, low, high = torchattacks_autoattack(path, args.eps, args.n)
    print(
        f"torchattacks AutoAttack (standard): {robust.mean():.3f} [{low:.3f}, {high:.3f}] "
        f"over {len(robust)} clean-correct ({time.perf_counter() - tic:.0f} s)"
    )
    gap = 100 * (ours - robust.mean())
    print(f"robench - AutoAttack: {gap:+.1f} points ({'within' if gap <= 1.0 else 'ABOVE'} the +1 point goal)")


if __name__ == "__main__":
    main()
