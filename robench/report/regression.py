"""The regression gate: a baseline file of every summary metric with its bootstrap interval, and a check against it.

A baseline row is one metric of one model x threat x attack (x detector for
the detector metrics auc_roc and flagged_rate; the others are stored once per
group with detector ``-``). A checked value is

- ``worse``: moved in the direction that is worse for the defense
  (``METRICS[metric].higher_is_better``) beyond the tolerance,
- ``better``: moved the other way beyond it,
- ``ok``: within it, or NaN in both,
- ``missing``: in the baseline but not in the run; ``new``: the reverse (informational).

The tolerance is an absolute ``--tolerance METRIC=VALUE`` where given, else the
baseline's bootstrap interval (widened to include the baseline value). A value
that becomes NaN, or stops being NaN, counts as worse.

``robench check`` exits

- **0** (PASS): every baseline value is ``ok`` (or ``better``, one-sided),
- **1** (FAIL): a real regression only: a value ``worse``, ``missing``, or
  ``better`` with ``--two-sided``,
- **2** (cannot judge, one line ``robench: error: ...``, raised here as
  :class:`CannotJudge` or another ``ConfigError``): a baseline that is not
  readable or not well-formed (not JSON, wrong format or version, a row without a
  field, a non-numeric, infinite or, for a percent metric, out-of-[0, 1] value or
  interval bound, low above high, a null value with an interval or a number
  without one), a baseline with no rows, an unreadable run directory, records of
  the wrong column types or with a label or prediction outside the model's
  classes, a baseline of other models or threats (no model x threat pair, or no
  group, in common), a model whose weights (content hash) differ from the
  baseline's or are not recorded in its ``models`` (unless
  ``--allow-changed-models``: then it is a note), a run without the run.json that
  records its weights, seed and dataset, another seed (run.json's config seed
  against the header's ``seeds``) or another sample count ``n`` for a group.
  Emptiness is never a pass, and bad input is never a regression.

The baseline header records ``seeds`` (model -> threat -> the seeds of the runs,
from run.json). A version-1 file written before that still reads: a header
without ``seeds`` means "not recorded" and is not compared; a header with
``seeds`` must hold every pair in common. ``robench baseline`` refuses a run it
could not check like this (no run.json, no seed, labels it cannot check).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from robench.core.errors import ConfigError
from robench.core.files import MAX_JSON_BYTES, UserFileError, read_user_file, shown
from robench.core.provenance import atomic_write_text
from robench.core.registry import did_you_mean
from robench.report.bootstrap import bootstrap_intervals
from robench.report.rundir import RUN_FILE, RunDir, load_run_dir
from robench.scoring import records as R
from robench.scoring.metrics import COUNT, DETECTOR, METRICS, NO_DETECTOR, SUMMARY_KEYS


class CannotJudge(ConfigError):
    """The run cannot be judged against the baseline (exit 2): they measure different things, or one is not usable."""

    exit_code = 2


FORMAT = "robench-baseline"
VERSION = 1
KEYS = [*SUMMARY_KEYS, DETECTOR, "metric"]
ROW_FIELDS = [*KEYS, "value", "low", "high", "n"]
STATUS_ORDER = ("worse", "missing", "better", "new", "ok")
# Recomputing the same records on another machine may change the last bits of a mean; that is not a move.
SAME = 1e-9


def metric_rows(summary: pd.DataFrame, intervals: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per metric value of a summary (``ROW_FIELDS``; low/high NaN without ``intervals``), sorted by key."""
    metrics = [m for m in METRICS.names() if m in summary.columns]
    table = summary if intervals is None else summary.merge(intervals, on=[*SUMMARY_KEYS, DETECTOR, COUNT], how="left")
    parts = []
    for metric in metrics:
        if METRICS.get(metric).per_detector:
            chosen = table[table[DETECTOR] != NO_DETECTOR]
        else:  # the same for every detector of a group: keep one copy, under detector "-"
            chosen = table.drop_duplicates(subset=SUMMARY_KEYS).assign(**{DETECTOR: NO_DETECTOR})
        part = chosen[[*SUMMARY_KEYS, DETECTOR, COUNT]].assign(metric=metric, value=chosen[metric].astype(float))
        for side in ("low", "high"):
            column = f"{metric}_{side}"
            part[side] = chosen[column].astype(float) if column in chosen else math.nan
        parts.append(part)
    if not parts:
        return pd.DataFrame(columns=ROW_FIELDS)
    rows = pd.concat(parts, ignore_index=True)[ROW_FIELDS]
    return rows.sort_values(KEYS, kind="stable").reset_index(drop=True)


