"""Figures from synthetic records and run.json dicts: written as non-empty PNG and PDF, or skipped with a note."""

from __future__ import annotations

import pandas as pd
import pytest
from click.testing import CliRunner

from robench.checkpoints.bundle import BundleMeta, save_bundle
from robench.checkpoints.model_factory import build_classifier
from robench.cli.report import report
from robench.defenses import DEFENSES
from robench.report.plots import (
    accuracy_vs_budget,
    budget_table,
    feature_embeddings,
    kd_histograms,
    robustness_curves,
    roc_figures,
)
from robench.runs.output import write_run
from robench.scoring import records as R
from robench.scoring.metrics import metric_value, roc_points, summarize
from synthetic import synthetic_records


def records(
    model: str, threat: str, attack: str, n: int = 40, seed: int = 0, corruption: bool = False, detectors=("kd",)
) -> pd.DataFrame:
    return synthetic_records(
        model,
        threat,
        attack,
        n=n,
        seed=seed,
        wrong=3,
        success_p=0.5,
        adv_offset=2,
        shift=1.5,
        corruption=corruption,
        detectors=detectors,
    )


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
    frame = pd.concat(
        [records("soft", "semi-white-box", "BIM"), records("gm", "semi-white-box", "BIM", seed=2)], ignore_index=True
    )
    result = kd_histograms(frame, tmp_path)
    assert_figures(result.files, ["kd-hist-semi-white-box"])
    without = kd_histograms(records("soft", "rotation", "rotation-30", detectors=("bu",)), tmp_path)
    assert without.files == [] and "no 'kd' scores" in without.notes[0]


def test_robustness_curves_per_model_and_threat_with_budgets_marked(tmp_path, monkeypatch):
    texts = _drawn_texts(monkeypatch)
    frame = pd.concat(
        [records("gm", "white-box", "PGD"), records("gm", "white-box", "C&W", seed=1)], ignore_index=True
    ).assign(**{R.BUDGETS: "linf:0.3;l2:2.0", R.CRAFTED_ON: "gm"})
    transfer = records("gm", "black-box", "PGD", seed=2).assign(**{R.CRAFTED_ON: "soft", R.BUDGETS: "linf:0.3"})
    noise = records("gm", "noise", "noise-0.05", corruption=True)
    result = robustness_curves(pd.concat([frame, transfer, noise], ignore_index=True), tmp_path, resamples=50)
    assert_figures(result.files, ["curve-gm-white-box", "curve-gm-black-box-from-soft"])
    assert {"Linf 0.3", "L2 2", "no detector", "kd (unflagged)", "Linf", "L2"} <= set(texts)
    assert "Robustness curves: gm, black-box, crafted on soft" in texts
    only_noise = robustness_curves(noise, tmp_path)
    assert only_noise.files == [] and "only corruptions" in only_noise.notes[0]


def noise_run(model: str, sigmas: list[float]) -> dict:
    attacks = [
        {"label": f"noise-{s:g}", "attack": "gaussian-noise", "params": {"sigma": s}, "target_mode": "none"}
        for s in sigmas
    ]
    return {"model": {"name": model}, "threat": {"name": "noise", "attacks": attacks}}


def test_accuracy_vs_budget_needs_several_budgets(tmp_path):
    sigmas = [0.05, 0.1, 0.2]
    frame = pd.concat(
        [
            records(m, "noise", f"noise-{s:g}", seed=i, corruption=True)
            for m in ("soft", "gm")
            for i, s in enumerate(sigmas)
        ],
        ignore_index=True,
    )
    summary = summarize(frame)
    runs = [noise_run("soft", sigmas), noise_run("gm", sigmas)]
    table = budget_table(summary, runs)
    assert sorted(table.loc[table["model"] == "gm", "budget"]) == sigmas
    assert (table["param"] == "sigma").all()
    result = accuracy_vs_budget(summary, runs, tmp_path)
    assert_figures(result.files, ["budget-noise-gaussian-noise"])
    single = accuracy_vs_budget(
        summary[summary["attack"] == "noise-0.05"], [noise_run("gm", [0.05])], tmp_path / "single"
    )
    assert single.files == [] and "single budget" in single.notes[0]


