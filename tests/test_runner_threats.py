"""The runner with the hard threat models (white-box, black-box, SPSA, all) and resumable runs."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from robench.core.errors import ConfigError
from robench.runs.parts import PARTS_DIR, PartStore
from robench.runs.runner import RunConfig, run
from robench.specs.threat_files import select_threats
from robench.specs.threats import THREATS, distribute
from test_cli import assert_one_line_error
from test_cli import run as run_cli
from tiny import two_model_suite

FAST = {
    "C&W-wb.steps": 5,
    "C&W-wb.binary_search_steps": 2,
    "C&W-wb.kd_per_class": 20,
    "SPSA-un.steps": 2,
    "SPSA-un.samples": 8,
    "SPSA-tar.steps": 2,
    "SPSA-tar.samples": 8,
    "FMN-L2.steps": 5,
    "FMN-Linf.steps": 5,
    "DDN.steps": 5,
}


def _fast(threat):
    """FAST's settings for the attacks ``threat`` has (a one-threat run refuses settings for attacks it lacks)."""
    labels = (
        {a.label for t in select_threats(threat, substitute=True) for a in t.attacks}
        if threat == "all"
        else set(THREATS.get(threat).labels())
    )
    return {k: v for k, v in FAST.items() if k.rpartition(".")[0] in labels}


def _config(model, threat, **kwargs):
    base = dict(
        model=model,
        threat=threat,
        n=12,
        batch_size=6,
        device="cpu",
        detectors=("kd", "max-prob"),
        settings=_fast(threat),
        sanity=False,
    )
    base.update(kwargs)
    return RunConfig(**base)


def test_white_box_cw_wb_records_and_attacker_density(bundles, tmp_path):
    out = tmp_path / "wb"
    result = run(_config(bundles["gm"], "white-box", attacks=("C&W-wb", "PGD-10-un")), out, progress=False)
    records = result.records
    assert set(records["attack"]) == {"C&W-wb", "PGD-10-un"} and (records["threat"] == "white-box").all()
    wb = records[records["attack"] == "C&W-wb"]
    assert (wb["target"] != wb["label"]).all()  # targeted at a random wrong class
    assert (wb.loc[wb["success"], "adv_pred"] == wb.loc[wb["success"], "target"]).all()
    assert (records["crafted_on"] == "gm").all() and (records["success"] == records["crafted_success"]).all()
    info = json.loads((out / "run.json").read_text())
    (density,) = info["attacker_density"]
    assert density["kd_per_class"] == 20 and density["eta"] == pytest.approx(density["eta"]) and density["width"] > 0
    assert info["threat"]["name"] == "white-box"


def test_black_box_is_judged_on_the_target(bundles, tmp_path):
    config = _config(bundles["gm"], "black-box", substitute=bundles["softmax"], attacks=("PGD-10-un", "C&W-wb"))
    records = run(config, tmp_path / "bb", progress=False).records
    assert (records["crafted_on"] == "softmax").all() and (records["model"] == "gm").all()
    assert ((records["adv_pred"] != records["label"]) == records["success"]).all()
    info = json.loads((tmp_path / "bb" / "run.json").read_text())
    assert (
        info["substitute"]["name"] == "softmax"
        and info["attacker_density"][0]["crafted_on"] != info["model"]["content_hash"]
    )


def test_black_box_with_the_model_as_its_own_substitute_matches_white_box(bundles):
    """Transfer from the model itself is the white-box attack: same adversarial predictions."""
    bb = run(
        _config(bundles["gm"], "black-box", substitute=bundles["gm"], attacks=("PGD-10-un",)), progress=False
    ).records
    wb = run(_config(bundles["gm"], "white-box", attacks=("PGD-10-un",)), progress=False).records
    bb = bb[bb["attack"] == "PGD-10-un"]  # the black-box threat also runs PGD-10-un at its other budgets
    assert bb["adv_pred"].tolist() == wb["adv_pred"].tolist()
    assert bb["l2"].to_numpy() == pytest.approx(wb["l2"].to_numpy())


