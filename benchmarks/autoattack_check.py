"""robench's `autoattack` threat beside torchattacks' own AutoAttack on the same inputs
(the figures in docs/results.md).

    .venv/bin/python benchmarks/autoattack_check.py gm 0.1 50

Runs ``robench run --threat autoattack`` (registered settings: 100 iterations, Square 5,000
queries, a per-sample cascade) on the first N of robench's seeded test subset, then
``torchattacks.AutoAttack(version="standard", seed=0)`` on the same images, and prints both
worst-case robust accuracies over the clean-correct images, each attack's robust accuracy on the
samples it saw, torchattacks' 95% percentile-bootstrap interval (1,000 resamples, seed 0) and the
wall time of each side. ``tests/test_autoattack_threat.py`` asserts the same comparison (slow).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torchattacks

from robench.checkpoints.bundle import load_bundle
from robench.core.data import load_dataset
from robench.runs.runner import run, select_samples
from robench.scoring.metrics import metric_value
from robench.scoring.worst_case import worst_case_records
from robench.specs.run_config import RunConfig

MODELS = Path(__file__).resolve().parent.parent / "reports" / "regression" / "models"
LABELS = ("APGD-CE", "APGD-T", "FAB-T", "Square")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=["softmax", "gm"])
    parser.add_argument("eps", type=float)
    parser.add_argument("n", type=int)
    args = parser.parse_args()
    path = MODELS / f"{args.model}.pt"

    tic = time.perf_counter()
    config = RunConfig(
        model=path,
        threat="autoattack",
        n=args.n,
        batch_size=args.n,
        seed=0,
        device="cpu",
        settings={f"{label}.eps": args.eps for label in LABELS},
        detectors=("max-prob",),
        sanity=False,
        budgets=(f"linf:{args.eps!r}",),  # the one budget the ensemble runs at
    )
    result = run(config, progress=False, echo=lambda line: None)
    ours = metric_value("survival", worst_case_records(result.records))
    single = {
        label: round(metric_value("survival", group), 3)
        for label, group in result.records.groupby("attack", sort=False)
    }
    seen = result.records.groupby("attack", sort=False).size().to_dict()
    print(
        f"robench autoattack: {ours:.3f} robust ({time.perf_counter() - tic:.0f} s); "
        f"per attack {single}; samples seen {seen}"
    )

    tic = time.perf_counter()
    robust, low, high = torchattacks_autoattack(path, args.eps, args.n)
    print(
        f"torchattacks AutoAttack: {robust.mean():.3f} robust [{low:.3f}, {high:.3f}] "
        f"over {len(robust)} clean-correct ({time.perf_counter() - tic:.0f} s)"
    )


def torchattacks_autoattack(path: Path, eps: float, n: int) -> tuple[np.ndarray, float, float]:
    """torchattacks' standard AutoAttack at L-inf ``eps`` on the first ``n`` of robench's seeded test subset:
    per clean-correct image, 1.0 where it stayed correct, and the 95% percentile-bootstrap interval of the mean
    (1,000 resamples, seed 0)."""
    bundle = load_bundle(path)
    data = load_dataset("mnist-5k")
    index = select_samples(len(data.test), n, 0)
    x, y = data.test.x[index], data.test.y[index]
    with torch.random.fork_rng():  # torchattacks reseeds the global RNG itself
        adv = torchattacks.AutoAttack(bundle.model, norm="Linf", eps=eps, version="standard", n_classes=10, seed=0)(
            x, y
        )
    with torch.no_grad():
        clean = bundle.model(x).argmax(1) == y
        robust = (bundle.model(adv).argmax(1) == y)[clean].float().numpy()
    draws = robust[np.random.default_rng(0).integers(0, len(robust), size=(1000, len(robust)))].mean(1)
    low, high = np.quantile(draws, [0.025, 0.975])
    return robust, float(low), float(high)


if __name__ == "__main__":
    main()
