"""The papers' own numbers: ``reports/reproduce/papers.csv`` loaded, validated and one table of it selected.

The file holds one row per number printed in 001 Tables 7-11 (Wan et al., GM loss, Sec. 4.4) and
004 Tables 1-3 (Pang et al., MMC loss, Sec. 4.3-4.5), in the columns :data:`COLUMNS`:

- ``paper``, ``table``: ``001`` and ``Table 10``; ``dataset``: the paper's name (``MNIST``, ``CIFAR-10``);
- ``row``, ``column``: robench's labels where robench has an equivalent, the paper's own otherwise.
  Rows of 001's tables are ``<defense>+<detector>`` (``GM+KD``, ``Softmax+KD+BU``), rows of 004's the
  defense (``MMC``); columns are robench's attack labels (``C&W-wb``, ``PGD-10-un``) or ``Clean``;
- ``metric``: the registered metric the number corresponds to (``auc_roc`` for every AUC: which
  population each table used is :data:`PAPER_TABLES`' business, not the file's);
- ``value``: the number as printed (percent as printed: 84.9); ``note``: what a reader must know.
  A note that starts with ``upper bound`` marks a number printed as a bound (004 Table 1's
  ``<= 1``), shown as ``≤1.0``.

No number is typed here: the file is data, this module only reads and checks it.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from robench.core.errors import ConfigError
from robench.core.files import UserFileError, read_user_file
from robench.core.registry import did_you_mean
from robench.scoring.metrics import METRICS, POPULATIONS

COLUMNS = ("paper", "table", "dataset", "row", "column", "metric", "value", "note")
KEY = ("paper", "table", "dataset", "row", "column", "metric")  # unique per number
DEFAULT_PAPERS_FILE = Path("reports") / "reproduce" / "papers.csv"
REPO_ROOT = Path(__file__).resolve().parents[2]
UPPER_BOUND = "upper bound"  # a note's first words when the value was printed as "<= value"


@dataclass(frozen=True)
class PaperTable:
    """One paper table robench can sit beside: the layout it matches and the AUC population it used (and why)."""

    paper: str
    table: str
    layout: str
    population: str | None  # None: the table shows no AUC
    reason: str

    @property
    def name(self) -> str:
        return f"{self.paper} {self.table}"

    @property
    def short(self) -> str:
        return f"{self.paper}-t{self.table.split()[-1]}"


_SEMI_WHITE_BOX = (
    "001 Sec. 4.4 and 4.4.1: the AUC separates the normal test samples from the adversarial examples crafted "
    "for every test image; no filter on success is stated, so every attack output counts"
)
_RCE_LAYOUT = (
    "001 Sec. 4.4.2 uses the C&W-wb code of Carlini and Wagner and the RCE reference layout (Detection Method / "
    "AUC / Dist. / Adv. Success), whose AUC script pairs each correctly classified clean input with its "
    "misclassified adversarial"
)
_TRANSFER = (
    "001 Sec. 4.4.3 credits the high AUC to the examples failing to transfer, which only counts if the "
    "examples that did not fool the target are scored too (inferred: the population is not stated)"
)
PAPER_TABLES: dict[str, PaperTable] = {
    t.name: t
    for t in (
        PaperTable("001", "Table 7", "detection", "attempted", _SEMI_WHITE_BOX),
        PaperTable("001", "Table 8", "detection", "attempted", _SEMI_WHITE_BOX),
        PaperTable("001", "Table 9", "white-box", "paired", _RCE_LAYOUT),
        PaperTable("001", "Table 10", "white-box", "paired", _RCE_LAYOUT),
        PaperTable("001", "Table 11", "black-box", "attempted", _TRANSFER),
        PaperTable("004", "Table 1", "accuracy", None, "accuracy only (004 Sec. 4.3): no AUC"),
        PaperTable("004", "Table 2", "accuracy", None, "distortion and accuracy (004 Sec. 4.3-4.5): no AUC"),
        PaperTable("004", "Table 3", "accuracy", None, "accuracy only (004 Sec. 4.4): no AUC"),
    )
}

# robench's dataset names -> the papers' (mnist-5k is a subset of MNIST's images).
PAPER_DATASETS = {
    "mnist": "MNIST",
    "mnist-5k": "MNIST",
    "fashion-mnist": "Fashion-MNIST",
    "cifar10": "CIFAR-10",
    "cifar100": "CIFAR-100",
    "svhn": "SVHN",
    "imagenet": "ImageNet",
}


def paper_dataset(name: str) -> str | None:
    """The papers' name for a robench dataset (``mnist-5k`` -> ``MNIST``), None for one no paper uses."""
    return PAPER_DATASETS.get(name.lower())


@dataclass(frozen=True)
class PaperNumbers:
    """One table's numbers from papers.csv (columns :data:`COLUMNS`, ``value`` a float) and where they came from."""

    table: PaperTable
    numbers: pd.DataFrame
    source: Path
    by_dataset: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # every table of the file per dataset

    @property
    def datasets(self) -> list[str]:
        return list(dict.fromkeys(self.numbers["dataset"]))


# ----------------------------------------------------------------------------- the file


def resolve_papers_file(path: Path | None) -> Path:
    """``path``, or the default ``reports/reproduce/papers.csv`` under the current folder, else under the repository
    root."""
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"--papers-file {path} does not exist (or is not a file)")
        return path
    tried = [DEFAULT_PAPERS_FILE, REPO_ROOT / DEFAULT_PAPERS_FILE]
    for candidate in tried:
        if candidate.is_file():
            return candidate
    raise ConfigError(f"no papers file: {' nor '.join(str(p) for p in tried)} exists; pass --papers-file PATH")


