"""One part of a run's records: one attack of one threat on one batch of samples, computed anywhere.

The runner (:mod:`robench.runs.runner`) computes parts in its own process; a Ray worker
(:mod:`robench.runs.ray_backend`) computes them with the same function from the same inputs, so
a part does not depend on where it ran. Everything a part draws (targets, random starts, noise)
comes from generators seeded with the run seed, the attack's label and the batch index
(:func:`derive_seed`), never from the worker or the order the parts ran in.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from robench.attacks.base import Attack, AttackNeeds, Bounds
from robench.attacks.detector_terms import KnownDetector
from robench.checkpoints.bundle import ModelBundle
from robench.core.errors import ConfigError
from robench.core.execution import as_input, is_out_of_memory
from robench.detectors import Detector
from robench.runs.attack_batch import BatchResult, attack_batch
from robench.runs.clean_cache import CleanCache
from robench.runs.density import AttackerDensity
from robench.scoring import records as R
from robench.specs.threats import AttackSpec


def derive_seed(seed: int, *parts: object) -> int:
    digest = hashlib.sha256("|".join(map(str, (seed, *parts))).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


@dataclass(frozen=True)
class PartJob:
    """Which part: threat ``threat`` (its place in the run), its attack ``attack``, batch ``batch`` of ``samples``;
    ``key`` in the part store."""

    key: str
    threat: int
    attack: int
    batch: int
    samples: np.ndarray


@dataclass
class Work:
    """Seconds and image passes per attack label, how often a batch was split after running out of memory, and notes."""

    seconds: dict[str, float] = field(default_factory=dict)
    images: dict[str, int] = field(default_factory=dict)
    splits: int = 0

    def add(self, label: str, seconds: float, images: int) -> None:
        self.seconds[label] = self.seconds.get(label, 0.0) + seconds
        self.images[label] = self.images.get(label, 0) + images

    def merge(self, other: Work) -> None:
        for label, seconds in other.seconds.items():
            self.add(label, seconds, other.images.get(label, 0))
        self.splits += other.splits


@dataclass
class PartContext:
    """What every part of a run needs: the models, the built attacks, the fitted detectors, the attacker densities.

    ``crafting[t]`` is threat ``t``'s crafting model (the substitute for a transfer threat), and
    ``density(crafting, needs, label)`` the attacker density an attack needs (None if none), and
    ``known(needs)`` the scored detectors as the attacker knows them (empty for a detector-blind attack).
    """

    bundle: ModelBundle
    crafting: list[ModelBundle]
    threat_names: list[str]
    attacks: list[list[tuple[AttackSpec, Attack]]]
    detectors: dict[str, Detector]
    density: Callable[[ModelBundle, AttackNeeds, str], AttackerDensity | None]
    known: Callable[[AttackNeeds], tuple[KnownDetector, ...]]
    bounds: Bounds
    seed: int
    precision: str
    channels_last: bool
    device: torch.device
    model_name: str
    substitute_name: str | None


def compute_part(
    ctx: PartContext,
    job: PartJob,
    x: torch.Tensor,
    y: torch.Tensor,
    clean: CleanCache,
    echo: Callable[[str], None],
    work: Work,
) -> pd.DataFrame:
    """The records of ``job`` (inputs ``x``, labels ``y`` on any device), timed and counted into ``work``."""
    spec, attack = ctx.attacks[job.threat][job.attack]
    crafting = ctx.crafting[job.threat]
    threat = ctx.threat_names[job.threat]
    index = torch.from_numpy(np.asarray(job.samples, dtype=np.int64))
    x = as_input(x.to(ctx.device), ctx.channels_last)
    y = y.to(ctx.device)
    label = f"{threat}/{spec.label}"
    b = job.batch
    tic = time.perf_counter()
    result = attack_splitting(
        lambda x_, y_, index_, seeds: attack_batch(
            ctx.bundle,
            crafting,
            attack,
            spec,
            ctx.bounds,
            ctx.density(crafting, attack.needs(), label),
            x_,
            y_,
            torch.Generator().manual_seed(derive_seed(ctx.seed, spec.label, b, *seeds)),
            clean.batch(index_.numpy(), x_),
            ctx.detectors,
            torch.Generator().manual_seed(derive_seed(ctx.seed, spec.label, b, *seeds, "noisy")),
            ctx.precision,
            ctx.known(attack.needs()),
        ),
        x,
        y,
        index,
        (),
        echo,
        work,
    )
    work.add(label, time.perf_counter() - tic, result.images)
    part = R.part(
        model=ctx.model_name,
        threat=threat,
        attack=spec.label,
        corruption=attack.norm == "none",
        crafted_on=ctx.model_name if crafting is ctx.bundle else ctx.substitute_name,
        samples=index.numpy(),
        columns=result.columns,
        scores_clean=result.scores_clean,
        scores_adv=result.scores_adv,
    )
    if result.raw:
        part = part.assign(**result.raw)
    return part


def attack_splitting(
    attack: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, tuple[object, ...]], BatchResult],
    x: torch.Tensor,
    y: torch.Tensor,
    index: torch.Tensor,
    seeds: tuple[object, ...],
    echo: Callable[[str], None],
    work: Work,
) -> BatchResult:
    """``attack(x, y, index, seeds)``; on an out-of-memory error, the two halves one after the other (recursively).

    Each half draws from generators seeded with the half's place (``seeds``), so a split batch's
    result depends only on where the split fell; the first split of a run is logged once.
    """
    try:
        return attack(x, y, index, seeds)
    except Exception as exc:  # noqa: BLE001 - only out-of-memory errors are handled, the rest re-raised
        if not is_out_of_memory(exc):
            raise
        if len(index) <= 1:
            raise ConfigError(
                f"out of memory attacking a single input on {x.device}: use a smaller model or another device"
            ) from None
    if x.device.type == "cuda":
        torch.cuda.empty_cache()
    if work.splits == 0:
        echo(
            f"note: out of memory on a batch of {len(index)} on {x.device}: halving "
            "the batch and retrying (logged once; run.json counts the splits)"
        )
    work.splits += 1
    half = len(index) // 2
    return BatchResult.joined(
        [
            attack_splitting(attack, x[:half], y[:half], index[:half], (*seeds, "half0"), echo, work),
            attack_splitting(attack, x[half:], y[half:], index[half:], (*seeds, "half1"), echo, work),
        ]
    )
