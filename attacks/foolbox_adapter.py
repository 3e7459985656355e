"""``foolbox:NAME``: foolbox 3's attacks (Rauber et al. 2017, 2020) as robench attacks.

``ATTACKS.get("foolbox:LinfPGD")`` builds a frozen-dataclass subclass of
:class:`~robench.attacks.library.LibraryAttack` whose fields are the foolbox class's
constructor parameters (typed from foolbox's annotations; parameters that take objects, such
as ``init_attack`` or ``tensorboard``, stay at foolbox's default), plus:

- ``eps`` for a fixed-epsilon attack (``FixedEpsilonAttack``: PGD, BIM, FGSM, MI-FGSM, the
  additive-noise attacks, ...), passed as foolbox's ``epsilons``, in the model's input units.
  Defaults: L-inf 8/255 and on MNIST-like data 0.3 (robench's PGD budget); L2 0.5 (2.0 on
  MNIST-like data); L1 12 (10 on MNIST-like data). foolbox clips the result to ``eps``.
- none for a minimisation attack (``MinimizationAttack``: DeepFool, C&W, FMN, DDN, EAD,
  Boundary, HopSkipJump, ...): robench calls it with ``epsilons=None`` (unbounded,
  ``budget_param`` None). Where foolbox reports a failure the clean input is returned: its C&W
  returns an all-zero image where it found nothing, which the model may well misclassify.
- ``norm`` for the attacks whose distance is a parameter (``distance`` of the flexible-distance
  attacks, HopSkipJump's ``constraint``): ``l0``, ``l1``, ``l2``, ``linf``.

The model is passed with robench's bounds (``PyTorchModel(model, bounds=(low, high))``) on the
inputs' device. foolbox draws from the global torch RNG (random starts, noise): the call runs
under :func:`~robench.attacks.library.forked_global_rng`, seeded from robench's generator.

Targets: ``TargetedMisclassification(targets)`` for the attacks that implement it (the gradient
descent family, C&W, DDN, EAD, FMN; GenAttack is targeted only); the others are refused in one
line for a targeted mode (DeepFool, NewtonFool, the noise and decision-based attacks: Boundary,
HopSkipJump and Brendel-Bethge would need starting points of the target class).
"""

from __future__ import annotations

import importlib
import inspect
import math
from dataclasses import dataclass, make_dataclass
from functools import cache
from typing import Any, ClassVar

import torch
from torch import Tensor

from robench.attacks.base import ATTACKS, AttackTarget
from robench.attacks.library import (
    LibraryAttack,
    LibraryModel,
    case_insensitive_choice,
    constructor_params,
    draw_seed,
    first_doc_line,
    forked_global_rng,
    has_required,
    library_field,
    missing_library,
    unknown_library_name,
)
from robench.core.config import finite

PREFIX = "foolbox"

# Classes (or their bases, by name) that implement TargetedMisclassification; GenAttack implements nothing else.
_TARGETED_BASES = {"BaseGradientDescent", "L2CarliniWagnerAttack", "DDNAttack", "EADAttack", "FMNAttackLp", "GenAttack"}
_TARGETED_ONLY = {"GenAttack"}
# Query-only attacks (decision-based, score-based, noise, blur, contrast): no gradient of the model.
_GRADIENT_FREE_BASES = {
    "BoundaryAttack", "HopSkipJumpAttack", "PointwiseAttack", "SaltAndPepperNoiseAttack",
    "LinearSearchBlendedUniformNoiseAttack", "GaussianBlurAttack", "BinarySearchContrastReductionAttack",
    "LinearSearchContrastReductionAttack", "L2ContrastReductionAttack",
    "InversionAttack", "GenAttack", "BaseAdditiveNoiseAttack", "BaseRepeatedAdditiveNoiseAttack",
}  # fmt: skip
_SINGLE_STEP_BASES = {"L1FastGradientAttack", "L2FastGradientAttack", "LinfFastGradientAttack"}
# Not offered: DatasetAttack needs a fed dataset, BinarizationRefinementAttack starting points
# (its run() requires them).
_EXCLUDED = {"DatasetAttack", "BinarizationRefinementAttack"}
_OWNED = ("tensorboard",)  # robench writes no logs of its own choosing
_NORMS = ("l0", "l1", "l2", "linf")
# Fixed-epsilon budgets: {norm: (default, MNIST-like default)}.
_BUDGETS = {"linf": (8 / 255, 0.3), "l2": (0.5, 2.0), "l1": (12.0, 10.0)}


def _import() -> Any:
    try:
        return importlib.import_module("foolbox")
    except Exception as error:  # noqa: BLE001 - any import failure: one line naming the package
        raise missing_library(PREFIX, error) from None


def _bases(cls: type) -> set[str]:
    return {c.__name__ for c in cls.__mro__}


@cache
def _classes() -> dict[str, type]:
    """foolbox's attack classes (and their aliases, LinfPGD, FGSM ...) robench can run."""
    fb = _import()
    attacks = fb.attacks
    fixed, minimization = attacks.base.FixedEpsilonAttack, attacks.base.MinimizationAttack
    found = {}
    for name in dir(attacks):
        cls = getattr(attacks, name)
        if not isinstance(cls, type) or not issubclass(cls, (fixed, minimization)) or inspect.isabstract(cls):
            continue
        if cls.__name__ in _EXCLUDED or has_required(constructor_params(cls, 1)):
            continue
        found[name] = cls
    return found


def names() -> list[str]:
    """The foolbox classes ``foolbox:NAME`` accepts (imports foolbox)."""
    return sorted(_classes())


