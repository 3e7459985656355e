"""Loading a run directory: every ``records.parquet`` and ``run.json`` below a folder, as one table.

``robench run`` writes one records file per folder; suites and the demo nest
them as ``OUT/MODEL/THREAT/``. Tables, plots, bootstrap intervals and the
regression gate all start from the concatenated records, which stay the single
source of truth (summaries are recomputed from them, never read).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from robench.core.errors import ConfigError, RobenchError
from robench.core.files import MAX_JSON_BYTES, UserFileError, read_user_file
from robench.runs.output import with_sanity_flags
from robench.runs.record_checks import record_check_results
from robench.runs.sanity import RECORD_CHECK, SANITY_CHECKS, TABLE_COLUMNS, attack_names_of, flag_values, sanity_table
from robench.scoring import records as R
from robench.scoring.metrics import summarize

RECORDS_FILE = "records.parquet"
RUN_FILE = "run.json"


@dataclass(frozen=True)
class RunDir:
    """The concatenated records below ``path`` and the parsed run.json files that came with them.

    ``unranged`` names the records files whose classes could not be checked (see
    :func:`check_class_range`): no run.json beside them, or one naming a dataset this robench
    does not know, with the reason. The regression gate refuses those; tables and figures only
    need the labels to be classes at all (non-negative).
    """

    path: Path
    records: pd.DataFrame
    runs: list[dict]
    unranged: tuple[tuple[Path, str], ...] = ()

    def model_meta(self) -> dict[str, dict]:
        """Model name -> the ``model`` entry of its run.json (the first one, in sorted path order)."""
        meta: dict[str, dict] = {}
        for run in self.runs:
            model = run.get("model")
            if isinstance(model, dict) and isinstance(model.get("name"), str):
                meta.setdefault(model["name"], model)
        return meta

    def summary(self) -> pd.DataFrame:
        """``metrics.summarize`` of the records, each group with only the detectors it was scored by."""
        return summarize_run(self.records)

    def flagged_summary(self) -> pd.DataFrame:
        """:meth:`summary` with its ``sanity_flags`` column (:func:`robench.runs.output.with_sanity_flags`) from
        :meth:`sanity`: what tables and exports built from a run directory start from, so that a bound in the
        defense's favour is marked whether or not the run wrote its sanity checks."""
        return with_sanity_flags(self.summary(), self.sanity())

    def sanity(self) -> pd.DataFrame:
        """The run's sanity table (``robench.runs.sanity.TABLE_COLUMNS``): :meth:`record_checks`, then the other
        checks (model probes, configuration checks) as each run.json recorded them."""
        frames = [frame for frame in (self._record_checks, _recorded_checks(self.runs)) if len(frame)]
        if not frames:
            return sanity_table([])
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0].copy()

    def record_checks(self) -> pd.DataFrame:
        """The record checks (:func:`robench.runs.record_checks.record_check_results`) recomputed from the records.

        They are a pure function of the records, taken over every run below the folder at once (as a suite takes
        them over its pairs), so they hold for records whose run wrote none (``--no-sanity``, outputs older than a
        check) and for records gathered from several runs.
        """
        return self._record_checks.copy()

    @cached_property
    def _record_checks(self) -> pd.DataFrame:
        # cached: one report reads them for its tables, its export and its sanity section
        return sanity_table(record_check_results(self.records, attack_names_of(self.runs)))


def _recorded_checks(runs: list[dict]) -> pd.DataFrame:
    """The checks other than the record checks from the run.json files' ``sanity`` entries (TABLE_COLUMNS)."""
    record_checks = {name for name in SANITY_CHECKS.names() if SANITY_CHECKS.get(name).kind == RECORD_CHECK}
    entries = [
        entry
        for run in runs
        if isinstance(run.get("sanity"), list)
        for entry in run["sanity"]
        if isinstance(entry, Mapping) and entry.get("check") not in record_checks
    ]
    if not entries:
        return sanity_table([])
    frame = pd.DataFrame(entries).reindex(columns=TABLE_COLUMNS)
    # run.json is read, not trusted: a flag may come back as text
    return frame.assign(flagged=flag_values(frame["flagged"]))


def summarize_run(records: pd.DataFrame) -> pd.DataFrame:
    """``metrics.summarize`` for records concatenated from runs with different detectors."""
    return summarize(records, drop_unscored=True)


_SOURCE = "_source"  # a temporary column: which file a record came from