def _revision(run_dir: RunDir) -> str:
    revisions = sorted({str(run["git_revision"]) for run in run_dir.runs if run.get("git_revision")})
    return ",".join(revisions) or "unknown"


def _models(run_dir: RunDir) -> dict[str, dict[str, Any]]:
    return {
        name: {key: meta.get(key) for key in ("content_hash", "defense", "dataset")}
        for name, meta in sorted(run_dir.model_meta().items())
    }


def _run_seeds(run_dir: RunDir) -> dict[str, dict[str, list[int]]]:
    """Model -> threat -> the sorted seeds of the run.json files that ran it (runs without a recorded seed left out)."""
    seeds: dict[str, dict[str, set[int]]] = {}
    for run in run_dir.runs:
        config = run.get("config") if isinstance(run.get("config"), dict) else {}
        seed, model = config.get("seed"), run.get("model")
        name = model.get("name") if isinstance(model, dict) else None
        if isinstance(seed, bool) or not isinstance(seed, int) or not isinstance(name, str):
            continue
        threats = [t.get("name") for t in run.get("threats") or [] if isinstance(t, dict)]
        if not threats and isinstance(run.get("threat"), dict):
            threats = [run["threat"].get("name")]
        for threat in threats:
            if isinstance(threat, str):
                seeds.setdefault(name, {}).setdefault(threat, set()).add(seed)
    return {m: {t: sorted(s) for t, s in sorted(by_threat.items())} for m, by_threat in sorted(seeds.items())}


def _json_number(value: Any) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def format_baseline(header: Mapping[str, Any], rows: pd.DataFrame) -> str:
    """JSON with one baseline row per line, so that a changed value is a one-line diff."""
    lines = [f"  {json.dumps(key)}: {json.dumps(value, sort_keys=True)}," for key, value in header.items()]
    records = []
    for row in rows.itertuples(index=False):
        item = {k: getattr(row, k) for k in KEYS}
        item.update(value=_json_number(row.value), low=_json_number(row.low), high=_json_number(row.high), n=int(row.n))
        records.append("    " + json.dumps(item))
    return "{\n" + "\n".join(lines) + '\n  "rows": [\n' + ",\n".join(records) + "\n  ]\n}\n"


def write_baseline(
    run_dir: Path, out: Path, *, n_resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> pd.DataFrame:
    """Write the baseline of every metric in the run's summary, with its bootstrap interval, to ``out``;
    return its rows."""
    run = load_run_dir(run_dir)
    problem = _provenance_problem(run, _pairs(run.records))
    if problem:
        raise ConfigError(f"cannot write a baseline of {run_dir}: {problem}")
    intervals = bootstrap_intervals(run.records, n_resamples=n_resamples, level=level, seed=seed)
    rows = metric_rows(run.summary(), intervals)
    bare = rows[rows["value"].notna() & (rows["low"].isna() | rows["high"].isna())]
    if len(bare):
        first = bare.iloc[0]
        raise ConfigError(
            f"cannot write a baseline of {run_dir}: {len(bare)} value(s) have "
            "no bootstrap interval (every resample left the metric undefined), "
            f"e.g. {'/'.join(str(first[k]) for k in KEYS)}; pass more --resamples (now {n_resamples})"
        )
    header = {
        "format": FORMAT,
        "version": VERSION,
        "source": str(run_dir),
        "git_revision": _revision(run),
        "bootstrap": {"n_resamples": int(n_resamples), "level": float(level), "seed": int(seed)},
        "models": _models(run),
        "seeds": _run_seeds(run),
    }
    atomic_write_text(out, format_baseline(header, rows))
    return rows


def _number(value: Any, where: str) -> float:
    """A baseline number: finite, or null/NaN (an undefined metric); infinities are defects."""
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where} must be a number or null, got {value!r}")
    if math.isinf(value):
        raise ConfigError(f"{where} is {value!r}; a baseline holds finite numbers or null")
    return float(value)


def _shown(number: float) -> str:
    return "null" if math.isnan(number) else repr(number)


