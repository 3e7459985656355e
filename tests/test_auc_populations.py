"""The three AUC populations (successful, attempted, paired), computed by hand on records with known scores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from robench.core.errors import ConfigError
from robench.scoring import metrics as M
from robench.scoring.metrics import POPULATIONS, metric_value, population, roc_points, summarize


def _records() -> pd.DataFrame:
    """Eight samples of one attack. Label 0 everywhere; clean_pred 1 makes a sample clean-wrong.

    sample  clean-correct  adv_pred  success  clean score  adv score
    0       yes            1         yes      0.9          0.1
    1       yes            1         yes      0.8          0.85
    2       yes            0         no       0.7          0.75    (a failure returned as an attempt)
    3       yes            0         no       0.6          0.65
    4       yes            2         no       0.5          0.2     (misclassified best attempt, not a success)
    5       no             1         yes      0.4          0.0     (clean-wrong: never enters)
    6       yes            1         yes      0.3          0.3     (a tie with itself)
    7       yes            1         yes      0.95         nan     (the detector did not score the adversarial)
    """
    return pd.DataFrame(
        {
            "model": "m", "threat": "white-box", "attack": "C&W-wb", "corruption": False, "crafted_on": "m",
            "sample": np.arange(8), "label": 0, "target": 1,
            "clean_pred": [0, 0, 0, 0, 0, 1, 0, 0],
            "adv_pred": [1, 1, 0, 0, 2, 1, 1, 1],
            "success": [True, True, False, False, False, True, True, True],
            "l2": 1.0, "linf": 0.1, "distortion": 0.05, "input_range": 1.0,
            "score_clean:kd": [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.95],
            "score_adv:kd": [0.1, 0.85, 0.75, 0.65, 0.2, 0.0, 0.3, np.nan],
        }
    )  # fmt: skip


def _mann_whitney(positive: list[float], negative: list[float]) -> float:
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in positive for n in negative)
    return wins / (len(positive) * len(negative))


def test_each_population_by_hand() -> None:
    records = _records()
    # successful: clean-correct clean scores (samples 0-4, 6, 7) vs successful adversarial scores with a score (0, 1, 6)
    clean_correct = [0.9, 0.8, 0.7, 0.6, 0.5, 0.3, 0.95]
    assert metric_value("auc_roc", records, "kd") == pytest.approx(_mann_whitney(clean_correct, [0.1, 0.85, 0.3]))
    # attempted: the same positives vs every clean-correct sample's returned input (0-4, 6; 7 has no score)
    assert metric_value("auc_attempted", records, "kd") == pytest.approx(
        _mann_whitney(clean_correct, [0.1, 0.85, 0.75, 0.65, 0.2, 0.3])
    )
    # paired: clean-correct samples whose adversarial is misclassified and both scored (0, 1, 4, 6), on both sides
    assert metric_value("auc_paired", records, "kd") == pytest.approx(
        _mann_whitney([0.9, 0.8, 0.5, 0.3], [0.1, 0.85, 0.2, 0.3])
    )


def test_the_populations_differ_here_and_the_summary_has_one_column_each() -> None:
    records = _records()
    values = {name: metric_value(p.metric, records, "kd") for name, p in POPULATIONS.items()}
    assert len(set(values.values())) == 3
    row = summarize(records).iloc[0]
    for name, p in POPULATIONS.items():
        assert row[p.metric] == pytest.approx(values[name])


@pytest.mark.parametrize("name", list(POPULATIONS))
def test_roc_points_integrate_to_the_populations_metric(name: str) -> None:
    records = _records()
    fpr, tpr = roc_points(records, "kd", name)
    assert np.trapezoid(tpr, fpr) == pytest.approx(metric_value(POPULATIONS[name].metric, records, "kd"))


def test_every_population_names_a_registered_metric_with_a_source() -> None:
    for p in POPULATIONS.values():
        assert M.METRICS.get(p.metric).per_detector and p.source and p.description
    assert M.DEFAULT_POPULATION == "successful" and POPULATIONS["successful"].metric == "auc_roc"


def test_an_unknown_population_is_a_one_line_error_with_a_suggestion() -> None:
    with pytest.raises(ConfigError, match="did you mean 'paired'") as error:
        population("pared")
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError):
        M.detection_populations(_records(), "kd", "all")


def test_distortion_on_the_0_255_scale() -> None:
    records = _records().assign(input_range=2.0)  # e.g. inputs in [-1, 1]
    # successful = clean-correct and success: samples 0, 1, 6, 7
    assert metric_value("distortion_255", records) == pytest.approx(0.05 * 255 / 2.0)
    assert np.isnan(metric_value("distortion_255", records.drop(columns="input_range")))  # records of older runs
