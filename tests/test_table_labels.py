"""Table labels and formats come from the registered defenses, detectors and metrics; the package re-exports its
parts."""

from __future__ import annotations

import pytest

import robench.report.tables as tables
from robench.defenses import DEFENSES
from robench.detectors import DETECTORS
from robench.report.tables.labels import (
    defense_label,
    defense_rank,
    detector_label,
    detector_rank,
    metric_header,
    model_infos,
)
from robench.report.tables.table import COUNT, DETECTOR
from robench.scoring.metrics import METRICS, NO_DETECTOR, SUMMARY_KEYS, summary_columns


def test_defense_and_detector_labels_and_order_are_the_registered_ones():
    by_rank = sorted(DEFENSES.names(), key=defense_rank)
    assert by_rank == ["softmax", "center", "lgm", "rce", "mmlda", "mmc", "gccs", "gm"]
    assert [defense_label(n) for n in by_rank] == ["Softmax", "Center", "L-GM", "RCE", "MMLDA", "MMC", "GCCS", "GM"]
    assert sorted(DETECTORS.names(), key=detector_rank) == ["kd", "bu", "kd+bu", "max-prob", "gm-likelihood"]
    assert [detector_label(n) for n in ("kd", "bu", "kd+bu", "max-prob", "gm-likelihood")] == [
        "KD",
        "BU",
        "KD+BU",
        "MaxProb",
        "Likelihood",
    ]
    for name in DETECTORS.names():
        assert detector_label(name) == DETECTORS.get(name).label


def test_unregistered_names_are_upper_cased_and_ranked_last():
    assert defense_label("mydef") == "MYDEF" and detector_label("lid") == "LID"
    assert defense_rank("mydef") > max(defense_rank(n) for n in DEFENSES.names())
    assert detector_rank(NO_DETECTOR) == detector_rank("lid") > max(detector_rank(n) for n in DETECTORS.names())
    infos = model_infos(["a", "b", "c"], {"a": {"defense": "mydef"}, "b": {"defense": "gm", "dataset": "x"}})
    assert [infos[m].label for m in "abc"] == ["MYDEF", "GM", "c"]
    assert infos["b"].rank < infos["a"].rank == infos["c"].rank


def test_metric_headers_and_percentages_come_from_the_metric_objects():
    for name in METRICS.names():
        metric = METRICS.get(name)
        assert metric_header(name) == f"{metric.label} {'↑' if metric.higher_is_better else '↓'}"
        assert tables.format_value(0.5, name) == ("50.0" if metric.percent else "0.50")
    assert metric_header(COUNT) == COUNT and tables.format_value(7, COUNT) == "7"


def test_summary_columns_the_tables_read_are_the_summary_s():
    assert summary_columns()[len(SUMMARY_KEYS) : len(SUMMARY_KEYS) + 2] == [DETECTOR, COUNT]


@pytest.mark.parametrize(
    "name",
    ["build_table", "build_tables", "render", "render_tables", "cell_text", "best_mask", "format_value",
     "display_frame", "LAYOUTS", "FORMATS", "DEFAULT_ORDER", "PAPER_LAYOUTS", "Layout", "Table", "ModelInfo",
     "model_infos", "detector_label", "metric_header", "NA"],
)  # fmt: skip
def test_the_package_re_exports_its_public_names(name):
    assert name in tables.__all__ and getattr(tables, name) is not None
