"""Runs set up like the papers': the attacker's KD follows the scored detector, KD+BU fitted on a held-out split,
attacks added to a threat in a suite, and the reproduction suites load and build."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from robench.checkpoints.bundle import save_bundle
from robench.core.errors import ConfigError, RobenchError
from robench.runs.prepare import prepare
from robench.runs.runner import RunConfig, run
from robench.runs.suite import load_suite
from robench.scoring import records as R
from robench.scoring.combiner import fit_mask, fitted_column
from robench.scoring.worst_case import is_worst_case

ROOT = Path(__file__).resolve().parent.parent
FAST_WB = {"C&W-wb.steps": 5, "C&W-wb.binary_search_steps": 2}


@pytest.fixture(scope="module")
def dropout_bundle(tmp_path_factory):
    """A GM model trained as trained_tiny's, but with dropout (BU needs it), saved as a bundle."""
    from robench.checkpoints.train_bundle import train_bundle

    arch = {"width": 8, "hidden": 32, "feature_dim": 16, "dropout": 0.25}
    bundle = train_bundle(
        defense="gm", arch_kwargs=arch, train_overrides={"epochs": 2, "lr": 3e-3, "shift": 0}, progress=False
    )
    path = tmp_path_factory.mktemp("dropout") / "gm.pt"
    save_bundle(path, bundle.model, bundle.meta)
    return path


def _white_box(model: Path, settings: dict, **kwargs) -> RunConfig:
    return RunConfig(
        model=model,
        threat="white-box",
        attacks=("C&W-wb",),
        n=12,
        batch_size=12,
        device="cpu",
        detectors=("kd",),
        settings=settings,
        **kwargs,
    )


def test_the_attackers_kd_is_the_scored_one_unless_set_apart(bundles, tmp_path):
    same = run(_white_box(bundles["gm"], FAST_WB), tmp_path / "same", progress=False)
    (density,) = json.loads((tmp_path / "same" / "run.json").read_text())["attacker_density"]
    scored = same.info["detectors"]["kd"]["params"]
    assert density["same_as_scored"] and density["fit"] == "scored detector"
    assert (density["bandwidth"], density["kd_per_class"], density["seed"]) == (
        scored["bandwidth"],
        scored["per_class"],
        scored["seed"],
    )
    assert density["scored_kd"] == {
        "bandwidth": scored["bandwidth"],
        "per_class": scored["per_class"],
        "seed": scored["seed"],
        "subset": scored["subset"],
    }
    assert density["attacks"] == ["white-box/C&W-wb"] and len(density["eta_per_class"]) == 10
    check = same.sanity.set_index("check").loc["attacker-estimator-differs"]
    assert not check["flagged"]

    apart = run(_white_box(bundles["gm"], {**FAST_WB, "C&W-wb.kd_per_class": 20}), tmp_path / "apart", progress=False)
    (density,) = apart.info["attacker_density"]
    assert not density["same_as_scored"] and density["kd_per_class"] == 20 and density["fit"] != "scored detector"
    check = apart.sanity.set_index("check").loc["attacker-estimator-differs"]
    assert check["flagged"] and "20" in check["detail"]
    assert apart.summary["sanity_flags"].str.contains("attacker-estimator-differs").any()


def test_the_attacker_follows_a_changed_scored_bandwidth(bundles):
    config = _white_box(bundles["gm"], FAST_WB, detector_settings={"kd": {"bandwidth": 0.7}}, sanity=False)
    (density,) = run(config, progress=False).info["attacker_density"]
    assert density["bandwidth"] == 0.7 and density["same_as_scored"]


def test_every_eta_mode_runs_and_an_unknown_one_is_refused(bundles):
    for mode in ("global", "class", "clean"):
        result = run(_white_box(bundles["gm"], {**FAST_WB, "C&W-wb.eta_mode": mode}, sanity=False), progress=False)
        assert len(result.records) == 12 and R.BEST_ATTEMPT in result.records
    with pytest.raises(ConfigError, match="did you mean 'class'"):
        prepare(_white_box(bundles["gm"], {**FAST_WB, "C&W-wb.eta_mode": "clas"}))