def _check_row(metric: str, value: float, low: float, high: float, where: str) -> None:
    """A percent metric and its interval lie in [0, 1]; an interval's low end is not above its high end.

    A value and its interval are defined together: an undefined metric (null value) has no
    interval, and a number always has one (``robench baseline`` writes both or neither).
    """
    if math.isnan(value) and not (math.isnan(low) and math.isnan(high)):
        raise ConfigError(
            f"{where}: 'value' of {metric} is null (undefined) but its interval is "
            f"[{_shown(low)}, {_shown(high)}]; an undefined metric has no interval"
        )
    if not math.isnan(value) and (math.isnan(low) or math.isnan(high)):
        raise ConfigError(
            f"{where}: {metric} is {value!r} without an interval ('low' "
            f"{_shown(low)}, 'high' {_shown(high)}); a number needs both bounds"
        )
    if METRICS.get(metric).percent:
        for key, number in (("value", value), ("low", low), ("high", high)):
            if not math.isnan(number) and not 0.0 <= number <= 1.0:
                raise ConfigError(f"{where}: {key!r} of {metric} is {number!r}, outside [0, 1] (a fraction)")
    if not (math.isnan(low) or math.isnan(high)) and low > high:
        raise ConfigError(f"{where}: 'low' {low!r} is above 'high' {high!r}")