def read_papers(path: Path) -> pd.DataFrame:
    """papers.csv as a frame (``value`` a float), validated by :func:`validate_papers`; a bad file is a one-line
    error."""
    try:
        text = read_user_file(path, "papers file").decode("utf-8")
        reader = csv.reader(io.StringIO(text, newline=""))
        header = next(reader, None)
        lines = [(reader.line_num, line) for line in reader]
    except UserFileError as exc:
        raise ConfigError(str(exc)) from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"{path}: cannot read it as CSV ({exc})") from None
    if header is None or tuple(h.strip() for h in header) != COLUMNS:
        raise ConfigError(f"{path}: the header must be {','.join(COLUMNS)}, got {','.join(header or []) or 'nothing'}")
    records = []
    for number, line in lines:
        if not any(cell.strip() for cell in line):
            continue
        if len(line) != len(COLUMNS):
            raise ConfigError(f"{path}:{number}: {len(line)} fields, expected {len(COLUMNS)} ({','.join(COLUMNS)})")
        records.append({"line": number, **{c: cell.strip() for c, cell in zip(COLUMNS, line)}})
    frame = pd.DataFrame(records, columns=["line", *COLUMNS])
    validate_papers(frame, path)
    frame["value"] = frame["value"].astype(float)
    return frame.drop(columns="line").reset_index(drop=True)


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def validate_papers(frame: pd.DataFrame, where: Path | str = "papers.csv") -> None:
    """Every field filled, every table one of :data:`PAPER_TABLES`, every metric registered, every value finite,
    no key twice.

    ``frame`` holds the file's text fields (and, when read from a file, its ``line`` numbers).
    The key is :data:`KEY`: 001 Table 7 prints the same row, column and metric for MNIST and CIFAR-10.
    """
    line = frame["line"] if "line" in frame else pd.Series(range(2, len(frame) + 2), index=frame.index)
    for i, record in frame.iterrows():
        at = f"{where}:{line[i]}"
        for column in KEY[:-1]:
            if not str(record[column]).strip():
                raise ConfigError(f"{at}: empty '{column}'")
        name = f"{record['paper']} {record['table']}"
        if name not in PAPER_TABLES:
            raise ConfigError(
                f"{at}: '{name}' is not a paper table robench knows{did_you_mean(name, list(PAPER_TABLES))}; known: "
                f"{', '.join(PAPER_TABLES)}"
            )
        if record["metric"] not in METRICS:
            raise ConfigError(
                f"{at}: unknown metric '{record['metric']}'{did_you_mean(str(record['metric']), list(METRICS.names()))}"
            )
        if _number(str(record["value"])) is None:
            raise ConfigError(f"{at}: value '{record['value']}' is not a finite number")
    twice = frame.duplicated(list(KEY), keep="first")
    if twice.any():
        first = frame[twice].iloc[0]
        raise ConfigError(f"{where}:{line[first.name]}: {', '.join(str(first[c]) for c in KEY)} is given twice")


# ----------------------------------------------------------------------------- one table of it

_NAME = re.compile(r"^\s*(\d{3})\s*[-_:/ ]?\s*(?:t|tab|table)?\.?\s*(\d{1,3})\s*$", re.IGNORECASE)


def parse_table_name(text: str) -> str:
    """``001 Table 10``, ``001-t10``, ``001 t10``, ``001:10`` (any case) -> ``001 Table 10``; anything else a one-line
    error."""
    match = _NAME.match(text)
    if not match:
        raise ConfigError(
            f"--paper '{text}' names no paper "
            f"table{did_you_mean(text, [*PAPER_TABLES, *(t.short for t in PAPER_TABLES.values())])}; "
            f"give PAPER TABLE, e.g. '001 Table 10' or 001-t10 (known: {', '.join(PAPER_TABLES)})"
        )
    return f"{match.group(1)} Table {int(match.group(2))}"


def select_table(papers: pd.DataFrame, text: str, source: Path) -> PaperNumbers:
    """The numbers of the table ``text`` names (:func:`parse_table_name`); a table absent from the file is a one-line
    error."""
    name = parse_table_name(text)
    present = list(dict.fromkeys(papers["paper"] + " " + papers["table"]))
    if name not in present:
        why = "has no numbers of" if name in PAPER_TABLES else "knows no"
        raise ConfigError(
            f"{source} {why} {name}{did_you_mean(name, present)}; its tables: {', '.join(present) or 'none'}"
        )
    numbers = papers[(papers["paper"] + " " + papers["table"]) == name].reset_index(drop=True)
    by_dataset = {d: tuple(tables_for(papers, [d])) for d in dict.fromkeys(papers["dataset"])}
    return PaperNumbers(PAPER_TABLES[name], numbers, source, by_dataset)


def load_paper_table(text: str, papers_file: Path | None = None) -> PaperNumbers:
    """``--paper TEXT`` with ``--papers-file``: the file found (:func:`resolve_papers_file`), read, and the table
    picked."""
    name = parse_table_name(text)  # a malformed name fails before any file is looked for
    path = resolve_papers_file(papers_file)
    return select_table(read_papers(path), name, path)


def tables_for(papers: pd.DataFrame, datasets: Sequence[str]) -> list[str]:
    """The tables of ``papers`` that print numbers for one of ``datasets`` (papers' names), in file order."""
    wanted = papers[papers["dataset"].isin(list(datasets))]
    return list(dict.fromkeys(wanted["paper"] + " " + wanted["table"]))


def default_population(table: PaperTable | None) -> str | None:
    """The AUC population a paper table used (None without a table or for one without an AUC)."""
    if table is None or table.population is None:
        return None
    assert table.population in POPULATIONS, table.population
    return table.population
