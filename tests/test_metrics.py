"""Summary metrics against values worked out by hand from hand-made records."""

import math

import pandas as pd
import pytest

from robench.scoring.metrics import METRICS, metric_value, summarize


def hand_records() -> pd.DataFrame:
    # 6 samples, one attack, one detector "d" (higher = clean).
    #  sample label clean_pred adv_pred success distortion  clean_score adv_score
    #  0      0     0          1        True    0.10        5.0         1.0
    #  1      1     1          1        False   0.00        4.0         4.5
    #  2      2     2          0        True    0.30        3.0         3.5
    #  3      3     3          2        True    0.20        2.0         0.5
    #  4      4     0          0        True    0.90        1.0         0.0   (*)
    #  5      5     5          5        False   0.00        6.0         6.0
    # (*) clean input wrong: excluded from success/AUC
    return pd.DataFrame(
        {
            "model": "m",
            "threat": "t",
            "attack": "a",
            "corruption": False,
            "sample": range(6),
            "label": [0, 1, 2, 3, 4, 5],
            "target": [-1] * 6,
            "clean_pred": [0, 1, 2, 3, 0, 5],
            "adv_pred": [1, 1, 0, 2, 0, 5],
            "success": [True, False, True, True, True, False],
            "l2": [0.0] * 6,
            "linf": [0.0] * 6,
            "distortion": [0.10, 0.00, 0.30, 0.20, 0.90, 0.00],
            "score_clean:d": [5.0, 4.0, 3.0, 2.0, 1.0, 6.0],
            "score_adv:d": [1.0, 4.5, 3.5, 0.5, 0.0, 6.0],
        }
    )


def test_every_metric_matches_hand_computation():
    row = summarize(hand_records()).iloc[0]
    assert row["n"] == 6 and row["detector"] == "d"
    # clean accuracy: 5 of 6 clean predictions are right (sample 4 is wrong)
    assert row["clean_accuracy"] == pytest.approx(5 / 6)
    # robust accuracy: adv_pred == label for samples 1 and 5 -> 2 / 6
    assert row["robust_accuracy"] == pytest.approx(2 / 6)
    # success among clean-correct samples {0,1,2,3,5}: successes 0,2,3 -> 3 / 5
    assert row["success_rate"] == pytest.approx(3 / 5)
    # distortion over successful clean-correct samples 0,2,3: (0.1 + 0.3 + 0.2) / 3
    assert row["distortion"] == pytest.approx(0.2)
    # AUC: positives = clean scores of clean-correct samples {5,4,3,2,6}; negatives = adv scores of
    # successes {1.0, 3.5, 0.5}. Pairs (pos > neg): 5 beats all 3; 4 beats all 3; 3 beats 1.0 and 0.5;
    # 2 beats 1.0 and 0.5; 6 beats all 3 -> 3+3+2+2+3 = 13 of 15.
    assert row["auc_roc"] == pytest.approx(13 / 15)
    # flagged: threshold = the floor(0.05*6)=0-th smallest clean score = 1.0; successful adv scores
    # below 1.0: {0.5} of {1.0, 3.5, 0.5} -> 1 / 3
    assert row["flagged_rate"] == pytest.approx(1 / 3)


def test_auc_ties_count_half_and_empty_sets_give_nan():
    records = hand_records()
    records["score_adv:d"] = 5.0  # every adversarial score ties or beats...
    # positives {5,4,3,2,6} vs three negatives of 5.0: 5 ties (0.5 each x3), 6 wins x3 -> (1.5 + 3) / 15
    assert metric_value("auc_roc", records, "d") == pytest.approx(4.5 / 15)
    records["success"] = False
    assert math.isnan(metric_value("auc_roc", records, "d"))
    assert math.isnan(summarize(records).iloc[0]["distortion"])


def test_corruption_rows_have_no_auc_and_flag_all_noisy_inputs():
    records = hand_records()
    records["corruption"] = True
    row = summarize(records).iloc[0]
    assert math.isnan(row["auc_roc"])
    # all 6 noisy scores vs threshold 1.0: {0.5, 0.0} below -> 2 / 6
    assert row["flagged_rate"] == pytest.approx(2 / 6)


def test_metrics_know_their_direction():
    assert METRICS.get("auc_roc").higher_is_better
    assert not METRICS.get("success_rate").higher_is_better
    assert METRICS.get("distortion").higher_is_better


def test_no_detector_gives_one_row_with_dash():
    records = hand_records().drop(columns=["score_clean:d", "score_adv:d"])
    summary = summarize(records)
    assert list(summary["detector"]) == ["-"] and math.isnan(summary.iloc[0]["auc_roc"])


def test_transfer_from_two_substitutes_gives_two_rows_and_old_records_are_crafted_on_the_model():
    old = hand_records()
    assert summarize(old)["crafted_on"].tolist() == ["m"]  # records without the column: crafted on the model itself
    a, b = old.assign(crafted_on="sub-a"), old.assign(crafted_on="sub-b", adv_pred=old["label"], success=False)
    summary = summarize(pd.concat([a, b], ignore_index=True))
    assert summary["crafted_on"].tolist() == ["sub-a", "sub-b"]
    assert summary["success_rate"].tolist() == [pytest.approx(0.6), 0.0]


def test_metrics_carry_label_direction_and_percent_and_reject_unknown_names():
    assert (
        METRICS.get("auc_roc").label == "AUC (%)"
        and METRICS.get("auc_roc").percent
        and METRICS.get("auc_roc").per_detector
    )
    assert not METRICS.get("distortion").percent and not METRICS.get("distortion").per_detector
    with pytest.raises(Exception, match="did you mean 'auc_roc'"):
        metric_value("auc_rok", hand_records(), "d")
