"""Where detection holds and where it falls: per detector and budget, the white-box threat's detector-aware worst case
beside what its detector-blind attacks alone give.

    .venv/bin/python benchmarks/detector_evasion.py gm 100 --cw-steps 100 3 --out build/detector-evasion --threads 2

Runs ``robench run --threat white-box`` on the committed bundle with every detector that applies to it plus
``kd+bu`` (KD, BU, KD+BU, the GM likelihood, max-prob on the GM model), at the budgets L-inf 0.1 and 0.3
(``--budget linf:0.1 --budget linf:0.3``), no cascade, seed 0, on the first N of robench's seeded test subset.
The threat's attacks are its registered ones at their registered lengths, the joint attacks included (one copy
per scored detector and budget); ``--blind-only`` leaves the joint attacks out.

From the one run's records it then derives, per detector D and budget, ``survival_detected`` of the worst case
("still correct or flagged by D": the clean-correct samples for which no output inside the ball is both
misclassified and unflagged by D, at the scorer's 5%-FPR threshold on the evaluated samples' clean scores) twice:

- *blind*: over the threat's detector-blind attacks only (C&W-un/-tar, PGD, APGD; records whose
  ``attack_detectors`` is empty): what robench's detector-aware numbers were before any attack knew D;
- *white-box*: over every attack of the threat (the joint attacks included): the threat's figure.

and prints them side by side with the number of clean-correct samples; ``-`` where the budget's ball holds no
output. C&W-wb (an unbounded L2 attack on KD) counts in both where its outputs fall inside an L-inf ball; it targets
KD, so it is in the *blind* column of the other detectors only.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

from robench.core.threads import set_threads
from robench.runs.runner import run
from robench.scoring import records as R
from robench.scoring.metrics import metric_value
from robench.scoring.worst_case import worst_case_mask, worst_case_records
from robench.specs.run_config import RunConfig

MODELS = Path(__file__).resolve().parent.parent / "reports" / "regression" / "models"
DETECTORS = ("kd", "bu", "kd+bu", "gm-likelihood", "max-prob")
BUDGETS = ("linf:0.1", "linf:0.3")
JOINT = ("SPGD", "SPGD-L2", "OPGD", "OPGD-L2")  # the white-box threat's detector-aware bases (those it holds)


def table(records: pd.DataFrame, detectors: tuple[str, ...]) -> pd.DataFrame:
    """Per detector and budget: survival_detected of the blind-only and the whole threat's worst case."""
    plain = records[~worst_case_mask(records)]
    blind = plain[plain[R.ATTACK_DETECTORS].fillna("").astype(str) == ""]
    worst_all, worst_blind = worst_case_records(plain), worst_case_records(blind)
    first = plain[plain[R.ATTACK] == plain[R.ATTACK].iloc[0]]
    clean_correct = int((first[R.CLEAN_PRED] == first[R.LABEL]).sum())
    rows = []
    for detector in detectors:
        if R.score_adv(detector) not in plain:
            continue
        for label in sorted(set(worst_all[R.ATTACK])):
            row = {"detector": detector, "budget": label.removeprefix("worst-case ")}
            for name, frame in (("blind", worst_blind), ("white-box", worst_all)):
                group = frame[frame[R.ATTACK] == label]
                row[name] = metric_value("survival_detected", group, detector) if len(group) else float("nan")
            row["clean_correct"] = clean_correct
            rows.append(row)
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=["softmax", "gm"])
    parser.add_argument("n", type=int)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--blind-only", action="store_true")
    parser.add_argument(
        "--cw-steps",
        type=int,
        nargs=2,
        metavar=("STEPS", "SEARCH_STEPS"),
        default=None,
        help="shorten C&W-wb, C&W-un and C&W-tar (e.g. 100 3, as the README's figure; default: registered lengths)",
    )
    args = parser.parse_args()
    set_threads(args.threads)
    tic = time.perf_counter()
    config = RunConfig(
        model=MODELS / f"{args.model}.pt",
        threat="white-box",
        n=args.n,
        batch_size=min(args.n, 250),
        seed=0,
        device="cpu",
        detectors=DETECTORS if args.model == "gm" else tuple(d for d in DETECTORS if d != "gm-likelihood"),
        sanity=False,
        cascade="none",
        budgets=BUDGETS,
        settings={
            f"{label}.{field}": value
            for label in ("C&W-wb", "C&W-un", "C&W-tar")
            for field, value in zip(("steps", "binary_search_steps"), args.cw_steps or ())
        },
    )
    if args.blind_only:
        from robench.runs.prepare import config_threats

        (threat,) = config_threats(config)
        config = replace(config, attacks=tuple(a for a in threat.labels() if a not in JOINT))
    result = run(config, args.out, progress=False, echo=lambda line: None)
    seconds = time.perf_counter() - tic
    frame = table(result.records, config.detectors)
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"({args.model}, n = {args.n}, {seconds:.0f} s; attacks: {', '.join(sorted(set(result.records[R.ATTACK])))})")


if __name__ == "__main__":
    main()
