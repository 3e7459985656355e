"""Minimum-norm attacks: robench's FMN-L2 and DDN against foolbox's, and their loops against the bare loop.

Usage::

    python benchmarks/min_norm.py [--model reports/regression/models/gm.pt] [--n 256] [--steps 100]
        [--device cpu] [--threads N] [--linf] [--csv rows.csv] [--quick]

On the same ``--n`` test images of mnist-5k (a fixed random subset, the one tests/attacks/test_fmn.py draws) and
the same number of steps, each row runs robench's attack and foolbox 3.3.4's, and reports per side the median
distance over all samples (+inf where no adversarial was found), the success rate and the wall time; then the
ratio of the medians (robench / foolbox: the goal is within 5%) and of the speeds (foolbox's time / robench's:
the goal is >= 1). Success is judged by the model on what each side returns.

* ``FMN-L2``: robench's ``fmn-l2`` against foolbox's ``L2FMNAttack`` as shipped, whose ``project`` never projects
  (fast_minimum_norm.py line 398: its factor ``norms / norms`` is 1, so its adaptive eps has no effect), and
  against ``L2FMNAttack`` with the projection restored (``foolbox-projected``, the authors' algorithm and robench's):
  the median goal is judged against the projected one, the speed goal against the shipped one (the same passes).
* ``DDN``: robench's ``ddn`` against foolbox's ``DDNAttack``.
* ``FMN-Linf`` (``--linf``): robench's ``fmn-linf`` against foolbox's ``LInfFMNAttack``.

Then the loop: robench's image-steps per second (images x steps; its one extra forward pass on the last iterate
counted in its time, not in its image-steps) as a ratio of ``bare_loop.gradient_loop``'s on the same model, batch
and number of steps (the goal is >= 0.9). Each timing is one run (``--repeats`` for the median of several).
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bare_loop import gradient_loop, timed  # noqa: E402 - after the sys.path insert that finds it

from robench.attacks import ATTACKS, AttackTarget, Bounds  # noqa: E402 - after the sys.path insert
from robench.checkpoints.bundle import load_bundle  # noqa: E402 - after the sys.path insert
from robench.core.data import load_dataset  # noqa: E402 - after the sys.path insert

ROOT = Path(__file__).resolve().parents[1]
GOALS = {"median": 0.05, "speed": 1.0, "bare": 0.9}
COLUMNS = [
    "attack",
    "peer",
    "n",
    "steps",
    "robench_median",
    "peer_median",
    "median_ratio",
    "robench_success",
    "peer_success",
    "robench_s",
    "peer_s",
    "speed_ratio",
    "bare_s",
    "robench_over_bare",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "reports" / "regression" / "models" / "gm.pt")
    parser.add_argument("--n", type=int, default=None, help="Test images [256; --quick: 8].")
    parser.add_argument(
        "--steps", type=int, default=None, help="Steps of every attack and the bare loop [100; --quick: 5]."
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N.")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads(N) [torch's default].")
    parser.add_argument("--repeats", type=int, default=1, help="Timed runs per side (the median is reported) [1].")
    parser.add_argument("--linf", action="store_true", help="Also FMN-Linf against foolbox's LInfFMNAttack.")
    parser.add_argument("--quick", action="store_true", help="A smoke test: n 8, 5 steps.")
    parser.add_argument("--csv", type=Path, default=None, help="Also write the rows to this CSV file.")
    args = parser.parse_args(argv)
    args.n = args.n if args.n is not None else (8 if args.quick else 256)
    args.steps = args.steps if args.steps is not None else (5 if args.quick else 100)
    return args


def _projecting_l2_fmn(foolbox: Any) -> type:
    """foolbox's L2 FMN with the eps-ball projection its ``project`` drops (as in tests/attacks/test_fmn.py)."""
    import eagerpy as ep
    from foolbox.devutils import atleast_kd, flatten

    class ProjectingL2FMN(foolbox.attacks.L2FMNAttack):
        def project(self, x: Any, x0: Any, epsilon: Any) -> Any:
            delta = x - x0
            norms = ep.maximum(flatten(delta).norms.l2(axis=-1), 1e-12)
            return x0 + delta * atleast_kd(ep.minimum(1, epsilon / norms), x.ndim)

    return ProjectingL2FMN


