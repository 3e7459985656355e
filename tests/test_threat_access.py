"""Threat models say what the attacker knows (access); the sanity checks ask them instead of matching names."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from robench.attacks import ATTACKS
from robench.core.errors import ConfigError
from robench.runs.sanity import record_flags, registered_attack
from robench.scoring import records as R
from robench.specs.threats import ACCESS, THREATS, AttackSpec, ThreatModel, noise_threat

EXPECTED_ACCESS = {
    "white-box": "white-box",
    "semi-white-box": "grey-box",
    "black-box": "black-box",
    "spsa": "black-box",
    "noise": "none",
    "rotation": "none",
    "autoattack": "grey-box",  # AutoAttack knows the model's logits, not the defense's loss or the detector
    "minimum-norm": "grey-box",  # FMN and DDN know the model and its defense's loss, not the detector
}


def test_every_registered_threat_declares_a_known_access():
    assert {name: THREATS.get(name).access for name in THREATS.names()} == EXPECTED_ACCESS
    assert set(ACCESS) == {"white-box", "grey-box", "black-box", "none"} and all(ACCESS.values())
    assert [n for n in THREATS.names() if THREATS.get(n).gradient_access] == [
        "autoattack",
        "minimum-norm",
        "semi-white-box",
        "white-box",
    ]
    assert noise_threat([0.1, 0.2]).access == "none"


def test_access_agrees_with_knows_detector_and_needs_substitute():
    for name in THREATS.names():
        threat = THREATS.get(name)
        assert threat.knows_detector == (threat.access == "white-box" or threat.needs_substitute)
        assert not threat.needs_substitute or threat.access == "black-box"


@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"access": "gray-box"}, "did you mean 'grey-box'"),
        ({"access": "white-box", "knows_detector": False}, "knows the detector"),
        ({"access": "grey-box", "knows_detector": True}, "does not know the detector"),
        ({"access": "none", "knows_detector": True}, "does not know the detector"),
        ({"access": "grey-box", "needs_substitute": True}, "only a black-box threat"),
    ],
)
def test_inconsistent_access_is_a_config_error(changes, fragment):
    base = THREATS.get("semi-white-box")
    with pytest.raises(ConfigError, match=fragment):
        replace(base, **changes)
    with pytest.raises(ConfigError, match="access"):
        ThreatModel(name="x", description="", attacks=(AttackSpec("FGSM", "fgsm"),), access="")


def test_recorded_labels_resolve_to_their_registered_attack_classes():
    for name in THREATS.names():
        for spec in THREATS.get(name).attacks:
            assert registered_attack(name, spec.label) == (ATTACKS.get(spec.attack), spec.target_mode)
    # hand-made records: a label of a registered attack's name, with that attack's own target mode
    assert registered_attack("t", "PGD") == (ATTACKS.get("pgd"), "none")
    assert registered_attack("t", "ILCM") == (ATTACKS.get("ilcm"), "least-likely")
    assert registered_attack("white-box", "FGSM") == (ATTACKS.get("fgsm"), "none")
    assert registered_attack("noise", "noise-0.1") is None and registered_attack("t", "transfer-PGD") is None


def _group(
    threat: str, attack: str, rate: float, *, targeted: bool = False, eps: float = 0.1, n: int = 50
) -> pd.DataFrame:
    success = np.arange(n) < int(round(rate * n))
    return pd.DataFrame(
        {
            R.MODEL: "m", R.THREAT: threat, R.ATTACK: attack, R.CORRUPTION: False, R.SAMPLE: np.arange(n),
            R.LABEL: 0, R.TARGET: 3 if targeted else -1, R.CLEAN_PRED: 0,
            R.ADV_PRED: np.where(success, 3 if targeted else 5, 0),
            R.SUCCESS: success, R.LINF: eps,
        }
    )  # fmt: skip


def test_sanity_sides_come_from_the_threats_access():
    # SPSA (query-based) and the transfer threat are both black-box; an unregistered threat is not checked
    strong_spsa = pd.concat(
        [_group("spsa", "SPSA-un", 0.9), _group("semi-white-box", "PGD-10-un", 0.5), _group("custom", "PGD-10-un", 0.1)]
    )
    results = [r for r in record_flags(strong_spsa) if r.check == "black-box-beats-white-box"]
    assert [(r.threat, r.flagged) for r in results] == [("semi-white-box", True)]
    corruption = pd.concat([_group("noise", "noise-0.05", 0.9), _group("white-box", "PGD-10-un", 0.5)])
    assert [r for r in record_flags(corruption) if r.check == "black-box-beats-white-box"] == []


def test_iterative_check_pairs_fgsm_with_iterative_linf_attacks_of_its_target_mode_only():
    records = pd.concat(
        [
            _group("semi-white-box", "FGSM", 0.9, targeted=True, eps=0.1),
            _group("semi-white-box", "ILCM", 0.1, targeted=True, eps=0.2),  # least-likely targets: not compared
            _group("semi-white-box", "C&W", 0.1, targeted=True, eps=0.5),  # iterative but L2: not compared
            _group("semi-white-box", "MIM-10-tar", 0.6, targeted=True, eps=0.3),
        ]
    )
    (result,) = [r for r in record_flags(records) if r.check == "iterative-weaker-than-single-step"]
    assert result.flagged and result.value == pytest.approx(0.3) and result.detail.startswith("targeted: MIM-10-tar")


def test_all_runs_the_papers_threats_and_autoattack_runs_by_name():
    from robench.specs.threat_files import select_threats

    assert {t.name for t in select_threats("all", False)} == {
        "semi-white-box",
        "white-box",
        "spsa",
        "noise",
        "rotation",
        "minimum-norm",
    }
    assert {t.name for t in select_threats("all", True)} == {
        "semi-white-box",
        "white-box",
        "black-box",
        "spsa",
        "noise",
        "rotation",
        "minimum-norm",
    }
    (auto,) = select_threats("autoattack", False)
    assert not auto.in_all and auto.default_cascade == "misclassified"
    assert [a.attack for a in auto.attacks] == [
        "torchattacks:APGD",
        "torchattacks:APGDT",
        "torchattacks:FAB",
        "torchattacks:Square",
    ]
