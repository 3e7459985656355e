"""The papers' own numbers beside robench's (``robench report --paper``), the AUC population and distortion scale
options, and the real ``reports/reproduce/papers.csv`` (001 Tables 7-11, 004 Tables 1-3)."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from robench.cli.report import report
from robench.core.errors import ConfigError
from robench.defenses import DEFENSES
from robench.detectors import DETECTORS
from robench.report.paper import (
    COLUMNS,
    KEY,
    PAPER_TABLES,
    REPO_ROOT,
    UPPER_BOUND,
    parse_table_name,
    read_papers,
    select_table,
    validate_papers,
)
from robench.report.tables import PAPER, SOURCE, TableOptions, best_mask, build_table, with_paper_columns
from robench.runs.output import write_run
from robench.scoring import records as R
from robench.scoring.metrics import METRICS, POPULATIONS, summarize
from robench.specs.threats import THREATS
from synthetic import synthetic_records
from test_cli import assert_one_line_error
from test_cli import run as run_main

REAL_PAPERS = REPO_ROOT / "reports" / "reproduce" / "papers.csv"

# A small papers.csv: (paper, table, dataset, row, column, metric, value, note). Test data, not the papers' numbers.
SMALL = [
    ("001", "Table 10", "MNIST", "Softmax+KD", "C&W-wb", "auc_roc", "55.5", "detector KD"),
    ("001", "Table 10", "MNIST", "Softmax+KD", "C&W-wb", "distortion_255", "18.25", "0-255 scale"),
    ("001", "Table 10", "MNIST", "Softmax+KD", "C&W-wb", "success_rate", "98.5", ""),
    ("001", "Table 10", "MNIST", "GM+KD", "C&W-wb", "auc_roc", "99.9", ""),
    ("001", "Table 10", "MNIST", "GM+KD", "C&W-wb", "distortion_255", "99.75", ""),
    ("001", "Table 10", "MNIST", "GM+KD", "C&W-wb", "success_rate", "0.5", ""),
    ("001", "Table 10", "MNIST", "RCE+KD", "C&W-wb", "auc_roc", "67.5", "printed as 'RCE'"),
    ("001", "Table 11", "MNIST", "GM+KD", "C&W-wb", "auc_roc", "98.5", ""),
    ("001", "Table 11", "MNIST", "RCE+KD", "C&W-wb", "auc_roc", "96.5", ""),
    ("004", "Table 1", "CIFAR-10", "Softmax", "Clean", "clean_accuracy", "92.5", ""),
    ("004", "Table 1", "CIFAR-10", "Softmax", "PGD-10-un", "robust_accuracy", "1", f"{UPPER_BOUND}: printed as <= 1"),
    ("004", "Table 1", "CIFAR-10", "MMC", "PGD-10-un", "robust_accuracy", "36.5", ""),
    (
        "004",
        "Table 1",
        "CIFAR-10",
        "AT-10-tar (SCE)",
        "PGD-10-un (16/255)",
        "robust_accuracy",
        "26.5",
        "no robench equivalent",
    ),
]


def write_papers(path: Path, rows=SMALL, header=COLUMNS) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_model(root: Path, model: str, defense: str, threat: str, attacks: list[str], shift: float, *,
                dataset: str = "mnist-5k", detectors=("kd",), crafted_on: str | None = None,
                input_range: bool = True) -> None:  # fmt: skip
    parts = [
        synthetic_records(
            model, threat, a, n=40, seed=i, wrong=2, success_p=0.7, adv_offset=3, shift=shift, detectors=detectors
        )
        for i, a in enumerate(attacks)
    ]
    frame = pd.concat(parts, ignore_index=True)
    frame[R.INPUT_RANGE] = 1.0
    if not input_range:  # records written before the column existed
        frame = frame.drop(columns=R.INPUT_RANGE)
    if crafted_on:
        frame[R.CRAFTED_ON] = crafted_on
    info = {
        "model": {"name": model, "defense": defense, "dataset": dataset, "path": f"{model}.pt"},
        "threat": {
            "name": threat,
            "attacks": [{"label": a, "attack": "fgsm", "params": {}, "target_mode": "none"} for a in attacks],
        },
    }
    write_run(root / model / threat, frame, summarize(frame), info)


@pytest.fixture
def white_box_run(tmp_path) -> Path:
    root = tmp_path / "runs"
    write_model(root, "gm", "gm", "white-box", ["C&W-wb"], shift=3.0, detectors=("kd", "gm-likelihood"))
    write_model(root, "soft", "softmax", "white-box", ["C&W-wb"], shift=1.0)
    return root


@pytest.fixture
def papers(tmp_path) -> Path:
    return write_papers(tmp_path / "papers.csv")


def markdown_table(text: str) -> tuple[list[str], dict[str, list[str]]]:
    """(header, {first cell: cells}) of the first Markdown table in ``text``."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    header, body = cells[0], cells[2:]
    return header, {row[0]: row for row in body}


