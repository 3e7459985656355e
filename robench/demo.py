"""``robench demo``: the main job on the embedded default data.

Trains the bundled models (softmax and GM on ``mnist-5k``, default settings)
unless valid bundles already exist, writes the table of models, then runs the
suite ``OUT/suite.toml`` (both models x semi-white-box, noise and rotation, on a
seeded subset of the test set, with C&W shortened so it fits a CPU) and writes
its combined summary. Rerun the suite alone with ``robench suite OUT/suite.toml --out OUT``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch

from robench.bundle import ModelBundle, load_bundle, save_bundle
from robench.errors import BundleError
from robench.provenance import atomic_write_text
from robench.runner import format_summary
from robench.suite import run_suite
from robench.train_bundle import train_bundle

DEMO_DATASET = "mnist-5k"
DEMO_ARCH = "cnn"
DEMO_DEFENSES = ("softmax", "gm")
DEMO_N = 200
DEMO_SUITE = """# Written by robench demo. Paths are relative to this file.
[defaults]
n = {n}
seed = {seed}
device = "{device}"
{models}
[[threat]]
name = "semi-white-box"
[threat.set]
# 5 binary-search steps of 100 Adam steps (lr 0.1) instead of 1,000 (lr 0.01), so that the demo fits a CPU.
"C&W.steps" = 100
"C&W.lr" = 0.1
"C&W-hc.steps" = 100
"C&W-hc.lr" = 0.1

[[threat]]
name = "noise"

[[threat]]
name = "rotation"
"""


def ensure_model(path: Path, defense: str, seed: int, device: torch.device, progress: bool, echo: Callable[[str], None]) -> ModelBundle:
    """Load the bundle at ``path`` if it is the requested model, else train and write it."""
    if path.exists():
        bundle = load_bundle(path, device=device)  # a corrupt file is refused, never silently replaced
        meta = bundle.meta
        if (meta.dataset, meta.arch, meta.defense, meta.seed) == (DEMO_DATASET, DEMO_ARCH, defense, seed):
            echo(f"reusing {path} ({defense}, content hash {bundle.content_hash[:12]})")
            return bundle
        raise BundleError(f"{path} holds a different model ({meta.defense}/{meta.arch}/{meta.dataset}, seed {meta.seed}); move it away")
    echo(f"training {defense} {DEMO_ARCH} on {DEMO_DATASET} (seed {seed}) -> {path}")
    bundle = train_bundle(dataset=DEMO_DATASET, arch=DEMO_ARCH, defense=defense, seed=seed, device=device, progress=progress)
    bundle.content_hash = save_bundle(path, bundle.model, bundle.meta)
    bundle.path = path
    return bundle


def models_table(bundles: dict[str, ModelBundle]) -> pd.DataFrame:
    """One row per model: what it is and its clean accuracy."""
    rows = [
        {
            "model": name,
            "defense": b.meta.defense,
            "arch": b.meta.arch,
            "dataset": b.meta.dataset,
            "seed": b.meta.seed,
            "clean_accuracy": b.meta.clean_accuracy,
            "train_seconds": b.meta.train_seconds,
            "content_hash": b.content_hash[:12],
        }
        for name, b in bundles.items()
    ]
    return pd.DataFrame(rows)


def run_demo(
    out: Path, models_dir: Path, device: torch.device, seed: int, progress: bool, echo: Callable[[str], None], n: int = DEMO_N
) -> pd.DataFrame:
    bundles = {
        defense: ensure_model(models_dir / f"{defense}.pt", defense, seed, device, progress, echo) for defense in DEMO_DEFENSES
    }
    table = models_table(bundles)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "models.csv", table.to_csv(index=False))
    echo(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    models = "".join(
        f'\n[[model]]\nname = "{name}"\npath = "{os.path.relpath(models_dir.resolve() / f"{name}.pt", out.resolve())}"\n' for name in bundles
    )
    suite_path = out / "suite.toml"
    atomic_write_text(suite_path, DEMO_SUITE.format(n=n, seed=seed, device=device.type, models=models))
    summary = run_suite(suite_path, out, progress=progress, echo=echo)
    echo(format_summary(summary))
    echo(f"wrote {out / 'models.csv'}, {suite_path}, {out / 'summary.csv'} and per-pair records under {out}/")
    return summary
