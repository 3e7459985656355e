"""Projected wall time of the GPU reproduction suites (reports/reproduce/gpu/00*.toml) on 1, 8 and 64 workers.

The model: Amdahl with the serial detector fits,

    T(N) = S + max(P / N, p_max)

S: the detector fits (train-set size x t_fwd per fit), P: the sum of all part times, p_max: the longest
single (model, threat, attack, batch) part (a part is never split). A part takes attack.cost() x images
x t_pass, with t_pass / t_fwd measured here on untrained robench classifiers of the suites' architectures.

No GPU is measured: the times are in units of ONE WORKER AS MEASURED HERE (one CPU thread of this
machine). The speed-ups T(1)/T(N) carry over to GPUs if fits and parts speed up alike on the faster device.

Rules: dataset family = the model name's prefix ("mnist-" / "cifar10-"), else the model file's (004's
"softmax" is models/cifar10-softmax.pt); architecture = ResNet-56 for "*-resnet56.pt", else ResNet-32
(reports/reproduce/train_gpu.sh); a transfer threat's parts run on the substitute's architecture.
n_eff = min(n, 10,000 test images). One fit per (model, detector with needs_fit): robench fits kd and
kd+bu separately (kd+bu.fit runs its own KD's fit). Not modelled: cascades (the script refuses a suite
with one), C&W-wb's attacker-density task (eta medians), the clean-pass and sanity tasks, Ray's per-task
overhead, the driver's merge. Separate suites (separate `robench suite` commands) are summed.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from robench.checkpoints.model_factory import build_classifier
from robench.core.data import DATASETS
from robench.defenses import DEFENSES
from robench.detectors import DETECTORS
from robench.runs.prepare import config_threats, threat_detectors
from robench.runs.suite import SuitePair, load_suite

ROOT = Path(__file__).resolve().parents[1]
SUITES = sorted(
    (ROOT / "reports" / "reproduce" / "gpu").glob("00*.toml"),
    key=lambda p: [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", p.stem)],
)
WORKERS = (1, 8, 64)
TEST_SIZE = {"mnist": 10_000, "cifar10": 10_000}
TRAIN_SIZE = {"mnist": 60_000, "cifar10": 50_000}
NOTE = (
    "times are in units of one worker as measured here (one CPU thread of this machine); "
    "the speed-ups carry over to GPUs if detector fits and parts speed up alike there"
)
Key = tuple[str, str]  # (architecture, dataset family)


@dataclass(frozen=True)
class Part:
    """One Ray task: an attack on one batch, crafted on ``key``'s architecture."""

    key: Key
    images: int
    cost: float  # attack.cost(): model passes per image (a forward + backward counts as one)


@dataclass
class Plan:
    name: str
    pairs: int
    parts: list[Part]
    fits: dict[tuple[str, str], Key]  # (model file, detector) -> the fitted model's key


@dataclass(frozen=True)
class Timing:
    t_pass: float  # seconds per image, forward + input gradient
    t_fwd: float  # seconds per image, forward under no_grad


def family_of(name: str, path: Path) -> str:
    for text in (name, path.name):
        for family in TEST_SIZE:
            if text.startswith(f"{family}-"):
                return family
    raise ValueError(
        f"model '{name}' ({path.name}): neither name nor file starts with one of "
        f"{', '.join(f'{f}-' for f in TEST_SIZE)}"
    )


def arch_of(path: Path) -> str:
    return "resnet56" if path.stem.endswith("-resnet56") else "resnet32"


def plan_suite(path: Path) -> Plan:
    """The suite's parts and fits, built as robench.runs.prepare.prepare builds them but without a bundle or dataset."""
    pairs: list[SuitePair] = load_suite(path)
    parts: list[Part] = []
    fits: dict[tuple[str, str], Key] = {}
    for pair in pairs:
        config = pair.config
        family = family_of(pair.model_name, config.model)
        crafting = config.substitute or config.model
        if family_of(config.substitute_name or pair.model_name, crafting) != family:
            raise ValueError(f"{path.name}: {pair.model_name}'s substitute is of another dataset family")
        threats = config_threats(config)  # as prepare builds them, without loading anything
        for threat in threats:
            if (config.cascade or threat.default_cascade or "none") != "none":
                raise ValueError(
                    f"{path.name}: {pair.model_name} x {threat.name} runs a cascade, which this model leaves out"
                )
        n_eff = min(config.n, TEST_SIZE[family])
        sizes = [min(config.batch_size, n_eff - start) for start in range(0, n_eff, config.batch_size)]
        assert len(sizes) == math.ceil(n_eff / config.batch_size)
        for spec in (s for t in threats for s in t.attacks):
            cost = spec.build(family).cost()
            parts += [Part((arch_of(crafting), family), size, cost) for size in sizes]
        names = config.detectors if config.detectors is not None else threat_detectors(threats)
        if names is None:
            raise ValueError(f"{path.name}: {pair.model_name} scores every applicable detector, which needs its bundle")
        for name in names:
            if DETECTORS.get(name).needs_fit:
                fits[(str(config.model.resolve()), name)] = (arch_of(config.model), family)
    return Plan(path.stem, len(pairs), parts, fits)


def _median_seconds(step: Callable[[], object], reps: int) -> float:
    step()  # warm-up
    times = []
    for _ in range(reps):
        tic = time.perf_counter()
        step()
        times.append(time.perf_counter() - tic)
    return statistics.median(times)


