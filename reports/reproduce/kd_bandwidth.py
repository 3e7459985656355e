"""KD's bandwidth per model: the width each committed bundle selects, and 001 Tables 7, 10, 11 at a few widths.

Usage (from the repository root, one thread):

    OMP_NUM_THREADS=1 .venv/bin/python reports/reproduce/kd_bandwidth.py widths
    OMP_NUM_THREADS=1 .venv/bin/python reports/reproduce/kd_bandwidth.py sensitivity --n 30 [--suite 001-table7 ...]

``widths``: for every bundle of reports/regression/models/ and reports/reproduce/models/, the width KD
selects (``bandwidth = "select"``: the held-out log-likelihood of 20% of each class's training features
under a KDE of the rest, robench.detectors.kd.select_bandwidth), whether it is the grid's edge, the
median nearest-neighbour distance within a class (the feature scale), and the held-out log-likelihood
at the selected width and at the former MNIST default 1.2.

``sensitivity``: each bundled suite (reports/reproduce/bundled/001-table{7,10,11}.toml) at small n, once
per width: the selected one, half and twice it, and 1.2. The width is the scored KD's, and the
attackers that follow the scored KD (C&W-wb in Tables 10 and 11) follow it too; Table 7's attacks do
not use KD, so there only the scoring changes. Prints the AUCs of the suite's layout (the paired and
the successful-only AUC for C&W-wb) per model, attack and width. Nothing is written under reports/.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
BUNDLES = sorted((ROOT / "reports" / "regression" / "models").glob("*.pt")) + sorted(
    (ROOT / "reports" / "reproduce" / "models").glob("*.pt")
)
SUITES = ("001-table7", "001-table10", "001-table11")
FORMER_DEFAULT = 1.2


def _class_features(bundle, train, device):
    from robench.detectors.kd import features_of

    z = features_of(bundle.model, train.x, device)
    return [z[train.y.to(device) == k] for k in range(bundle.model.num_classes)]


def widths() -> dict[str, float]:
    from robench.checkpoints.bundle import load_bundle
    from robench.core.data import load_dataset
    from robench.detectors.kd import BANDWIDTH_GRID, HELD_OUT_FRACTION, held_out_log_likelihood, select_bandwidth

    device = torch.device("cpu")
    chosen = {}
    print("| bundle | defense | selected width | grid edge | NN distance (median, in class) | LL(selected) | LL(1.2) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for path in BUNDLES:
        bundle = load_bundle(path, device)
        data = load_dataset(bundle.meta.dataset, split_seed=bundle.meta.split_seed)
        features = _class_features(bundle, data.train, device)
        width, curve = select_bandwidth(features, seed=0)
        best = BANDWIDTH_GRID.index(width)
        nn = torch.cat([torch.cdist(z, z).fill_diagonal_(math.inf).min(1).values for z in features]).median()
        # the held-out log-likelihood at 1.2, on the same split (as select_bandwidth draws it)
        generator = torch.Generator().manual_seed(0)
        fit, held = [], []
        for z in features:
            order = torch.randperm(len(z), generator=generator)
            m = max(1, round(HELD_OUT_FRACTION * len(z)))
            held.append(z[order[:m]])
            fit.append(z[order[m:]])
        at_default = float(held_out_log_likelihood(fit, held, (FORMER_DEFAULT,))[0])
        edge = "yes" if best in (0, len(BANDWIDTH_GRID) - 1) else "no"
        name = path.relative_to(ROOT).as_posix()
        print(
            f"| {name} | {bundle.meta.defense} | {width:.4g} | {edge} | {float(nn):.3g} | "
            f"{float(curve[best]):.1f} | {at_default:.1f} |"
        )
        chosen[str(path.resolve())] = width
    return chosen


def sensitivity(n: int, suites: list[str]) -> None:
    import pandas as pd

    from robench.runs.runner import run
    from robench.specs.suite_file import load_suite

    selected = widths()
    rows = []
    for suite in suites:
        pairs = load_suite(ROOT / "reports" / "reproduce" / "bundled" / f"{suite}.toml")
        for pair in pairs:
            base = selected[str(Path(pair.config.model).resolve())]
            for label, width in (("selected", "select"), ("x0.5", base / 2), ("x2", base * 2), ("1.2", FORMER_DEFAULT)):
                settings = {name: {"bandwidth": width} for name in ("kd", "kd+bu") if name in pair.config.detectors}
                config = dataclasses.replace(pair.config, n=n, batch_size=n, detector_settings=settings, sanity=False)
                with tempfile.TemporaryDirectory() as out:
                    result = run(config, Path(out), progress=False, echo=lambda _: None)
                summary = result.summary
                summary = summary[(summary["detector"] == "kd") & (summary["attack"] != "worst-case")]
                for _, row in summary.iterrows():
                    rows.append(
                        {
                            "suite": suite,
                            "model": pair.model_name,
                            "attack": row["attack"],
                            "width": label,
                            "h": base if width == "select" else width,
                            "auc_succ": 100 * row["auc_roc"],
                            "auc_att": 100 * row["auc_attempted"],
                            "auc_pair": 100 * row["auc_paired"],
                            "success": 100 * row["success_rate"],
                        }
                    )
                print(f"{suite} {pair.model_name} width {label}: done", file=sys.stderr, flush=True)
    frame = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_rows", 500):
        print(frame.to_markdown(index=False, floatfmt=".4g"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("widths", "sensitivity"))
    parser.add_argument("--n", type=int, default=30, help="test samples per suite run (sensitivity)")
    parser.add_argument("--suite", action="append", choices=SUITES, help="suites (sensitivity; default: all three)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.what == "widths":
        widths()
    else:
        sensitivity(args.n, args.suite or list(SUITES))


if __name__ == "__main__":
    main()
