"""Lower-precision attack loops (bf16 / fp16 autocast) whose every judgement is made again in fp32."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
import torch

from robench.attacks import ATTACKS, AttackTarget, Bounds
from robench.attacks.base import Attack, Crafted
from robench.attacks.targets import choose_targets
from robench.core.errors import ConfigError
from robench.core.precision import check_precision
from robench.runs.runner import RunConfig, run

ROOT = Path(__file__).resolve().parents[1]
GM = ROOT / "reports" / "regression" / "models" / "gm.pt"


@dataclass(frozen=True)
class _Liar(Attack):
    """Returns the given inputs claiming its criterion was met; its fp32 criterion says it was not."""

    name: ClassVar[str] = "liar"
    description: ClassVar[str] = "test double"
    seen_autocast: ClassVar[list] = []

    def run(self, target, x, y, targets, generator):
        _Liar.seen_autocast.append(torch.is_autocast_enabled("cpu"))
        return Crafted(x.clone(), torch.ones(len(y), dtype=torch.bool))

    def criterion(self, target, x, y, targets, forward):
        return torch.zeros(len(y), dtype=torch.bool)


def _target(bundle, precision: str) -> AttackTarget:
    return AttackTarget(bundle["softmax"].model, bundle["softmax"].defense, Bounds(0.0, 1.0), precision=precision)


def test_unknown_precision_is_a_one_line_error():
    with pytest.raises(ConfigError, match="bf16"):
        check_precision("bf61")
    with pytest.raises(ConfigError, match="precision"):
        RunConfig(model=GM, threat="noise", precision="fp8")


def test_a_criterion_met_only_at_low_precision_never_counts(trained_tiny):
    data = trained_tiny["data"]
    model = trained_tiny["softmax"].model
    x = data.test.x[:16]
    with torch.no_grad():
        y = (
            model(x).argmax(1) + 1
        ) % 10  # labels the model gets wrong: "adversarial" as returned, if the criterion held
    wrong = torch.ones(16, dtype=torch.bool)
    _Liar.seen_autocast.clear()
    fp32 = _Liar()(_target(trained_tiny, "fp32"), x, y, generator=torch.Generator())
    bf16 = _Liar()(_target(trained_tiny, "bf16"), x, y, generator=torch.Generator())
    assert _Liar.seen_autocast == [False, True]  # run() under autocast only at bf16
    assert torch.equal(fp32.success, wrong)  # fp32: the loop's own criterion is trusted
    assert not bf16.success.any()  # bf16: judged again in fp32, and it fails there


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_low_precision_cw_successes_hold_in_fp32(trained_tiny, precision):
    data = trained_tiny["data"]
    bundle = trained_tiny["softmax"]
    x, y = data.test.x[:24], data.test.y[:24]
    target = AttackTarget(bundle.model, bundle.defense, Bounds(0.0, 1.0), precision=precision)
    with torch.no_grad():
        targets = choose_targets("random", bundle.model(x), y, torch.Generator().manual_seed(0))
    attack = ATTACKS.get("cw-l2")(binary_search_steps=2, steps=40, lr=0.1, initial_const=1.0, kappa=1.0)
    result = attack(target, x, y, targets, generator=torch.Generator())
    assert result.x_adv.dtype == torch.float32
    with torch.no_grad():
        logits = bundle.model(result.x_adv)  # fp32, autocast off
    other = logits.clone()
    other[torch.arange(len(y)), targets] = -torch.inf
    fp32_criterion = (logits.argmax(1) == targets) & (
        logits[torch.arange(len(y)), targets] - other.max(1).values >= 1.0
    )
    assert result.success.any()
    assert not (result.success & ~fp32_criterion).any()


def test_runs_at_bf16_are_their_own_parts_and_say_so(tmp_path):
    base = dict(
        model=GM,
        threat="semi-white-box",
        attacks=("FGSM", "PGD-10-un"),
        n=16,
        batch_size=16,
        device="cpu",
        detectors=("max-prob",),
        sanity=False,
    )
    out = tmp_path / "out"
    fp32 = run(RunConfig(**base), out, progress=False)
    bf16 = run(RunConfig(**base, precision="bf16"), out, progress=False)
    assert bf16.info["parts"]["reused"] == 0  # a precision is part of a part's key
    assert bf16.info["execution"]["precision"] == "bf16" and fp32.info["execution"]["precision"] == "fp32"
    a = fp32.summary.set_index(["attack", "detector"])["success_rate"]
    b = bf16.summary.set_index(["attack", "detector"])["success_rate"]
    assert (
        a - b
    ).abs().max() <= 0.25  # the same attacks, close on a tiny n (docs/results.md gives the measured agreement)
