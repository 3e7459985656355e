"""``torchattacks:NAME``: torchattacks' attacks (Kim 2020, torchattacks 3.5) as robench attacks.

``ATTACKS.get("torchattacks:APGD")`` builds a frozen-dataclass subclass of
:class:`~robench.attacks.library.LibraryAttack` whose fields are ``torchattacks.APGD``'s
constructor parameters (``model`` excluded; ``seed`` comes from robench's generator, ``verbose``
stays off: robench owns the output), typed from their defaults. ``run`` builds the library
attack on the batch's model and calls it.

What the adapter does so that the library runs right inside robench:

- **Bounds.** torchattacks assumes inputs in [0, 1] and clamps there. The attack runs on the
  model wrapped as ``u -> f(low + (high - low) * u)`` with u = (x - low) / (high - low) in
  [0, 1], and the result is mapped back; the parameters in input units (``eps``, ``alpha``,
  ``max_epsilon``; SPSA's ``delta`` and ``lr``, GN's ``std``, PGDRS's ``noise_sd``) are divided
  by ``high - low`` on the way in. robench's parameters are in the model's input units.
- **Budgets.** L-inf attacks default to robench's PGD budget: ``eps`` 8/255, and on MNIST-like
  data eps 0.3 with ``alpha`` 0.01 (paper 004 Fig. 3, after Madry et al.). Classes with a
  ``norm`` parameter (APGD, APGDT, FAB, Square, AutoAttack) take it in robench's spelling
  (``linf``, ``l2``; any case); the budget default stays the L-inf one, so with ``norm=l2`` set
  ``eps`` too. Minimum-norm attacks (CW, DeepFool, EAD, SparseFool, JSMA, OnePixel, Pixle)
  have no budget (``budget_param`` None). torchattacks' FAB keeps an adversarial only within
  ``eps``, so its budget is ``eps``.
- **Classes.** A parameter ``n_classes`` (APGDT, FAB, AutoAttack; library default 10) is the
  model's number of classes unless set.
- **Reproducibility.** The call runs under :func:`~robench.attacks.library.forked_global_rng`,
  seeded (and ``seed`` set) from one draw of robench's generator.
- **Targets.** robench chooses the targets (:mod:`robench.attacks.targets`) and passes them by
  label (``set_mode_targeted_by_label``: the targets in place of the labels). Refused in one
  line: classes whose ``supported_mode`` lacks ``targeted`` (APGD, APGDT, DeepFool, TPGD,
  SparseFool, PIFGSM, GN, AutoAttack ...), ``SPSA`` (it never calls ``get_target_label``: its
  random and least-likely modes attack the true label; use robench's ``spsa``) and ``FAB`` (its
  targeted branch compares the predictions with the labels it is given, here the targets, so it
  skips every sample; its untargeted ``multi_targeted=True`` is AutoAttack's FAB-T).
- **CW.** ``torchattacks.CW`` has no binary search over c, and its f-loss takes
  ``max((1 - one_hot) * logits)``: with every logit negative (the GM and MMC heads output
  negative distances) both maxima are 0 and the attack never moves. robench refuses
  ``torchattacks:CW`` on such a model (a one-line error at its first batch, before the library
  runs) and names its own ``cw-l2``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, make_dataclass
from functools import cache
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

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
    optional_int,
    unknown_library_name,
)
from robench.core.errors import ConfigError

PREFIX = "torchattacks"

# robench's norm of each class (the norm its budget or its minimisation is measured in); classes with a
# ``norm`` parameter take it from that field. GN and VANILA are corruptions ("none").
_L2 = {"CW", "PGDL2", "PGDRSL2", "DeepFool"}
_L1 = {"EADL1", "EADEN"}
_L0 = {"SparseFool", "OnePixel", "Pixle", "JSMA"}
_CORRUPTIONS = {"GN", "VANILA"}
_MIN_NORM = {"CW", "DeepFool", "EADL1", "EADEN", "SparseFool", "JSMA", "OnePixel", "Pixle"}
_SINGLE_STEP = {"FGSM", "FFGSM"}
# Query-only (no gradient of the model): random search, evolution, SPSA's finite differences, noise.
_GRADIENT_FREE = {"Square", "SPSA", "OnePixel", "Pixle", "GN", "VANILA"}
_NORM_OPTIONS = {"FAB": ("Linf", "L2", "L1")}
_DEFAULT_NORM_OPTIONS = ("Linf", "L2")
# Parameters in input units (divided by high - low for the [0, 1] space torchattacks works in).
_SCALED_DEFAULT = frozenset({"eps", "alpha", "max_epsilon"})
_SCALED = {
    "SPSA": frozenset({"eps", "delta", "lr"}),
    "GN": frozenset({"std"}),
    "PGDRS": frozenset({"eps", "alpha", "noise_sd"}),
    "PGDRSL2": frozenset({"eps", "alpha", "noise_sd"}),
}
# The string parameters' options (torchattacks checks them only mid-attack).
_OPTIONS = {
    ("APGD", "loss"): ("ce", "dlr"),
    ("Square", "loss"): ("margin", "ce"),
    ("UPGD", "loss"): ("ce", "dlr", "margin"),
    ("TIFGSM", "kernel_name"): ("gaussian", "linear", "uniform"),
    ("PGDRS", "noise_type"): ("guassian", "uniform"),  # sic: torchattacks' spelling
    ("PGDRSL2", "noise_type"): ("guassian", "uniform"),
    ("Pixle", "pixel_mapping"): ("random", "similarity", "similarity_random", "distance", "distance_random"),
    ("AutoAttack", "version"): ("standard", "plus", "rand"),
}
# int defaults that are real-valued parameters
_FLOATS = frozenset({"c", "kappa", "lam", "scale", "std"})
_OWNED = ("seed", "verbose")  # robench's generator / robench's output
_TARGETED_REFUSALS = {
    "SPSA": "torchattacks' SPSA never calls get_target_label "
    "(its random and least-likely modes attack the true label); use robench's spsa",
    "FAB": "torchattacks' FAB compares its predictions with the labels it is given, "
    "which in targeted mode are the targets, so it attacks nothing; "
    "run it untargeted (multi_targeted=true is AutoAttack's FAB-T)",
}
_LINF_BUDGET, _MNIST_LINF = 8 / 255, {"eps": 0.3}
_MNIST_STEP = 0.01


def _import() -> Any:
    try:
        return importlib.import_module("torchattacks")
    except Exception as error:  # noqa: BLE001 - any import failure: one line naming the package
        raise missing_library(PREFIX, error) from None


@cache
def _classes() -> dict[str, type]:
    """torchattacks' attack classes robench can build: take a model, need nothing else (not MultiAttack, LGV)."""
    ta = _import()
    base = importlib.import_module("torchattacks.attack").Attack
    found = {}
    for name in getattr(ta, "__all__", []):
        cls = getattr(ta, name, None)
        if not isinstance(cls, type) or not issubclass(cls, base):
            continue
        params = constructor_params(cls, 1)
        if not params or params[0].name != "model" or has_required(params[1:]):
            continue
        found[name] = cls
    return found


