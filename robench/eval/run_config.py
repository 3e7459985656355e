"""The run configuration: everything that determines a run's numbers (recorded in run.json)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robench.core.errors import ConfigError
from robench.eval.threats import ALL


@dataclass(frozen=True)
class RunConfig:
    """One model under one threat model (or ``all``), on a seeded subset of its dataset's test split."""

    model: Path
    threat: str
    n: int = 1000
    batch_size: int = 250
    seed: int = 0
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
    sanity: bool = True  # run the model probes of robench.eval.sanity

    def __post_init__(self) -> None:
        if self.n < 1 or self.batch_size < 1:
            raise ConfigError("--n and --batch-size must be at least 1")
        if self.sigmas and self.threat not in ("noise", ALL):
            raise ConfigError(f"--sigma applies to the noise threat, not '{self.threat}'")

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
