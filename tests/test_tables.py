"""Paper-layout tables from hand-made summaries (exact values) and from a run folder written by the runner."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess

import pandas as pd
import pytest
from click.testing import CliRunner

from robench.cli.report import report, resolve_format
from robench.core.errors import ConfigError, UnknownNameError
from robench.report.rundir import load_run_dir
from robench.report.tables import best_mask, build_table, build_tables, cell_text, format_value, render, render_tables
from robench.runs.output import write_run
from robench.scoring.metrics import summarize
from synthetic import synthetic_records

META = {
    "soft": {"name": "soft", "defense": "softmax", "dataset": "mnist-5k"},
    "gm": {"name": "gm", "defense": "gm", "dataset": "mnist-5k"},
}


def row(
    model,
    threat,
    attack,
    detector="kd",
    n=100,
    clean=0.99,
    robust=0.5,
    success=0.5,
    distortion=0.1,
    auc=0.9,
    flagged=0.5,
):
    return {
        "model": model, "threat": threat, "attack": attack, "detector": detector, "n": n,
        "clean_accuracy": clean, "robust_accuracy": robust, "success_rate": success,
        "distortion": distortion, "auc_roc": auc, "flagged_rate": flagged,
    }  # fmt: skip


def summary(*rows) -> pd.DataFrame:
    return pd.DataFrame(list(rows))


def detection_summary() -> pd.DataFrame:
    # gm listed first (sorted run folders put gm/ before softmax/); the table must still put Softmax first
    return summary(
        row("gm", "semi-white-box", "FGSM", "kd", auc=0.995),
        row("gm", "semi-white-box", "C&W", "kd", auc=0.998),
        row("soft", "semi-white-box", "FGSM", "bu", auc=0.906),
        row("soft", "semi-white-box", "FGSM", "kd", auc=0.902),
        row("soft", "semi-white-box", "C&W", "bu", auc=0.979),
        row("soft", "semi-white-box", "C&W", "kd", auc=0.976),
        row("soft", "noise", "noise-0.05", "kd", auc=float("nan")),  # another threat: not in this table
    )


def test_detection_rows_columns_and_values():
    table = build_table("detection", detection_summary(), META)
    values = table.values()
    assert [r[0] for r in values.index] == ["Softmax+KD", "Softmax+BU", "GM+KD"]
    assert [c[0] for c in values.columns] == ["FGSM", "C&W"]
    assert values.loc[("GM+KD",), ("C&W",)] == pytest.approx(0.998)
    text = cell_text(table)
    assert text.loc[("Softmax+BU",), ("FGSM",)] == "90.6"
    assert "001 Tables 7-8" in table.caption and "n = 100" in table.caption
    best = best_mask(table)  # AUC: higher is better for the defense, per column
    assert best.loc[("GM+KD",)].all() and not best.loc[("Softmax+KD",)].any() and not best.loc[("Softmax+BU",)].any()


def test_detection_names_models_that_share_a_defense_and_skips_undetected_rows():
    meta = {"gm-a": {"defense": "gm", "dataset": "mnist-5k"}, "gm-b": {"defense": "gm", "dataset": "mnist-5k"}}
    frame = summary(
        row("gm-a", "semi-white-box", "BIM"),
        row("gm-b", "semi-white-box", "BIM"),
        row("gm-b", "semi-white-box", "BIM", "-"),
    )
    table = build_table("detection", frame, meta)
    assert [r[0] for r in table.values().index] == ["GM (gm-a)+KD", "GM (gm-b)+KD"]
    # a model without run.json metadata is labelled by its name
    assert [r[0] for r in build_table("detection", frame, {}).values().index] == ["gm-a+KD", "gm-b+KD"]


def test_models_of_several_datasets_get_a_dataset_level_and_are_compared_within_it():
    meta = {
        **META,
        "gm-c": {"defense": "gm", "dataset": "cifar10"},
        "soft-c": {"defense": "softmax", "dataset": "cifar10"},
    }
    frame = summary(
        row("soft", "semi-white-box", "BIM", auc=0.90), row("gm", "semi-white-box", "BIM", auc=0.99),
        row("soft-c", "semi-white-box", "BIM", auc=0.60), row("gm-c", "semi-white-box", "BIM", auc=0.50),
    )  # fmt: skip
    table = build_table("detection", frame, meta)
    assert table.rows == ("Dataset", "Detection Method")
    best = best_mask(table)
    # the best per dataset: GM on mnist-5k, Softmax on cifar10 (0.60 would lose to 0.99 across datasets)
    assert best.loc[("mnist-5k", "GM+KD")].all() and best.loc[("cifar10", "Softmax+KD")].all()
    assert best.to_numpy().sum() == 2


def white_box_summary() -> pd.DataFrame:
    return summary(
        row("gm", "white-box", "C&W-wb", auc=0.849, distortion=0.4229, success=0.681),
        row("soft", "white-box", "C&W-wb", auc=0.556, distortion=0.1842, success=0.988),
        row("gm", "white-box", "PGD-10-un", auc=0.99, distortion=0.9, success=0.1),  # not C&W-wb: left out
    )


def test_white_box_columns_carry_directions_and_best_follows_them():
    table = build_table("white-box", white_box_summary(), META)
    text = cell_text(table)
    assert list(text.columns.get_level_values(0)) == ["AUC (%) ↑", "Dist. ↑", "Adv. Success (%) ↓"]
    assert [r[0] for r in text.index] == ["Softmax+KD", "GM+KD"]  # baseline first whatever the summary's order
    assert text.loc[("Softmax+KD",)].tolist() == ["55.6", "0.18", "98.8"]
    assert text.loc[("GM+KD",)].tolist() == ["84.9", "0.42", "68.1"]
    best = best_mask(table)
    # GM has the highest AUC and distortion and the LOWEST success rate: all three bold
    assert best.loc[("GM+KD",)].all() and not best.loc[("Softmax+KD",)].any()


def test_success_rate_marks_the_lowest_and_ties_are_all_marked():
    frame = summary(
        row("soft", "white-box", "C&W-wb", auc=0.70, success=0.30),
        row("gm", "white-box", "C&W-wb", auc=0.70, success=0.90),
        row("gm", "white-box", "C&W-wb", "bu", auc=0.6996, success=0.90),  # displays as 70.0 too: a tie
    )
    best = best_mask(build_table("white-box", frame, META))
    success = best[("Adv. Success (%) ↓",)]
    assert success.tolist() == [True, False, False]  # Softmax+KD, GM+KD, GM+BU: the lowest rate wins
    assert best[("AUC (%) ↑",)].tolist() == [True, True, True]


def test_black_box_has_target_models_as_columns_and_marks_the_best_model_per_row():
    frame = summary(
        row("soft", "black-box", "C&W-wb", auc=0.944), row("gm", "black-box", "C&W-wb", auc=0.986),
        row("soft", "black-box", "PGD-10-un", auc=0.97), row("gm", "black-box", "PGD-10-un", auc=0.95),
    )  # fmt: skip
    table = build_table("black-box", frame, META)
    values = table.values()
    assert list(values.index) == [("C&W-wb", "KD"), ("PGD-10-un", "KD")]
    assert [c[0] for c in values.columns] == ["Softmax", "GM"]
    assert values.loc[("C&W-wb", "KD"), ("GM",)] == pytest.approx(0.986)
    assert best_mask(table).to_numpy().tolist() == [[False, True], [True, False]]


def accuracy_summary() -> pd.DataFrame:
    return summary(
        row("soft", "semi-white-box", "FGSM", robust=0.2),  # not an accuracy threat
        row("soft", "rotation", "rotation-30", n=50, clean=0.90, robust=0.60),
        row("soft", "white-box", "PGD-10-un", "kd", n=100, clean=0.929, robust=0.037),
        row(
            "soft", "white-box", "PGD-10-un", "bu", n=100, clean=0.929, robust=0.037
        ),  # one row per model, not per detector
        row("soft", "noise", "noise-0.05", n=100, clean=0.929, robust=0.80),
        row("gm", "white-box", "PGD-10-un", n=100, clean=0.927, robust=0.36),
        row("gm", "spsa", "SPSA-un", n=100, clean=0.927, robust=0.50),
        row("gm", "noise", "noise-0.05", n=100, clean=0.927, robust=0.91),
    )


def test_accuracy_groups_columns_by_threat_with_clean_first():
    table = build_table("accuracy", accuracy_summary(), META)
    values = table.values()
    assert list(values.columns) == [
        ("", "Clean"),
        ("white-box", "PGD-10-un"),
        ("spsa", "SPSA-un"),
        ("noise", "noise-0.05"),
        ("rotation", "rotation-30"),
    ]
    assert [r[0] for r in values.index] == ["Softmax", "GM"]
    text = cell_text(table)
    # clean accuracy from the model's largest evaluation (n=100, not the rotation run's n=50)
    assert text.loc[("Softmax",)].tolist() == ["92.9", "3.7", "-", "80.0", "60.0"]
    assert text.loc[("GM",)].tolist() == ["92.7", "36.0", "50.0", "91.0", "-"]
    best = best_mask(table)
    assert best.loc[("GM",), ("white-box", "PGD-10-un")] and not best.loc[("Softmax",), ("white-box", "PGD-10-un")]
    assert not best.loc[("GM",), ("spsa", "SPSA-un")]  # a lone value competes with nothing: not marked
    assert "white-box, spsa, noise and rotation" in table.caption


def test_summary_layout_holds_every_row_and_metric_and_ignores_unknown_columns():
    frame = detection_summary().assign(extra_column=1.0)
    table = build_table("summary", frame, META)
    text = cell_text(table)
    assert len(text) == len(frame)
    assert [c[0] for c in text.columns] == [
        "n",
        "Clean Acc. (%) ↑",
        "Robust Acc. (%) ↑",
        "Adv. Success (%) ↓",
        "Dist. ↑",
        "AUC (%) ↑",
        "Flagged (%) ↑",
    ]
    assert text.loc[("soft", "noise", "noise-0.05", "kd"), ("AUC (%) ↑",)] == "-"
    assert not best_mask(table).to_numpy().any()


def test_absent_threat_is_a_one_line_error_by_name_and_a_note_otherwise():
    with pytest.raises(ConfigError, match="layout 'white-box' needs threat 'white-box'") as info:
        build_table("white-box", detection_summary(), META)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="needs attack C&W-wb"):
        build_table("white-box", summary(row("gm", "white-box", "PGD-10-un")), META)
    with pytest.raises(ConfigError, match="without detectors"):
        build_table("detection", summary(row("gm", "semi-white-box", "FGSM", "-")), META)
    with pytest.raises(UnknownNameError, match="did you mean 'detection'"):
        build_tables(detection_summary(), META, layouts=["detecton"])
    tables, notes = build_tables(detection_summary(), META)
    assert [t.layout for t in tables] == ["detection", "accuracy", "summary"]  # accuracy: the noise rows
    assert len(notes) == 3 and all(n.startswith("skipped: layout '") for n in notes)  # white-box, black-box, worst-case


def test_number_formats_and_nan():
    assert format_value(0.8434, "auc_roc") == "84.3"
    assert format_value(0.18421, "distortion") == "0.18"
    assert format_value(float("nan"), "success_rate") == "-"
    assert format_value(200, "n") == "200"


def hand_intervals() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"model": "soft", "threat": "white-box", "attack": "C&W-wb", "detector": "kd", "n": 100,
             "auc_roc_low": 0.521, "auc_roc_high": 0.590, "distortion_low": 0.17, "distortion_high": 0.2,
             "success_rate_low": 0.97, "success_rate_high": 0.995},
            {"model": "gm", "threat": "white-box", "attack": "C&W-wb", "detector": "kd", "n": 100,
             "auc_roc_low": 0.821, "auc_roc_high": 0.860, "distortion_low": float("nan"),
             "distortion_high": float("nan"), "success_rate_low": 0.64, "success_rate_high": 0.72},
        ]
    )  # fmt: skip


def test_confidence_intervals_are_shown_next_to_the_value():
    table = build_table("white-box", white_box_summary(), META, intervals=hand_intervals())
    text = cell_text(table)
    assert text.loc[("GM+KD",), ("AUC (%) ↑",)] == "84.9 [82.1, 86.0]"
    assert text.loc[("Softmax+KD",), ("Dist. ↑",)] == "0.18 [0.17, 0.20]"
    assert text.loc[("GM+KD",), ("Dist. ↑",)] == "0.42"  # no interval: the value alone
    latex = render(table, "latex")
    assert r"\textbf{84.9 [82.1, 86.0]}" in latex


def test_latex_uses_booktabs_escapes_and_marks_best():
    latex = render(build_table("detection", detection_summary(), META), "latex")
    for rule in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}", r"\label{tab:robench-detection}"):
        assert rule in latex
    assert r"C\&W" in latex and "C&W" not in latex.replace(r"C\&W", "")
    assert r"\caption{Detection AUC-ROC scores (\%)" in latex
    assert r"GM+KD & \textbf{99.5} & \textbf{99.8} \\" in latex
    white = render(build_table("white-box", white_box_summary(), META), "latex")
    assert r"AUC (\%) $\uparrow$" in white and r"Adv. Success (\%) $\downarrow$" in white and "↑" not in white
    assert "C\\&W-wb" in white  # the caption is escaped too


def test_underscores_in_names_are_escaped_in_latex():
    frame = summary(row("my_model", "semi-white-box", "FGSM"))
    latex = render(build_table("detection", frame, {}), "latex")
    assert r"my\_model+KD" in latex


def markdown_rows(text: str) -> list[list[str]]:
    lines = [line for line in text.splitlines() if line.startswith("|")]
    assert lines and all(line.endswith("|") for line in lines)
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def test_markdown_parses_as_a_table_with_bold_best():
    text = render(build_table("accuracy", accuracy_summary(), META), "markdown")
    rows = markdown_rows(text)
    assert len({len(r) for r in rows}) == 1  # the same number of cells on every line
    assert rows[0] == [
        "Model",
        "Clean",
        "white-box / PGD-10-un",
        "spsa / SPSA-un",
        "noise / noise-0.05",
        "rotation / rotation-30",
    ]
    assert all(re.fullmatch(r":?-+:?", cell) for cell in rows[1])
    assert rows[2][0] == "Softmax" and rows[3][:3] == ["GM", "92.7", "**36.0**"]
    assert rows[2][1] == "**92.9**"


def test_csv_and_html():
    table = build_table("white-box", white_box_summary(), META)
    frame = pd.read_csv(io.StringIO(render(table, "csv")))
    assert list(frame.columns) == ["Detection Method", "AUC (%) ↑", "Dist. ↑", "Adv. Success (%) ↓"]
    assert frame["Adv. Success (%) ↓"].tolist() == [98.8, 68.1]  # plain numbers, no markup
    html = render(table, "html")
    assert "<table" in html and "font-weight: bold" in html and "C&amp;W-wb" in html and "C&W" not in html
    assert html == render(table, "html")  # a fixed table id: the same input renders the same bytes
    both = render_tables([table, build_table("summary", white_box_summary(), META)], "csv")
    assert both.startswith("# white-box: ") and "\n# summary: " in both
    with pytest.raises(ConfigError, match="--standalone"):
        render(table, "markdown", standalone=True)


# ----------------------------------------------------------------------------- bounds in the defense's favour

DAGGER, LATEX_DAGGER = "†", r"$^\dagger$"
BOUND_NOTE = "† marks an upper bound on the defense's robustness"


def flagged(frame: pd.DataFrame, model: str = "gm", flags: str = "detector-not-attacked") -> pd.DataFrame:
    """``frame`` with a ``sanity_flags`` column (robench.runs.output.with_sanity_flags): ``flags`` on ``model``'s
    rows, none on the others."""
    return frame.assign(sanity_flags=["" if m != model else flags for m in frame["model"]])


def daggered(rows: list[list[str]], labels: int) -> dict[tuple[str, ...], set[str]]:
    """Markdown body rows -> the headers of their cells that carry a dagger (the first ``labels`` cells name a row)."""
    header = rows[0]
    return {
        tuple(line[:labels]): {h for h, cell in zip(header[labels:], line[labels:]) if DAGGER in cell}
        for line in rows[2:]
    }


def test_detector_not_attacked_daggers_exactly_the_detector_aware_cells_of_its_rows():
    frame = flagged(white_box_summary())  # gm's rows (C&W-wb, PGD-10-un) come from a threat that left KD alone
    text = render(build_table("summary", frame, META), "markdown")
    marks = daggered(markdown_rows(text), labels=4)
    # AUC and flagged rate measure the detector; n, accuracies, success and distortion do not
    assert marks == {
        ("gm", "white-box", "C&W-wb", "kd"): {"AUC (%) ↑", "Flagged (%) ↑"},
        ("soft", "white-box", "C&W-wb", "kd"): set(),
        ("gm", "white-box", "PGD-10-un", "kd"): {"AUC (%) ↑", "Flagged (%) ↑"},
    }
    assert text.count(BOUND_NOTE) == 1 and "(detector-not-attacked)" in text and "budget-not-attacked" not in text
    white = build_table("white-box", frame, META)
    latex = render(white, "latex")
    assert r"GM+KD & \textbf{84.9$^\dagger$} & \textbf{0.42} & \textbf{68.1} \\" in latex
    assert r"Softmax+KD & 55.6 & 0.18 & 98.8 \\" in latex
    assert latex.count(LATEX_DAGGER) == 2 and DAGGER not in latex  # the cell and the caption's sentence
    assert daggered(markdown_rows(render(white, "markdown")), labels=1) == {
        ("Softmax+KD",): set(),
        ("GM+KD",): {"AUC (%) ↑"},
    }
    assert (
        cell_text(build_table("white-box", frame, META, intervals=hand_intervals())).loc[("GM+KD",), ("AUC (%) ↑",)]
        == "84.9† [82.1, 86.0]"
    )  # the mark is the value's, before its interval


def test_no_dagger_and_no_caption_sentence_without_a_marked_cell():
    for table in (
        build_table("white-box", flagged(white_box_summary(), flags=""), META),  # nothing flagged
        build_table("white-box", white_box_summary(), META),  # no sanity_flags column at all
        build_table("accuracy", flagged(accuracy_summary()), META),  # flagged, but no detector-aware cell shown
    ):
        for fmt in ("markdown", "latex", "html", "csv"):
            text = render(table, fmt)
            assert DAGGER not in text and "dagger" not in text and "upper bound" not in text, (table.layout, fmt)


def worst_case_summary() -> pd.DataFrame:
    def case(model, budget, detector, flags):
        return {**row(model, "semi-white-box", f"worst-case {budget}", detector), "survival": 0.6,
                "survival_detected": 0.9, "sanity_flags": flags}  # fmt: skip

    return summary(
        case("gm", "Linf 0.3", "kd", "detector-not-attacked"),
        case("gm", "Linf 0.3", "bu", ""),
        case("soft", "Linf 0.1", "kd", "budget-not-attacked"),
    )


def test_worst_case_cells_carry_the_detector_and_the_budget_checks():
    text = render(build_table("worst-case", worst_case_summary(), META), "markdown")
    marks = daggered(markdown_rows(text), labels=1)
    at = "semi-white-box / Linf {} / {}".format
    assert marks == {
        ("Softmax+KD",): {at("0.1", "Survived (%) ↑"), at("0.1", "Surv. or flagged (%) ↑")},  # no attack at 0.1
        ("GM+KD",): {at("0.3", "Surv. or flagged (%) ↑")},  # KD not attacked: only the detector's figure
        ("GM+BU",): set(),
    }
    assert "(detector-not-attacked); or no attack of the threat ran at the cell's budget (budget-not-attacked)" in text


@pytest.mark.skipif(
    shutil.which("pdflatex") is None and not os.environ.get("ROBENCH_REQUIRE_PDFLATEX"),
    reason="pdflatex is not installed (CI installs it and sets ROBENCH_REQUIRE_PDFLATEX=1)",
)
def test_standalone_latex_compiles(tmp_path):
    tables = [
        build_table("detection", detection_summary(), META),
        build_table("white-box", flagged(white_box_summary()), META, intervals=hand_intervals()),  # daggers
        build_table("accuracy", accuracy_summary(), META),
        build_table(
            "summary", summary(*(row("gm", "semi-white-box", f"A_{i}") for i in range(50))), META
        ),  # a longtable
    ]
    source = render_tables(tables, "latex", standalone=True)
    assert source.startswith("\\documentclass{article}") and "\\begin{longtable}" in source
    (tmp_path / "tables.tex").write_text(source)
    done = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "tables.tex"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:]
    assert (tmp_path / "tables.pdf").stat().st_size > 1000


# ----------------------------------------------------------------------------- from records, through the CLI


def records(
    model: str, threat: str, attack: str, n: int = 30, seed: int = 0, shift: float = 2.0, detectors=("kd",)
) -> pd.DataFrame:
    return synthetic_records(
        model, threat, attack, n=n, seed=seed, wrong=2, success_p=0.6, adv_offset=3, shift=shift, detectors=detectors
    )


def write_pair(
    root, model: str, defense: str, threat: str, attacks: list[str], shift: float, attacked: str | None = None
) -> None:
    """One run folder of synthetic records, without sanity.csv; ``attacked``: the detectors every attack descended on
    (None: records without the column, read as detector-blind)."""
    frame = pd.concat(
        [records(model, threat, a, seed=i, shift=shift) for i, a in enumerate(attacks)], ignore_index=True
    )
    if attacked is not None:
        frame["attack_detectors"] = attacked
    info = {
        "model": {"name": model, "defense": defense, "dataset": "mnist-5k", "path": f"{model}.pt"},
        "threat": {
            "name": threat,
            "attacks": [{"label": a, "attack": "fgsm", "params": {"eps": 0.1}, "target_mode": "none"} for a in attacks],
        },
    }
    write_run(root / model / threat, frame, summarize(frame), info)


@pytest.fixture
def run_dir(tmp_path):
    root = tmp_path / "runs"
    write_pair(root, "gm", "gm", "semi-white-box", ["FGSM", "C&W"], shift=3.0)
    write_pair(root, "soft", "softmax", "semi-white-box", ["FGSM", "C&W"], shift=1.0)
    return root


def test_report_prints_detection_table_with_bootstrap_intervals(run_dir):
    result = CliRunner().invoke(report, [str(run_dir), "--format", "markdown", "--ci", "--resamples", "50"])
    assert result.exit_code == 0, result.output
    rows = markdown_rows(result.stdout)
    assert rows[0] == ["Detection Method", "FGSM", "C&W"]  # the worst cases have their own table
    assert [r[0] for r in rows[2:4]] == ["Softmax+KD", "GM+KD"]  # then the worst-case table
    for cell in rows[2][1:] + rows[3][1:]:
        # a dagger after the value: the records name no attacked detector (robench.report.tables.bounds)
        value, low, high = map(float, re.fullmatch(r"\**([\d.]+)†? \[([\d.]+), ([\d.]+)\]\**", cell).groups())
        assert low <= value <= high
    assert "skipped: layout 'white-box'" in result.stderr  # notes go to stderr, not into the table
    assert "skipped" not in result.stdout


def test_report_writes_out_file_in_the_format_its_suffix_implies(run_dir, tmp_path):
    out = tmp_path / "t" / "tables.tex"
    result = CliRunner().invoke(report, [str(run_dir), "--out", str(out), "--layout", "detection", "--standalone"])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert text.startswith("\\documentclass") and "\\toprule" in text and "\\label{tab:robench-detection}" in text
    assert result.stdout == ""
    assert resolve_format(None, None) == "markdown" and resolve_format("csv", out) == "csv"


@pytest.mark.parametrize(
    "args, error, fragment",
    [
        (["--layout", "white-box"], ConfigError, "needs threat 'white-box'"),
        (["--layout", "acuracy"], UnknownNameError, "did you mean 'accuracy'"),
        (["--format", "markdown", "--standalone"], ConfigError, "--standalone"),
        (["--resamples", "0", "--ci"], ConfigError, "--resamples"),
    ],
)
def test_report_bad_input_raises_one_line_errors(run_dir, args, error, fragment):
    result = CliRunner().invoke(report, [str(run_dir), *args])
    assert isinstance(result.exception, error), result.output
    assert fragment in str(result.exception) and "\n" not in str(result.exception)


def test_report_on_a_missing_folder_is_a_config_error(tmp_path):
    result = CliRunner().invoke(report, [str(tmp_path / "nowhere")])
    assert isinstance(result.exception, ConfigError)


def test_one_target_from_two_substitutes_keeps_two_rows_in_black_box_and_summary():
    frame = summary(
        {**row("gm", "black-box", "PGD-10-un", auc=0.91), "crafted_on": "soft"},
        {**row("gm", "black-box", "PGD-10-un", auc=0.97), "crafted_on": "mmc"},
    )
    black = build_table("black-box", frame, META).values()
    assert [c[0] for c in black.columns] == [
        "GM (from soft)",
        "GM (from mmc)",
    ]  # substitutes that are not rows are named as in the records
    assert black.to_numpy().ravel().tolist() == [pytest.approx(0.91), pytest.approx(0.97)]
    rows = build_table("summary", frame, META).values()
    assert sorted({r[1] for r in rows.index}) == ["black-box (from mmc)", "black-box (from soft)"]


def test_a_run_directory_without_sanity_gets_its_record_checks_and_its_tables_marked(tmp_path):
    root = tmp_path / "runs"
    write_pair(root, "gm", "gm", "semi-white-box", ["FGSM", "C&W"], shift=3.0, attacked="kd")
    write_pair(root, "soft", "softmax", "semi-white-box", ["FGSM", "C&W"], shift=1.0)  # no attack aimed at KD
    assert not list(root.rglob("sanity.csv"))  # the runs wrote no sanity checks
    run = load_run_dir(root)
    assert "sanity_flags" not in run.summary()
    summary = run.flagged_summary()
    blind = summary["model"] == "soft"
    assert summary.loc[blind, "sanity_flags"].str.contains("detector-not-attacked").all()
    assert not summary.loc[~blind, "sanity_flags"].str.contains("detector-not-attacked").any()
    tables, _ = build_tables(summary, run.model_meta(), ["detection"])
    marks = daggered(markdown_rows(render_tables(tables, "markdown")), labels=1)
    assert marks == {("Softmax+KD",): {"FGSM", "C&W"}, ("GM+KD",): set()}
    latex = render_tables(tables, "latex")
    assert latex.count(LATEX_DAGGER) == 3 and "(detector-not-attacked)" in latex  # two cells and the caption
    # robench report's curves table reads the records itself: Softmax's KD row is marked, its no-detector row is not
    result = CliRunner().invoke(report, [str(root), "--layout", "curves", "--format", "markdown"])
    assert result.exit_code == 0, result.output
    curves = {key: bool(cells) for key, cells in daggered(markdown_rows(result.stdout), labels=3).items()}
    assert curves == {
        ("gm", "semi-white-box", "-"): False,
        ("gm", "semi-white-box", "kd"): False,
        ("soft", "semi-white-box", "-"): False,
        ("soft", "semi-white-box", "kd"): True,
    }
    assert result.stdout.count(BOUND_NOTE) == 1
