"""The run configuration: everything that determines a run's numbers (recorded in run.json)."""

from __future__ import annotations

import math
import os
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robench.checkpoints.training import seed_field
from robench.core.config import boolean, positive_int, validate_fields
from robench.core.errors import ConfigError
from robench.core.execution import CHANNELS_LAST
from robench.core.precision import check_precision
from robench.scoring.budgets import parse_budgets
from robench.scoring.cascade import check_cascade
from robench.specs.threats import ALL

_WHAT = "run config"


@dataclass(frozen=True)
class RunConfig:
    """One model under one threat model (or ``all``), on a seeded subset of its dataset's test split."""

    model: Path
    threat: str
    n: int = positive_int(1000, note="--n")
    batch_size: int = positive_int(250, note="--batch-size")
    seed: int = seed_field(0)
    device: str = "auto"
    settings: Mapping[str, Any] = field(default_factory=dict)
    attacks: tuple[str, ...] = ()
    detectors: tuple[str, ...] | None = None
    detector_settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    dataset: str | None = None
    data_root: Path | None = None
    model_name: str | None = None
    sigmas: tuple[float, ...] = ()  # the noise threat with one attack per sigma
    substitute: Path | None = None  # the black-box threat's crafting model
    substitute_name: str | None = None  # its name in records [default: the file's stem]
    sanity: bool = boolean(True)  # run the model probes of robench.runs.sanity
    # Attacks added to the (single) threat: {"label", "attack", "params", "target_mode"} each (suites' [[threat.add]]).
    extra_attacks: tuple[Mapping[str, Any], ...] = ()
    # How the attack loops run (robench.core.precision, robench.scoring.cascade, robench.core.execution).
    precision: str = "fp32"  # fp32, bf16 or fp16 autocast in the attack loops; judged in fp32 (part keys include it)
    # none, misclassified or undetected: later attacks only on the samples still in; None: each threat's
    # default_cascade (none for all but autoattack, whose ensemble is a per-sample cascade by definition)
    cascade: str | None = None
    channels_last: str = (
        "auto"  # auto (on CUDA), on or off: the model's and inputs' memory format (same numbers up to rounding)
    )
    compile: bool = boolean(
        False
    )  # torch.compile the model's backbone, eager if compiling fails (same numbers up to rounding)
    # The budgets every attack threat's worst case is stated at (NORM:EPS, e.g. "linf:0.1"); empty: each threat's own
    # for the dataset family (robench.specs.budgets).
    budgets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Check every field's type and value (one-line ConfigError); lists become tuples."""
        validate_fields(self, _WHAT)
        for key in ("model", "threat", "device", "dataset", "data_root", "model_name", "substitute", "substitute_name"):
            _check_scalar(key, getattr(self, key))
        _check_mapping("settings", self.settings, "{'BIM.steps': 10}")
        _check_mapping("detector_settings", self.detector_settings, "{'kd': {'bandwidth': 1.0}}", nested=True)
        object.__setattr__(self, "attacks", _names("attacks", self.attacks))
        if self.detectors is not None:
            object.__setattr__(self, "detectors", _names("detectors", self.detectors))
        if not isinstance(self.sigmas, (tuple, list)) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0 for v in self.sigmas
        ):
            raise ConfigError(
                f"{_WHAT}: sigmas (--sigma) must be a tuple or list of finite numbers >= 0, got {_shown(self.sigmas)}"
            )
        object.__setattr__(self, "sigmas", tuple(self.sigmas))
        if self.sigmas and self.threat not in ("noise", ALL):
            raise ConfigError(f"--sigma applies to the noise threat, not '{self.threat}'")
        check_precision(self.precision)
        if self.cascade is not None:
            check_cascade(self.cascade)
        if self.channels_last not in CHANNELS_LAST:
            raise ConfigError(
                f"{_WHAT}: channels_last must be one of {', '.join(CHANNELS_LAST)}, got {_shown(self.channels_last)}"
            )
        object.__setattr__(self, "extra_attacks", _extra_attacks(self.extra_attacks))
        if not isinstance(self.budgets, (tuple, list)):
            raise ConfigError(f"{_WHAT}: budgets must be a list of NORM:EPS, got {_shown(self.budgets)}")
        object.__setattr__(self, "budgets", tuple(b.spec for b in parse_budgets(self.budgets)))
        if self.extra_attacks and self.threat == ALL:
            raise ConfigError("added attacks need one threat model, not 'all'")
        if self.attacks and self.extra_attacks:
            # ``attacks`` selects among the threat's own attacks and ``extra_attacks`` adds new ones: the union runs
            # (a suite's attacks = [...] with [[threat.add]]); an added label listed in ``attacks`` is not repeated
            added = (entry["label"] for entry in self.extra_attacks)
            object.__setattr__(self, "attacks", tuple(dict.fromkeys((*self.attacks, *added))))

    @property
    def name(self) -> str:
        """The model's name in records: ``model_name`` or the bundle file's stem."""
        return self.model_name or Path(self.model).stem

    @property
    def crafting_name(self) -> str | None:
        """The substitute's name in records (None without one)."""
        if self.substitute is None:
            return None
        return self.substitute_name or Path(self.substitute).stem