def test_kd_bu_is_fitted_on_held_out_samples_and_scored_on_the_others(dropout_bundle, tmp_path):
    config = RunConfig(
        model=dropout_bundle, threat="semi-white-box", attacks=("BIM", "PGD-10-un"), n=80, batch_size=40, device="cpu",
        detectors=("kd", "kd+bu"), detector_settings={"kd+bu": {"passes": 5}}, sanity=False,
    )  # fmt: skip
    result = run(config, tmp_path / "run", progress=False)
    records = result.records
    fitted = records[fitted_column("kd+bu")].to_numpy(dtype=bool)
    clean, adv = R.clean_scores(records, "kd+bu"), R.adv_scores(records, "kd+bu")
    for attack, group in records.groupby(R.ATTACK):
        mask = group[fitted_column("kd+bu")].to_numpy(dtype=bool)
        assert mask.any(), attack  # enough clean-correct and successful samples to fit
        assert np.array_equal(mask, fit_mask(group[R.SAMPLE].to_numpy(), 0.5, 0))
    assert np.isnan(clean[fitted]).all() and np.isnan(adv[fitted]).all()
    assert np.isfinite(clean[~fitted]).all() and np.isfinite(adv[~fitted]).all()
    rows = result.summary[(result.summary["detector"] == "kd+bu") & ~result.summary["attack"].map(is_worst_case)]
    assert len(rows) == 2 and rows["auc_roc"].between(0, 1).all()
    # the records on disk hold the same, and a rerun reuses the parts and refits to the same scores
    again = run(config, tmp_path / "run", progress=False)
    assert again.info["parts"]["computed"] == 0
    np.testing.assert_array_equal(R.clean_scores(again.records, "kd+bu"), clean)


def test_a_suite_adds_attacks_to_a_threat(bundles, tmp_path):
    suite = tmp_path / "suite.toml"
    suite.write_text(
        '[defaults]\nn = 8\ndevice = "cpu"\ndetectors = ["kd"]\n'
        f'[[model]]\nname = "gm"\npath = "{bundles["gm"]}"\n'
        '[[threat]]\nname = "white-box"\nattacks = ["C&W-wb", "C&W-wb-class"]\n'
        '[threat.set]\n"C&W-wb.steps" = 5\n"C&W-wb.binary_search_steps" = 1\n'
        '[[threat.add]]\nlabel = "C&W-wb-class"\nattack = "cw-wb"\ntarget_mode = "random"\n'
        'params = {eta_mode = "class", steps = 5, binary_search_steps = 1}\n'
    )
    (pair,) = load_suite(suite)
    prepared = prepare(pair.config)
    specs = {spec.label: attack for spec, attack in prepared.attacks}
    assert set(specs) == {"C&W-wb", "C&W-wb-class"} and specs["C&W-wb-class"].eta_mode == "class"
    for bad, fragment in (
        ('label = "C&W-wb"\nattack = "cw-wb"\n', "already has"),
        ('label = "x"\nattack = "cw-wbb"\n', "did you mean"),
        ('label = "C&W-wb-class"\nattack = "cw-wb"\nparams = {eta_mode = "median"}\n', "eta_mode"),
        ('label = "C&W-wb-class"\nattacks = "cw-wb"\n', "unknown key"),
    ):
        broken = tmp_path / "broken.toml"
        broken.write_text(suite.read_text().split("[[threat.add]]")[0] + "[[threat.add]]\n" + bad)
        with pytest.raises(RobenchError, match=fragment) as error:
            prepare(load_suite(broken)[0].config)
        assert "\n" not in str(error.value)


SUITES = sorted((ROOT / "reports" / "reproduce").glob("*/*.toml")) + [ROOT / "reports" / "reproduce" / "ablation.toml"]


def test_there_is_a_bundled_and_a_gpu_suite_per_paper_table():
    names = {(p.parent.name, p.stem) for p in SUITES}
    tables = {"001-table7", "001-table10", "001-table11", "004-table1", "004-table2", "004-table3"}
    assert {("bundled", t) for t in tables} <= names and {("gpu", t) for t in tables | {"001-table9"}} <= names


@pytest.mark.parametrize("path", SUITES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_reproduction_suites_parse_and_their_attacks_build(path):
    from robench.specs.threat_files import select_threats
    from robench.specs.threats import distribute

    pairs = load_suite(path)
    assert pairs
    for pair in pairs:
        config = pair.config
        threats = select_threats(config.threat, substitute=config.substitute is not None)
        if config.extra_attacks:
            threats = [t.with_added(list(config.extra_attacks)) for t in threats]
        for threat in distribute(threats, config.settings, tuple(config.attacks)):
            for spec in threat.attacks:
                spec.build("cifar10" if path.parent.name == "gpu" else "mnist")


def test_the_ablation_layout_shows_every_population_per_cw_wb_variant():
    from robench.report.tables import build_tables, render_tables
    from robench.scoring.metrics import summarize
    from test_rundir import synthetic_records

    variants = ("C&W-wb/global/lr0.01", "C&W-wb/class/lr0.01")
    records = synthetic_records(model="gm", threat="white-box", attacks=(*variants, "PGD-10-un"), detectors=("kd",))
    tables, _ = build_tables(
        summarize(records), {"gm": {"defense": "gm", "dataset": "mnist-5k"}}, ["white-box-ablation"]
    )
    text = render_tables(tables, "markdown")
    for header in ("AUC (%)", "AUC att. (%)", "AUC pair. (%)", "Adv. Success (%)", "Dist."):
        assert header in text
    assert all(v in text for v in variants) and "PGD-10-un" not in text