def names() -> list[str]:
    """The torchattacks classes ``torchattacks:NAME`` accepts (imports torchattacks)."""
    return sorted(_classes())


def _supported_modes(cls: type) -> tuple[str, ...]:
    """The instance's ``supported_mode`` (set in ``__init__``), read from an instance on a one-weight model."""
    try:
        return tuple(cls(nn.Linear(1, 1)).supported_mode)
    except Exception:  # noqa: BLE001 - a constructor that wants a real model: treat as untargeted only
        return ("default",)


@dataclass(frozen=True)
class TorchattacksAttack(LibraryAttack):
    """Base of the generated ``torchattacks:NAME`` classes (see the module docstring)."""

    name: ClassVar[str] = "torchattacks"
    library: ClassVar[str] = PREFIX
    scaled: ClassVar[frozenset[str]] = _SCALED_DEFAULT

    def _library_class(self) -> type:
        return _classes()[self.library_class]

    def _cost_factor(self) -> float:
        classes = getattr(self, "n_classes", None) or 10
        if self.library_class == "APGDT" or (self.library_class == "FAB" and getattr(self, "multi_targeted", False)):
            return float(classes - 1)  # one run per target class
        if self.library_class == "AutoAttack":
            # its standard ensemble with torchattacks' sub-attack defaults: APGD-CE and APGD-T (10 steps, one run per
            # target class), FAB-T (10 steps per target class), Square (5,000 queries); an estimate for ordering only
            return 10.0 * (1 + 2 * (classes - 1)) + 5000.0
        return 1.0

    def library_kwargs(self, target: AttackTarget, width: float, seed: int) -> dict[str, Any]:
        """The constructor's keyword arguments: fields in the library's spelling, input units rescaled to [0, 1]."""
        kwargs: dict[str, Any] = {}
        for key, value in self.params().items():
            if key == "norm":
                value = {"linf": "Linf", "l2": "L2", "l1": "L1"}[value]
            elif key == "n_classes" and value is None:
                value = target.num_classes
            elif key in self.scaled and isinstance(value, (int, float)) and not isinstance(value, bool):
                value = value / width
            kwargs[key] = value
        if "seed" in self.library_params:
            kwargs["seed"] = seed
        if "verbose" in self.library_params:
            kwargs["verbose"] = False
        return kwargs

    def _refuse_for_model(self, module: nn.Module, u: Tensor, y: Tensor, targets: Tensor | None) -> None:
        """Run-time refusals that need the model (before the library runs)."""
        if self.library_class == "CW":
            with torch.no_grad():
                logits = module(u)
            if bool((logits.max(1).values <= 0).any()):
                raise ConfigError(
                    f"attack '{self.name}' cannot attack this model: its logits are all negative "
                    "(a distance head such as GM's or MMC's), "
                    "where torchattacks' CW f-loss, max((1 - one_hot) * logits), is 0 and the attack never moves; "
                    "use robench's cw-l2"
                )
        if self.library_class == "JSMA" and targets is None:
            with torch.no_grad():
                classes = int(module(u[:1]).shape[1])
            if classes != 10:  # its untargeted mode aims at (label + 1) % 10
                raise ConfigError(
                    f"attack '{self.name}' runs untargeted only on 10-class models (it aims at (label + 1) % 10); "
                    "run it targeted"
                )

    def run(
        self, target: AttackTarget, x: Tensor, y: Tensor, targets: Tensor | None, generator: torch.Generator
    ) -> Tensor:
        self._check_targets(targets)
        if x.shape[0] == 0:
            return x.clone()
        bounds = target.bounds
        low, width = float(bounds.low), float(bounds.width)
        module = LibraryModel(target, low, width).eval()
        u = ((x.detach() - low) / width).clamp(0.0, 1.0) if (low, width) != (0.0, 1.0) else x.detach().clamp(0.0, 1.0)
        self._refuse_for_model(module, u, y, targets)
        seed = draw_seed(generator)
        kwargs = self.library_kwargs(target, width, seed)
        with forked_global_rng(seed):
            attack = self._library_call(self._library_class(), module, **kwargs)
            if targets is not None:
                attack.set_mode_targeted_by_label(quiet=True)
            u_adv = self._library_call(attack, u, targets if targets is not None else y)
        u_adv = u_adv.detach().to(device=x.device, dtype=x.dtype)
        x_adv = u_adv if (low, width) == (0.0, 1.0) else low + width * u_adv
        return bounds.clip(x_adv)  # float rounding of the mapping only: torchattacks' output lies in [0, 1]


