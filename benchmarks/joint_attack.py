"""The joint attacks' loop (Orthogonal and Selective PGD on a classifier and its KD detector) against a bare loop.

Usage::

    python benchmarks/joint_attack.py [--model reports/regression/models/gm.pt] [--n 128] [--steps 50]
        [--attack orthogonal-pgd] [--attack selective-pgd] [--device auto] [--threads N] [--repeats 1] [--quick]

On the first ``--n`` test images of the bundle's dataset, with its kernel-density detector (``kd``, the cached
fit next to the bundle when there is one, else fitted here and not cached), each attack of
:mod:`robench.attacks.joint` runs ``--steps`` steps at its MNIST-like budget. The attacker's threshold (5% FPR),
spread (interquartile range / 1.349, as the runner's attacker) and median come from the KD scores of the next 500
test images, never the attacked ones.

Beside each attack, a *bare loop* does the same work per step without the attack's bookkeeping (no best-iterate
tracking, no check of the detector's gradient, no skipped backward pass when no sample is flagged, no evaluation
of the last iterate): one forward pass, the defense's adaptive objective and the KD score on it, the hinge on
the score, then

- Orthogonal PGD: two backward passes (classifier and detector), the per-sample projections, the sign step;
- Selective PGD: one backward pass of each sample's chosen loss, the sign step;

and the projection onto the L-inf ball and the bounds. The ratio printed is the bare loop's time over the
attack's (the same images and steps): the share of the bare loop's speed the attack keeps (the goal: >= 0.85).
The bare loop is timed before and after the attack, and the faster of the two counts.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bare_loop import synchronize  # noqa: E402 - after the sys.path insert

import robench  # noqa: E402 - after the sys.path insert
from robench.attacks import ATTACKS, AttackTarget, Bounds  # noqa: E402 - after the sys.path insert
from robench.attacks.detector_terms import KnownDetector  # noqa: E402 - after the sys.path insert
from robench.attacks.objectives import objective_value  # noqa: E402 - after the sys.path insert
from robench.core.data import load_dataset  # noqa: E402 - after the sys.path insert
from robench.core.devices import resolve_device  # noqa: E402 - after the sys.path insert
from robench.core.models import Forward  # noqa: E402 - after the sys.path insert
from robench.detectors import threshold_at_fpr  # noqa: E402 - after the sys.path insert
from robench.detectors.cache import load_cached  # noqa: E402 - after the sys.path insert
from robench.detectors.kd import KernelDensityDetector  # noqa: E402 - after the sys.path insert

MODELS = Path(__file__).resolve().parents[1] / "reports" / "regression" / "models"
GOAL = 0.85
HELD_OUT = 500  # test images after the attacked ones: the attacker's clean scores


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=MODELS / "gm.pt", help="Checkpoint bundle [the committed GM].")
    parser.add_argument("--n", type=int, default=None, help="Test images in the batch [128; --quick: 16].")
    parser.add_argument("--steps", type=int, default=None, help="Attack and bare-loop steps [50; --quick: 5].")
    parser.add_argument("--attack", action="append", default=[], help="Repeatable [orthogonal-pgd and selective-pgd].")
    parser.add_argument("--repeats", type=int, default=1, help="Timings per side; the fastest counts [1].")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N.")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads(N) [torch's default].")
    parser.add_argument("--quick", action="store_true", help="A smoke test: n 16, 5 steps.")
    args = parser.parse_args(argv)
    for name, full, small in (("n", 128, 16), ("steps", 50, 5)):
        if getattr(args, name) is None:
            setattr(args, name, small if args.quick else full)
    args.attack = args.attack or ["orthogonal-pgd", "selective-pgd"]
    return args


def bare_loop(target: AttackTarget, known: KnownDetector, attack, x: Tensor, y: Tensor, steps: int) -> Tensor:
    """The attack's per-step work without its bookkeeping (module docstring), L-inf."""
    model, defense, kd = target.model, target.defense, known.detector
    eps, step, margin = float(attack.eps), attack.step_size, float(attack.margin)
    low, high = target.bounds.low, target.bounds.high
    x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        forward = target.forward(x_adv)
        classifier = objective_value(attack.objective, target, forward, y, None)
        detection = torch.relu((known.threshold - kd.score(model, defense, forward).float()) / known.scale + margin)
        fooled = forward.logits.detach().argmax(1) != y
        if attack.orthogonal:
            (f,) = torch.autograd.grad(classifier.sum(), x_adv, retain_graph=True)
            (g,) = torch.autograd.grad(detection.sum(), x_adv)
            with torch.no_grad():
                f, g = f.flatten(1), g.flatten(1)
                dot = (f * g).sum(1, keepdim=True)
                f_perp = f - dot / (g * g).sum(1, keepdim=True).clamp_min(1e-30) * g
                g_perp = g - dot / (f * f).sum(1, keepdim=True).clamp_min(1e-30) * f
                grad = torch.where(fooled[:, None], g_perp, f_perp).view(x.shape)
        else:
            (grad,) = torch.autograd.grad(torch.where(fooled, detection, classifier).sum(), x_adv)
        with torch.no_grad():
            x_adv = torch.minimum(torch.maximum(x_adv - step * grad.sign(), x - eps), x + eps).clamp(low, high)
    return x_adv.detach()