def _check_seeds(seeds: Any, path: Path) -> dict[str, dict[str, list[int]]]:
    """The header's ``seeds`` (model -> threat -> list of ints); absent means not recorded."""
    if seeds is None:
        return {}
    where = f'baseline file {path}: "seeds"'
    if not isinstance(seeds, dict):
        raise ConfigError(f"{where} must map model -> threat -> list of seeds, got {seeds!r}")
    for model, by_threat in seeds.items():
        if not isinstance(by_threat, dict):
            raise ConfigError(f"{where} of model '{model}' must map threat -> list of seeds, got {by_threat!r}")
        for threat, values in by_threat.items():
            if not isinstance(values, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
                raise ConfigError(f"{where} of {model}/{threat} must be a list of integers, got {values!r}")
    return seeds


def _check_models(models: Any, path: Path) -> None:
    """The header's ``models`` (model -> {"content_hash": str or null, ...}); absent is judged by ``check_run``."""
    if models is None:
        return
    where = f'baseline file {path}: "models"'
    if not isinstance(models, dict):
        raise ConfigError(
            f"{where} must map model -> its weights' entry (content_hash, defense, dataset), got {models!r}"
        )
    for model, meta in models.items():
        if not isinstance(meta, dict):
            raise ConfigError(f"{where} of model '{model}' must be an object with a content_hash, got {meta!r}")
        if meta.get("content_hash") is not None and not isinstance(meta["content_hash"], str):
            raise ConfigError(
                f"{where} of model '{model}': content_hash must be a string, got {meta['content_hash']!r}"
            )


def read_baseline(path: Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """The header and rows of a baseline file; any defect is a one-line ConfigError."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"baseline file {shown(path)} does not exist")
    try:
        data = json.loads(read_user_file(path, "baseline file", limit=MAX_JSON_BYTES).decode("utf-8"))
    except UserFileError as exc:
        raise ConfigError(str(exc)) from None  # cannot judge: exit 2, as every unreadable input of check
    except (OSError, UnicodeDecodeError, RecursionError) as exc:
        raise ConfigError(f"cannot read baseline file {shown(path)}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"baseline file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ConfigError(
            f'{path} is not a robench baseline (no "format": "{FORMAT}"); write one with \'robench baseline\''
        )
    if data.get("version") != VERSION:
        raise ConfigError(
            f"baseline file {path} has version {data.get('version')!r}; this robench reads version {VERSION}"
        )
    items = data.get("rows")
    if not isinstance(items, list):
        raise ConfigError(f'baseline file {path} has no list of "rows"')
    rows = []
    for i, item in enumerate(items):
        where = f"baseline file {path}, row {i + 1}"
        if not isinstance(item, dict):
            raise ConfigError(f"{where} is not a JSON object")
        absent = [k for k in ROW_FIELDS if k not in item]
        if absent:
            raise ConfigError(f"{where} lacks {', '.join(repr(k) for k in absent)}")
        for key in KEYS:
            if not isinstance(item[key], str):
                raise ConfigError(f"{where}: {key!r} must be a string, got {item[key]!r}")
        if item["metric"] not in METRICS:
            raise ConfigError(
                f"{where} has unknown metric '{item['metric']}'{did_you_mean(item['metric'], METRICS.names())}"
            )
        if isinstance(item["n"], bool) or not isinstance(item["n"], int) or item["n"] < 1:
            raise ConfigError(f"{where}: 'n' must be a positive integer, got {item['n']!r}")
        numbers = {k: _number(item[k], f"{where}: {k!r}") for k in ("value", "low", "high")}
        _check_row(item["metric"], numbers["value"], numbers["low"], numbers["high"], where)
        rows.append({**{k: item[k] for k in KEYS}, **numbers, "n": item["n"]})
    table = pd.DataFrame(rows, columns=ROW_FIELDS)
    duplicated = table.duplicated(subset=KEYS)
    if duplicated.any():
        first = table.loc[duplicated].iloc[0]
        raise ConfigError(f"baseline file {path} lists {'/'.join(str(first[k]) for k in KEYS)} more than once")
    _check_seeds(data.get("seeds"), path)
    _check_models(data.get("models"), path)
    return {k: v for k, v in data.items() if k != "rows"}, table


def check_tolerances(tolerances: Mapping[str, float]) -> dict[str, float]:
    """Validated absolute tolerances: known metric names, finite non-negative numbers."""
    checked = {}
    for metric, value in tolerances.items():
        if metric not in METRICS:
            raise ConfigError(
                f"unknown metric '{metric}' in --tolerance{did_you_mean(metric, METRICS.names())}; "
                f"known: {', '.join(METRICS.names())}"
            )
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ConfigError(f"the tolerance of {metric} must be a non-negative number, got {value!r}")
        checked[metric] = float(value)
    return checked


def judge(
    metric: str, value: float, low: float, high: float, current: float, tolerance: float | None
) -> tuple[str, float, float, str]:
    """(status, allowed low, allowed high, note) of one baseline value against the current one."""
    higher_is_better = METRICS.get(metric).higher_is_better
    if tolerance is not None:
        allowed = (value - tolerance, value + tolerance)
    else:
        # Widened to the baseline value: a percentile interval need not contain its point estimate.
        allowed = (np.nanmin([low, value]), np.nanmax([high, value])) if np.isfinite(value) else (math.nan, math.nan)
    if math.isnan(value) and math.isnan(current):
        return "ok", *allowed, ""
    if math.isnan(value) or math.isnan(current):
        return "worse", *allowed, "was NaN" if math.isnan(value) else "became NaN"
    if abs(current - value) <= SAME or allowed[0] - SAME <= current <= allowed[1] + SAME:
        return "ok", *allowed, ""
    went_up = current > allowed[1]
    return ("better" if went_up == higher_is_better else "worse"), *allowed, ""


TABLE_COLUMNS = [
    *KEYS,
    "status",
    "baseline",
    "current",
    "delta",
    "allowed_low",
    "allowed_high",
    "n_baseline",
    "n",
    "note",
]


@dataclass(frozen=True)
class CheckReport:
    """Every baseline value (and every new one) with its status; ``failed`` is the gate's verdict."""

    rows: pd.DataFrame
    two_sided: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)

    def counts(self) -> dict[str, int]:
        found = self.rows["status"].value_counts()
        return {status: int(found.get(status, 0)) for status in STATUS_ORDER}

    @property
    def failed(self) -> bool:
        counts = self.counts()
        return bool(counts["worse"] or counts["missing"] or (self.two_sided and counts["better"]))

    @property
    def table(self) -> pd.DataFrame:
        """The rows that moved (every status but ``ok``), most serious first."""
        return self.rows[self.rows["status"] != "ok"].reset_index(drop=True)

    def verdict(self) -> str:
        counts = self.counts()
        compared = sum(counts[s] for s in ("worse", "missing", "better", "ok"))
        parts = [f"{counts[s]} {s}" for s in STATUS_ORDER if counts[s] and s != "ok"]
        mode = "two-sided" if self.two_sided else "one-sided"
        return (
            f"{'FAIL' if self.failed else 'PASS'}: {', '.join(parts) or 'nothing moved'} "
            f"({compared} baseline values, {mode})"
        )


def check_run(
    run_dir: Path,
    baseline: Path,
    tolerances: Mapping[str, float] | None = None,
    two_sided: bool = False,
    allow_changed_models: bool = False,
) -> CheckReport:
    """Compare the run's summary metrics with a baseline file (see the module docstring for the statuses).

    Raises :class:`CannotJudge` (or another ``ConfigError``) where the two cannot be compared.
    """
    tolerance_of = check_tolerances(tolerances or {})
    header, expected = read_baseline(baseline)
    if expected.empty:
        raise CannotJudge(
            f"cannot judge: baseline file {baseline} holds no rows, so there "
            "is nothing to check against; write one with 'robench baseline'"
        )
    run = load_run_dir(run_dir)
    current = metric_rows(run.summary())[[*KEYS, "value", "n"]].rename(columns={"value": "current"})
    compared = _check_comparable(header, expected, current, run, baseline, allow_changed_models)
    merged = expected.merge(current, on=KEYS, how="outer", suffixes=("_baseline", ""), indicator="found")
    out = []
    for row in merged.itertuples(index=False):
        item = {k: getattr(row, k) for k in KEYS}
        item.update(baseline=row.value, current=row.current, n_baseline=row.n_baseline, n=row.n, note="")
        if row.found == "left_only":
            item.update(status="missing", allowed_low=math.nan, allowed_high=math.nan, note="not in the run")
        elif row.found == "right_only":
            item.update(status="new", allowed_low=math.nan, allowed_high=math.nan, note="not in the baseline")
        else:
            status, low, high, note = judge(
                row.metric, row.value, row.low, row.high, row.current, tolerance_of.get(row.metric)
            )
            item.update(status=status, allowed_low=low, allowed_high=high, note=note)
        out.append(item)
    table = pd.DataFrame(out, columns=TABLE_COLUMNS)
    table["delta"] = table["current"] - table["baseline"]
    table[["n_baseline", "n"]] = table[["n_baseline", "n"]].astype("Int64")
    table["_order"] = table["status"].map(STATUS_ORDER.index)
    table = table.sort_values(["_order", *KEYS], kind="stable").drop(columns="_order").reset_index(drop=True)
    return CheckReport(rows=table, two_sided=two_sided, notes=tuple(_model_notes(header, run, compared)))


def _listed(items: list[str], limit: int = 4) -> str:
    return ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _pairs(rows: pd.DataFrame) -> set[tuple[str, str]]:
    return set(zip(rows[R.MODEL], rows[R.THREAT]))


def _check_comparable(
    header: Mapping[str, Any],
    expected: pd.DataFrame,
    current: pd.DataFrame,
    run: RunDir,
    baseline: Path,
    allow_changed_models: bool,
) -> list[str]:
    """The models compared; a CannotJudge unless the run measures what the baseline measured: the same pairs, weights,
    seeds and n.

    What the comparison needs must be recorded on both sides: the run's run.json (weights, seed,
    dataset), the baseline's ``models`` (weights; ``--allow-changed-models`` compares without) and,
    where the baseline has ``seeds`` at all, the seed of every pair in common.
    """
    against = f"{run.path} against {baseline}"
    before, now = _pairs(expected), _pairs(current)
    common = before & now
    if not common:
        raise CannotJudge(
            f"cannot judge {against}: no model x threat pair in common "
            f"(baseline: {_listed(sorted(map('/'.join, before)))}; "
            f"run: {_listed(sorted(map('/'.join, now)))})"
        )
    groups = (
        expected[[*SUMMARY_KEYS, COUNT]]
        .drop_duplicates()
        .merge(current[[*SUMMARY_KEYS, COUNT]].drop_duplicates(), on=SUMMARY_KEYS, suffixes=("_baseline", ""))
    )
    if groups.empty:
        raise CannotJudge(f"cannot judge {against}: no model x threat x attack x crafting-model group in common")
    models = sorted({model for model, _ in common})
    recorded = header.get("seeds")
    problem = _provenance_problem(run, common, need_seeds=recorded is not None)
    if problem:
        raise CannotJudge(f"cannot judge {against}: {problem}")
    unrecorded = _unrecorded_models(header, models)
    if unrecorded and not allow_changed_models:
        raise CannotJudge(
            f'cannot judge {against}: the baseline does not record the weights (content hash in its "models") of '
            f"{'model' if len(unrecorded) == 1 else 'models'} "
            f"{_listed([repr(m) for m in unrecorded])}, so they cannot be compared; "
            "pass --allow-changed-models to compare anyway, or write a new baseline"
        )
    changed = _changed_models(header, run, models)
    if changed and not allow_changed_models:
        names = ", ".join(f"'{name}'" for name in changed)
        raise CannotJudge(
            f"cannot judge {against}: {'model' if len(changed) == 1 else 'models'} {names} "
            f"{'has' if len(changed) == 1 else 'have'} different weights than in the baseline "
            "(content hash changed); pass --allow-changed-models to compare anyway, or write a new baseline"
        )
    used = _run_seeds(run)
    for model, threat in (
        sorted(common) if recorded is not None else ()
    ):  # a baseline from before seeds were recorded: not compared
        old, new = recorded.get(model, {}).get(threat), used.get(model, {}).get(threat)
        if old is None:
            raise CannotJudge(
                f"cannot judge {against}: the baseline records no seed for {model}/{threat} "
                '(its "seeds" lack it), so the test samples cannot be compared; '
                "write a new baseline"
            )
        if sorted(set(old)) != sorted(set(new)):
            raise CannotJudge(
                f"cannot judge {against}: {model}/{threat} ran with seed "
                f"{_listed([str(v) for v in new])}, the baseline with seed "
                f"{_listed([str(v) for v in sorted(set(old))])} (other test "
                "samples); rerun with the baseline's --seed, or write a new baseline"
            )
    differ = groups[groups[COUNT] != groups[f"{COUNT}_baseline"]]
    if len(differ):
        first = differ.iloc[0]
        raise CannotJudge(
            f"cannot judge {against}: {len(differ)} group(s) hold another number of samples than in the baseline, e.g. "
            f"{'/'.join(str(first[k]) for k in SUMMARY_KEYS)} n "
            f"{int(first[COUNT])} (baseline {int(first[f'{COUNT}_baseline'])}); "
            "rerun with the baseline's --n, or write a new baseline"
        )
    return models


def _provenance_problem(run: RunDir, pairs: set[tuple[str, str]], need_seeds: bool = True) -> str | None:
    """Why the run cannot be gated on ``pairs`` (model x threat), or None: what a baseline records must be known.

    Each model needs a run.json recording its weights (content hash); each pair, with
    ``need_seeds``, the seed it ran with; each records file, a run.json beside it naming a
    known dataset, so that its labels are checked against the model's classes.
    """
    meta = run.model_meta()
    unknown = sorted(
        {m for m, _ in pairs if not isinstance(meta.get(m, {}).get("content_hash"), str) or not meta[m]["content_hash"]}
    )
    if unknown:
        names = _listed([repr(m) for m in unknown])
        return (
            f"no {RUN_FILE} below {run.path} records the weights (content hash) "
            f"of {'model' if len(unknown) == 1 else 'models'} {names}, "
            f"which the gate compares; pass the folder 'robench run' or 'robench suite' wrote, its {RUN_FILE} included"
        )
    if need_seeds:
        seeds = _run_seeds(run)
        unseeded = [f"{m}/{t}" for m, t in sorted(pairs) if not seeds.get(m, {}).get(t)]
        if unseeded:
            return (
                f'no {RUN_FILE} below {run.path} records the seed of {_listed(unseeded)} ("config": {{"seed": ...}}), '
                "which the gate compares; pass the folder 'robench run' or "
                f"'robench suite' wrote, its {RUN_FILE} included"
            )
    if run.unranged:
        file, reason = run.unranged[0]
        more = f" (and {len(run.unranged) - 1} more file(s))" if len(run.unranged) > 1 else ""
        return f"the labels of records file {file}{more} cannot be checked against the model's classes: {reason}"
    return None


def _unrecorded_models(header: Mapping[str, Any], names: list[str]) -> list[str]:
    """The models of ``names`` whose weights the baseline header does not record
    (no ``models`` entry or content hash)."""
    before = header.get("models") if isinstance(header.get("models"), dict) else {}
    return [name for name in names if not (isinstance(before.get(name), dict) and before[name].get("content_hash"))]


def _changed_models(header: Mapping[str, Any], run: RunDir, names: list[str] | None = None) -> list[str]:
    """The models (of ``names``, default all) whose content hash in the run differs from the baseline header's."""
    before = header.get("models") if isinstance(header.get("models"), dict) else {}
    changed = []
    for name, meta in _models(run).items():
        if names is not None and name not in names:
            continue
        old = before.get(name)
        if (
            isinstance(old, dict)
            and old.get("content_hash")
            and meta.get("content_hash")
            and old["content_hash"] != meta["content_hash"]
        ):
            changed.append(name)
    return changed


def _model_notes(header: Mapping[str, Any], run: RunDir, compared: list[str]) -> list[str]:
    """Models whose weights differ from the baseline's (compared anyway with ``--allow-changed-models``):
    their moves may be expected."""
    notes = [
        f"model '{name}' has different weights than in the baseline (content hash changed)"
        for name in _changed_models(header, run, compared)
    ]
    unrecorded = _unrecorded_models(header, compared)
    return notes + [
        f"model '{name}': the baseline does not record its weights (no content hash); compared anyway"
        for name in unrecorded
    ]
