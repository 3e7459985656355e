"""The peer libraries' attacks inside robench: ``torchattacks:NAME`` and ``foolbox:NAME``.

``ATTACKS.get("torchattacks:APGD")`` builds (once, then from a cache) a frozen-dataclass
:class:`~robench.attacks.base.Attack` subclass for the library class ``APGD``
(:mod:`robench.attacks.torchattacks_adapter`, :mod:`robench.attacks.foolbox_adapter`), so a
library attack is a robench attack like any other: in ``--attack``, ``--set`` and suites, with
robench's final ``__call__`` checking the bounds and judging success from the model's own
prediction (never the library's claim). This module holds what both adapters share:

- :class:`LibraryAttack`, the adapters' base: where a library attack may run (a gradient-based
  one needs the model's gradients: not on a query-only black-box threat, nor on ``none``), which
  target modes it runs correctly (the rest are refused in one line when the run is prepared,
  :meth:`LibraryAttack.check_spec`), and its cost estimate for the cascade's order.
- :func:`library_fields`: dataclass fields from the library constructor's signature (the type
  from the annotation, else from the default), with constraints, so ``--set`` is type-checked.
- Reproducibility: both libraries draw from the *global* torch RNG (torchattacks' random starts,
  foolbox's ``ep.uniform``) and torchattacks' APGD / APGDT / FAB / Square even call
  ``torch.random.manual_seed(self.seed)``. :func:`forked_global_rng` runs the library call on a
  forked global RNG seeded from one integer drawn from robench's ``torch.Generator``
  (:func:`draw_seed`), which also fills the library's own ``seed`` parameter; the global RNG is
  the same after the call as before it.
- :class:`LibraryModel`: the model as the library sees it, an ``nn.Module`` whose output is
  robench's logits (``AttackTarget.forward``, so bf16 / fp16 attack loops work as for robench's
  own attacks), optionally on inputs rescaled from [0, 1] (torchattacks assumes [0, 1]).
"""

from __future__ import annotations

import inspect
import math
import types
import typing
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from robench.attacks.base import Attack, AttackTarget
from robench.core.config import Constraint, boolean, choice, constrained, finite, integer, positive_int
from robench.core.errors import ConfigError, RobenchError
from robench.core.registry import did_you_mean

# Accesses (robench.specs.threats.ACCESS) on which a library attack may run.
_NO_ATTACKER = "none"
_QUERY_ONLY = "black-box"

# Count-like parameters (>= 1) and what multiplies into cost(); the rest of the ints are >= 0.
_COUNTS = {
    "steps", "n_restarts", "restarts", "n_queries", "nb_iter", "nb_sample", "max_batch_size", "eot_iter",
    "binary_search_steps", "max_iterations", "pixels", "popsize", "inf_batch", "noise_batch_size", "batch_max",
    "num_iter_set", "N", "m", "len_kernel", "repeats", "directions", "population", "initial_gradient_eval_steps",
    "max_gradient_eval_steps", "update_stats_every_k", "lr_num_decay", "num_translations", "num_rotations",
    "random_steps", "n_classes", "candidates",
}  # fmt: skip
_STEP_COUNTS = ("steps", "nb_iter", "n_queries", "max_iterations", "num_iter_set")
_REPEAT_COUNTS = ("n_restarts", "restarts", "binary_search_steps", "eot_iter", "repeats")


def draw_seed(generator: torch.Generator) -> int:
    """One integer in [0, 2**31 - 1) from robench's generator: the library call's whole randomness."""
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=generator.device).item())


@contextmanager
def forked_global_rng(seed: int) -> Iterator[None]:
    """Run the block on a forked global torch RNG (CPU and every initialised CUDA device) seeded with ``seed``.

    ``torch.random.fork_rng`` restores the CPU and the listed CUDA generators afterwards, so the
    library's draws and its own ``torch.random.manual_seed`` calls leave the global RNG as it was.
    A ``manual_seed`` on a machine whose CUDA is not initialised (a CPU run) is queued by torch
    for CUDA's first use; that queue is restored too.
    """
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    devices = list(range(torch.cuda.device_count())) if cuda else []
    tracker = getattr(torch.cuda, "_lazy_seed_tracker", None) if not cuda else None
    queued = (
        {k: list(v) if isinstance(v, list) else v for k, v in vars(tracker).items()} if tracker is not None else None
    )
    try:
        with torch.random.fork_rng(devices=devices):
            torch.random.default_generator.manual_seed(seed)
            for index in devices:
                torch.cuda.default_generators[index].manual_seed(seed)
            yield
    finally:
        if tracker is not None and queued is not None:
            vars(tracker).clear()
            vars(tracker).update(queued)