_DTYPES = {column.name: column.dtype for column in R.COLUMNS}
_KIND_WORDS = {"str": "strings", "bool": "booleans", "int": "integers", "float": "numbers", "other": "mixed values"}
_EXPECTED_WORDS = {"str": "strings", "bool": "booleans", "int": "integers", "float": "numbers"}


def _kind(values: pd.Series) -> str:
    """What a column holds: "str", "bool", "int", "float", "empty" or "other" (object columns by their values)."""
    dtype = values.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return _kind(pd.Series(np.asarray(values.cat.categories))) if len(values.cat.categories) else "empty"
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_integer_dtype(dtype):
        return "int"
    if pd.api.types.is_float_dtype(dtype):
        return "float"
    if pd.api.types.is_string_dtype(dtype) or pd.api.types.is_object_dtype(dtype):
        inferred = pd.api.types.infer_dtype(values, skipna=True)
        return {
            "string": "str",
            "boolean": "bool",
            "integer": "int",
            "floating": "float",
            "mixed-integer-float": "float",
            "empty": "empty",
        }.get(inferred, "other")
    return "other"


def _column_error(values: pd.Series, expected: str) -> str | None:
    """Why a record column does not hold the schema's type (``R.COLUMNS``' dtype), or None when it does.

    Numbers may be missing (NaN: an undefined distortion, an unscored detector); strings,
    booleans and integers may not. Bool-like is booleans or numbers that are all 0 or 1;
    integer-valued floats (an int column that went through a float) count as integers.
    """
    if expected != "float" and values.isna().any():
        return f"has {int(values.isna().sum())} missing value(s), expected {_EXPECTED_WORDS[expected]}"
    kind = _kind(values)
    if kind == "empty":
        return None
    numeric = pd.to_numeric(values.dropna(), errors="coerce") if kind in ("bool", "int", "float") else None
    if expected == "float":
        ok = kind in ("int", "float")
    elif expected == "int":
        ok = kind == "int" or (
            kind == "float" and bool(np.isfinite(numeric).all() and (numeric == np.round(numeric)).all())
        )
    elif expected == "bool":
        ok = kind == "bool" or (kind in ("int", "float") and bool(numeric.isin([0, 1]).all()))
    else:
        ok = kind == "str"
    if ok:
        return None
    example = values.dropna().iloc[0]
    example = example.item() if isinstance(example, np.generic) else example
    return f"holds {_KIND_WORDS.get(kind, 'mixed values')} (e.g. {example!r}), expected {_EXPECTED_WORDS[expected]}"


def check_record_types(frame: pd.DataFrame, where: str) -> None:
    """A one-line ConfigError naming the first column of ``frame`` whose values are not of the schema's type."""
    for column in frame.columns:
        expected = _DTYPES.get(column, "float" if R.is_score_column(column) else None)
        if expected is None:
            continue  # not a record column (a later format's extra): left alone
        problem = _column_error(frame[column], expected)
        if problem:
            raise ConfigError(f"{where}: column '{column}' {problem}")


# The class columns of a record and their lowest value: a true class or a prediction in 0..C-1,
# the target also -1 (untargeted).
_CLASS_COLUMNS = ((R.LABEL, 0), (R.CLEAN_PRED, 0), (R.ADV_PRED, 0), (R.TARGET, -1))


def dataset_classes(run: dict[str, Any]) -> tuple[int | None, str]:
    """(number of classes, dataset name) of the dataset a run.json evaluated on; None when it names none this robench
    knows."""
    name = run.get("dataset")
    model = run.get("model") if isinstance(run.get("model"), dict) else {}
    recorded = model.get("num_classes")  # the model's own class count, recorded since run.json carried it
    if isinstance(recorded, int) and not isinstance(recorded, bool) and recorded > 0:
        return recorded, name if isinstance(name, str) else "?"
    if not isinstance(name, str) and isinstance(run.get("model"), dict):
        name = run["model"].get("dataset")
    if not isinstance(name, str):
        return None, "?"
    from robench.core.data import DATASETS

    try:
        classes = DATASETS.get(name).num_classes
    except (
        RobenchError,
        LookupError,
        ImportError,
        ValueError,
    ):  # an unknown name, or a resolver that cannot answer: the range is not known
        return None, name
    return (int(classes), name) if isinstance(classes, int) and classes > 0 else (None, name)