def tiny_bundle(path, feature_dim: int):
    defense = DEFENSES.get("gm").for_dataset("mnist", {})
    arch = {"width": 4, "hidden": 16, "feature_dim": feature_dim, "dropout": 0.0}
    model, resolved = build_classifier("cnn", arch, (1, 28, 28), (0.1307,), (0.3081,), defense, 10, seed=0)
    meta = BundleMeta(
        arch="cnn", arch_kwargs=resolved, defense="gm", defense_params=defense.params(), dataset="mnist-5k",
        split_seed=0,
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
            "threat": {
                "name": "semi-white-box",
                "attacks": [{"label": "FGSM", "attack": "fgsm", "params": {"eps": 0.1}, "target_mode": "random"}],
            },
        }
        write_run(root / model / "semi-white-box", frame, summarize(frame), info)
    plots = tmp_path / "figs"
    result = CliRunner().invoke(report, [str(root), "--layout", "detection", "--plots-dir", str(plots)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in plots.iterdir()) == sorted(
        f"{stem}.{ext}"
        for stem in (
            "roc-gm-semi-white-box",
            "roc-soft-semi-white-box",
            "kd-hist-semi-white-box",
            "curve-gm-semi-white-box",
            "curve-soft-semi-white-box",
        )
        for ext in ("png", "pdf")
    )
    assert "single budget" in result.stderr and "features soft: skipped, bundle" in result.stderr
    assert "| Softmax+KD" in result.stdout


# --- names are drawn as they are; matplotlib's caches stay out of the home folder ---------------------


def _drawn_texts(monkeypatch) -> list[str]:
    """Every text of every figure that ``save_figure`` writes from now on."""
    import matplotlib.text

    import robench.report.plots as plots

    texts: list[str] = []
    real = plots.save_figure

    def spy(fig, out_dir, stem):
        texts.extend(t.get_text() for t in fig.findobj(matplotlib.text.Text))
        return real(fig, out_dir, stem)

    monkeypatch.setattr(plots, "save_figure", spy)
    return texts


@pytest.mark.parametrize("model", ["a$x^2$b", "m$\\frac$", "a$x^^2$b", "cost $5 and $6", "_underscored"])
def test_names_are_drawn_literally_never_as_math(tmp_path, monkeypatch, model):
    # Was: "a$x^2$b" drawn as math, and "m$\frac$" an internal error (matplotlib's mathtext ValueError).
    from matplotlib import cbook

    texts = _drawn_texts(monkeypatch)
    threat = "t$h$reat"
    frame = pd.concat(
        [
            records(model, threat, "F$G$SM", detectors=("kd", "d$e$t")),
            records(model, threat, "_B$I$M", seed=1, detectors=("kd", "d$e$t")),
        ]
    )
    result = roc_figures(frame, tmp_path)
    result.extend(kd_histograms(frame, tmp_path))
    sigmas = [0.05, 0.1]
    noisy = pd.concat(
        [records(model, "noise", f"n$oise-{s:g}", seed=i, corruption=True) for i, s in enumerate(sigmas)],
        ignore_index=True,
    )
    attacks = [
        {"label": f"n$oise-{s:g}", "attack": "gaussian-noise", "params": {"sigma": s}, "target_mode": "none"}
        for s in sigmas
    ]
    result.extend(
        accuracy_vs_budget(
            summarize(noisy), [{"model": {"name": model}, "threat": {"name": "noise", "attacks": attacks}}], tmp_path
        )
    )
    result.extend(robustness_curves(frame, tmp_path, resamples=20))
    assert len(result.files) == 8, result.notes
    dollars = [t for t in texts if "$" in t]
    assert dollars and not [t for t in dollars if cbook.is_math_text(t)]
    shown = {t.replace(r"\$", "$") for t in dollars}  # what matplotlib draws for a text that is not math
    assert {f"ROC: {model}, {threat}", "d$e$t", f"K-density (kd) scores, {threat}", f"{model}: F$G$SM"} <= shown
    assert {f"Robustness curves: {model}, {threat}", "d$e$t (unflagged)"} <= shown
    # the ROC legend (attack, AUC %) and the budget figure's (model): a label starting with "_" is not dropped
    assert any(t.startswith("F$G$SM (") for t in shown) and any(t.startswith("_B$I$M (") for t in shown)
    assert model in {t.replace(r"\$", "$") for t in texts}


def _fgsm_run(root, model: str) -> None:
    frame = records(model, "semi-white-box", "FGSM")
    info = {
        "model": {"name": model, "defense": "softmax", "dataset": "mnist-5k", "path": "nowhere.pt"},
        "threat": {
            "name": "semi-white-box",
            "attacks": [{"label": "FGSM", "attack": "fgsm", "params": {"eps": 0.1}, "target_mode": "random"}],
        },
    }
    write_run(root, frame, summarize(frame), info)


def test_report_plots_of_a_model_named_like_math(tmp_path):
    _fgsm_run(tmp_path / "run", "m$\\frac$")
    result = CliRunner().invoke(
        report, [str(tmp_path / "run"), "--layout", "detection", "--plots-dir", str(tmp_path / "figs")]
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == sorted(
        f"{s}.{e}"
        for s in ("roc-m_frac-semi-white-box", "kd-hist-semi-white-box", "curve-m_frac-semi-white-box")
        for e in ("png", "pdf")
    )


def _report_in_a_clean_home(tmp_path, **env):
    """``robench report --plots`` and the HTML report in a subprocess whose HOME and TMPDIR are empty folders."""
    import os
    import subprocess
    import sys

    _fgsm_run(tmp_path / "run", "soft")
    home, scratch, out = tmp_path / "home", tmp_path / "tmp", tmp_path / "out"
    for folder in (home, scratch, out):
        folder.mkdir()
    clean = {k: v for k, v in os.environ.items() if k not in ("MPLCONFIGDIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME")}
    clean.update(HOME=str(home), TMPDIR=str(scratch), OMP_NUM_THREADS="1", **env)
    script = (
        "import sys; from robench.cli.commands import main; "
        "sys.argv = ['robench', 'report', sys.argv[1], '--out', sys.argv[2], '--no-ci', '--plots-dir', sys.argv[3]]; "
        "main()"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "run"), str(out / "report.html"), str(out / "plots")],
        env=clean,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert (out / "report.html").stat().st_size > 1000 and len(list((out / "plots").glob("*.png"))) == 3
    return home, scratch


def test_figures_write_nothing_in_the_home_folder(tmp_path):
    # Was: ~/.cache/matplotlib/fontlist-*.json and ~/.config/matplotlib (and fontconfig's ~/.cache/fontconfig).
    home, scratch = _report_in_a_clean_home(tmp_path)
    assert sorted(p.relative_to(home).as_posix() for p in home.rglob("*")) == []
    assert sorted(p.name for p in scratch.iterdir()) == []  # robench's cache folder is removed at exit


def test_a_matplotlib_folder_the_user_chose_is_kept(tmp_path):
    chosen = tmp_path / "mine"
    home, _ = _report_in_a_clean_home(tmp_path, MPLCONFIGDIR=str(chosen))
    assert list(chosen.glob("fontlist-*.json")) and list(home.iterdir()) == []