def median_distance(x_adv: torch.Tensor, x: torch.Tensor, success: torch.Tensor, norm: str) -> float:
    """The median over all samples of the perturbation's norm, +inf where no adversarial was found."""
    delta = (x_adv - x).flatten(1)
    distance = delta.norm(dim=1) if norm == "l2" else delta.abs().amax(dim=1)
    return float(torch.where(success, distance, torch.full_like(distance, math.inf)).median())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import foolbox

    device = torch.device(args.device)
    bundle = load_bundle(args.model)
    model = bundle.model.to(device).eval()
    test = load_dataset(bundle.meta.dataset).test
    index = torch.randperm(len(test), generator=torch.Generator().manual_seed(123))[: args.n]
    x, y = test.x[index].to(device), test.y[index].to(device)
    low, high = bundle.meta.value_range
    target = AttackTarget(model, bundle.defense, Bounds(low, high))
    fmodel = foolbox.PyTorchModel(model, bounds=(low, high), device=device)
    with torch.no_grad():
        clean = float((model(x).argmax(1) == y).float().mean())
    print(
        f"model {args.model} ({bundle.meta.defense}), n = {args.n}, steps = {args.steps}, device {device}, "
        f"threads {torch.get_num_threads()}, clean accuracy {clean:.3f}, foolbox {foolbox.__version__}"
    )

    bare_s, _ = timed(lambda: gradient_loop(model, x, y, args.steps, (low, high)), device, args.repeats)
    print(f"  bare gradient loop: {bare_s:.2f}s", flush=True)
    cases = [
        ("FMN-L2", "fmn-l2", "l2", [("foolbox", foolbox.attacks.L2FMNAttack), ("foolbox-projected", None)]),
        ("DDN", "ddn", "l2", [("foolbox", foolbox.attacks.DDNAttack)]),
    ]
    if args.linf:
        cases.append(("FMN-Linf", "fmn-linf", "linf", [("foolbox", foolbox.attacks.LInfFMNAttack)]))
    rows: list[dict[str, Any]] = []
    for label, name, norm, peers in cases:
        attack = ATTACKS.get(name)(steps=args.steps)
        ours_s, result = timed(
            lambda a=attack: a(target, x, y, generator=torch.Generator(device)), device, args.repeats
        )
        ours_median = median_distance(result.x_adv, x, result.success, norm)
        for peer, cls in peers:
            cls = cls or _projecting_l2_fmn(foolbox)
            peer_attack = cls(steps=args.steps)
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(0)
                peer_s, raw = timed(lambda p=peer_attack: p(fmodel, x, y, epsilons=None)[0], device, args.repeats)
            with torch.no_grad():
                peer_success = model(raw).argmax(1) != y
            peer_median = median_distance(raw, x, peer_success, norm)
            print(
                f"  {label} vs {peer}: robench {ours_s:.2f}s median {ours_median:.4f}, peer {peer_s:.2f}s median "
                f"{peer_median:.4f}",
                flush=True,
            )
            rows.append(
                {
                    "attack": label,
                    "peer": peer,
                    "n": args.n,
                    "steps": args.steps,
                    "robench_median": ours_median,
                    "peer_median": peer_median,
                    "median_ratio": 1.0 if ours_median == peer_median else ours_median / peer_median,
                    "robench_success": float(result.success.float().mean()),
                    "peer_success": float(peer_success.float().mean()),
                    "robench_s": ours_s,
                    "peer_s": peer_s,
                    "speed_ratio": peer_s / ours_s,
                    "bare_s": bare_s,
                    "robench_over_bare": bare_s / ours_s,
                }
            )

    print(
        f"{'attack':9} {'peer':18} {'median robench':>14} {'peer':>8} {'ratio':>6} {'success':>7} {'peer':>5} "
        f"{'time robench':>12} {'peer':>7} {'speed':>6} {'loop/bare':>9}"
    )
    for row in rows:
        print(
            f"{row['attack']:9} {row['peer']:18} {row['robench_median']:14.4f} {row['peer_median']:8.4f} "
            f"{row['median_ratio']:6.3f} {row['robench_success']:7.3f} {row['peer_success']:5.3f} "
            f"{row['robench_s']:11.2f}s {row['peer_s']:6.2f}s {row['speed_ratio']:6.2f} {row['robench_over_bare']:9.3f}"
        )
    print(
        f"bare gradient loop: {args.n * args.steps / bare_s:.0f} image-steps/s ({bare_s:.2f}s); goals: median within "
        f"{GOALS['median']:.0%} of foolbox's (FMN-L2: of foolbox-projected's), speed ratio >= {GOALS['speed']:g}, "
        f"loop/bare >= {GOALS['bare']:g}"
    )
    if args.csv:
        with args.csv.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
