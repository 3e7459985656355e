"""An L-inf budget sweep: the white-box threat's L-inf attacks against torchattacks' APGD-CE + APGD-DLR.

At each budget eps, one run of the white-box threat on a model holds its L-inf attacks (PGD-10/50,
untargeted and targeted, and APGD-CE / APGD-DLR on the defense's adaptive objective) with eps set,
plus torchattacks' ``APGD`` with ``loss="ce"`` and ``loss="dlr"`` (100 steps, one restart: Croce &
Hein 2020's APGD-CE and APGD-DLR, run through robench's adapters) added to the same threat, so both
sides attack the same seeded inputs. The white-box threat's C&W attacks are left out: they are
unbounded L2 attacks, so their success says nothing about a budget.

Everything below the configs is a pure function of the runs' records: the worst-case robust
accuracy of each side (clean-correct samples still classified correctly after every attack of that
side, :func:`robench.scoring.worst_case.worst_case_group`) and the best single attack of each side.
The threat's worst case must be no higher than the libraries' plus one point (the check this sweep makes);
the runner's sanity check ``library-attack-beats-threat`` says the same per run.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from robench.core.provenance import atomic_write_bytes
from robench.scoring import records as R
from robench.scoring.budgets import Budget
from robench.scoring.metrics import metric_value
from robench.scoring.worst_case import worst_case_group, worst_case_mask
from robench.specs.run_config import RunConfig

SWEEP_BUDGETS: tuple[float, ...] = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
SWEEP_THREAT = "white-box"
# The white-box threat's L-inf attacks (robench.specs.threats), each given the sweep's eps.
OWN_LINF: tuple[str, ...] = ("PGD-10-un", "PGD-50-un", "PGD-10-tar", "PGD-50-tar", "APGD-CE", "APGD-DLR")
# torchattacks' APGD-CE and APGD-DLR at the AutoAttack paper's 100 iterations (torchattacks' default is 10).
LIBRARY_APGD: tuple[Mapping[str, Any], ...] = (
    {
        "label": "torchattacks-APGD-CE",
        "attack": "torchattacks:APGD",
        "params": {"loss": "ce", "steps": 100, "n_restarts": 1},
    },
    {
        "label": "torchattacks-APGD-DLR",
        "attack": "torchattacks:APGD",
        "params": {"loss": "dlr", "steps": 100, "n_restarts": 1},
    },
)
# The check: the threat's worst case no higher than the libraries' plus this (robust-accuracy fraction).
SWEEP_TOLERANCE = 0.01
SWEEP_COLUMNS = [
    R.MODEL,
    "eps",
    "n_clean_correct",
    "threat_worst_case",
    "library_worst_case",
    "gap",
    "threat_without_apgd",
    "best_own",
    "best_own_attack",
    "best_library",
    "best_library_attack",
    "within_goal",
]


def library_labels() -> tuple[str, ...]:
    return tuple(str(a["label"]) for a in LIBRARY_APGD)


def sweep_config(
    model: str | Path,
    eps: float,
    *,
    n: int = 100,
    seed: int = 0,
    batch_size: int = 200,
    device: str = "auto",
    model_name: str | None = None,
    own: Sequence[str] = OWN_LINF,
    library_steps: int | None = None,
    own_settings: Mapping[str, Any] | None = None,
) -> RunConfig:
    """The run of one model at one budget: the threat's L-inf attacks and torchattacks' APGD-CE/DLR at ``eps``.

    ``library_steps`` / ``own_settings`` (``{"LABEL.PARAM": value}``) shorten a sweep for tests only;
    the sweep in docs/results.md uses the defaults (every attack at its registered length, the library at 100 steps).
    """
    settings: dict[str, Any] = {f"{label}.eps": float(eps) for label in own}
    settings.update(own_settings or {})
    added = []
    for entry in LIBRARY_APGD:
        params = {**entry["params"], "eps": float(eps)}
        if library_steps is not None:
            params["steps"] = int(library_steps)
        added.append({**entry, "params": params, "target_mode": "none"})
    return RunConfig(
        model=Path(model),
        threat=SWEEP_THREAT,
        n=n,
        batch_size=batch_size,
        seed=seed,
        device=device,
        settings=settings,
        attacks=(*own, *library_labels()),
        detectors=("max-prob",),  # the sweep compares robust accuracy; the cheapest detector keeps the records complete
        extra_attacks=tuple(added),
        model_name=model_name,
        sanity=False,
        cascade="none",  # both sides on every sample: the comparison is paired
        budgets=(f"linf:{eps!r}",),  # the sweep's one ball: every attack runs at it, so no per-budget copies
    )


def _side(records: pd.DataFrame, labels: Sequence[str], eps: float) -> tuple[float, float, str]:
    """(worst-case robust accuracy at L-inf ``eps``, best single attack's robust accuracy, its label) of ``labels``'
    records."""
    mine = records[records[R.ATTACK].isin(list(labels))]
    worst = worst_case_group(mine, Budget("linf", eps)) if mine[R.ATTACK].nunique() > 1 else mine
    single = {label: metric_value("survival", group) for label, group in mine.groupby(R.ATTACK, sort=False)}
    best = min(single, key=lambda label: single[label])
    return metric_value("survival", worst), single[best], str(best)


def sweep_row(records: pd.DataFrame, eps: float, own: Sequence[str] = OWN_LINF) -> dict[str, Any]:
    """One model's row at budget ``eps`` from its run's records (pure)."""
    plain = records[~worst_case_mask(records) & (records[R.THREAT] == SWEEP_THREAT).to_numpy()]
    models = plain[R.MODEL].unique()
    if len(models) != 1:
        raise ValueError(f"a sweep row needs the records of one model, got {list(models)}")
    first = plain.drop_duplicates(R.SAMPLE)
    threat, best_own, best_own_attack = _side(plain, own, eps)
    # the threat before it had APGD (its PGD attacks alone): weaker than the field's standard
    before = [label for label in own if not label.startswith("APGD")]
    without_apgd = _side(plain, before, eps)[0] if before else float("nan")
    library, best_lib, best_lib_attack = _side(plain, library_labels(), eps)
    return {
        R.MODEL: str(models[0]),
        "eps": float(eps),
        "n_clean_correct": int((first[R.CLEAN_PRED] == first[R.LABEL]).sum()),
        "threat_worst_case": threat,
        "library_worst_case": library,
        "gap": threat - library,
        "threat_without_apgd": without_apgd,
        "best_own": best_own,
        "best_own_attack": best_own_attack,
        "best_library": best_lib,
        "best_library_attack": best_lib_attack,
        "within_goal": bool(threat <= library + SWEEP_TOLERANCE + 1e-12),
    }


def sweep_table(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The rows as a frame, by model then budget."""
    table = pd.DataFrame(list(rows), columns=SWEEP_COLUMNS)
    return table.sort_values([R.MODEL, "eps"], kind="stable").reset_index(drop=True)


def sweep_markdown(table: pd.DataFrame) -> str:
    """The table of docs/results.md: robust accuracy (%) of both sides per model and budget."""
    lines = [
        "| model | eps | clean-correct | white-box worst case | torchattacks APGD-CE+DLR | gap (pts) "
        "| PGD attacks only | strongest own attack | within 1 pt |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in table.itertuples(index=False):
        lines.append(
            f"| {row.model} | {row.eps:g} | {row.n_clean_correct} | {100 * row.threat_worst_case:.1f} "
            f"| {100 * row.library_worst_case:.1f} "
            f"| {100 * row.gap:+.1f} | {100 * row.threat_without_apgd:.1f} "
            f"| {row.best_own_attack} ({100 * row.best_own:.1f}) "
            f"| {'yes' if row.within_goal else 'NO'} |"
        )
    return "\n".join(lines) + "\n"


def sweep_plot(table: pd.DataFrame, path: Path) -> None:
    """Robust accuracy against eps, one panel per model: the threat's worst case and the libraries'."""
    from robench.core.mpl import literal, pyplot

    plt = pyplot()
    models = list(dict.fromkeys(table[R.MODEL]))
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.4), squeeze=False, sharey=True)
    for ax, model in zip(axes[0], models):
        mine = table[table[R.MODEL] == model]
        ax.plot(mine["eps"], 100 * mine["threat_worst_case"], "o-", label="white-box worst case (robench)")
        ax.plot(mine["eps"], 100 * mine["library_worst_case"], "s--", label="torchattacks APGD-CE + APGD-DLR")
        ax.plot(
            mine["eps"],
            100 * mine["threat_without_apgd"],
            "^:",
            color="grey",
            label="white-box PGD attacks only (before APGD)",
        )
        ax.set_title(literal(model))
        ax.set_xlabel("L-inf budget eps")
        ax.set_xticks(np.asarray(mine["eps"], dtype=float))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("robust accuracy (%)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=110, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