def test_spsa_threat_runs_both_modes(bundles):
    records = run(_config(bundles["softmax"], "spsa"), progress=False).records
    assert set(records["attack"]) == {"SPSA-un", "SPSA-tar"}
    assert (records["linf"] <= 0.3 + 1e-5).all()  # MNIST-family eps
    tar = records[records["attack"] == "SPSA-tar"]
    assert (tar["target"] >= 0).all() and (records.loc[records["attack"] == "SPSA-un", "target"] == -1).all()


def test_threat_all_runs_every_applicable_threat(bundles, tmp_path):
    config = _config(bundles["softmax"], "all", attacks=("FGSM", "C&W-wb", "SPSA-un", "noise-0.05", "rotation-30"))
    result = run(config, tmp_path / "all", progress=False)
    pairs = set(zip(result.records["threat"], result.records["attack"]))
    assert pairs == {
        ("semi-white-box", "FGSM"),
        ("white-box", "C&W-wb"),
        ("spsa", "SPSA-un"),
        ("noise", "noise-0.05"),
        ("rotation", "rotation-30"),
    }
    assert set(result.summary["threat"]) == {"semi-white-box", "white-box", "spsa", "noise", "rotation"}
    assert "threat" not in result.info and len(result.info["threats"]) == 5
    with_sub = _config(bundles["softmax"], "all", attacks=("MIM-10-un",), substitute=bundles["gm"])
    records = run(with_sub, progress=False).records
    assert set(zip(records["threat"], records["crafted_on"])) == {("semi-white-box", "softmax"), ("black-box", "gm")}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"threat": "black-box"}, "pass --substitute"),
        ({"threat": "white-box", "substitute": "gm"}, "--substitute applies to the black-box threat"),
        ({"threat": "white-box", "attacks": ("C&W-wbb",)}, "did you mean 'C&W-wb'"),
        ({"threat": "all", "attacks": ("PGD-10-unn",)}, "no selected threat has an attack"),
    ],
)
def test_threat_configuration_errors(bundles, kwargs, message):
    if "substitute" in kwargs:
        kwargs = {**kwargs, "substitute": bundles[kwargs["substitute"]]}
    with pytest.raises(ConfigError, match=message):
        run(_config(bundles["softmax"], **{"settings": {}, **kwargs}), progress=False)


def test_cli_black_box_without_substitute_is_one_line(bundles, capsys):
    code, _, err = run_cli(capsys, "run", "--model", str(bundles["gm"]), "--threat", "black-box", "--n", "4")
    assert_one_line_error(code, err, "--substitute")


def test_cli_adds_a_registered_attack_by_name(bundles, tmp_path, capsys):
    """``--attack fmn-l2``, not a label of the threat, joins it labelled by its name with the family's defaults."""
    out = tmp_path / "fmn"
    code, _, err = run_cli(
        capsys, "run", "--model", str(bundles["softmax"]), "--threat", "semi-white-box", "--attack", "fmn-l2",
        "--set", "fmn-l2.steps=5", "--n", "4", "--batch-size", "4", "--device", "cpu", "--detector", "max-prob",
        "--no-sanity", "--no-progress", "--out", str(out),
    )  # fmt: skip
    assert code == 0, err
    records = pd.read_parquet(out / "records.parquet")
    assert set(zip(records["threat"], records["attack"])) == {("semi-white-box", "fmn-l2")}
    assert len(records) == 4 and (records["target"] == -1).all()
    (threat,) = json.loads((out / "run.json").read_text())["threats"]
    (attack,) = threat["attacks"]
    assert attack["label"] == attack["attack"] == "fmn-l2" and attack["target_mode"] == "none"
    assert attack["params"]["steps"] == 5 and attack["params"]["objective"] == "adaptive-margin"


def test_cli_runs_the_minimum_norm_threat(bundles, tmp_path, capsys):
    out = tmp_path / "minimum-norm"
    code, _, err = run_cli(
        capsys, "run", "--model", str(bundles["gm"]), "--threat", "minimum-norm", "--n", "4", "--batch-size", "4",
        "--device", "cpu", "--detector", "max-prob", "--no-sanity", "--no-progress", "--out", str(out),
        *[arg for key, value in _fast("minimum-norm").items() for arg in ("--set", f"{key}={value}")],
    )  # fmt: skip
    assert code == 0, err
    records = pd.read_parquet(out / "records.parquet")
    assert set(records["attack"]) == {"FMN-L2", "FMN-Linf", "DDN"} and set(records["threat"]) == {"minimum-norm"}


