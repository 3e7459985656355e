"""Table labels and column order declared on the detector classes."""

from robench.detectors import DETECTORS

ORDER = ["kd", "bu", "kd+bu", "max-prob", "gm-likelihood"]
LABELS = ["KD", "BU", "KD+BU", "MaxProb", "Likelihood"]


def test_labels_and_table_ranks():
    assert sorted(DETECTORS.names(), key=lambda name: DETECTORS.get(name).table_rank) == ORDER
    assert [DETECTORS.get(name).label for name in ORDER] == LABELS
    assert [DETECTORS.get(name).table_rank for name in ORDER] == list(range(len(ORDER)))
