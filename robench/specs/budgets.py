"""The nominal budgets of each dataset family, where each comes from, and a threat's budgets in a run.

A threat's worst case is stated at each of its budgets (:mod:`robench.scoring.worst_case`). Its
budgets, in order of precedence:

1. the run's own (``--budget linf:0.1``, a suite's ``budgets``), for every attack threat of the run;
2. the threat's own per family (``ThreatModel.budgets``, a threat file's ``[budgets]``);
3. the family's nominal budgets below, in the norms of the threat's attacks (an attack's ``norm``:
   PGD's L-inf, C&W's L2): a threat of L-inf attacks only gets no L2 worst case unless asked.

Budgets are in the model's input units (pixels in [0, 1] for the bundled models), as the attacks'
``eps``. Sources:

- MNIST-like, L-inf 0.1: 001 Sec. 4.4.1 ("For the FGSM, the l_inf constraint eps = 0.1 for images
  with pixel values in range [-0.5, 0.5]", a range of width 1 as robench's [0, 1]).
- MNIST-like, L-inf 0.2: 001 Sec. 4.4.1's BIM and ILCM, 20 iterations of step 0.01: the farthest
  they reach (robench's ``bim`` default eps, attacks/linf.py).
- MNIST-like, L-inf 0.3: 004 Fig. 3(b) ("eps = 0.3 with step size of 0.01"), after Madry et al. 2018.
- MNIST-like, L2 2.0: the MNIST L2 budget of Ding et al. 2020 (MMA training, ICLR), whose
  evaluation script (BorealisAI/mma_training, ``attack_mnist_models.sh``) runs
  ``evaluate_on_pgd_attacks.py --dataset mnist --norm L2 --eps 2.``; no robench paper states an
  MNIST L2 budget.
  L2 1.0 is a tighter point beside it, robench's choice (no source).
- CIFAR-like, L-inf 8/255 and 16/255: 004 Sec. 4.3 ("we choose the perturbation eps = 8/255 and
  16/255"); 8/255 is also RobustBench's CIFAR-10 L-inf budget (Croce et al. 2021).
- CIFAR-like, L2 0.5: RobustBench's CIFAR-10 L2 budget (Croce et al. 2021).
- SVHN: no source here states one; robench takes the CIFAR-like L-inf 8/255, a convention.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from robench.core.errors import ConfigError
from robench.scoring.budgets import Budget, norms_of, parse_budgets

NOMINAL: dict[str, tuple[Budget, ...]] = {
    "mnist": (
        Budget("linf", 0.1),
        Budget("linf", 0.2),
        Budget("linf", 0.3),
        Budget("l2", 1.0),
        Budget("l2", 2.0),
    ),
    "cifar10": (Budget("linf", 8 / 255), Budget("linf", 16 / 255), Budget("l2", 0.5)),
    "cifar100": (Budget("linf", 8 / 255), Budget("linf", 16 / 255), Budget("l2", 0.5)),
    "svhn": (Budget("linf", 8 / 255),),
}


def nominal(family: str | None, norms: Sequence[str]) -> tuple[Budget, ...]:
    """The family's nominal budgets in ``norms`` (none for a family without any)."""
    return tuple(b for b in NOMINAL.get(family or "", ()) if b.norm in norms)


def resolve(
    attack_norms: Sequence[str],
    family: str | None,
    own: Mapping[str, Sequence[str]] | None,
    run: Sequence[str],
) -> tuple[Budget, ...]:
    """A threat's budgets in a run (the module docstring's precedence); none for a threat without an attack norm
    (noise, rotation)."""
    norms = norms_of(Budget(n, 0.0) for n in attack_norms if n in ("linf", "l2"))
    if not norms:
        return ()
    if run:
        return parse_budgets(run)
    if own is not None and family in own:
        return parse_budgets(own[family])
    return parse_budgets(nominal(family, norms))


def check_own(name: str, own: object) -> dict[str, tuple[str, ...]] | None:
    """A threat's own budgets ``{family: ["linf:0.3", ...]}``, checked (one-line ConfigError)."""
    if own is None:
        return None
    if not isinstance(own, Mapping):
        raise ConfigError(f"threat '{name}': budgets must map a dataset family to a list of NORM:EPS, got {own!r}")
    out = {}
    for family, texts in own.items():
        if not isinstance(texts, (list, tuple)):
            raise ConfigError(f"threat '{name}': budgets for '{family}' must be a list of NORM:EPS, got {texts!r}")
        parse_budgets(texts)
        out[str(family)] = tuple(str(t) for t in texts)
    return out