def measure(keys: Sequence[Key], batch: int = 32, reps: int = 3) -> dict[Key, Timing]:
    """Per-image seconds of an untrained softmax classifier (train_gpu.sh's dropout 0.25), eval mode, at the current
    threads."""
    out = {}
    for arch, family in sorted(set(keys)):
        spec = DATASETS.get(family)
        defense = DEFENSES.get("softmax").for_dataset(family)
        model, _ = build_classifier(
            arch, {"dropout": 0.25}, spec.input_shape, spec.mean, spec.std, defense, spec.num_classes, seed=0
        )
        model.eval()
        generator = torch.Generator().manual_seed(0)
        x = torch.rand((batch, *spec.input_shape), generator=generator)
        y = torch.randint(0, spec.num_classes, (batch,), generator=generator)

        def gradient() -> object:
            x_adv = x.clone().requires_grad_(True)
            return torch.autograd.grad(F.cross_entropy(model(x_adv), y, reduction="sum"), x_adv)

        def forward() -> object:
            with torch.no_grad():
                return model(x)

        out[(arch, family)] = Timing(_median_seconds(gradient, reps) / batch, _median_seconds(forward, reps) / batch)
    return out


@dataclass(frozen=True)
class Projection:
    """A suite's (or a group's) S, P, p_max (seconds of one worker as measured here) and T(N) for N in WORKERS."""

    name: str
    pairs: int
    parts: int
    fits: int
    s: float
    p: float
    p_max: float
    ts: tuple[float, ...]

    def t(self, n: int) -> float:
        return self.ts[WORKERS.index(n)]


def project(plan: Plan, times: dict[Key, Timing]) -> Projection:
    seconds = [part.cost * part.images * times[part.key].t_pass for part in plan.parts]
    s, p, p_max = (
        sum(TRAIN_SIZE[key[1]] * times[key].t_fwd for key in plan.fits.values()),
        sum(seconds),
        max(seconds, default=0.0),
    )
    return Projection(
        plan.name,
        plan.pairs,
        len(plan.parts),
        len(plan.fits),
        s,
        p,
        p_max,
        tuple(s + max(p / n, p_max) for n in WORKERS),
    )


def total(name: str, rows: list[Projection]) -> Projection:
    """Separate suites run one after another: every figure (and every T(N)) sums; p_max is the longest of all."""
    add = lambda field: sum(getattr(r, field) for r in rows)  # noqa: E731 - a one-line sum over the rows
    ts = tuple(sum(r.ts[i] for r in rows) for i in range(len(WORKERS)))
    return Projection(name, add("pairs"), add("parts"), add("fits"), add("s"), add("p"), max(r.p_max for r in rows), ts)


def hm(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60}:{minutes % 60:02d}"


def table(rows: list[Projection]) -> list[str]:
    head = [
        "suite",
        "pairs",
        "parts",
        "fits",
        "S",
        "P",
        "p_max",
        *(f"T({n})" for n in WORKERS),
        *(f"T(1)/T({n})" for n in WORKERS[1:]),
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [
            r.name,
            str(r.pairs),
            str(r.parts),
            str(r.fits),
            hm(r.s),
            hm(r.p),
            hm(r.p_max),
            *map(hm, r.ts),
            *(f"{r.ts[0] / t:.1f}x" for t in r.ts[1:]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "suites", nargs="*", type=Path, default=SUITES, help="suite files [default: reports/reproduce/gpu/00*.toml]"
    )
    parser.add_argument("--quick", action="store_true", help="time batches of 4, one repetition (for the tests)")
    parser.add_argument("--out", type=Path, help="also write the inputs and the table as Markdown to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    plans = [plan_suite(path) for path in args.suites]
    keys = [k for plan in plans for k in [part.key for part in plan.parts] + list(plan.fits.values())]
    batch, reps = (4, 1) if args.quick else (32, 3)
    times = measure(keys, batch, reps)
    cpu = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            "?",
        )
        if Path("/proc/cpuinfo").exists()
        else "?"
    )
    out = [
        f"Measured on {cpu}, {os.cpu_count()} cores, torch {torch.__version__} at {torch.get_num_threads()} thread, "
        f"untrained classifiers, batch {batch}, median of {reps} after a warm-up:",
        "",
        "| architecture | family | t_pass (ms/image, fwd + bwd) | t_fwd (ms/image, no_grad) | t_fwd / t_pass |",
        "|---|---|---|---|---|",
    ]
    out += [
        f"| {a} | {f} | {t.t_pass * 1e3:.3f} | {t.t_fwd * 1e3:.3f} | {t.t_fwd / t.t_pass:.2f} |"
        for (a, f), t in sorted(times.items())
    ]
    rows = [project(plan, times) for plan in plans]
    groups: dict[str, list[Projection]] = {}
    for row in rows:
        groups.setdefault(row.name.split("-")[0], []).append(row)
    rows += [total(f"**{g} total** ({len(m)} suites, one after another)", m) for g, m in groups.items() if len(m) > 1]
    out += [
        "",
        f"Model: T(N) = S + max(P / N, p_max), N = {', '.join(map(str, WORKERS))} workers. S: the serial detector fits "
        "(one train-set forward per fitted detector and model), P: all parts, p_max: the longest part; times h:mm.",
        f"Units: {NOTE}.",
        "",
    ]
    out += table(rows)
    text = "\n".join(out)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