class LibraryModel(nn.Module):
    """The evaluated model as a library sees it: inputs -> robench's logits.

    With ``low`` / ``width`` the inputs are u in [0, 1] and the model sees ``low + width * u``
    (torchattacks clamps to a hard-coded [0, 1]; robench's bounds are the model's own).
    The logits come from ``AttackTarget.forward``: under a bf16 / fp16 attack loop the backbone
    runs at that precision and the head in fp32, as for robench's own attacks.
    """

    def __init__(self, target: AttackTarget, low: float = 0.0, width: float = 1.0) -> None:
        super().__init__()
        self.model = target.model  # a submodule: the libraries find the device from its parameters
        self._target = target
        self._low, self._width = float(low), float(width)

    def forward(self, u: Tensor) -> Tensor:
        x = u if (self._low, self._width) == (0.0, 1.0) else self._low + self._width * u
        return self._target.forward(x).logits


@dataclass(frozen=True)
class LibraryAttack(Attack):
    """Base of the adapters' generated classes (not registered): one subclass per library class.

    Class attributes the adapters set: ``library`` and ``library_class`` (the class's name in
    its library), ``gradient_free`` (queries only: may run on a black-box query threat),
    ``targeted_refusal`` / ``untargeted_refusal`` (why a target mode is refused; None: it runs
    correctly), and ``library_params`` (the constructor's parameter names; fields renamed from
    them in ``renamed``).
    """

    name: ClassVar[str] = "library"
    description: ClassVar[str] = "an attack of a peer library"
    library: ClassVar[str] = ""
    library_class: ClassVar[str] = ""
    gradient_free: ClassVar[bool] = False
    targeted_refusal: ClassVar[str | None] = None
    untargeted_refusal: ClassVar[str | None] = None
    library_params: ClassVar[tuple[str, ...]] = ()
    renamed: ClassVar[Mapping[str, str]] = {}  # robench field -> library parameter

    def __post_init__(self) -> None:
        super().__post_init__()
        norm = getattr(self, "norm", None)  # a ``norm`` field (APGD's, Square's ...) is stored in robench's spelling
        if "norm" in self.params() and isinstance(norm, str) and norm != norm.lower():
            object.__setattr__(self, "norm", norm.lower())

    @classmethod
    def check_spec(cls, *, label: str, threat: str, access: str, needs_substitute: bool, target_mode: str) -> None:
        """Refuse, in one line, a threat or target mode this attack cannot run correctly
        (called when a run is prepared)."""
        what = f"attack '{label}' ({cls.name})"
        if access == _NO_ATTACKER:
            raise ConfigError(
                f"{what} cannot join threat '{threat}': it has no attacker (access '{access}'); "
                "add it to a threat with an attacker"
            )
        if access == _QUERY_ONLY and not needs_substitute and not cls.gradient_free:
            raise ConfigError(
                f"{what} takes the model's gradients, but threat '{threat}' is black-box with queries only; "
                "use a gradient-free one (torchattacks:Square, foolbox:HopSkipJumpAttack, robench's spsa ...)"
            )
        cls.check_target_mode(target_mode, what)

    @classmethod
    def check_target_mode(cls, target_mode: str, what: str | None = None) -> None:
        what = what or f"attack '{cls.name}'"
        if target_mode != "none" and cls.targeted_refusal is not None:
            raise ConfigError(f"{what} cannot run targeted (target_mode '{target_mode}'): {cls.targeted_refusal}")
        if target_mode == "none" and cls.untargeted_refusal is not None:
            raise ConfigError(f"{what} cannot run untargeted: {cls.untargeted_refusal}")

    def _check_targets(self, targets: Tensor | None) -> None:
        """The same refusal at run time, for callers that bypass the threat (the API)."""
        self.check_target_mode("none" if targets is None else "random")

    def cost(self) -> float:
        """Steps x restarts (x 2 x samples for SPSA-like estimators): model passes per image, to order the cascade."""
        params = self.params()
        steps = next((float(params[k]) for k in _STEP_COUNTS if isinstance(params.get(k), int)), 1.0)
        repeats = math.prod(float(params[k]) for k in _REPEAT_COUNTS if isinstance(params.get(k), int))
        samples = 2.0 * params["nb_sample"] if isinstance(params.get("nb_sample"), int) else 1.0
        return max(1.0, steps * repeats * samples * self._cost_factor())

    def _cost_factor(self) -> float:
        """Extra passes per step of a library class (APGD-T's and FAB-T's target classes); 1 by default."""
        return 1.0

    def _library_call(self, call: Any, *args: Any, **kwargs: Any) -> Any:
        """Call into the library; its refusals of our arguments (ValueError, AssertionError, ...) become one line."""
        try:
            return call(*args, **kwargs)
        except RobenchError:
            raise
        except (ValueError, AssertionError, NotImplementedError, TypeError) as error:
            message = " ".join(str(error).split()) or type(error).__name__
            raise ConfigError(f"attack '{self.name}': {self.library} refused the call: {message}") from None


