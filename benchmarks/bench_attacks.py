"""Image-steps per second of robench's attacks, beside a bare loop and torchattacks / foolbox, on one model and batch.

Usage::

    python benchmarks/bench_attacks.py --model reports/regression/models/softmax.pt --n 1000 [--device auto]
        [--repeats 3] [--threads N] [--precision fp32|bf16|fp16] [--only PGD] [--csv rows.csv] [--quick]

An image-step is one image through one optimisation step: one forward and one backward pass
(FGSM, BIM, PGD, MIM, C&W: images x steps, C&W: x binary-search steps), or for the
gradient-free SPSA one *forward* pass (images x steps x 2 x samples, its central differences).
Each attack's row shows, as image-steps per second (median wall time over ``--repeats``):

* **bare**: the plain forward + input-gradient loop on the same model, batch and number of
  steps (``benchmarks/bare_loop.py``), the limit for any gradient attack; for SPSA the bare
  forward loop over the same number of perturbed inputs, the limit for it;
* **robench**: the registered attack (``ATTACKS.get(name).from_params(params)``);
* **peer**: torchattacks' and foolbox's equivalent where they have one (one row each).

Beside the speeds stand robench's and the peer's success rates (recomputed from the model's
prediction on what each returns), so a speed-up never hides a weaker attack. All attacks see
the same inputs, labels and targets; CUDA timings synchronise the device; peers run in fp32
whatever ``--precision`` is (robench and the bare loop run under ``torch.autocast`` for bf16 /
fp16), and the global RNG is left as it was (peers draw from it: each call runs under
``torch.random.fork_rng`` seeded with 0).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import importlib
import io
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bare_loop import (  # noqa: E402 - after the sys.path insert that finds it
    PRECISIONS,
    GradForwardCounter,
    forward_loop,
    gradient_loop,
    precision_context,
    synchronize,
    timed,
)

import robench  # noqa: E402 - after the sys.path insert
from robench.attacks import ATTACKS, AttackTarget, Bounds  # noqa: E402 - after the sys.path insert
from robench.attacks.targets import choose_targets  # noqa: E402 - after the sys.path insert
from robench.core.data import load_dataset  # noqa: E402 - after the sys.path insert
from robench.core.devices import resolve_device  # noqa: E402 - after the sys.path insert


def spsa_rows(device: torch.device) -> int:
    """Robench SPSA's default perturbed inputs per forward on ``device`` (the bare forward loop and torchattacks use the
    same)."""
    return ATTACKS.get("spsa")().rows_per_forward(device)


# Reference ratios printed under the table (not asserted).
GOALS = {
    "bare": {"BIM": 0.95, "PGD-10": 0.95, "PGD-50": 0.95, "MIM-10": 0.95, "C&W-L2": 0.9, "C&W-wb": 0.9},
    "torchattacks": 1.0,
    "foolbox": 1.5,
    "success_points": 2.0,
}

COLUMNS = [
    "attack",
    "settings",
    "unit",
    "img_steps",
    "robench_img_steps_per_s",
    "bare_img_steps_per_s",
    "robench_over_bare",
    "peer",
    "peer_img_steps_per_s",
    "robench_over_peer",
    "robench_success",
    "peer_success",
    "robench_s",
    "bare_s",
    "peer_s",
    "precision",
    "peer_precision",
    "device",
    "n",
    "error",
]


@dataclass
class Peer:
    name: str
    run: Callable[[], tuple[float, int | None]]  # success rate, image-steps counted (None: the nominal count)
    note: str = ""


@dataclass
class Case:
    key: str  # the attack, as --only and the CSV's `attack` column name it
    label: str  # its settings
    img_steps: int  # per image: forward + backward steps, or forwards (unit "fwd")
    ours: Callable[[], float]
    bare: Callable[[], Any]
    unit: str = "fwd+bwd"
    peers: list[Peer] = field(default_factory=list)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="Checkpoint bundle (e.g. reports/regression/models/softmax.pt).")
    parser.add_argument("--n", type=int, default=None, help="Test images in the batch [500; --quick: 16].")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N.")
    parser.add_argument(
        "--repeats", type=int, default=None, help="Timed runs per measurement; the median counts [3; --quick: 1]."
    )
    parser.add_argument("--cw-steps", type=int, default=None, help="C&W Adam steps per search step [100; --quick: 5].")
    parser.add_argument("--cw-search", type=int, default=None, help="C&W binary-search steps [5; --quick: 1].")
    parser.add_argument("--spsa-steps", type=int, default=None, help="SPSA iterations [10; --quick: 2].")
    parser.add_argument(
        "--spsa-samples", type=int, default=None, help="SPSA perturbations per iteration [128; --quick: 8]."
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        help="Run only the attacks whose name or settings start with this (repeatable).",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads(N) [torch's default].")
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=list(PRECISIONS),
        help="robench's and the bare loop's precision (peers stay fp32).",
    )
    parser.add_argument("--quick", action="store_true", help="A smoke test: n 16, 1 repeat, tiny step counts.")
    parser.add_argument("--csv", type=Path, default=None, help="Also write the rows to this CSV file.")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {
        "n": (500, 16),
        "repeats": (3, 1),
        "cw_steps": (100, 5),
        "cw_search": (5, 1),
        "spsa_steps": (10, 2),
        "spsa_samples": (128, 8),
    }
    for name, (full, small) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)
    # the L-inf attacks' step counts: the named ones, or tiny ones for --quick
    args.bim_steps, args.pgd_short, args.pgd_long, args.mim_steps = (4, 2, 5, 2) if quick else (20, 10, 50, 10)
    for name in ("n", "repeats", "cw_steps", "cw_search", "spsa_steps", "spsa_samples"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    return args


def wants(case: Case, only: list[str]) -> bool:
    if not only:
        return True
    names = (case.key.lower(), case.label.lower())
    return any(name.startswith(prefix.lower()) for prefix in only for name in names)


def rate(images_steps: float, seconds: float) -> float:
    return images_steps / seconds if seconds > 0 else (math.nan if math.isnan(seconds) else math.inf)


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def target_supports_precision() -> bool:
    """Whether robench's AttackTarget runs the attack loop at a precision itself (judging in fp32)."""
    return any(f.name == "precision" for f in dataclasses.fields(AttackTarget))