def _default_norm(cls: type) -> str | None:
    """The norm of an instance's ``distance`` with the constructor's defaults (a class attribute or a property),
    else None."""
    try:
        distance = cls().distance
    except Exception:  # noqa: BLE001 - flexible-distance attacks raise until given a distance
        return None
    p = getattr(distance, "p", None)
    if p is None:
        return None
    return "linf" if math.isinf(p) else f"l{int(p)}"


def _distance(norm: str) -> Any:
    return getattr(importlib.import_module("foolbox.distances"), norm)


@dataclass(frozen=True)
class FoolboxAttack(LibraryAttack):
    """Base of the generated ``foolbox:NAME`` classes (see the module docstring)."""

    name: ClassVar[str] = "foolbox"
    library: ClassVar[str] = PREFIX
    minimization: ClassVar[bool] = False

    def _library_class(self) -> type:
        return _classes()[self.library_class]

    def library_kwargs(self) -> dict[str, Any]:
        """The constructor's keyword arguments: fields in foolbox's spelling
        (``norm`` -> ``distance`` / ``constraint``)."""
        kwargs: dict[str, Any] = {}
        for key, value in self.params().items():
            if key == "eps":
                continue  # the call's epsilons, not a constructor parameter
            library_key = self.renamed.get(key, key)
            if library_key == "distance":
                value = _distance(value)
            kwargs[library_key] = value
        return kwargs

    def run(
        self, target: AttackTarget, x: Tensor, y: Tensor, targets: Tensor | None, generator: torch.Generator
    ) -> Tensor:
        self._check_targets(targets)
        if x.shape[0] == 0:
            return x.clone()
        fb = _import()
        bounds = target.bounds
        model = fb.PyTorchModel(
            LibraryModel(target).eval(), bounds=(float(bounds.low), float(bounds.high)), device=x.device
        )
        inputs = bounds.clip(x.detach())  # foolbox asserts the bounds exactly; robench admits a rounding tolerance
        criterion = (
            fb.criteria.TargetedMisclassification(targets) if targets is not None else fb.criteria.Misclassification(y)
        )
        epsilon = None if self.minimization else float(getattr(self, "eps"))
        with forked_global_rng(draw_seed(generator)):
            attack = self._library_call(self._library_class(), **self.library_kwargs())
            _, clipped, found = self._library_call(attack, model, inputs, criterion, epsilons=epsilon)
        x_adv = clipped.detach().to(dtype=x.dtype)
        if self.minimization:  # a failure's output is whatever foolbox left there (C&W: zeros): the clean input instead
            x_adv = torch.where(found.to(torch.bool).view(-1, *([1] * (x.ndim - 1))), x_adv, x.detach())
        return bounds.clip(x_adv)


def build(name: str) -> type[FoolboxAttack]:
    """The robench attack class for ``foolbox.attacks.NAME`` (did-you-mean over the classes robench can run)."""
    classes = _classes()
    if name not in classes:
        raise unknown_library_name(PREFIX, name, list(classes), str(getattr(_import(), "__version__", "?")))
    lib = classes[name]
    bases = _bases(lib)
    minimization = issubclass(lib, _import().attacks.base.MinimizationAttack)
    params = constructor_params(lib, 1)
    fields: list[tuple[str, Any, Any]] = []
    renamed: dict[str, str] = {}
    norm = _default_norm(lib)
    for p in params:
        if p.name in _OWNED:
            continue
        if p.name == "distance":  # flexible-distance attacks: robench's norm field, l2 by default
            fields.append(("norm", str, case_insensitive_choice("l2", _NORMS)))
            renamed["norm"] = "distance"
            continue
        if p.name == "constraint" and isinstance(p.default, str):  # HopSkipJump's linf / l2
            fields.append(("norm", str, case_insensitive_choice(p.default, ("l2", "linf"))))
            renamed["norm"] = "constraint"
            continue
        made = library_field(p.name, p.default, p.annotation)
        if made is not None:
            fields.append((p.name, made[0], made[1]))
    namespace: dict[str, Any] = {}
    family: dict[str, dict[str, Any]] = {}
    if not minimization:
        budget, mnist = _BUDGETS.get(norm or "linf", _BUDGETS["linf"])
        fields.insert(
            0,
            ("eps", float, finite(budget, low=0, low_open=True, note="foolbox's epsilons, in the model's input units")),
        )
        family = {"mnist": {"eps": mnist}}
    if "norm" not in renamed:
        namespace["norm"] = norm or "l2"
    targeted = bool(bases & _TARGETED_BASES)
    namespace.update(
        {
            "name": f"{PREFIX}:{name}",
            "description": f"foolbox {getattr(_import(), '__version__', '')} {lib.__name__} (adapter): "
            f"{first_doc_line(lib)}",
            "library_class": name,
            "library_params": tuple(p.name for p in params),
            "renamed": renamed,
            "minimization": minimization,
            "gradient_free": bool(bases & _GRADIENT_FREE_BASES),
            "targeted_refusal": None
            if targeted
            else f"foolbox's {lib.__name__} does not implement TargetedMisclassification",
            "untargeted_refusal": f"foolbox's {lib.__name__} implements only TargetedMisclassification"
            if bases & _TARGETED_ONLY
            else None,
            "iterative": not bases & _SINGLE_STEP_BASES,
            "single_step": bool(bases & _SINGLE_STEP_BASES),
            "budget_param": None if minimization else "eps",
            "family_defaults": family,
            "__module__": __name__,
        }
    )
    return make_dataclass(f"Foolbox_{name}", fields, bases=(FoolboxAttack,), frozen=True, namespace=namespace)


ATTACKS.add_resolver(PREFIX, build, names)

__all__ = ["PREFIX", "FoolboxAttack", "build", "names"]