def timed(fn, device: torch.device, repeats: int) -> float:
    """The fastest of ``repeats`` wall times of ``fn()``."""
    best = float("inf")
    for _ in range(max(1, repeats)):
        synchronize(device)
        tic = time.perf_counter()
        fn()
        synchronize(device)
        best = min(best, time.perf_counter() - tic)
    return best


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    bundle = robench.load_bundle(args.model, device=device)
    model = bundle.model.eval()
    data = load_dataset(bundle.meta.dataset, split_seed=bundle.meta.split_seed)
    x, y = data.test.x[: args.n].to(device), data.test.y[: args.n].to(device)
    held_out = data.test.x[args.n : args.n + HELD_OUT].to(device)

    kd = KernelDensityDetector()
    tic = time.perf_counter()
    cached = load_cached(kd, bundle, device)
    if not cached:  # fitted here, not written next to the bundle
        kd.fit(model, bundle.defense, data.train, device)
    fit_seconds = time.perf_counter() - tic
    with torch.no_grad():
        clean = kd.score(model, bundle.defense, Forward.of(model, held_out)).float().cpu()
    # the spread as the runner's attacker measures it (robench.runs.knowledge): the interquartile range in units of
    # a normal's standard deviation, robust to KD's long tail of low clean scores
    quartiles = torch.quantile(clean.double(), torch.tensor([0.25, 0.75], dtype=torch.float64))
    spread = float(quartiles[1] - quartiles[0]) / 1.349
    known = KnownDetector("kd", kd, threshold_at_fpr(clean, 0.05), spread, float(clean.median()))
    bounds = Bounds(*(float(v) for v in bundle.meta.value_range))
    target = AttackTarget(model, bundle.defense, bounds, known_detectors=(known,))
    print(
        f"device {device}, {torch.get_num_threads()} threads{' (quick)' if args.quick else ''}; {args.model.name}, "
        f"n {len(x)}, {args.steps} steps; kd {'cached' if cached else 'fitted'} in {fit_seconds:.1f} s, width "
        f"{kd.width:.3g}, attacker's threshold {known.threshold:.4g} (spread {known.scale:.3g})"
    )

    ratios = []
    for name in args.attack:
        attack = ATTACKS.get(name).for_dataset("mnist", {"steps": args.steps})
        if attack.norm != "linf":
            raise SystemExit(f"{name}: the bare loop is the L-inf one; pass an L-inf joint attack")
        bare_loop(target, known, attack, x[:2], y[:2], 1)  # warm-up
        bare_before = timed(lambda: bare_loop(target, known, attack, x, y, args.steps), device, args.repeats)
        result = None

        def run_attack():
            nonlocal result
            result = attack(target, x, y, generator=torch.Generator().manual_seed(0))

        ours = timed(run_attack, device, args.repeats)
        bare_after = timed(lambda: bare_loop(target, known, attack, x, y, args.steps), device, args.repeats)
        bare = min(bare_before, bare_after)
        with torch.no_grad():
            flagged = known.flagged(kd.score(model, bundle.defense, result.forward).float())
        ratio = bare / ours
        ratios.append(ratio)
        print(
            f"{name} (eps {attack.eps:g}, step {attack.step_size:.4g}): {ours:.2f} s, success "
            f"{result.success.float().mean().item():.3f}, success and unflagged "
            f"{(result.success & ~flagged).float().mean().item():.3f}; bare loop {bare:.2f} s (before "
            f"{bare_before:.2f}, after {bare_after:.2f}); bare / robench {ratio:.2f} (goal >= {GOAL})"
        )
    print(f"bare / robench: {', '.join(f'{r:.2f}' for r in ratios)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
