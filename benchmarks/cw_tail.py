"""C&W-L2's image-steps per second over its whole binary search (early abort included), against the bare loop.

Usage::

    python benchmarks/cw_tail.py [--model reports/regression/models/gm.pt] [--model ...softmax.pt] [--n 256]
        [--steps 1000] [--search 5] [--lr 0.01] [--targeted] [--bare-steps 50] [--device auto] [--threads N] [--quick]

C&W-L2 runs at its registered settings (``cw-l2``: 5 binary-search steps of up to 1,000 Adam
iterations at lr 0.01, per-sample early abort every 100 iterations, search tolerance 1%) on the
first ``--n`` test images, in one batch. Its samples stop at different times (early abort, settled
bounds), so the work is not images x steps: the benchmark counts the image-steps it computes, the
rows that go through the model's backbone with gradients (one forward and backward pass each),
and divides by the attack's wall time. Beside it, ``gradient_loop`` of ``benchmarks/bare_loop.py``
on the same model and batch (``--bare-steps`` steps, timed before and after the attack, the faster
of the two counts) is the limit of any gradient attack; the ratio is the share of that limit C&W
keeps over the whole run, its bookkeeping and its small-batch tail included (the goal: 0.9).

The forwards' profile says where the rows went: the share of image-steps in forwards that held
every sample that searches (the first forward's rows), and in the tail (forwards that held less
than half of them).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bare_loop import GradForwardCounter, gradient_loop, synchronize  # noqa: E402 - after the sys.path insert

import robench  # noqa: E402 - after the sys.path insert
from robench.attacks import ATTACKS, AttackTarget, Bounds  # noqa: E402 - after the sys.path insert
from robench.attacks.targets import choose_targets  # noqa: E402 - after the sys.path insert
from robench.core.data import load_dataset  # noqa: E402 - after the sys.path insert
from robench.core.devices import resolve_device  # noqa: E402 - after the sys.path insert

MODELS = Path(__file__).resolve().parents[1] / "reports" / "regression" / "models"
GOAL = 0.9


class RowCounter(GradForwardCounter):
    """GradForwardCounter that also keeps the rows of every forward (the profile)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__(model)
        self.rows: list[int] = []

    def _hook(self, module: torch.nn.Module, inputs: tuple, output: object) -> None:
        if torch.is_grad_enabled() and inputs and isinstance(inputs[0], torch.Tensor):
            self.rows.append(int(inputs[0].shape[0]))
            self.images += int(inputs[0].shape[0])

    def __enter__(self) -> RowCounter:
        super().__enter__()
        self.rows = []
        return self


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        action="append",
        type=Path,
        default=[],
        help="Checkpoint bundle, repeatable [reports/regression/models/gm.pt and softmax.pt].",
    )
    parser.add_argument("--n", type=int, default=None, help="Test images in the batch [256; --quick: 8].")
    parser.add_argument("--steps", type=int, default=None, help="Adam iterations per search step [1000; --quick: 20].")
    parser.add_argument("--search", type=int, default=None, help="Binary-search steps [5; --quick: 2].")
    parser.add_argument("--lr", type=float, default=0.01, help="Adam's learning rate [0.01, cw-l2's].")
    parser.add_argument("--targeted", action="store_true", help="Random targets (seeded) instead of untargeted.")
    parser.add_argument("--bare-steps", type=int, default=None, help="Steps of each bare-loop timing [50; --quick: 3].")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N.")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads(N) [torch's default].")
    parser.add_argument("--quick", action="store_true", help="A smoke test: n 8, 2 x 20 steps, 3 bare steps.")
    args = parser.parse_args(argv)
    for name, full, small in (("n", 256, 8), ("steps", 1000, 20), ("search", 5, 2), ("bare_steps", 50, 3)):
        if getattr(args, name) is None:
            setattr(args, name, small if args.quick else full)
    args.model = args.model or [MODELS / "gm.pt", MODELS / "softmax.pt"]
    return args


def bare_rate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, bounds: Bounds) -> float:
    """Image-steps per second of ``gradient_loop`` on the batch."""
    synchronize(x.device)
    tic = time.perf_counter()
    gradient_loop(model, x, y, steps, (bounds.low, bounds.high), 0.01)
    synchronize(x.device)
    return x.shape[0] * steps / (time.perf_counter() - tic)


def run_one(path: Path, args: argparse.Namespace, device: torch.device) -> float:
    bundle = robench.load_bundle(path, device=device)
    model = bundle.model.eval()
    data = load_dataset(bundle.meta.dataset, split_seed=bundle.meta.split_seed)
    x, y = data.test.x[: args.n].to(device), data.test.y[: args.n].to(device)
    n = len(x)
    bounds = Bounds(*(float(v) for v in bundle.meta.value_range))
    target = AttackTarget(model, bundle.defense, bounds)
    targets = None
    if args.targeted:
        with torch.no_grad():
            targets = choose_targets("random", model(x), y, torch.Generator().manual_seed(0))
    attack = ATTACKS.get("cw-l2")(binary_search_steps=args.search, steps=args.steps, lr=args.lr)
    # the attack's forwards go through Forward.of (features, head), not model(x): count at the backbone
    counted = getattr(model, "backbone", model)

    gradient_loop(model, x[:2], y[:2], 1, (bounds.low, bounds.high))  # warm-up
    bare_before = bare_rate(model, x, y, args.bare_steps, bounds)
    with RowCounter(counted) as counter:
        synchronize(device)
        tic = time.perf_counter()
        result = attack(target, x, y, targets, generator=torch.Generator().manual_seed(0))
        synchronize(device)
        seconds = time.perf_counter() - tic
    bare_after = bare_rate(model, x, y, args.bare_steps, bounds)
    bare = max(bare_before, bare_after)
    ours = counter.images / seconds
    rows = counter.rows
    # the batch that searches: the first forward's rows (the samples adversarial on the clean input never move)
    top = max(rows, default=0)
    full = sum(r for r in rows if r == top)
    tail = sum(r for r in rows if 2 * r < top)
    mode = "targeted" if args.targeted else "untargeted"
    print(
        f"{path.name}: cw-l2 {args.search} x {args.steps} lr {args.lr:g} ({mode})"
        f", n {n}: {counter.images} image-steps in {len(rows)} forwards ({counter.images / max(len(rows), 1):.1f} rows"
        f" each) in {seconds:.1f} s, success {result.success.float().mean().item():.3f}"
    )
    print(
        f"  image-steps in full-batch forwards {full / max(counter.images, 1):.1%}, in forwards under half the batch"
        f" (the tail) {tail / max(counter.images, 1):.1%}"
    )
    print(
        f"  robench {ours:,.0f} image-steps/s; bare loop {bare:,.0f} (before {bare_before:,.0f}, after"
        f" {bare_after:,.0f}); robench / bare {ours / bare:.2f} (goal {GOAL})"
    )
    return ours / bare


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    print(f"device {device}, {torch.get_num_threads()} threads{' (quick)' if args.quick else ''}")
    ratios = [run_one(path, args, device) for path in args.model]
    print(f"robench / bare: {', '.join(f'{r:.2f}' for r in ratios)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