_PATH_FIELDS = {"model", "data_root", "substitute"}  # str or path; the others str
_OPTIONAL_FIELDS = {"dataset", "data_root", "model_name", "substitute", "substitute_name"}


def _shown(value: Any) -> str:
    """``value``'s type and a short one-line repr, for error messages."""
    return f"{type(value).__name__} {reprlib.repr(value)}".replace("\n", " ")


_EXTRA_KEYS = ("label", "attack", "params", "target_mode")


def _extra_attacks(value: Any) -> tuple[dict[str, Any], ...]:
    """Added attacks as a tuple of dicts with a label, a registered attack name, params and a target mode."""
    example = (
        "({'label': 'C&W-wb-class', 'attack': 'cw-wb', 'params': {'eta_mode': 'class'}, 'target_mode': 'random'},)"
    )
    if not isinstance(value, (tuple, list)) or not all(isinstance(v, Mapping) for v in value):
        raise ConfigError(f"{_WHAT}: extra_attacks must be a list of mappings like {example}, got {_shown(value)}")
    out = []
    for entry in value:
        unknown = [k for k in entry if k not in _EXTRA_KEYS]
        if unknown:
            raise ConfigError(
                f"{_WHAT}: an added attack has unknown key(s) {', '.join(map(str, unknown))}; "
                f"keys: {', '.join(_EXTRA_KEYS)}"
            )
        for key in ("label", "attack"):
            if not isinstance(entry.get(key), str) or not entry[key]:
                raise ConfigError(
                    f"{_WHAT}: every added attack needs a non-empty '{key}' string, got {_shown(entry.get(key))}"
                )
        params = entry.get("params", {})
        _check_mapping("an added attack's params", params, "{'lr': 0.05}")
        mode = entry.get("target_mode", "none")
        if not isinstance(mode, str):
            raise ConfigError(f"{_WHAT}: an added attack's target_mode must be a string, got {_shown(mode)}")
        out.append({"label": entry["label"], "attack": entry["attack"], "params": dict(params), "target_mode": mode})
    return tuple(out)


def _check_scalar(key: str, value: Any) -> None:
    if value is None and key in _OPTIONAL_FIELDS:
        return
    kinds = (str, os.PathLike) if key in _PATH_FIELDS else (str,)
    if not isinstance(value, kinds):
        kind = "a str or Path" if key in _PATH_FIELDS else "a str"
        raise ConfigError(
            f"{_WHAT}: {key} must be {kind}{' or None' if key in _OPTIONAL_FIELDS else ''}, got {_shown(value)}"
        )


def _check_mapping(key: str, value: Any, example: str, nested: bool = False) -> None:
    if (
        not isinstance(value, Mapping)
        or not all(isinstance(k, str) for k in value)
        or nested
        and not all(isinstance(v, Mapping) and all(isinstance(k, str) for k in v) for v in value.values())
    ):
        raise ConfigError(f"{_WHAT}: {key} must be a mapping like {example}, got {_shown(value)}")


def _names(key: str, value: Any) -> tuple[str, ...]:
    """A tuple or list of names as a tuple; a lone string is refused (it would be split into characters)."""
    if isinstance(value, (tuple, list)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    hint = f" (pass {key}=({value!r},) for one)" if isinstance(value, str) else ""
    raise ConfigError(f"{_WHAT}: {key} must be a tuple or list of names, got {_shown(value)}{hint}")
