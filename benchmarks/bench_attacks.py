"""Time robench's attacks against torchattacks and foolbox on the same model and inputs.

Usage::

    python benchmarks/bench_attacks.py --model reports/models/softmax.pt --n 500 [--device auto] [--repeats 3]

Prints, per attack, robench's and the peer's median wall time over ``--repeats``
runs and their ratio (peer / robench: > 1 means robench is faster), plus each
one's success rate, so a speed-up never hides a weaker attack. All attacks see
the same inputs, labels and targets; CUDA timings synchronise the device.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import robench
from robench.attacks import ATTACKS, AttackTarget, Bounds
from robench.attacks.targets import choose_targets
from robench.core.data import load_dataset
from robench.core.devices import resolve_device


def timed(fn, device: torch.device, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        tic = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - tic)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cw-steps", type=int, default=100)
    parser.add_argument("--cw-search", type=int, default=5)
    parser.add_argument("--spsa-steps", type=int, default=10)
    parser.add_argument("--spsa-samples", type=int, default=128)
    parser.add_argument("--only", action="append", default=[], help="Run only the cases whose label starts with this (repeatable).")
    args = parser.parse_args()

    import foolbox
    import torchattacks

    device = resolve_device(args.device)
    bundle = robench.load_bundle(args.model, device=device)
    model = bundle.model.eval()
    data = load_dataset(bundle.meta.dataset, split_seed=bundle.meta.split_seed)
    x, y = data.test.x[: args.n].to(device), data.test.y[: args.n].to(device)
    target = AttackTarget(model, bundle.defense, Bounds(*bundle.meta.value_range))
    with torch.no_grad():
        targets = choose_targets("random", model(x), y, torch.Generator().manual_seed(0))

    def ours(name, tgt=None, **params):
        attack = ATTACKS.get(name).from_params(params)
        return lambda: attack(target, x, y, tgt, generator=torch.Generator().manual_seed(0)).success.float().mean().item()

    def torchattacks_global_rng(go):
        # torchattacks' SPSA draws from the global RNG: fork it so the benchmark leaves it as it was
        def wrapped():
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(0)
                return go()
        return wrapped

    def theirs(attack, tgt=None):
        if tgt is not None:
            attack.set_mode_targeted_by_function(lambda images, labels: tgt)
        def go():
            adv = attack(x, y)
            with torch.no_grad():
                pred = model(adv).argmax(1)
            return (pred == tgt if tgt is not None else pred != y).float().mean().item()
        return go

    cw = dict(binary_search_steps=args.cw_search, steps=args.cw_steps, lr=0.01, initial_const=1e-3, abort_early=False)
    fb_model = foolbox.PyTorchModel(model, bounds=bundle.meta.value_range, device=device)
    fb_cw = foolbox.attacks.L2CarliniWagnerAttack(binary_search_steps=args.cw_search, steps=args.cw_steps, stepsize=0.01, initial_const=1e-3, abort_early=False)

    def foolbox_cw():
        _, clipped, success = fb_cw(fb_model, x, foolbox.criteria.Misclassification(y), epsilons=None)
        return success.float().mean().item()

    cases = [
        ("FGSM eps 0.1 (targeted)", ours("fgsm", targets, eps=0.1), "torchattacks", theirs(torchattacks.FGSM(model, eps=0.1), targets)),
        ("BIM 20x0.01 (targeted)", ours("bim", targets, eps=0.2, step=0.01, steps=20), "torchattacks", theirs(torchattacks.BIM(model, eps=0.2, alpha=0.01, steps=20), targets)),
        ("PGD-10 8/255", ours("pgd", eps=8 / 255, step=2 / 255, steps=10), "torchattacks", theirs(torchattacks.PGD(model, eps=8 / 255, alpha=2 / 255, steps=10))),
        ("PGD-50 8/255", ours("pgd", eps=8 / 255, step=2 / 255, steps=50), "torchattacks", theirs(torchattacks.PGD(model, eps=8 / 255, alpha=2 / 255, steps=50))),
        ("MIM-10 8/255", ours("mim", eps=8 / 255, step=2 / 255, steps=10), "torchattacks", theirs(torchattacks.MIFGSM(model, eps=8 / 255, alpha=2 / 255, steps=10))),
        (f"C&W-L2 {args.cw_search}x{args.cw_steps} (untargeted)", ours("cw-l2", **cw), "foolbox", foolbox_cw),
        # the margin objective on both sides (torchattacks' loss); 8/255 as for PGD
        (
            f"SPSA {args.spsa_steps}x{args.spsa_samples} 8/255",
            ours("spsa", eps=8 / 255, steps=args.spsa_steps, samples=args.spsa_samples, objective="margin", early_stop=False),
            "torchattacks",
            torchattacks_global_rng(theirs(torchattacks.SPSA(model, eps=8 / 255, delta=0.01, lr=0.01, nb_iter=args.spsa_steps, nb_sample=args.spsa_samples, max_batch_size=args.spsa_samples))),
        ),
    ]
    print(f"device: {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), model: {args.model}, n = {len(x)}, repeats = {args.repeats}")
    print(f"{'attack':32} {'robench s':>10} {'peer':>13} {'peer s':>10} {'ratio':>7} {'ours ok':>8} {'peer ok':>8}")
    for label, mine, peer_name, peer in cases:
        if args.only and not any(label.startswith(prefix) for prefix in args.only):
            continue
        t_ours, s_ours = timed(mine, device, args.repeats)
        t_peer, s_peer = timed(peer, device, args.repeats)
        print(f"{label:32} {t_ours:10.3f} {peer_name:>13} {t_peer:10.3f} {t_peer / t_ours:7.2f} {s_ours:8.3f} {s_peer:8.3f}")


if __name__ == "__main__":
    main()