def test_attacks_added_by_name_join_only_threats_that_can_host_them():
    (semi,) = distribute(select_threats("semi-white-box", False), {"ddn.steps": 7}, ("ddn",))
    assert semi.labels() == ["ddn"] and semi.attacks[0].build("mnist").steps == 7
    hosts = {t.name: t.labels() for t in distribute(select_threats("all", False), {}, ("ddn", "FGSM"))}
    assert hosts == {"semi-white-box": ["FGSM", "ddn"], "white-box": ["ddn"], "minimum-norm": ["ddn"]}
    (noise,) = distribute(select_threats("all", False), {}, ("gaussian-noise",))[:1]
    assert noise.name == "noise" and noise.labels() == ["gaussian-noise"]
    (white,) = distribute(select_threats("all", False), {}, ("cw-wb",))
    assert white.name == "white-box"
    (minimum,) = distribute(select_threats("minimum-norm", False), {}, ("FMN-L2",))  # a label selects as before
    assert minimum.labels() == ["FMN-L2"]


@pytest.mark.parametrize(
    ("threat", "name", "message"),
    [
        ("semi-white-box", "fmn-l3", "no selected threat has an attack 'fmn-l3' (did you mean 'fmn-l2'"),
        ("all", "FMN-L3", "did you mean 'FMN-L2'"),
        ("noise", "fmn-l2", "cannot join threat 'noise': it is an attack (l2), and the threat's access is 'none'"),
        ("semi-white-box", "rotation", "cannot join threat 'semi-white-box': it is a corruption"),
        ("spsa", "ddn", "black-box with queries only"),
        ("semi-white-box", "cw-wb", "attacks the detector, which a grey-box attacker does not know"),
    ],
)
def test_attacks_added_by_name_are_refused_in_one_line(threat, name, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        distribute(select_threats(threat, False), {}, (name,))
    assert "\n" not in str(caught.value)


class _Interrupted(Exception):
    pass


def test_interrupted_run_resumes_without_recomputing(bundles, tmp_path, monkeypatch):
    """Kill after two parts; the rerun reuses them and ends with the records of an uninterrupted run."""
    config = _config(bundles["gm"], "semi-white-box", attacks=("FGSM", "PGD-10-un"), n=18)  # 3 batches x 2 attacks
    out = tmp_path / "resumed"
    real_put = PartStore.put
    written = []

    def write_then_die(store, key, part, samples):
        if len(written) == 2:
            raise _Interrupted
        real_put(store, key, part, samples)
        written.append(key)

    monkeypatch.setattr(PartStore, "put", write_then_die)
    with pytest.raises(_Interrupted):
        run(config, out, progress=False)
    assert len(list((out / PARTS_DIR).glob("*.parquet"))) == 2 and not (out / "summary.csv").exists()
    monkeypatch.setattr(PartStore, "put", real_put)
    messages: list[str] = []
    resumed = run(config, out, progress=False, echo=messages.append)
    assert resumed.info["parts"] == {"reused": 2, "computed": 4}
    assert any("reused 2 of 6 finished parts" in m for m in messages)
    fresh = run(config, tmp_path / "fresh", progress=False)
    pd.testing.assert_frame_equal(resumed.records, fresh.records)
    pd.testing.assert_frame_equal(pd.read_csv(out / "summary.csv"), pd.read_csv(tmp_path / "fresh" / "summary.csv"))
    again = run(config, out, progress=False)
    assert again.info["parts"] == {"reused": 6, "computed": 0}


def test_changed_config_or_corrupt_part_is_recomputed(bundles, tmp_path):
    config = _config(bundles["gm"], "semi-white-box", attacks=("FGSM",))
    out = tmp_path / "out"
    run(config, out, progress=False)
    changed = run(RunConfig(**{**config.__dict__, "settings": {"FGSM.eps": 0.2}}), out, progress=False)
    assert changed.info["parts"] == {"reused": 0, "computed": 2}
    assert len(list((out / PARTS_DIR).glob("*.parquet"))) == 2  # stale parts pruned at the end
    victim = sorted((out / PARTS_DIR).glob("*.parquet"))[0]
    victim.write_bytes(b"not parquet")
    healed = run(RunConfig(**{**config.__dict__, "settings": {"FGSM.eps": 0.2}}), out, progress=False)
    assert healed.info["parts"] == {"reused": 1, "computed": 1}
    pd.testing.assert_frame_equal(healed.records, changed.records)


def test_suite_pairs_targets_with_substitutes(bundles, tmp_path):
    from robench.runs.suite import load_suite, run_suite

    suite = tmp_path / "suite.toml"
    suite.write_text(
        two_model_suite(
            6,
            """
[[threat]]
name = "black-box"
attacks = ["PGD-10-un"]
substitute = ["soft", "gm"]
""",
            softmax_name="soft",
        )
    )
    pairs = load_suite(suite)
    assert [(p.model_name, p.substitute, p.folder) for p in pairs] == [
        ("soft", "gm", "black-box-from-gm"),
        ("gm", "soft", "black-box-from-soft"),
    ]
    combined = run_suite(suite, tmp_path / "out", progress=False, echo=lambda _: None)
    pgd = combined[combined["attack"] == "PGD-10-un"]  # beside its copies at the other budgets and the worst cases
    assert sorted(zip(pgd["model"], pgd["crafted_on"])) == [("gm", "soft"), ("soft", "gm")]
    assert (tmp_path / "out" / "gm" / "black-box-from-soft" / "records.parquet").exists()
    bad = tmp_path / "bad.toml"
    bad.write_text(suite.read_text().replace('substitute = ["soft", "gm"]', 'substitute = ["sofft"]'))
    with pytest.raises(ConfigError, match="did you mean 'soft'"):
        load_suite(bad)
    alone = tmp_path / "alone.toml"
    alone.write_text(suite.read_text().replace('substitute = ["soft", "gm"]', 'substitute = ["gm"]\nmodels = ["gm"]'))
    with pytest.raises(ConfigError, match="pairs no model"):
        load_suite(alone)


def test_suite_threat_may_set_its_own_n(bundles, tmp_path):
    from robench.runs.suite import load_suite

    suite = tmp_path / "suite.toml"
    suite.write_text(
        '[defaults]\nn = 50\n[[model]]\nname = "gm"\npath = "gm.pt"\n'
        '[[threat]]\nname = "noise"\n[[threat]]\nname = "spsa"\nn = 8\n'
    )
    assert [p.config.n for p in load_suite(suite)] == [50, 8]
    suite.write_text(suite.read_text().replace("n = 8", 'n = "8"'))
    with pytest.raises(ConfigError, match="'n' must be an integer"):
        load_suite(suite)


def test_suite_sanity_compares_black_box_and_white_box_pairs(bundles, tmp_path, monkeypatch):
    """The black-box and white-box attacks of a model run as separate pairs; the suite checks them together."""
    import numpy as np

    from robench.runs.runner import RunResult
    from robench.runs.suite import suite_sanity

    def records(threat, success):
        n = 20
        return pd.DataFrame({"model": "gm", "threat": threat, "attack": "PGD-10-un",
                             "crafted_on": "gm" if threat == "white-box" else "soft", "label": np.zeros(n, int),
                             "clean_pred": np.zeros(n, int), "adv_pred": np.where(success, 1, 0),
                             "success": success, "target": -1, "linf": 0.3, "corruption": False})  # fmt: skip

    weak_white = RunResult(records("white-box", np.arange(20) < 2), pd.DataFrame(), {})
    strong_black = RunResult(records("black-box", np.arange(20) < 18), pd.DataFrame(), {})
    alone = [suite_sanity([r]) for r in (weak_white, strong_black)]
    assert not any(len(t) and t["flagged"].any() for t in alone)
    together = suite_sanity([weak_white, strong_black])
    assert together.loc[together["flagged"], "check"].tolist() == ["black-box-beats-white-box"]
