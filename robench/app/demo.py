"""``robench demo``: the main job on the embedded default data.

Trains the bundled models (softmax and GM on ``mnist-5k``, default settings)
unless valid bundles already exist, writes the table of models, then runs the
suite ``OUT/suite.toml`` (both models x every threat model: semi-white-box,
white-box, black-box from the other model, SPSA, noise and rotation, on a seeded
subset of the test set, with the iterative optimisers shortened so that it fits
a CPU) and writes its combined summary, the paper-layout tables (LaTeX and
Markdown), the figures and a regression baseline of the run. Rerun the suite
alone with ``robench suite OUT/suite.toml --out OUT``; it resumes from finished parts.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from robench.checkpoints.bundle import ModelBundle, load_bundle, save_bundle
from robench.checkpoints.train_bundle import train_bundle
from robench.core.errors import BundleError
from robench.core.provenance import atomic_write_text
from robench.runs.output import format_summary
from robench.runs.suite import run_suite

DEMO_DATASET = "mnist-5k"
DEMO_ARCH = "cnn"
DEMO_DEFENSES = ("softmax", "gm")
DEMO_N = 100
FULL_N = 200


@dataclass(frozen=True)
class DemoBudget:
    """How far the demo shortens the optimisers so that it fits a CPU (the registered defaults are the papers').

    The default is ``make demo``'s (under 5 minutes on 2 cores once the models exist);
    :data:`FULL_BUDGET` is ``make demo-full``'s (``robench demo --full``: twice the samples, longer C&W).
    """

    slow_n: int = 30  # samples for white-box and black-box: the iterative attacks cost 100-1000x FGSM
    spsa_n: int = 8
    cw_steps: int = 30  # Adam steps per binary-search step of C&W, C&W-hc, C&W-un, C&W-tar (lr 0.1)
    cw_wb_steps: int = 60  # the same for C&W-wb (lr 0.05)
    spsa_steps: int = 10  # SPSA iterations of 128 samples each (lr 0.05)
    joint_steps: int = 30  # steps of the white-box threat's selective PGD, one copy per detector and budget


FULL_BUDGET = DemoBudget(slow_n=100, spsa_n=32, cw_steps=100, cw_wb_steps=150, spsa_steps=15, joint_steps=100)


def demo_suite_template() -> str:
    """The demo's suite file with ``str.format`` fields (package data: ``demo_suite.toml.in``)."""
    from importlib.resources import files

    return files("robench.app").joinpath("demo_suite.toml.in").read_text(encoding="utf-8")


def ensure_model(
    path: Path, defense: str, seed: int, device: torch.device, progress: bool, echo: Callable[[str], None]
) -> ModelBundle:
    """Load the bundle at ``path`` if it is the requested model, else train and write it."""
    if path.exists():
        bundle = load_bundle(path, device=device)  # a corrupt file is refused, never silently replaced
        meta = bundle.meta
        if (meta.dataset, meta.arch, meta.defense, meta.seed) == (DEMO_DATASET, DEMO_ARCH, defense, seed):
            echo(f"reusing {path} ({defense}, content hash {bundle.content_hash[:12]})")
            return bundle
        raise BundleError(
            f"{path} holds a different model "
            f"({meta.defense}/{meta.arch}/{meta.dataset}, seed {meta.seed}); move it away"
        )
    echo(f"training {defense} {DEMO_ARCH} on {DEMO_DATASET} (seed {seed}) -> {path}")
    bundle = train_bundle(
        dataset=DEMO_DATASET, arch=DEMO_ARCH, defense=defense, seed=seed, device=device, progress=progress
    )
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
    out: Path,
    models_dir: Path,
    device: torch.device,
    seed: int,
    progress: bool,
    echo: Callable[[str], None],
    n: int = DEMO_N,
    budget: DemoBudget = DemoBudget(),
    reports: bool = True,
) -> pd.DataFrame:
    bundles = {
        defense: ensure_model(models_dir / f"{defense}.pt", defense, seed, device, progress, echo)
        for defense in DEMO_DEFENSES
    }
    table = models_table(bundles)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "models.csv", table.to_csv(index=False))
    echo(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    models = "".join(
        f'\n[[model]]\nname = "{name}"\npath = '
        f'"{os.path.relpath(models_dir.resolve() / f"{name}.pt", out.resolve())}"\n'
        for name in bundles
    )
    suite_path = out / "suite.toml"
    text = demo_suite_template().format(
        n=n,
        n_slow=min(n, budget.slow_n),
        n_spsa=min(n, budget.spsa_n),
        cw_steps=budget.cw_steps,
        cw_wb_steps=budget.cw_wb_steps,
        spsa_steps=budget.spsa_steps,
        joint_steps=budget.joint_steps,
        seed=seed,
        device=device.type,
        models=models,
        substitutes=", ".join(f'"{name}"' for name in bundles),
    )
    atomic_write_text(suite_path, text)
    summary = run_suite(suite_path, out, progress=progress, echo=echo)
    echo(format_summary(summary))
    written = [str(p) for p in write_reports(out)] if reports else []
    echo(
        f"wrote {', '.join([str(out / 'models.csv'), str(suite_path), str(out / 'summary.csv'), *written])} "
        f"and per-pair records under {out}/"
    )
    return summary


def write_reports(out: Path) -> list[Path]:
    """The paper-layout tables (standalone LaTeX and Markdown), the figures and a baseline of the run in ``out``."""
    from robench.report.plots import plot_run_dir
    from robench.report.regression import write_baseline
    from robench.report.rundir import load_run_dir
    from robench.report.tables import PAPER_LAYOUTS, build_tables, render_tables

    run = load_run_dir(out)
    tables, _ = build_tables(run.flagged_summary(), run.model_meta(), None, None, PAPER_LAYOUTS)
    atomic_write_text(out / "tables.tex", render_tables(tables, "latex", standalone=True))
    atomic_write_text(out / "tables.md", render_tables(tables, "markdown"))
    plot_run_dir(run, out / "plots")
    write_baseline(out, out / "baseline.json")
    return [out / "tables.tex", out / "tables.md", out / "plots", out / "baseline.json"]