def check_class_range(frame: pd.DataFrame, where: str, classes: int | None = None, dataset: str = "?") -> None:
    """A one-line ConfigError where a label or prediction is not a class: negative, or (with ``classes``) >= classes.

    The target is -1 (untargeted) or a class. Records whose classes lie outside the model's would
    count every sample as misclassified: a corrupt or foreign file, never a result.
    """
    bounds = (
        f"the {classes} classes 0..{classes - 1} of dataset '{dataset}' (its run.json)"
        if classes
        else "the classes (0 or more)"
    )
    for column, lowest in _CLASS_COLUMNS:
        if column not in frame:
            continue
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
        bad = (values < lowest) | (values >= classes if classes else np.zeros(len(values), dtype=bool))
        if bad.any():
            example = values[bad][0]
            also = " or -1 (untargeted)" if column == R.TARGET else ""
            raise ConfigError(
                f"{where}: column '{column}' holds {int(example)} ({int(bad.sum())} record(s)), outside {bounds}{also}"
            )


def _read_records(file: Path) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(file)
    except Exception as exc:  # pyarrow raises several unrelated types for a corrupt or truncated file
        raise ConfigError(
            f"cannot read records file {file}: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
        ) from None
    missing = R.missing_columns(frame)
    if missing:
        raise ConfigError(f"records file {file} lacks column(s) {', '.join(missing)}")
    check_record_types(frame, f"records file {file}")
    return R.with_crafted_on(frame)


def _read_run(file: Path) -> dict[str, Any]:
    try:
        run = json.loads(read_user_file(file, "run file", limit=MAX_JSON_BYTES).decode("utf-8"))
    except UserFileError as exc:
        raise ConfigError(str(exc)) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ConfigError(f"cannot read run file {file}: {exc}") from None
    if not isinstance(run, dict):
        raise ConfigError(f"run file {file} does not hold a JSON object")
    return run


def _files(path: Path) -> tuple[list[Path], list[Path]]:
    if path.is_file():
        if path.suffix != ".parquet":
            raise ConfigError(f"{path} is neither a run directory nor a records .parquet file")
        sibling = path.parent / RUN_FILE
        return [path], [sibling] if sibling.is_file() else []
    return sorted(path.rglob(RECORDS_FILE)), sorted(path.rglob(RUN_FILE))


def _check_duplicates(records: pd.DataFrame, sources: list[Path]) -> None:
    keys = list(R.SAMPLE_KEYS)
    duplicated = R.duplicated(records)
    if not duplicated.any():
        return
    rows = records.loc[duplicated]
    first = rows.iloc[0]
    files = sorted({str(sources[i]) for i in rows.loc[(rows[keys] == first[keys]).all(axis=1), _SOURCE]})
    example = ", ".join(f"{k} {first[k]!r}" for k in keys)
    raise ConfigError(f"{int(duplicated.sum())} records are duplicated, e.g. {example} in {' and '.join(files)}")


def load_run_dir(path: Path) -> RunDir:
    """Gather every records.parquet below ``path`` (or the single records file ``path``) and every run.json."""
    path = Path(path)
    try:
        if not path.exists():
            raise ConfigError(f"run directory {path} does not exist")
        record_files, run_files = _files(path)
    except OSError as exc:  # a folder that cannot be listed
        raise ConfigError(f"cannot read run directory {path}: {exc.strerror or exc}") from None
    if not record_files:
        raise ConfigError(f"no {RECORDS_FILE} found below {path}")
    runs = {file: _read_run(file) for file in run_files}
    frames, unranged = [], []
    for i, file in enumerate(record_files):
        frame = _read_records(file)
        run = runs.get(file.parent / RUN_FILE)  # a records file and the run.json beside it were written by one run
        classes, dataset = dataset_classes(run) if run is not None else (None, "?")
        check_class_range(frame, f"records file {file}", classes, dataset)
        if classes is None:
            unranged.append(
                (
                    file,
                    f"no {RUN_FILE} beside it"
                    if run is None
                    else f"its {RUN_FILE} names dataset '{dataset}', unknown to this robench",
                )
            )
        frames.append(frame.assign(**{_SOURCE: i}))
    records = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if records.empty:
        raise ConfigError(f"the records below {path} hold no rows")
    _check_duplicates(records, record_files)
    return RunDir(path=path, records=records.drop(columns=_SOURCE), runs=list(runs.values()), unranged=tuple(unranged))