def invoke(*args: str):
    result = CliRunner().invoke(report, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return result


# ----------------------------------------------------------------------------- rendering


def test_white_box_paper_numbers_sit_beside_robench_s(white_box_run, papers):
    result = invoke(str(white_box_run), "--paper", "001 Table 10", "--papers-file", str(papers))
    header, rows = markdown_table(result.stdout)
    # the paper's population (paired) and scale (0-255), each column as robench / paper; the successful-only AUC
    # always beside the paired one (the paper's number sits beside its own population only)
    assert header == [
        "Detection Method",
        "AUC pair. (%) ↑ / robench", "AUC pair. (%) ↑ / paper",
        "AUC (%) ↑ / robench", "AUC (%) ↑ / paper",
        "Dist. (0-255) ↑ / robench", "Dist. (0-255) ↑ / paper",
        "Adv. Success (%) ↓ / robench", "Adv. Success (%) ↓ / paper",
    ]  # fmt: skip
    assert list(rows) == ["Softmax+KD", "GM+KD", "GM+Likelihood", "RCE+KD"]
    soft, gm = rows["Softmax+KD"], rows["GM+KD"]
    assert soft[2::2] == ["55.5", "-", "18.25", "98.5"] and gm[2::2] == ["99.9", "-", "99.75", "0.5"]
    assert all(cell.strip("*") not in ("", "-") for cell in soft[1::2] + gm[1::2])  # robench's own numbers
    assert rows["GM+Likelihood"][2::2] == ["-", "-", "-", "-"]  # the run has it, the paper does not
    assert rows["RCE+KD"][1::2] == ["-"] * 4 and rows["RCE+KD"][2] == "67.5"  # the paper has it, the run does not
    assert rows["RCE+KD"][6] == "-"  # and the paper printed nothing else for it in this file
    assert (
        "AUC pair. (%) paired (" in result.stdout
        and "AUC (%) successful (" in result.stdout
        and "0-255 pixel scale" in result.stdout
        and "001 Table 10" in result.stdout
    )


def test_robench_values_beside_the_paper_are_the_table_s_own(white_box_run, papers):
    from robench.report.rundir import load_run_dir

    run = load_run_dir(white_box_run)
    options = TableOptions("paired", 255)
    plain = build_table("white-box", run.summary(), run.model_meta(), options=options)
    numbers = select_table(read_papers(papers), "001-t10", papers)
    table, notes = with_paper_columns(plain, numbers, run.model_meta(), options)
    assert notes == [] and table.columns == ("Metric", SOURCE) and table.reference == (SOURCE, PAPER)
    values = table.values()
    robench = values.xs("robench", axis=1, level=SOURCE)
    assert list(robench.columns.get_level_values(0)) == list(plain.values().columns.get_level_values(0))
    assert robench.loc[plain.values().index].to_numpy() == pytest.approx(plain.values().to_numpy(), nan_ok=True)
    # as printed: no percent scaling
    assert values.loc[("GM+KD",), ("Dist. (0-255) ↑", PAPER)] == pytest.approx(99.75)
    assert values.loc[("GM+KD",), ("Adv. Success (%) ↓", PAPER)] == pytest.approx(
        0.005
    )  # percent -> fraction, shown 0.5
    best = best_mask(table)
    assert not best.xs(PAPER, axis=1, level=SOURCE).to_numpy().any()  # the paper's (better) numbers never compete
    assert best.xs("robench", axis=1, level=SOURCE).to_numpy().any()


def test_latex_and_csv_with_paper_columns(white_box_run, papers):
    latex = invoke(str(white_box_run), "--paper", "001-t10", "--papers-file", str(papers), "--format", "latex").stdout
    assert r"\multicolumn{2}{c}{AUC pair. (\%) $\uparrow$}" in latex and "robench & paper" in latex
    assert r"AUC populations:" in latex and "paired (" in latex
    csv_text = invoke(str(white_box_run), "--paper", "001-t10", "--papers-file", str(papers), "--format", "csv").stdout
    frame = pd.read_csv(io.StringIO(csv_text))
    assert frame.columns[1:3].tolist() == ["AUC pair. (%) ↑ / robench", "AUC pair. (%) ↑ / paper"]


def test_population_and_scale_without_paper_and_explicit_population_with_it(white_box_run, papers):
    plain = invoke(str(white_box_run), "--layout", "white-box")
    header, _ = markdown_table(plain.stdout)
    # the defaults do not change
    assert header == ["Detection Method", "AUC (%) ↑", "Dist. ↑", "Adv. Success (%) ↓"]
    assert "AUC population: successful (" in plain.stdout and "pixels in [0, 1]" in plain.stdout
    chosen = invoke(str(white_box_run), "--layout", "white-box", "--population", "attempted", "--scale", "255")
    assert markdown_table(chosen.stdout)[0] == [
        "Detection Method",
        "AUC att. (%) ↑",
        "AUC (%) ↑",  # the successful-only AUC, always beside the chosen population's
        "Dist. (0-255) ↑",
        "Adv. Success (%) ↓",
    ]
    assert "AUC att. (%) attempted (" in chosen.stdout
    overridden = invoke(
        str(white_box_run), "--paper", "001 Table 10", "--papers-file", str(papers), "--population", "successful"
    )
    assert markdown_table(overridden.stdout)[0][1:3] == ["AUC (%) ↑ / robench", "AUC (%) ↑ / paper"]
    assert "used 'paired'" in overridden.stderr and "used 'paired'" not in overridden.stdout


def test_every_population_is_a_metric_the_summary_has(white_box_run):
    for name, pop in POPULATIONS.items():
        assert pop.metric in METRICS
        text = invoke(str(white_box_run), "--layout", "white-box", "--population", name).stdout
        assert f"{name} (" in text and METRICS.get(pop.metric).label in text


def test_black_box_paper_target_models_become_columns(tmp_path, papers):
    root = tmp_path / "runs"
    write_model(root, "gm", "gm", "black-box", ["C&W-wb"], shift=3.0, crafted_on="soft")
    result = invoke(str(root), "--paper", "001 Table 11", "--papers-file", str(papers))
    header, rows = markdown_table(result.stdout)
    assert header == [
        "Attack",
        "Detector",
        "GM (from soft) / robench",
        "GM (from soft) / paper",
        "RCE / robench",
        "RCE / paper",
    ]
    cells = rows["C&W-wb"]
    assert cells[3] == "98.5" and cells[4] == "-" and cells[5] == "96.5"  # the target's defense meets the paper's GM
    assert "AUC population: attempted (" in result.stdout


def test_accuracy_paper_rows_columns_and_bounds(tmp_path, papers):
    root = tmp_path / "runs"
    write_model(root, "soft", "softmax", "white-box", ["PGD-10-un"], shift=1.0, dataset="cifar10")
    write_model(root, "mmc", "mmc", "white-box", ["PGD-10-un"], shift=2.0, dataset="cifar10")
    result = invoke(str(root), "--paper", "004-t1", "--papers-file", str(papers))
    header, rows = markdown_table(result.stdout)
    assert header == [
        "Model", "Clean / robench", "Clean / paper", "white-box / PGD-10-un / robench", "white-box / PGD-10-un / paper",
        "white-box / PGD-10-un (16/255) / robench", "white-box / PGD-10-un (16/255) / paper",
    ]  # fmt: skip
    assert rows["Softmax"][2] == "92.5" and rows["Softmax"][4] == "≤1.0"  # printed "<= 1": shown as the bound it is
    assert rows["MMC"][4] == "36.5" and rows["MMC"][2] == "-"
    assert rows["AT-10-tar (SCE)"][1:] == ["-", "-", "-", "-", "-", "26.5"]
    assert "AUC population" not in result.stdout  # no AUC in this table
    latex = invoke(str(root), "--paper", "004-t1", "--papers-file", str(papers), "--format", "latex").stdout
    assert r"$\leq$1.0" in latex and "≤" not in latex


def test_models_of_two_datasets_each_get_their_dataset_s_paper_rows(tmp_path, papers):
    rows = [
        *SMALL,
        ("001", "Table 10", "CIFAR-10", "GM+KD", "C&W-wb", "auc_roc", "11.5", ""),
        ("001", "Table 10", "ImageNet", "GM+KD", "C&W-wb", "auc_roc", "22.5", ""),
    ]
    papers = write_papers(tmp_path / "two.csv", rows)
    root = tmp_path / "runs"
    write_model(root, "gm", "gm", "white-box", ["C&W-wb"], shift=3.0)
    write_model(root, "gmc", "gm", "white-box", ["C&W-wb"], shift=2.0, dataset="cifar10")
    text = invoke(str(root), "--paper", "001-t10", "--papers-file", str(papers)).stdout
    lines = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("|")][2:]
    assert [r[:2] for r in lines] == [
        ["cifar10", "GM+KD"],
        ["mnist-5k", "GM+KD"],
        ["mnist-5k", "Softmax+KD"],
        ["mnist-5k", "RCE+KD"],
    ]
    assert (
        lines[0][2 + 1] == "11.5" and lines[1][2 + 1] == "99.9"
    )  # each dataset its own number; ImageNet's is not shown
    assert "22.5" not in text and "(MNIST, CIFAR-10;" in text


