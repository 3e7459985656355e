"""The sanity check ``detector-not-attacked``: a detector no attack of its threat descended on is flagged, on the
summary rows of that threat and detector only (Carlini & Wagner 2017; Tramer et al. 2020)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd

from robench.report.html_report import _sanity_html
from robench.runs.detector_checks import detector_flags, detector_key
from robench.runs.output import SANITY_FLAGS, with_sanity_flags
from robench.runs.plan import RunResult, _sanity
from robench.runs.sanity import DETECTOR_NOT_ATTACKED, SANITY_CHECKS, sanity_table
from robench.runs.suite import suite_sanity
from robench.scoring import records as R
from robench.scoring.metrics import DETECTOR, summarize
from robench.scoring.worst_case import worst_case_records
from synthetic import SYNTHETIC_WORST_CASE, synthetic_records

DETECTORS = ("kd", "max-prob")


def _attack(threat: str, attack: str, aimed: str | None, *, seed: int = 0, corruption: bool = False, **kw):
    """20 synthetic records of one attack scored by kd and max-prob; ``aimed``: its ``attack_detectors`` (None: the
    column left out, as in records written before it existed)."""
    frame = synthetic_records(
        "m", threat, attack, n=20, seed=seed, wrong=2, success_p=0.5, adv_offset=1, shift=1.0,
        corruption=corruption, detectors=DETECTORS,
    )  # fmt: skip
    frame = frame.assign(**kw)
    return frame if aimed is None else frame.assign(**{R.ATTACK_DETECTORS: aimed})


def _flags(records: pd.DataFrame) -> dict[str, bool]:
    results = detector_flags(records)
    assert all(r.check == DETECTOR_NOT_ATTACKED and r.model == "m" for r in results)
    return {r.threat: r.flagged for r in results}


def _two_detectors_one_aimed_at() -> pd.DataFrame:
    """Threat t: PGD blind, PGD-kd on kd (max-prob left alone). Threat u: one attack on both. Threat noise:
    corruptions only."""
    return pd.concat(
        [
            _attack("t", "PGD", ""),
            _attack("t", "PGD-kd", "kd", seed=1),
            _attack("u", "APGD-all", "kd,max-prob", seed=2),
            _attack("noise", "Noise", "", seed=3, corruption=True),
        ],
        ignore_index=True,
    )


def test_only_the_detector_no_attack_aimed_at_is_flagged():
    records = _two_detectors_one_aimed_at()
    assert _flags(records) == {
        "t/detector:kd": False,
        "t/detector:max-prob": True,
        "u/detector:kd": False,
        "u/detector:max-prob": False,
    }  # noise holds corruptions only: not judged, no result at all
    (kd,) = [r for r in detector_flags(records) if r.threat == detector_key("t", "kd")]
    assert kd.value == 0.0 and kd.threshold == 0.0 and "PGD-kd" in kd.detail and "PGD," not in kd.detail
    (blind,) = [r for r in detector_flags(records) if r.threat == detector_key("t", "max-prob")]
    assert blind.value == 1.0 and "no attack" in blind.detail
    assert detector_flags(records[records[R.THREAT] == "noise"]) == []


def test_worst_case_and_corruption_rows_do_not_count_as_attacks():
    records = R.with_crafted_on(_two_detectors_one_aimed_at())  # the derived rows name their crafting model
    derived = worst_case_records(records).assign(**{R.ATTACK_DETECTORS: "max-prob"})
    noisy_t = _attack("t", "Noise", "max-prob", seed=4, corruption=True, crafted_on="m")  # a corruption: no attack
    assert not derived.empty and (derived[R.THREAT] == "t").any()
    flags = _flags(pd.concat([records, derived, noisy_t], ignore_index=True))
    assert flags["t/detector:max-prob"] and not flags["t/detector:kd"]


def test_records_without_the_column_read_as_detector_blind():
    old = pd.concat([_attack("t", "PGD", None), _attack("t", "FGSM", None, seed=1)], ignore_index=True)
    assert R.ATTACK_DETECTORS not in old
    assert _flags(old) == {"t/detector:kd": True, "t/detector:max-prob": True}
    assert all("predate" in r.detail for r in detector_flags(old))
    # an older run concatenated with a newer one: NaN in the column is detector-blind too
    mixed = pd.concat([old, _attack("t", "PGD-kd", "kd", seed=2)], ignore_index=True)
    assert mixed[R.ATTACK_DETECTORS].isna().any()
    assert _flags(mixed) == {"t/detector:kd": False, "t/detector:max-prob": True}


def test_per_crafting_model_and_only_scored_detectors():
    # Transfer: crafted on s1 (aimed at kd) and on s2 (blind): kd is flagged, half of the crafting models missed it.
    records = pd.concat(
        [
            _attack("bb", "PGD", "kd", crafted_on="s1"),
            _attack("bb", "PGD", "", seed=1, crafted_on="s2"),
        ],
        ignore_index=True,
    )
    (kd,) = [r for r in detector_flags(records) if r.threat == detector_key("bb", "kd")]
    assert kd.flagged and kd.value == 0.5 and "s2" in kd.detail and "s1" not in kd.detail
    # A detector with no score in a threat's records (another run's column, all NaN) is not judged there.
    unscored = _attack("v", "PGD", "", seed=5).assign(**{R.score_clean("kd"): np.nan, R.score_adv("kd"): np.nan})
    assert _flags(unscored) == {"v/detector:max-prob": True}


def test_the_flag_reaches_the_rows_of_that_threat_and_detector_only():
    records = _two_detectors_one_aimed_at()
    summary = with_sanity_flags(summarize(records), sanity_table(detector_flags(records)))
    carries = summary[SANITY_FLAGS].str.contains(DETECTOR_NOT_ATTACKED)
    flagged = summary[carries]
    assert set(flagged[R.THREAT]) == {"t"} and set(flagged[DETECTOR]) == {"max-prob"}
    assert set(flagged[R.ATTACK]) == {"PGD", "PGD-kd", SYNTHETIC_WORST_CASE}  # the worst-case row too
    expected = (summary[R.THREAT] == "t") & (summary[DETECTOR] == "max-prob")
    assert carries.tolist() == expected.tolist() and expected.sum() == 3


def test_the_run_the_suite_and_the_html_page_report_it():
    records = _two_detectors_one_aimed_at()
    run = _sanity(SimpleNamespace(threats=[]), records, "m", [], [])
    mine = run[run["check"] == DETECTOR_NOT_ATTACKED]
    assert mine.loc[mine["flagged"], R.THREAT].tolist() == ["t/detector:max-prob"]
    suite = suite_sanity([RunResult(records, pd.DataFrame(), {})])
    mine = suite[suite["check"] == DETECTOR_NOT_ATTACKED]
    assert mine.loc[mine["flagged"], R.THREAT].tolist() == ["t/detector:max-prob"]
    page = _sanity_html(run)
    assert DETECTOR_NOT_ATTACKED in page and "t/detector:max-prob" in page


def test_the_check_is_registered_with_its_citations():
    check = SANITY_CHECKS.get(DETECTOR_NOT_ATTACKED)
    assert check.kind == "records"
    assert "Carlini & Wagner 2017" in check.citation and "Tramer et al. 2020" in check.citation


def _at(threat: str, attack: str, aimed: str, norm: str, eps: float, seed: int) -> pd.DataFrame:
    budgets = "linf:0.1;linf:0.3;l2:1.0"
    return _attack(threat, attack, aimed, seed=seed).assign(
        **{R.ATTACK_NORM: norm, R.ATTACK_EPS: eps, R.BUDGETS: budgets}
    )


def test_a_detector_attacked_at_some_budgets_is_flagged_on_the_worst_case_of_the_others():
    """KD is attacked at L-inf 0.3 (a bounded attack at that eps) and at L2 1 (an unbounded L2 attack, which counts
    for every L2 budget), not at L-inf 0.1, where only a detector-blind PGD ran: that worst case alone is flagged
    for KD. max-prob, attacked nowhere, carries the threat-wide flag instead (no per-budget results for it)."""
    records = pd.concat(
        [
            _at("t", "PGD", "", "linf", 0.1, 0),
            _at("t", "SPGD[kd]", "kd", "linf", 0.3, 1),
            _at("t", "C&W-wb", "kd", "l2", float("nan"), 2),
        ],
        ignore_index=True,
    )
    assert _flags(records) == {
        "t/detector:kd": False,
        "t/detector:max-prob": True,
        "t/worst-case Linf 0.1/detector:kd": True,
    }
    summary = with_sanity_flags(summarize(records), sanity_table(detector_flags(records)))
    kd = summary[summary[DETECTOR] == "kd"].set_index(R.ATTACK)[SANITY_FLAGS]
    assert kd["worst-case Linf 0.1"] == DETECTOR_NOT_ATTACKED
    assert kd["worst-case Linf 0.3"] == kd["worst-case L2 1"] == kd["SPGD[kd]"] == kd["PGD"] == ""
    # the same attacks without their norm and eps (older records): nothing to judge per budget
    old = records.drop(columns=[R.ATTACK_NORM, R.ATTACK_EPS])
    assert "t/worst-case Linf 0.1/detector:kd" not in _flags(old)


def test_what_an_attacks_records_say_it_attacked():
    """The scored detectors an attack descended on; crafted on a substitute, the substitute's (which name no
    scored detector); a KD term on another estimator than the scored KD is no attack on it."""
    from robench.attacks.base import ATTACKS
    from robench.runs.attack_batch import aimed_detectors

    scored = ["kd", "bu", "max-prob"]
    cw_wb, spgd = ATTACKS.get("cw-wb")(), ATTACKS.get("selective-pgd")(detector="all")
    own, other = SimpleNamespace(is_scored=True), SimpleNamespace(is_scored=False)
    assert aimed_detectors(cw_wb, scored, own, transfer=False) == "kd"
    assert aimed_detectors(cw_wb, scored, other, transfer=False) == ""
    assert aimed_detectors(cw_wb, scored, other, transfer=True) == "substitute:kd"
    assert aimed_detectors(spgd, scored, None, transfer=False) == "kd,bu,max-prob"
    assert aimed_detectors(ATTACKS.get("pgd")(), scored, None, transfer=False) == ""
    # a transfer attack's records leave the evaluated model's KD not attacked
    records = _attack("bb", "C&W-wb", "substitute:kd", crafted_on="s")
    assert _flags(records)["bb/detector:kd"]


def test_a_run_without_its_probes_still_flags_a_detector_no_attack_targeted():
    """--no-sanity skips the model probes, not the checks that read the records."""
    from pathlib import Path

    from robench.runs.runner import RunConfig, run

    model = Path(__file__).resolve().parents[2] / "reports" / "regression" / "models" / "softmax.pt"
    config = RunConfig(
        model=model, threat="semi-white-box", n=8, batch_size=8, device="cpu", attacks=("FGSM",),
        detectors=("max-prob",), sanity=False,
    )  # fmt: skip
    result = run(config, progress=False)
    mine = result.sanity[result.sanity["check"] == DETECTOR_NOT_ATTACKED]
    assert mine["flagged"].tolist() == [True]
    assert (result.summary[SANITY_FLAGS] == DETECTOR_NOT_ATTACKED).all()
    assert not result.sanity["check"].str.contains("gradient").any()  # no probe ran
