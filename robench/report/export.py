"""``robench export``: a run directory's headline numbers as a flat table (JSON, CSV) or as RobustBench's model info.

Everything is read from the run directory (:func:`robench.report.rundir.load_run_dir`): the numbers
from the records, through the summary (:mod:`robench.scoring.metrics`, with the worst-case rows of
:mod:`robench.scoring.worst_case`) and the bootstrap of the reports (:mod:`robench.report.bootstrap`);
budgets, seeds, content hashes, versions and git revisions from the run.json files.

**The flat table** (``json``, ``csv``): one row per model x threat x crafting model, the threat's
worst case over its attacks (:data:`COLUMNS` says what each column holds). A threat with two or more
attacks is its summary's ``worst-case`` row (a sample counts as robust when its clean input and every
attack's output are classified correctly); a threat of one attack is that attack's row. Corruptions
(noise, rotation) are not attacks a worst case takes: each gets a row of its own. The budget ``eps``
is filled only where every attack of the row has an ``eps`` budget (the registered attack's
``budget_param``), in one norm, of one value; otherwise it is empty and ``norm`` / ``budgets`` say what
the attacks have (``mixed`` norms, another parameter such as a corruption's ``sigma``, or no budget at
all: C&W). Fractions stay fractions, as in ``summary.csv``.

**RobustBench** (``robustbench``): the fields of RobustBench's ``model_info/<dataset>/<threat
model>/<Name>.json`` files, for each model whose run holds the ``autoattack`` threat. The field names,
their order, and their values written as strings (``"clean_acc": "94.78"``, ``"eps": "8/255"``,
``"eps": "0.5"``) follow RobustBench's own files ``model_info/cifar10/Linf/Standard.json``,
``model_info/cifar10/Linf/Carmon2019Unlabeled.json`` and ``model_info/cifar10/L2/Standard.json`` in
github.com/RobustBench/robustbench. The fields about the paper (``link``, ``name``, ``authors``,
``venue``, ``reported``) are left empty for the user. ``number_forward_passes`` (RobustBench: the
forward passes one prediction of the model takes, 2 for an ensemble of two) is not recorded by a run
and is left null; run.json's ``image_passes`` counts something else (the images an attack forwarded)
and is shown under ``robench`` with the rest of what a run records.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from robench.core.errors import ConfigError, RobenchError
from robench.core.provenance import jsonable
from robench.report.bootstrap import bootstrap_intervals
from robench.report.rundir import RunDir
from robench.runs.output import SANITY_FLAGS
from robench.runs.sanity import DETECTOR_NOT_ATTACKED
from robench.scoring import records as R
from robench.scoring.budgets import budgets_of
from robench.scoring.metrics import COUNT, DETECTOR, NO_DETECTOR
from robench.scoring.worst_case import worst_case_label, worst_case_mask, worst_case_records

EXPORT_FORMATS: tuple[str, ...] = ("json", "csv", "robustbench")
FORMAT_NAME = "robench-export"
FORMAT_VERSION = 1
LEVEL = 0.95  # the bootstrap intervals' confidence level
AUTOATTACK = "autoattack"

# The flat table's fixed columns, in order; each detector adds survival_detected:DET and its interval after them.
COLUMNS: dict[str, str] = {
    "model": "the model's name",
    "content_hash": "SHA-256 of the model's weights and identity (run.json model.content_hash)",
    "threat": "the threat model",
    "crafted_on": "the model the attacks were crafted on (the model itself, or a black-box threat's substitute)",
    "attacks": "the attacks the row's worst case is over, in cascade order",
    "norm": "the norm of the attacks' budget: Linf, L2, none (corruptions), mixed (attacks in different norms)",
    "eps": "the worst case's budget (a row per budget); without budgets, the one the attacks share, else empty",
    "budgets": "each attack's own budget as run.json records it",
    "n": "samples evaluated",
    "seed": "the run's --seed (several, comma-separated, when the row's runs differ)",
    R.CASCADE: "how the run cascaded the threat (none: every attack on every sample), as summary.csv says",
    "clean_accuracy": "accuracy on the clean inputs",
    "robust_accuracy": "samples whose clean input and every attack's output are classified correctly, over all n",
    "robust_accuracy_low": "lower end of robust_accuracy's 95% bootstrap interval",
    "robust_accuracy_high": "upper end of robust_accuracy's 95% bootstrap interval",
    "survival": "robust samples among the clean-correct ones",
    "survival_low": "lower end of survival's 95% bootstrap interval",
    "survival_high": "upper end of survival's 95% bootstrap interval",
    "broke_most": "the attack that broke the most clean-correct samples first (in cascade order); empty if none broke",
    "broke_most_samples": "how many clean-correct samples broke_most broke first",
    "versions": "package versions the run recorded (name=version; ...)",
    "git_revision": "robench's git revision the run recorded",
    SANITY_FLAGS: (
        "the flagged sanity checks of the row's summary rows, comma-separated (empty when none): as summary.csv's, "
        "recomputed from the records where they are record checks; a check that flags only some detectors' figures "
        "(detector-not-attacked: their survival_detected columns are upper bounds) is named once per detector, "
        "CHECK:DETECTOR"
    ),
}
DETECTOR_METRIC = "survival_detected"
# Checks about one detector's figures (robench.runs.detector_checks): named with their detector even when every
# detector of a row carries them, so that a reader knows which survival_detected columns they concern.
_PER_DETECTOR = (DETECTOR_NOT_ATTACKED,)

_MIXED = "mixed"


def norm_name(norm: str) -> str:
    """A norm as RobustBench writes it: ``Linf``, ``L2`` (an attack's ``norm`` is lower case); ``none`` stays."""
    text = norm.strip()
    return "L" + text[1:] if len(text) > 1 and text[0] in "lL" else text


def detector_columns(detector: str) -> list[str]:
    """The three columns a scored detector adds: the worst-case ``survival_detected`` and its interval."""
    column = f"{DETECTOR_METRIC}:{detector}"
    return [column, f"{column}_low", f"{column}_high"]


# ---------------------------------------------------------------- what run.json says


def _runs_of(run_dir: RunDir, model: str, threat: str, crafted_on: str) -> list[dict]:
    """The run.json files that ran ``threat`` on ``model`` (crafted on ``crafted_on`` where they say so)."""
    found = []
    for run in run_dir.runs:
        meta = run.get("model")
        if not isinstance(meta, dict) or meta.get("name") != model or _threat_entry(run, threat) is None:
            continue
        substitute = run.get("substitute")
        sub_name = substitute.get("name") if isinstance(substitute, dict) else None
        found.append((crafted_on in (model, sub_name), run))
    exact = [run for match, run in found if match]
    return exact or [run for _, run in found]


def _threat_entry(run: Mapping[str, Any], threat: str) -> dict | None:
    entries = run.get("threats")
    if not isinstance(entries, list) or not entries:
        entries = [run.get("threat")]  # runs of one threat, before run.json listed several
    return next((t for t in entries if isinstance(t, dict) and t.get("name") == threat), None)


def _attack_specs(runs: Sequence[Mapping[str, Any]], threat: str) -> dict[str, dict]:
    """Attack label -> its run.json entry (registered name, resolved params), over the runs of a row."""
    specs: dict[str, dict] = {}
    for run in runs:
        entry = _threat_entry(run, threat) or {}
        for spec in entry.get("attacks") or []:
            if isinstance(spec, dict) and isinstance(spec.get("label"), str):
                specs.setdefault(spec["label"], spec)
    return specs


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


@dataclass(frozen=True)
class Budget:
    """One attack's budget as run.json records it: its norm, the registered budget parameter and its value."""

    label: str
    norm: str | None  # Linf, L2, none, ...; None when the attack is not known
    param: str | None  # "eps", "sigma", ...; None for an unbounded attack (C&W) or an unknown one
    value: float | None

    def text(self) -> str:
        norm = self.norm or "unknown norm"
        if self.param is None:
            return f"{self.label}: {norm}, no budget"
        value = "?" if self.value is None else f"{self.value:g}"
        return f"{self.label}: {'' if norm == 'none' else norm + ' '}{self.param}={value}"


def attack_budget(label: str, spec: Mapping[str, Any] | None) -> Budget:
    """The budget of one run.json attack entry: the registered attack's ``budget_param`` and ``norm``, its params'
    values (a ``norm`` parameter, as the peer libraries' attacks have, wins over the class's)."""
    if spec is None:
        return Budget(label, None, None, None)
    params = spec.get("params") if isinstance(spec.get("params"), dict) else {}
    cls = None
    name = spec.get("attack")
    if isinstance(name, str):
        from robench.attacks import ATTACKS

        try:
            cls = ATTACKS.get(name)
        except (RobenchError, ImportError, LookupError, ValueError, TypeError):  # not known to this robench
            cls = None
    norm = params.get("norm") if isinstance(params.get("norm"), str) else getattr(cls, "norm", None)
    norm = norm_name(norm) if isinstance(norm, str) else None
    param = getattr(cls, "budget_param", None) if cls is not None else None
    return Budget(label, norm, param, _number(params.get(param)) if param else None)


def shared_budget(budgets: Sequence[Budget]) -> tuple[str | None, float | None]:
    """(norm, eps) of a row: the norm its attacks share (``mixed`` otherwise, None when unknown), and the eps
    they share, None unless every attack has an ``eps`` budget of one value in one norm."""
    norms = {b.norm for b in budgets}
    if not budgets or None in norms:
        return None, None
    norm = norms.pop() if len(norms) == 1 else _MIXED
    values = {b.value for b in budgets}
    if norm != _MIXED and all(b.param == "eps" for b in budgets) and len(values) == 1 and None not in values:
        return norm, values.pop()
    return norm, None


def _joined(values: Sequence[Any]) -> str | None:
    distinct = sorted({str(v) for v in values if v is not None and v != ""})
    return ",".join(distinct) or None


def _seed(runs: Sequence[Mapping[str, Any]]) -> int | str | None:
    seeds = sorted(
        {
            seed
            for run in runs
            if isinstance(run.get("config"), dict)
            and isinstance(seed := run["config"].get("seed"), int)
            and not isinstance(seed, bool)
        }
    )
    if len(seeds) == 1:
        return seeds[0]
    return ",".join(map(str, seeds)) or None


def _versions(runs: Sequence[Mapping[str, Any]]) -> str | None:
    by_name: dict[str, set[str]] = {}
    for run in runs:
        versions = run.get("versions")
        if isinstance(versions, dict):
            for name, version in versions.items():
                by_name.setdefault(str(name), set()).add(str(version))
    return "; ".join(f"{name}={'|'.join(sorted(v))}" for name, v in sorted(by_name.items())) or None


# ---------------------------------------------------------------- the flat table


@dataclass(frozen=True)
class _Unit:
    """The attacks one row is about, the label of its summary rows (``worst-case <budget>``, or the one attack's),
    and for a worst case its budget's norm and eps."""

    attacks: tuple[str, ...]
    summary_attack: str
    norm: str | None = None
    eps: float | None = None

    @property
    def worst_case(self) -> bool:
        return self.norm is not None


def _units(group: pd.DataFrame, listed: Sequence[str] = ()) -> list[_Unit]:
    """One model x threat x crafting model's rows: the worst case over its attacks at each budget the records carry
    (the attack alone when it has one; each attack alone when the records carry no budget), then each corruption on
    its own (a worst case leaves corruptions out).

    ``listed`` is the threat's attacks in cascade order as run.json records them: a cascade's attack that was left
    no sample has no record, but it ran, and belongs to the worst case's attacks (and budgets).
    """
    order = (
        group.groupby(R.ATTACK, sort=False)[R.ORDER].min()
        if R.ORDER in group
        else pd.Series(range(group[R.ATTACK].nunique()), index=group[R.ATTACK].unique())
    )
    labels = list(order.sort_values(kind="stable").index)
    corrupt = set(group.loc[R.corruption_mask(group), R.ATTACK])
    plain = [a for a in labels if a not in corrupt]
    units = []
    if plain:
        unseen = [a for a in listed if a not in labels]
        if unseen:  # in run.json's (cascade) order
            plain = [a for a in listed if a in plain or a in unseen] + [a for a in plain if a not in listed]
        recorded = [a for a in plain if a in labels]
        budgets = budgets_of(group)
        if len(recorded) >= 2 and budgets:
            units += [_Unit(tuple(plain), worst_case_label(b), b.norm, b.eps) for b in budgets]
        elif len(recorded) >= 2:
            units += [_Unit((a,), a) for a in recorded]
        else:
            units.append(_Unit(tuple(plain), recorded[0]))
    units += [_Unit((a,), a) for a in labels if a in corrupt]
    return units


def _listed_attacks(runs: Sequence[Mapping[str, Any]], threat: str, specs: Mapping[str, dict]) -> list[str]:
    """The threat's attack labels in the cascade order run.json records (``execution.cascade_order``), else in
    the order it lists them."""
    for run in runs:
        execution = run.get("execution") if isinstance(run.get("execution"), dict) else {}
        orders = execution.get("cascade_order") if isinstance(execution.get("cascade_order"), dict) else {}
        order = orders.get(threat)
        if isinstance(order, list) and set(order) == set(specs):
            return [str(a) for a in order]
    return list(specs)


def _broke_most(unit: _Unit, group: pd.DataFrame, worst: pd.DataFrame) -> tuple[str | None, int]:
    """(attack, count): the attack that broke the most clean-correct samples first, in cascade order
    (``broken_by`` of the worst-case records); ties go to the earlier attack."""
    if unit.worst_case:
        worst = worst[worst[R.ATTACK] == unit.summary_attack]
        correct = R.clean_correct(worst)
        broken = worst.loc[correct & (worst[R.BROKEN_BY].to_numpy() != ""), R.BROKEN_BY]
        counts = {a: int((broken == a).sum()) for a in unit.attacks}
    else:
        rows = group[group[R.ATTACK] == unit.summary_attack]
        counts = {unit.summary_attack: int((R.clean_correct(rows) & ~R.robust(rows)).sum())}
    best = max(counts, key=lambda a: counts[a])  # the first of the ties: dicts keep the cascade order
    return (best, counts[best]) if counts[best] > 0 else (None, 0)


def row_flags(point: pd.DataFrame) -> str:
    """One export row's ``sanity_flags`` from its summary rows (one per detector, each with ``sanity_flags``).

    A check every summary row carries is the row's and is named as it is; one that only some detectors' rows carry
    says something about those detectors' columns alone and is named ``CHECK:DETECTOR`` for each of them.
    """
    carried: dict[str, list[str]] = {}  # check -> the detectors whose rows carry it, in order
    for detector, flags in zip(point[DETECTOR], point[SANITY_FLAGS].fillna("")):
        for name in str(flags).split(","):
            if name.strip():
                carried.setdefault(name.strip(), []).append(str(detector))
    detectors = list(point[DETECTOR].astype(str))
    names = []
    for name, by in carried.items():
        if set(by) >= set(detectors) and name not in _PER_DETECTOR:
            names.append(name)
        else:
            names += [f"{name}:{detector}" for detector in by]
    return ",".join(names)


def _float(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def export_table(run_dir: RunDir, *, n_resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """The flat table: one row per model x threat x crafting model (x corruption), :data:`COLUMNS` then the
    detector columns (:func:`detector_columns`), None where a value is not defined or not recorded."""
    records = R.with_crafted_on(run_dir.records)
    records = records[~worst_case_mask(records)]
    summary = run_dir.flagged_summary()
    intervals = bootstrap_intervals(records, n_resamples=n_resamples, level=LEVEL, seed=seed)
    worst = worst_case_records(records)
    group_keys = [R.MODEL, R.THREAT, R.CRAFTED_ON]
    rows: list[dict[str, Any]] = []
    detectors: list[str] = []
    for (model, threat, crafted_on), group in records.groupby(group_keys, sort=False):
        runs = _runs_of(run_dir, model, threat, crafted_on)
        specs = _attack_specs(runs, threat)
        meta = next((r["model"] for r in runs), run_dir.model_meta().get(model, {}))
        key = {R.MODEL: model, R.THREAT: threat, R.CRAFTED_ON: crafted_on}
        in_group = (summary[group_keys] == pd.Series(key)).all(axis=1)
        in_intervals = (intervals[group_keys] == pd.Series(key)).all(axis=1)
        worst_group = worst[(worst[group_keys] == pd.Series(key)).all(axis=1)]
        for unit in _units(group, _listed_attacks(runs, threat, specs)):
            point = summary[in_group & (summary[R.ATTACK] == unit.summary_attack)]
            spread = intervals[in_intervals & (intervals[R.ATTACK] == unit.summary_attack)]
            first, first_spread = point.iloc[0], spread.iloc[0]
            budgets = [attack_budget(a, specs.get(a)) for a in unit.attacks]
            norm, eps = (norm_name(unit.norm), unit.eps) if unit.worst_case else shared_budget(budgets)
            broke_most, broke_count = _broke_most(unit, group, worst_group)
            row: dict[str, Any] = {
                "model": model,
                "content_hash": meta.get("content_hash") if isinstance(meta, dict) else None,
                "threat": threat,
                "crafted_on": crafted_on,
                "attacks": ", ".join(unit.attacks),
                "norm": norm,
                "eps": eps,
                "budgets": "; ".join(b.text() for b in budgets) if specs else None,
                "n": int(first[COUNT]),
                "seed": _seed(runs),
                R.CASCADE: str(first[R.CASCADE]),
                "clean_accuracy": _float(first["clean_accuracy"]),
                "robust_accuracy": _float(first["robust_accuracy"]),
                "robust_accuracy_low": _float(first_spread["robust_accuracy_low"]),
                "robust_accuracy_high": _float(first_spread["robust_accuracy_high"]),
                "survival": _float(first["survival"]),
                "survival_low": _float(first_spread["survival_low"]),
                "survival_high": _float(first_spread["survival_high"]),
                "broke_most": broke_most,
                "broke_most_samples": broke_count,
                "versions": _versions(runs),
                "git_revision": _joined([r.get("git_revision") for r in runs]),
                SANITY_FLAGS: row_flags(point),
            }
            for detector in point[DETECTOR]:
                if detector == NO_DETECTOR:
                    continue
                value = _float(point.loc[point[DETECTOR] == detector, DETECTOR_METRIC].iloc[0])
                if value is None:  # a corruption: no adversary to flag
                    continue
                band = spread[spread[DETECTOR] == detector]
                columns = detector_columns(detector)
                row[columns[0]] = value
                row[columns[1]] = _float(band[f"{DETECTOR_METRIC}_low"].iloc[0]) if len(band) else None
                row[columns[2]] = _float(band[f"{DETECTOR_METRIC}_high"].iloc[0]) if len(band) else None
                if detector not in detectors:
                    detectors.append(detector)
            rows.append(row)
    columns = [*COLUMNS, *(c for d in detectors for c in detector_columns(d))]
    table = pd.DataFrame(rows, columns=columns).astype(object)
    return table.where(table.notna(), None)


def _plain_rows(table: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in jsonable(row).items()}
        for row in table.to_dict(orient="records")
    ]


def render_json(table: pd.DataFrame, *, n_resamples: int, seed: int) -> str:
    document = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "bootstrap": {"level": LEVEL, "resamples": int(n_resamples), "seed": int(seed)},
        "rows": _plain_rows(table),
    }
    return json.dumps(document, indent=2, allow_nan=False) + "\n"


def render_csv(table: pd.DataFrame) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(table.columns)
    for row in _plain_rows(table):
        writer.writerow("" if v is None else repr(v) if isinstance(v, float) else v for v in row.values())
    return buffer.getvalue()


# ---------------------------------------------------------------- RobustBench


def eps_text(eps: float) -> str:
    """RobustBench's way of writing a budget: ``"8/255"`` where eps is k/255 and has no short decimal form,
    otherwise the number (``"0.5"``, ``"0.3"``)."""
    decimal = repr(float(eps))
    k = round(eps * 255)
    if k >= 1 and len(decimal) > 6 and math.isclose(eps, k / 255, rel_tol=1e-9, abs_tol=0.0):
        return f"{k}/255"
    return decimal


def percent_text(fraction: float | None) -> str | None:
    """A fraction as RobustBench writes an accuracy: percent, rounded to 2 decimals, as a string (``"59.53"``)."""
    return None if fraction is None else str(round(100.0 * fraction, 2))


def _percent(fraction: float | None) -> float | None:
    return None if fraction is None else round(100.0 * fraction, 2)


def _registered_autoattack() -> list[str] | None:
    from robench.specs.threats import THREATS

    try:
        return THREATS.get(AUTOATTACK).labels()
    except RobenchError:
        return None


def robustbench_info(run_dir: RunDir, *, n_resamples: int = 1000, seed: int = 0) -> tuple[Any, list[str]]:
    """(the model-info object, notes): one object for one model, {model: object} for several."""
    table = export_table(run_dir, n_resamples=n_resamples, seed=seed)
    threats = list(dict.fromkeys(table["threat"]))
    rows = table[(table["threat"] == AUTOATTACK) & (table["crafted_on"] == table["model"])]
    if rows.empty:
        raise ConfigError(
            f"robustbench needs a run of the '{AUTOATTACK}' threat (robench run --threat {AUTOATTACK}); "
            f"{run_dir.path} holds {', '.join(threats)}"
        )
    notes = [
        f"model '{m}' has no {AUTOATTACK} run: left out"
        for m in dict.fromkeys(table["model"])
        if m not in set(rows["model"])
    ]
    registered = _registered_autoattack()
    out: dict[str, dict[str, Any]] = {}
    for model in dict.fromkeys(rows["model"]):
        runs = _runs_of(run_dir, model, AUTOATTACK, model)
        where = f"the {AUTOATTACK} threat of model '{model}'"
        if not runs:
            raise ConfigError(f"{where} has no run.json below {run_dir.path}: its budget is not recorded")
        specs = _attack_specs(runs, AUTOATTACK)
        missing = [a for a in registered or [] if a not in specs]
        if missing:
            raise ConfigError(
                f"{where} ran without {', '.join(missing)}: RobustBench's autoattack_acc is the full ensemble's "
                f"({', '.join(registered or [])}); rerun without --attack"
            )
        budgets = [attack_budget(a, spec) for a, spec in specs.items()]
        norm, eps = shared_budget(budgets)
        if eps is None or norm not in ("Linf", "L2"):
            raise ConfigError(
                f"{where} has no single L-inf or L2 budget ({'; '.join(b.text() for b in budgets)}); "
                "RobustBench records one eps"
            )
        mine = rows[rows["model"] == model]
        at = mine[(mine["norm"] == norm) & mine["eps"].map(lambda e: e is not None and math.isclose(e, eps))]
        if at.empty:
            raise ConfigError(
                f"{where} states no worst case at its attacks' budget ({norm} {eps:g}); "
                f"rerun with --budget {norm.lower()}:{eps!r}"
            )
        row = at.iloc[0]
        run = runs[0]
        meta = run.get("model") if isinstance(run.get("model"), dict) else {}
        config = run.get("config") if isinstance(run.get("config"), dict) else {}
        passes = run.get("image_passes") if isinstance(run.get("image_passes"), dict) else {}
        prefix = f"{AUTOATTACK}/"
        out[model] = {
            # RobustBench's model_info fields, in the order of its files; the paper's fields are for the user.
            "link": "",
            "name": "",
            "authors": "",
            "additional_data": False,
            "number_forward_passes": None,
            "dataset": run.get("dataset") or meta.get("dataset"),
            "venue": "",
            "architecture": meta.get("arch"),
            "eps": eps_text(row["eps"]),
            "clean_acc": percent_text(row["clean_accuracy"]),
            "reported": "",
            "autoattack_acc": percent_text(row["robust_accuracy"]),
            "threat_model": row["norm"],
            # What the run recorded, for the reader (RobustBench's files have no field for it).
            "robench": {
                "model": model,
                "content_hash": row["content_hash"],
                "defense": meta.get("defense"),
                "n": row["n"],
                "seed": row["seed"],
                "autoattack_acc_interval": [
                    _percent(row["robust_accuracy_low"]),
                    _percent(row["robust_accuracy_high"]),
                ],
                "level": LEVEL,
                "attacks": row["attacks"],
                "broke_most": row["broke_most"],
                "cascade": row[R.CASCADE],
                "sanity_flags": row[SANITY_FLAGS],
                "settings": config.get("settings") or {},
                "image_passes": {k[len(prefix) :]: v for k, v in passes.items() if str(k).startswith(prefix)},
                "git_revision": row["git_revision"],
            },
        }
    return (next(iter(out.values())) if len(out) == 1 else out), notes


def render_robustbench(info: Any) -> str:
    return json.dumps(jsonable(info), indent=2, allow_nan=False) + "\n"


# ---------------------------------------------------------------- one entry point


def export_text(run_dir: RunDir, fmt: str, *, n_resamples: int = 1000, seed: int = 0) -> tuple[str, list[str]]:
    """(the export of ``run_dir`` in ``fmt``, notes for stderr)."""
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"unknown export format '{fmt}'; known: {', '.join(EXPORT_FORMATS)}")
    if fmt == "robustbench":
        info, notes = robustbench_info(run_dir, n_resamples=n_resamples, seed=seed)
        return render_robustbench(info), notes
    table = export_table(run_dir, n_resamples=n_resamples, seed=seed)
    if fmt == "json":
        return render_json(table, n_resamples=n_resamples, seed=seed), []
    return render_csv(table), []