def test_records_without_the_input_range_show_no_0_255_distortion_and_say_why(tmp_path, papers):
    root = tmp_path / "runs"
    write_model(root, "gm", "gm", "white-box", ["C&W-wb"], shift=3.0, input_range=False)
    result = invoke(str(root), "--paper", "001-t10", "--papers-file", str(papers))
    assert markdown_table(result.stdout)[1]["GM+KD"][5:7] == ["-", "99.75"]
    assert "predate the input-range column" in result.stderr


def test_the_summary_layout_names_every_population_it_shows(white_box_run):
    text = invoke(str(white_box_run), "--layout", "summary").stdout
    assert "AUC populations: " in text and all(f"{name} (" in text for name in POPULATIONS)


# ----------------------------------------------------------------------- errors: one line, a suggestion, no traceback


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--paper", "001 Tabel 10"], ("--paper '001 Tabel 10'", "did you mean '001 Table 10'")),
        (["--paper", "001 Table 7"], ("has no numbers of 001 Table 7", "did you mean", "'001 Table 10'")),
        (["--paper", "001 Table 12"], ("knows no 001 Table 12", "did you mean")),
        (["--population", "pairde"], ("unknown AUC population 'pairde'", "did you mean 'paired'")),
        (["--paper", "001 Table 10", "--population", "succesful"], ("did you mean 'successful'",)),
        (["--paper", "001-t10", "--layout", "detection"], ("'white-box' table", "--layout detection")),
        (["--paper", "001-t10", "--scale", "1"], ("0-255 scale",)),
        (
            ["--paper", "004-t1"],
            ("004 Table 1 prints numbers for CIFAR-10", "mnist-5k (MNIST)", "tables with MNIST numbers: 001 Table 10"),
        ),
        (["--paper", "004-t1", "--paper-dataset", "CIFAR10"], ("--paper-dataset CIFAR10", "did you mean 'CIFAR-10'")),
        (["--paper-dataset", "CIFAR-10"], ("--paper-dataset applies with --paper",)),
    ],
)
def test_bad_paper_and_population_values_are_one_line_errors(white_box_run, papers, capsys, args, fragments):
    code, out, err = run_main(capsys, "report", str(white_box_run), "--papers-file", str(papers), *args)
    assert_one_line_error(code, err, *fragments)
    assert code == 2 and out == ""
    result = CliRunner().invoke(report, [str(white_box_run), "--papers-file", str(papers), *args])
    assert isinstance(result.exception, ConfigError) and "\n" not in str(result.exception)


