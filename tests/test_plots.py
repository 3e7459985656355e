"""Figures from synthetic records and run.json dicts: written as non-empty PNG and PDF, or skipped with a note."""

from __future__ import annotations

import pandas as pd
import pytest
from click.testing import CliRunner
from synthetic import synthetic_records

from robench.core.bundle import BundleMeta, save_bundle
from robench.cli.report import report
from robench.defenses import DEFENSES
from robench.eval.metrics import metric_value, roc_points, summarize
from robench.core.model_factory import build_classifier
from robench.report.plots import accuracy_vs_budget, budget_table, feature_embeddings, kd_histograms, roc_figures
from robench.eval.output import write_run


def records(model: str, threat: str, attack: str, n: int = 40, seed: int = 0, corruption: bool = False, detectors=("kd",)) -> pd.DataFrame:
    return synthetic_records(model, threat, attack, n=n, seed=seed, wrong=3, success_p=0.5, adv_offset=2, shift=1.5, corruption=corruption, detectors=detectors)


def assert_figures(files, stems):
    names = sorted(f.name for f in files)
    assert names == sorted(f"{s}.{ext}" for s in stems for ext in ("png", "pdf"))
    for file in files:
        head = file.read_bytes()[:8]
        assert file.stat().st_size > 1000
        assert head.startswith(b"\x89PNG") if file.suffix == ".png" else head.startswith(b"%PDF")


def test_roc_points_match_the_metric_definition():
    from sklearn.metrics import auc

    frame = records("m", "semi-white-box", "FGSM")
    fpr, tpr = roc_points(frame, "kd")
    assert auc(fpr, tpr) == pytest.approx(metric_value("auc_roc", frame, "kd"))
    none_succeed = frame.assign(success=False)
    assert roc_points(none_succeed, "kd") is None


def test_roc_figure_per_model_and_threat_skips_corruptions(tmp_path):
    frame = pd.concat(
        [
            records("gm", "semi-white-box", "FGSM"),
            records("gm", "semi-white-box", "C&W", seed=1, detectors=("kd",)),
            records("gm", "noise", "noise-0.05", corruption=True),
        ],
        ignore_index=True,
    )
    result = roc_figures(frame, tmp_path)
    assert_figures(result.files, ["roc-gm-semi-white-box"])
    assert result.notes == ["ROC gm/noise: skipped, only corruptions"]


def test_kd_histograms_per_threat_and_a_note_without_kd(tmp_path):
    frame = pd.concat([records("soft", "semi-white-box", "BIM"), records("gm", "semi-white-box", "BIM", seed=2)], ignore_index=True)
    result = kd_histograms(frame, tmp_path)
    assert_figures(result.files, ["kd-hist-semi-white-box"])
    without = kd_histograms(records("soft", "rotation", "rotation-30", detectors=("bu",)), tmp_path)
    assert without.files == [] and "no 'kd' scores" in without.notes[0]


def noise_run(model: str, sigmas: list[float]) -> dict:
    attacks = [{"label": f"noise-{s:g}", "attack": "gaussian-noise", "params": {"sigma": s}, "target_mode": "none"} for s in sigmas]
    return {"model": {"name": model}, "threat": {"name": "noise", "attacks": attacks}}


def test_accuracy_vs_budget_needs_several_budgets(tmp_path):
    sigmas = [0.05, 0.1, 0.2]
    frame = pd.concat([records(m, "noise", f"noise-{s:g}", seed=i, corruption=True) for m in ("soft", "gm") for i, s in enumerate(sigmas)], ignore_index=True)
    summary = summarize(frame)
    runs = [noise_run("soft", sigmas), noise_run("gm", sigmas)]
    table = budget_table(summary, runs)
    assert sorted(table.loc[table["model"] == "gm", "budget"]) == sigmas
    assert (table["param"] == "sigma").all()
    result = accuracy_vs_budget(summary, runs, tmp_path)
    assert_figures(result.files, ["budget-noise-gaussian-noise"])
    single = accuracy_vs_budget(summary[summary["attack"] == "noise-0.05"], [noise_run("gm", [0.05])], tmp_path / "single")
    assert single.files == [] and "single budget" in single.notes[0]


def tiny_bundle(path, feature_dim: int):
    defense = DEFENSES.get("gm").for_dataset("mnist", {})
    arch = {"width": 4, "hidden": 16, "feature_dim": feature_dim, "dropout": 0.0}
    model, resolved = build_classifier("cnn", arch, (1, 28, 28), (0.1307,), (0.3081,), defense, 10, seed=0)
    meta = BundleMeta(
        arch="cnn", arch_kwargs=resolved, defense="gm", defense_params=defense.params(), dataset="mnist-5k", split_seed=0,
        num_classes=10, input_shape=(1, 28, 28), value_range=(0.0, 1.0), mean=(0.1307,), std=(0.3081,),
        feature_layer=model.feature_layer, feature_dim=model.feature_dim, seed=0,
    )  # fmt: skip
    save_bundle(path, model.eval(), meta)


def test_feature_embeddings_for_2d_models_and_notes_otherwise(tmp_path):
    tiny_bundle(tmp_path / "gm2.pt", feature_dim=2)
    tiny_bundle(tmp_path / "gm12.pt", feature_dim=12)
    runs = [
        {"model": {"name": "gm2", "path": "gm2.pt"}},  # relative: found next to the run folder
        {"model": {"name": "gm12", "path": str(tmp_path / "gm12.pt")}},
        {"model": {"name": "lost", "path": str(tmp_path / "lost.pt")}},
        {"model": {"name": "gm2", "path": "gm2.pt"}},  # a second run of the same model: one figure
    ]
    result = feature_embeddings(runs, tmp_path, tmp_path / "plots", max_points=300)
    assert_figures(result.files, ["features-gm2"])
    assert result.notes == [
        "features gm12: skipped, feature_dim is 12, not 2",
        f"features lost: skipped, bundle {tmp_path / 'lost.pt'} not found",
    ]


def test_report_plots_writes_figures_and_notes(tmp_path):
    root = tmp_path / "runs"
    for model, defense in (("soft", "softmax"), ("gm", "gm")):
        frame = records(model, "semi-white-box", "FGSM", seed=len(model))
        info = {
            "model": {"name": model, "defense": defense, "dataset": "mnist-5k", "path": str(tmp_path / f"{model}.pt")},
            "threat": {"name": "semi-white-box", "attacks": [{"label": "FGSM", "attack": "fgsm", "params": {"eps": 0.1}, "target_mode": "random"}]},
        }
        write_run(root / model / "semi-white-box", frame, summarize(frame), info)
    plots = tmp_path / "figs"
    result = CliRunner().invoke(report, [str(root), "--layout", "detection", "--plots-dir", str(plots)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in plots.iterdir()) == sorted(
        f"{stem}.{ext}" for stem in ("roc-gm-semi-white-box", "roc-soft-semi-white-box", "kd-hist-semi-white-box") for ext in ("png", "pdf")
    )
    assert "single budget" in result.stderr and "features soft: skipped, bundle" in result.stderr
    assert "| Softmax+KD" in result.stdout