def _norm_of(name: str, params: list[str]) -> str:
    if "norm" in params:
        return "linf"  # the field's default; an instance's own ``norm`` field overrides it
    if name in _CORRUPTIONS:
        return "none"
    return "l2" if name in _L2 else "l1" if name in _L1 else "l0" if name in _L0 else "linf"


def build(name: str) -> type[TorchattacksAttack]:
    """The robench attack class for ``torchattacks.NAME`` (did-you-mean over the classes robench can run)."""
    classes = _classes()
    if name not in classes:
        raise unknown_library_name(PREFIX, name, list(classes), str(getattr(_import(), "__version__", "?")))
    lib = classes[name]
    params = constructor_params(lib, 2)
    fields: list[tuple[str, Any, Any]] = []
    for p in params:
        if p.name in _OWNED:
            continue
        if p.name == "norm" and isinstance(p.default, str):
            fields.append(
                ("norm", str, case_insensitive_choice(p.default, _NORM_OPTIONS.get(name, _DEFAULT_NORM_OPTIONS)))
            )
            continue
        if p.name == "n_classes":
            fields.append(("n_classes", int | None, optional_int(None, 2, "None: the model's")))
            continue
        default = p.default
        norm = _norm_of(name, [q.name for q in params])
        if p.name == "eps" and norm == "linf" and name not in _CORRUPTIONS:
            default = _LINF_BUDGET
        made = library_field(p.name, default, options=_OPTIONS.get((name, p.name)), floats=_FLOATS)
        if made is not None:
            fields.append((p.name, made[0], made[1]))
    field_names = {f[0] for f in fields}
    norm = _norm_of(name, [p.name for p in params])
    family: dict[str, dict[str, Any]] = {}
    if norm == "linf" and "eps" in field_names and name not in _CORRUPTIONS:
        family = {"mnist": dict(_MNIST_LINF, **({"alpha": _MNIST_STEP} if {"alpha", "steps"} <= field_names else {}))}
    budget = (
        None
        if name in _MIN_NORM or name == "VANILA"
        else "max_epsilon"
        if "max_epsilon" in field_names
        else "std"
        if name == "GN"
        else "eps"
        if "eps" in field_names
        else None
    )
    modes = _supported_modes(lib)
    refusal = _TARGETED_REFUSALS.get(name) or (
        None if "targeted" in modes else f"torchattacks' {name} supports only {', '.join(modes)} mode (supported_mode)"
    )
    namespace: dict[str, Any] = {
        "name": f"{PREFIX}:{name}",
        "description": f"torchattacks {getattr(_import(), '__version__', '')} {name} (adapter): {first_doc_line(lib)}",
        "library_class": name,
        "library_params": tuple(p.name for p in params),
        "gradient_free": name in _GRADIENT_FREE,
        "targeted_refusal": refusal,
        "iterative": name not in _SINGLE_STEP and name not in _CORRUPTIONS,
        "single_step": name in _SINGLE_STEP,
        "budget_param": budget,
        "family_defaults": family,
        "scaled": _SCALED.get(name, _SCALED_DEFAULT),
        "__module__": __name__,
    }
    if "norm" not in field_names:
        namespace["norm"] = norm
    annotations_only = [(f[0], f[1], f[2]) for f in fields]
    cls = make_dataclass(
        f"Torchattacks_{name}", annotations_only, bases=(TorchattacksAttack,), frozen=True, namespace=namespace
    )
    return cls


ATTACKS.add_resolver(PREFIX, build, names)

__all__ = ["PREFIX", "TorchattacksAttack", "build", "names"]