def test_a_missing_or_bad_papers_file_is_a_one_line_error(white_box_run, tmp_path, capsys):
    code, _, err = run_main(
        capsys, "report", str(white_box_run), "--paper", "001-t10", "--papers-file", str(tmp_path / "none.csv")
    )
    assert_one_line_error(code, err, "--papers-file", "does not exist")
    bad = [
        (write_papers(tmp_path / "header.csv", header=COLUMNS[:-1]), "the header must be"),
        (write_papers(tmp_path / "metric.csv", [(*SMALL[0][:5], "auc_rco", "55.5", "")]), "did you mean 'auc_roc'"),
        (write_papers(tmp_path / "nan.csv", [(*SMALL[0][:6], "nan", "")]), "not a finite number"),
        (write_papers(tmp_path / "twice.csv", [SMALL[0], SMALL[0]]), "given twice"),
        (write_papers(tmp_path / "table.csv", [("001", "Table 99", *SMALL[0][2:])]), "not a paper table robench knows"),
    ]
    for path, fragment in bad:
        code, _, err = run_main(capsys, "report", str(white_box_run), "--paper", "001-t10", "--papers-file", str(path))
        assert_one_line_error(code, err, fragment)


@pytest.mark.parametrize(
    "text",
    ["001 Table 10", "001-t10", "001 T10", "001-T10", "001:10", "001 table 10", " 001  Table 10 ", "001-table10"],
)
def test_short_forms_of_a_table_name(text):
    assert parse_table_name(text) == "001 Table 10"


@pytest.mark.parametrize("text", ["Table 10", "1 Table 10", "001 Tabel 10", "001", ""])
def test_malformed_table_names(text):
    with pytest.raises(ConfigError, match="names no paper table"):
        parse_table_name(text)