def import_peers() -> tuple[Any, Any, list[str]]:
    """torchattacks and foolbox, or None for one that does not import (with a note why: its rows are left out)."""
    modules, notes = [], []
    for name in ("torchattacks", "foolbox"):
        try:
            modules.append(importlib.import_module(name))
        except Exception as exc:  # noqa: BLE001 - any import failure only drops the peer's rows
            modules.append(None)
            notes.append(f"{name} unavailable ({type(exc).__name__}: {exc}): its rows are left out")
    return modules[0], modules[1], notes


def build_cw_wb_target(
    bundle: Any, data: Any, device: torch.device, bounds: Bounds, quick: bool, precision_kw: dict
) -> tuple[AttackTarget, str]:
    """An AttackTarget with a fitted KD estimator and its eta, as a run builds for C&W-wb with no scored KD.

    The runner's path (``robench.runs.density.attacker_density`` via ``_Densities``) caches the fit
    next to the bundle; the benchmark fits it in memory instead (nothing is written), with the
    dataset family's bandwidth over every training point (C&W-wb's default ``kd_per_class=-1``
    with no scored detector); --quick fits on 500 random training points only.
    """
    from robench.detectors.kd import KernelDensityDetector, features_of

    if quick:  # a seeded random 500 (the split is ordered by class)
        train = data.train.subset(torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))[:500])
    else:
        train = data.train
    kd = KernelDensityDetector.for_dataset(data.spec.family, {"per_class": 0})
    kd.fit(bundle.model, bundle.defense, train, device)
    eta, eta_per_class = kd.training_medians(features_of(bundle.model, train.x, device), train.y.to(device))
    target = AttackTarget(
        bundle.model,
        bundle.defense,
        bounds,
        detector=kd,
        detector_eta=eta,
        detector_eta_per_class=eta_per_class.detach().cpu(),
        **precision_kw,
    )
    return target, f"KD bandwidth {kd.width:g} ({kd.bandwidth}) over {len(train)} training points, eta {eta:.3f}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    torchattacks, foolbox, peer_notes = import_peers()
    bundle = robench.load_bundle(args.model, device=device)
    model = bundle.model.eval()
    data = load_dataset(bundle.meta.dataset, split_seed=bundle.meta.split_seed)
    x, y = data.test.x[: args.n].to(device), data.test.y[: args.n].to(device)
    n = len(x)
    low, high = (float(v) for v in bundle.meta.value_range)
    bounds = Bounds(low, high)
    rng_before = torch.random.get_rng_state()
    cuda_rng_before = torch.cuda.get_rng_state_all() if device.type == "cuda" else None

    # robench's precision: the AttackTarget's own (robench.core.precision: the loop under autocast, judged in fp32)
    # where this robench has it, else the whole attack call under autocast
    native = target_supports_precision()
    precision_kw = {"precision": args.precision} if native and args.precision != "fp32" else {}
    target = AttackTarget(model, bundle.defense, bounds, **precision_kw)
    with torch.no_grad():
        targets = choose_targets("random", model(x), y, torch.Generator().manual_seed(0))

    def ours(
        name: str, tgt: torch.Tensor | None = None, attack_target: AttackTarget | None = None, **params: Any
    ) -> Callable[[], float]:
        attack = ATTACKS.get(name).from_params(params)
        on = attack_target or target

        def go() -> float:
            region = contextlib.nullcontext() if native else precision_context(device, args.precision)
            with region:
                result = attack(on, x, y, tgt, generator=torch.Generator().manual_seed(0))
            return result.success.float().mean().item()

        return go

    def bare(steps: int) -> Callable[[], Any]:
        return lambda: gradient_loop(model, x, y, steps, (low, high), 0.01, args.precision)

    def bare_forwards(steps: int, copies: int) -> Callable[[], Any]:
        return lambda: forward_loop(model, x, steps, copies, spsa_rows(x.device), args.precision)

    def succeeded(adv: torch.Tensor, tgt: torch.Tensor | None) -> float:
        with torch.no_grad():
            pred = model(adv).argmax(1)
        return (pred == tgt if tgt is not None else pred != y).float().mean().item()

    def global_rng(go: Callable[[], tuple[float, int | None]]) -> Callable[[], tuple[float, int | None]]:
        # torchattacks (PGD's random start, SPSA) and foolbox (LinfPGD) draw from the global RNG: fork it, seed 0
        def wrapped() -> tuple[float, int | None]:
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(0)
                return go()

        return wrapped

    def ta(attack: Any, tgt: torch.Tensor | None = None, count: bool = False) -> Callable[[], tuple[float, int | None]]:
        if tgt is not None:
            with contextlib.redirect_stdout(io.StringIO()):  # its "Attack mode is changed" line
                attack.set_mode_targeted_by_function(lambda images, labels: tgt)

        def go() -> tuple[float, int | None]:
            if count:
                with GradForwardCounter(model) as counter:
                    adv = attack(x, y)
                return succeeded(adv, tgt), counter.images
            return succeeded(attack(x, y), tgt), None

        return global_rng(go)

    fb_model = foolbox.PyTorchModel(model, bounds=(low, high), device=device) if foolbox is not None else None

    def fb(
        attack: Any, eps: float | None, tgt: torch.Tensor | None = None, zeros_on_failure: bool = False
    ) -> Callable[[], tuple[float, int | None]]:
        def go() -> tuple[float, int | None]:
            criterion = (
                foolbox.criteria.TargetedMisclassification(tgt)
                if tgt is not None
                else foolbox.criteria.Misclassification(y)
            )
            _, clipped, _ = attack(fb_model, x, criterion, epsilons=eps)
            if not zeros_on_failure:
                return succeeded(clipped, tgt), None
            # foolbox's C&W returns an all-zero image where it found nothing, which the model may well misclassify
            found = (clipped != 0).flatten(1).any(1) | (x == 0).flatten(1).all(1)
            with torch.no_grad():
                pred = model(clipped).argmax(1)
            hit = pred == tgt if tgt is not None else pred != y
            return (hit & found).float().mean().item(), None

        return global_rng(go)

    def peers(*items: tuple[Any, Callable[[], Peer]]) -> list[Peer]:
        return [make() for library, make in items if library is not None]

    eps_pgd, step_pgd = 8 / 255, 2 / 255
    cw = dict(binary_search_steps=args.cw_search, steps=args.cw_steps, lr=0.01, initial_const=1e-3, abort_early=False)
    cw_steps = args.cw_search * args.cw_steps
    spsa_copies = 2 * args.spsa_samples
    spsa_ta_batch = max(
        1, min(args.spsa_samples, (spsa_rows(x.device) // 2) // max(n, 1))
    )  # about as many images per forward as robench
    quick = " (quick)" if args.quick else ""

    cases: list[Case] = [
        Case(
            "FGSM",
            "FGSM eps 0.1 (targeted)",
            1,
            ours("fgsm", targets, eps=0.1),
            bare(1),
            peers=peers(
                (torchattacks, lambda: Peer("torchattacks FGSM", ta(torchattacks.FGSM(model, eps=0.1), targets))),
                # foolbox's FGSM refuses targets; it is LinfBaseGradientDescent with one full step, as is this
                (
                    foolbox,
                    lambda: Peer(
                        "foolbox FGSM",
                        fb(foolbox.attacks.LinfBasicIterativeAttack(abs_stepsize=0.1, steps=1), 0.1, targets),
                        "LinfBasicIterativeAttack 1 step",
                    ),
                ),
            ),
        ),
        Case(
            "BIM",
            f"BIM {args.bim_steps}x0.01 eps 0.2 (targeted){quick}",
            args.bim_steps,
            ours("bim", targets, eps=0.2, step=0.01, steps=args.bim_steps),
            bare(args.bim_steps),
            peers=peers(
                (
                    torchattacks,
                    lambda: Peer(
                        "torchattacks BIM",
                        ta(torchattacks.BIM(model, eps=0.2, alpha=0.01, steps=args.bim_steps), targets),
                    ),
                ),
                (
                    foolbox,
                    lambda: Peer(
                        "foolbox LinfBasicIterativeAttack",
                        fb(
                            foolbox.attacks.LinfBasicIterativeAttack(abs_stepsize=0.01, steps=args.bim_steps),
                            0.2,
                            targets,
                        ),
                    ),
                ),
            ),
        ),
    ]
    for key, steps in (("PGD-10", args.pgd_short), ("PGD-50", args.pgd_long)):
        cases.append(
            Case(
                key,
                f"PGD-{steps} 8/255 step 2/255{quick}",
                steps,
                ours("pgd", eps=eps_pgd, step=step_pgd, steps=steps),
                bare(steps),
                peers=peers(
                    (
                        torchattacks,
                        lambda steps=steps: Peer(
                            "torchattacks PGD",
                            ta(torchattacks.PGD(model, eps=eps_pgd, alpha=step_pgd, steps=steps, random_start=True)),
                        ),
                    ),
                    (
                        foolbox,
                        lambda steps=steps: Peer(
                            "foolbox LinfPGD",
                            fb(foolbox.attacks.LinfPGD(abs_stepsize=step_pgd, steps=steps, random_start=True), eps_pgd),
                        ),
                    ),
                ),
            )
        )
    cases.append(
        Case(
            "MIM-10",
            f"MIM-{args.mim_steps} 8/255 decay 1{quick}",
            args.mim_steps,
            ours("mim", eps=eps_pgd, step=step_pgd, steps=args.mim_steps),
            bare(args.mim_steps),
            peers=peers(
                (
                    torchattacks,
                    lambda: Peer(
                        "torchattacks MIFGSM",
                        ta(torchattacks.MIFGSM(model, eps=eps_pgd, alpha=step_pgd, steps=args.mim_steps, decay=1.0)),
                    ),
                )
            ),
        )
    )
    cases.append(
        Case(
            "C&W-L2",
            f"C&W-L2 {args.cw_search}x{args.cw_steps} no early abort (untargeted)",
            cw_steps,
            ours("cw-l2", **cw),
            bare(cw_steps),
            peers=peers(
                (
                    foolbox,
                    lambda: Peer(
                        "foolbox L2CarliniWagnerAttack",
                        fb(
                            foolbox.attacks.L2CarliniWagnerAttack(
                                binary_search_steps=args.cw_search,
                                steps=args.cw_steps,
                                stepsize=0.01,
                                initial_const=1e-3,
                                abort_early=False,
                            ),
                            None,
                            zeros_on_failure=True,
                        ),
                    ),
                ),
                # no binary search there: one run of search x steps at c = 1; it stops early when its loss
                # stalls, so its steps are counted
                (
                    torchattacks,
                    lambda: Peer(
                        "torchattacks CW",
                        ta(torchattacks.CW(model, c=1.0, kappa=0.0, steps=cw_steps, lr=0.01), count=True),
                        f"c=1, no search, {cw_steps} steps at most (counted)",
                    ),
                ),
            ),
        )
    )
    cw_wb_case = Case(
        "C&W-wb",
        f"C&W-wb {args.cw_search}x{args.cw_steps} no early abort (targeted, KD term)",
        cw_steps,
        lambda: math.nan,  # built below, when selected (the KD fit costs a pass over the training set)
        bare(cw_steps),
    )
    cases.append(cw_wb_case)
    cases.append(
        Case(
            "SPSA",
            f"SPSA {args.spsa_steps}x{args.spsa_samples} 8/255 margin (forwards: 2 x samples per step)",
            args.spsa_steps * spsa_copies,
            ours(
                "spsa",
                eps=eps_pgd,
                steps=args.spsa_steps,
                samples=args.spsa_samples,
                objective="margin",
                early_stop=False,
                max_batch=spsa_rows(x.device),
            ),
            bare_forwards(args.spsa_steps, spsa_copies),
            unit="fwd",
            peers=peers(
                (
                    torchattacks,
                    lambda: Peer(
                        "torchattacks SPSA",
                        ta(
                            torchattacks.SPSA(
                                model,
                                eps=eps_pgd,
                                delta=0.01,
                                lr=0.01,
                                nb_iter=args.spsa_steps,
                                nb_sample=args.spsa_samples,
                                max_batch_size=spsa_ta_batch,
                            )
                        ),
                        f"max_batch_size {spsa_ta_batch}",
                    ),
                )
            ),
        )
    )
    cases = [case for case in cases if wants(case, args.only)]
    kd_note = None
    if cw_wb_case in cases:
        wb_target, kd_note = build_cw_wb_target(bundle, data, device, bounds, args.quick, precision_kw)
        cw_wb_case.ours = ours("cw-wb", targets, attack_target=wb_target, **cw)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    how = "AttackTarget.precision" if native else "torch.autocast around the attack call"
    print(
        f"device: {device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}, n = {n}, repeats = "
        f"{args.repeats}"
    )
    print(
        f"precision: robench and bare loop {args.precision}{f' ({how})' if args.precision != 'fp32' else ''}; "
        "peers fp32"
    )
    print(f"model: {args.model} ({bundle.meta.arch}, {bundle.meta.defense}, {bundle.meta.dataset})")
    print(
        "img-steps: images x steps, a step one forward + backward per image; "
        "SPSA: images x steps x 2 x samples forwards"
    )
    for note in peer_notes:
        print(f"note: {note}")
    if kd_note:
        print(f"C&W-wb: {kd_note}")

    # warm-up, not timed: CUDA context, cuDNN autotuning, the allocator, and torch.optim.Adam's first step
    # (torchattacks' CW uses it; its first call costs seconds of one-off imports)
    gradient_loop(model, x, y, 1, (low, high), 0.01, args.precision)
    probe = torch.zeros(1, device=device, requires_grad=True)
    optimizer = torch.optim.Adam([probe], lr=0.01)
    probe.sum().backward()
    optimizer.step()
    synchronize(device)

    header = (
        f"{'attack':54} {'robench/s':>11} {'bare/s':>11} {'r/bare':>6}  {'peer':36} {'peer/s':>11} "
        f"{'r/peer':>6} {'r ok':>6} {'peer ok':>7}"
    )
    print(header)
    print("-" * len(header))
    rows: list[dict[str, Any]] = []
    failures = 0

    def attempt(fn: Callable[[], Any]) -> tuple[float, Any, str]:
        """timed(fn), or NaN and the error in one line: one failing measurement must not cost the others."""
        try:
            seconds, out = timed(fn, device, args.repeats)
            return seconds, out, ""
        except Exception as exc:  # noqa: BLE001 - reported in the table and the CSV, and in the exit status
            return math.nan, None, " ".join(f"{type(exc).__name__}: {exc}".split())[:300]

    for case in cases:
        total = n * case.img_steps
        t_ours, s_ours, e_ours = attempt(case.ours)
        t_bare, _, e_bare = attempt(case.bare)
        s_ours = math.nan if e_ours else s_ours
        r_ours, r_bare = rate(total, t_ours), rate(total, t_bare)
        base = {
            "attack": case.key,
            "settings": case.label,
            "unit": case.unit,
            "img_steps": total,
            "robench_img_steps_per_s": r_ours,
            "bare_img_steps_per_s": r_bare,
            "robench_over_bare": r_ours / r_bare,
            "robench_success": s_ours,
            "robench_s": t_ours,
            "bare_s": t_bare,
            "precision": args.precision,
            "peer_precision": "fp32",
            "device": name,
            "n": n,
        }
        errors = [f"robench: {e_ours}"] * bool(e_ours) + [f"bare: {e_bare}"] * bool(e_bare)
        for i, peer in enumerate(case.peers or [None]):
            row = dict(
                base,
                peer="",
                peer_img_steps_per_s=math.nan,
                robench_over_peer=math.nan,
                peer_success=math.nan,
                peer_s=math.nan,
            )
            row_errors = list(errors)
            if peer is not None:
                t_peer, out, e_peer = attempt(peer.run)
                row["peer"] = peer.name + (f" ({peer.note})" if peer.note else "")
                if e_peer:
                    row_errors.append(f"peer: {e_peer}")
                else:
                    s_peer, counted = out
                    r_peer = rate(counted if counted is not None else total, t_peer)
                    row.update(
                        peer_img_steps_per_s=r_peer,
                        robench_over_peer=r_ours / r_peer,
                        peer_success=s_peer,
                        peer_s=t_peer,
                    )
            row["error"] = "; ".join(row_errors)
            failures += bool(row_errors)
            rows.append(row)
            first = i == 0
            print(
                f"{(case.label if first else ''):54.54} {(fmt(r_ours, '11.4g') if first else ''):>11} "
                f"{(fmt(r_bare, '11.4g') if first else ''):>11} "
                f"{(fmt(r_ours / r_bare, '6.2f') if first else ''):>6}  {(row['peer'] or '-'):36.36} "
                f"{fmt(row['peer_img_steps_per_s'], '11.4g'):>11} "
                f"{fmt(row['robench_over_peer'], '6.2f'):>6} {fmt(s_ours, '6.3f'):>6} "
                f"{fmt(row['peer_success'], '7.3f'):>7}"
            )
            for error in row_errors if (first or not errors) else row_errors[len(errors) :]:
                print(f"    failed: {error}")

    print()
    print("reference ratios (not asserted): PGD / MIM / BIM >= 0.95 of bare, C&W >= 0.9 of bare, >= 1.0x torchattacks,")
    print("  >= 1.5x foolbox, with robench's success within 2 points of the peer's")
    for row in rows:
        missed = []
        floor = GOALS["bare"].get(row["attack"])
        if (
            floor is not None
            and row["robench_over_bare"] < floor
            and row["peer"] == rows_first_peer(rows, row["attack"])
        ):
            missed.append(f"{row['robench_over_bare']:.2f} of bare < {floor}")
        if row["peer"]:
            library = row["peer"].split()[0]
            want = GOALS.get(library)
            if isinstance(want, float) and row["robench_over_peer"] < want:
                missed.append(f"{row['robench_over_peer']:.2f}x {library} < {want}")
            gap = 100 * (row["peer_success"] - row["robench_success"])
            if gap > GOALS["success_points"]:
                missed.append(f"success {gap:.1f} points below {library}")
        if missed:
            print(f"  not met: {row['attack']}{' vs ' + row['peer'] if row['peer'] else ''}: {'; '.join(missed)}")

    same = torch.equal(torch.random.get_rng_state(), rng_before)
    if cuda_rng_before is not None:
        same = same and all(torch.equal(a, b) for a, b in zip(torch.cuda.get_rng_state_all(), cuda_rng_before))
    print(f"global RNG left as it was: {'yes' if same else 'NO'}")

    if args.csv is not None:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with args.csv.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=COLUMNS)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})
        print(f"wrote {len(rows)} rows to {args.csv}")
    if failures:
        print(f"{failures} row(s) failed (see 'failed:' above)")
    return 0 if same and not failures else 1


def rows_first_peer(rows: list[dict[str, Any]], attack: str) -> str:
    """The peer of an attack's first row (the bare-loop goal is reported once per attack)."""
    return next(row["peer"] for row in rows if row["attack"] == attack)


if __name__ == "__main__":
    sys.exit(main())
