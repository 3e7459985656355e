"""Table labels and row order declared on the defense classes (baselines first, GM last, as in the papers)."""

from robench.defenses import DEFENSES

LABELS = {
    "softmax": "Softmax",
    "center": "Center",
    "lgm": "L-GM",
    "rce": "RCE",
    "mmlda": "MMLDA",
    "mmc": "MMC",
    "gccs": "GCCS",
    "gm": "GM",
}
ORDER = ["softmax", "center", "lgm", "rce", "mmlda", "mmc", "gccs", "gm"]


def test_labels_and_table_ranks():
    assert {name: cls.label for name, cls in DEFENSES.items()} == LABELS
    assert sorted(DEFENSES.names(), key=lambda name: DEFENSES.get(name).table_rank) == ORDER
    assert [DEFENSES.get(name).table_rank for name in ORDER] == list(range(len(ORDER)))