def test_table_options_refuse_unknown_population_and_scale():
    with pytest.raises(ConfigError, match="did you mean 'attempted'"):
        TableOptions("atempted")
    with pytest.raises(ConfigError, match="distortion scale"):
        TableOptions(distortion_scale=100)
    assert (
        TableOptions("paired", 255).auc_metric == "auc_paired"
        and TableOptions("paired", 255).distortion_metric == "distortion_255"
    )


# ----------------------------------------------------------------------------- the real papers.csv


@pytest.fixture(scope="module")
def real() -> pd.DataFrame:
    return read_papers(REAL_PAPERS)


def test_the_real_papers_file_loads_and_validates(real):
    assert list(real.columns) == list(COLUMNS) and len(real) > 100
    assert all(m in METRICS for m in real["metric"])
    assert all(math.isfinite(v) for v in real["value"])
    assert not real.duplicated(list(KEY)).any()
    # 001 Table 7 prints the same row, column and metric for MNIST and CIFAR-10: only the dataset tells them apart
    without_dataset = real.duplicated(["paper", "table", "row", "column", "metric"], keep=False)
    assert set(real.loc[without_dataset, "table"]) <= {"Table 7", "Table 11"}
    validate_papers(real.astype(str))


def test_the_real_papers_file_covers_the_tables_it_can(real):
    tables = set(real["paper"] + " " + real["table"])
    assert tables == {"001 Table 7", "001 Table 8", "001 Table 9", "001 Table 10", "001 Table 11", "004 Table 1"}
    counts = (real["paper"] + " " + real["table"]).value_counts().to_dict()
    # every printed number (Table 7's "-" cells are not numbers): 6 x 4 - 4 per dataset, 3 x 4, 3 x 3, 6, 10 x 9
    assert counts == {
        "001 Table 7": 40,
        "001 Table 8": 12,
        "001 Table 9": 9,
        "001 Table 10": 9,
        "001 Table 11": 6,
        "004 Table 1": 90,
    }
    for name in tables:
        population = PAPER_TABLES[name].population
        assert population is None or population in POPULATIONS
        aucs = real[(real["paper"] + " " + real["table"] == name) & real["metric"].str.startswith("auc")]
        assert (population is None) == aucs.empty


def test_the_real_papers_file_uses_robench_s_labels_or_says_there_is_none(real):
    defenses = {DEFENSES.get(n).label for n in DEFENSES.names()}
    detectors = {DETECTORS.get(n).label for n in DETECTORS.names()}
    attacks = {label for name in THREATS.names() for label in THREATS.get(name).labels()} | {"Clean"}
    for _, number in real.iterrows():
        defense, _, detector = number["row"].partition("+")
        equivalent = defense in defenses and (not detector or detector in detectors)
        assert equivalent or "no robench equivalent" in number["note"], number.to_dict()
        column = number["column"]
        # a paper column robench runs only as an attack added in a reproduction suite ("-2x": the doubled budget)
        assert column in attacks or column.split(" (")[0] in attacks or column.removesuffix("-2x") in attacks, column
        if (
            number["metric"].startswith("auc")
            or number["metric"] == "success_rate"
            or number["metric"].endswith("accuracy")
        ):
            assert 0 <= number["value"] <= 100


def test_the_real_papers_file_renders_beside_a_run(white_box_run):
    result = invoke(str(white_box_run), "--paper", "001 Table 10", "--papers-file", str(REAL_PAPERS))
    header, rows = markdown_table(result.stdout)
    assert list(rows) == ["Softmax+KD", "GM+KD", "GM+Likelihood", "RCE+KD"]
    own_population = [i for i, h in enumerate(header) if h.endswith("/ paper") and not h.startswith("AUC (%)")]
    assert all(rows["RCE+KD"][i] not in ("", "-") for i in own_population)


def test_another_datasets_numbers_only_when_asked_and_said_so(tmp_path, papers):
    root = tmp_path / "runs"
    write_model(root, "mmc", "mmc", "white-box", ["PGD-10-un"], shift=2.0)  # on mnist-5k; 004 Table 1 is CIFAR-10
    result = invoke(str(root), "--paper", "004-t1", "--paper-dataset", "CIFAR-10", "--papers-file", str(papers))
    header, rows = markdown_table(result.stdout)
    assert rows["MMC"][4] == "36.5" and rows["MMC"][3] != "-"
    assert (
        "paper's numbers are on CIFAR-10 and robench's on MNIST" in result.stdout
        and "not as a comparison" in result.stdout
    )