# ---------------------------------------------------------------- fields from a constructor's signature


def _optional_of(annotation: Any) -> tuple[Any, bool]:
    """(T, True) for Optional[T] / T | None, else (annotation, False)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(options) == 1 and len(options) < len(typing.get_args(annotation)):
            return options[0], True
    return annotation, False


def _literal_options(annotation: Any) -> tuple[str, ...] | None:
    """The strings of a Literal[...] or a Union of Literals of strings, else None."""
    if typing.get_origin(annotation) is typing.Literal:
        args = typing.get_args(annotation)
    elif typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = tuple(
            a
            for part in typing.get_args(annotation)
            if typing.get_origin(part) is typing.Literal
            for a in typing.get_args(part)
        )
        if len(args) != sum(len(typing.get_args(p)) for p in typing.get_args(annotation)):
            return None
    else:
        return None
    return tuple(args) if args and all(isinstance(a, str) for a in args) else None


def optional_int(default: int | None, low: int, note: str | None) -> Any:
    text = f"an integer >= {low} or None" + (f" ({note})" if note else "")
    return constrained(
        default, Constraint(text, lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= low))
    )


def _free_string(default: str) -> Any:
    return constrained(default, Constraint("a string", lambda v: isinstance(v, str)))


def case_insensitive_choice(default: str, options: tuple[str, ...]) -> Any:
    """A choice matched ignoring case (``norm=L2`` and ``norm=l2`` both work); stored lower-case by LibraryAttack."""
    known = [o.lower() for o in options]
    text = "one of " + ", ".join(known) + " (any case)"
    return constrained(
        default.lower(),
        Constraint(
            text, lambda v: isinstance(v, str) and v.lower() in known, lambda v: did_you_mean(str(v).lower(), known)
        ),
    )


def library_field(
    name: str,
    default: Any,
    annotation: Any = inspect.Parameter.empty,
    *,
    options: tuple[str, ...] | None = None,
    floats: frozenset[str] = frozenset(),
) -> tuple[type | Any, Any] | None:
    """(type, dataclass field) for one constructor parameter, or None when robench cannot carry it.

    The type comes from a plain annotation (int, float, bool, str, their Optional, a Literal of
    strings), else from the default (``floats`` names int defaults that are really floats, e.g.
    torchattacks' ``CW(c=1)``). Parameters of any other type (an attack object, a distance, a
    tuple) are left at the library's default: robench cannot take them from ``--set``.
    """
    if annotation is not inspect.Parameter.empty and annotation is not None:
        literal = _literal_options(annotation)
        base, optional = _optional_of(annotation)
        if literal is not None:
            options = literal
        elif base in (int, float, bool, str) and not (optional and base in (bool, str)):
            kind = float if name in floats else base
            if optional:
                if kind is int:
                    return int | None, optional_int(default, 1 if name in _COUNTS else 0, "None: the library's default")
                return float | None, finite(default, optional=True, note="None: the library's default")
            if kind is float and isinstance(default, int) and not isinstance(default, bool):
                default = float(default)
            return _typed(name, kind, default, options)
        else:
            return None
    if options is not None and isinstance(default, str):
        return str, choice(default, *options) if default in options else _free_string(default)
    if isinstance(default, bool):
        return bool, boolean(default)
    if isinstance(default, int):
        kind = float if name in floats else int
        return _typed(name, kind, float(default) if kind is float else default, options)
    if isinstance(default, float):
        return _typed(name, float, default, options)
    if isinstance(default, str):
        return str, _free_string(default)
    return None


def _typed(name: str, kind: type, default: Any, options: tuple[str, ...] | None) -> tuple[type, Any] | None:
    if kind is bool:
        return bool, boolean(default)
    if kind is int:
        if not isinstance(default, int):
            return None
        return int, positive_int(default) if name in _COUNTS and default >= 1 else integer(
            default, low=0
        ) if default >= 0 else integer(default)
    if kind is float:
        if not isinstance(default, (int, float)) or not math.isfinite(default):
            return None
        return float, finite(float(default), low=0, low_open=True) if name in ("eps",) else finite(float(default))
    if kind is str:
        if options is not None and default in options:
            return str, choice(default, *options)
        return str, _free_string(default)
    return None


def constructor_params(cls: type, skip: int) -> list[inspect.Parameter]:
    """The keyword parameters of ``cls.__init__`` after the first ``skip`` (self, model),
    without ``*args`` / ``**kwargs``."""
    try:
        signature = inspect.signature(cls.__init__)
    except (TypeError, ValueError):
        return []
    hints: dict[str, Any] = {}
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # noqa: BLE001 - unresolvable forward references: fall back to the raw annotations
        hints = {}
    params = list(signature.parameters.values())[skip:]
    out = []
    for p in params:
        if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        out.append(p.replace(annotation=hints.get(p.name, p.annotation)))
    return out


def has_required(params: list[inspect.Parameter]) -> bool:
    """Whether a constructor needs an argument robench cannot default (such classes are not offered)."""
    return any(p.default is inspect.Parameter.empty for p in params)


def unknown_library_name(prefix: str, name: str, known: list[str], version: str) -> RobenchError:
    """The one-line error for ``PREFIX:NAME`` whose NAME the library (as robench can adapt it) lacks."""
    from robench.core.errors import UnknownNameError

    shown = ", ".join(sorted(known))
    close = did_you_mean(f"{prefix}:{name}", [f"{prefix}:{k}" for k in known])
    return UnknownNameError(
        f"unknown attack '{prefix}:{name}'{close}; {prefix} {version} attacks robench can run: {shown}"
    )


def missing_library(prefix: str, error: BaseException) -> ConfigError:
    return ConfigError(
        f"attack '{prefix}:...' needs the {prefix} package, which does not import here "
        f"({type(error).__name__}: {error}); pip install {prefix}"
    )


def first_doc_line(cls: type) -> str:
    """The first non-empty line of a class's docstring (the libraries name the paper there)."""
    for line in (inspect.getdoc(cls) or "").splitlines():
        if line.strip():
            return " ".join(line.split()).rstrip(".")
    return cls.__name__


def library_rows(registry: Any) -> list[tuple[str, str]]:
    """``robench list attacks``' rows for the resolver prefixes: ``PREFIX:NAME`` and the classes it accepts.

    Listing imports each library (a second or two); one that does not import is listed as such.
    """
    rows = []
    for prefix in registry.prefixes():
        try:
            known = registry.resolvable(prefix)
        except RobenchError as error:
            rows.append((f"{prefix}:NAME", f"the attack classes of {prefix}, not available here: {error}"))
            continue
        rows.append(
            (
                f"{prefix}:NAME",
                f"any attack class of {prefix} through robench's adapter "
                f"(the constructor's parameters; --set {prefix}:NAME.PARAM=VALUE): {', '.join(known)}",
            )
        )
    return rows


__all__ = [
    "LibraryAttack",
    "LibraryModel",
    "case_insensitive_choice",
    "constructor_params",
    "draw_seed",
    "first_doc_line",
    "forked_global_rng",
    "has_required",
    "library_field",
    "library_rows",
    "missing_library",
    "optional_int",
    "unknown_library_name",
]
