"""Threat models: typed, registered descriptions of what the attacker knows and which attacks it runs.

A threat model is a list of :class:`AttackSpec` (a registered attack, its
parameters, and how targets are chosen) plus what the attacker knows: its
:data:`ACCESS` to the evaluated model and detector. Defaults
come from the papers; ``with_overrides`` applies ``LABEL.PARAM=VALUE`` settings
from the CLI or a suite file, type-checked against the attack's fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from robench.attacks.base import ATTACKS, Attack
from robench.attacks.targets import TARGET_MODES
from robench.core.config import replace_fields
from robench.core.errors import ConfigError
from robench.core.registry import Registry, did_you_mean
from robench.scoring.budgets import Budget
from robench.scoring.worst_case import WORST_CASE, is_worst_case
from robench.specs import budgets as B
from robench.specs.param_bounds import check_bounds

# The most attacks one threat may hold (a threat file's [[attack]] tables, a suite's [[threat.add]]): far above
# any threat's (the papers' largest has 10), and it keeps a mistaken file from loading for minutes.
MAX_ATTACKS = 256

# What the attacker knows of the evaluated system (ThreatModel.access), from most to least.
ACCESS: dict[str, str] = {
    "white-box": "knows the model, its defense's loss and the detector",
    "grey-box": "knows the model but not the detector (semi-white-box)",
    "black-box": "no gradients of the evaluated model: transfer from a substitute, or queries only (SPSA)",
    "none": "no attacker: a corruption of the input (noise, rotation)",
}
# The accesses whose attacks take gradients of the evaluated model itself.
GRADIENT_ACCESS = ("white-box", "grey-box")


@dataclass(frozen=True)
class AttackSpec:
    """One attack of a threat model: ``label`` names it in records and tables (e.g. ``C&W-hc``)."""

    label: str
    attack: str
    params: Mapping[str, Any] = field(default_factory=dict)
    target_mode: str = "none"

    def __post_init__(self) -> None:
        if not isinstance(self.label, str) or not self.label.isprintable():
            raise ConfigError(
                f"attack label {self.label!r} must be a printable string (no line breaks or control characters)"
            )
        if is_worst_case(self.label):
            raise ConfigError(
                f"attack labels starting '{WORST_CASE}' are reserved for the derived worst case over a threat's "
                f"attacks; choose another than {self.label!r}"
            )
        if self.target_mode not in TARGET_MODES:
            raise ConfigError(
                f"target mode '{self.target_mode}' is not one of {', '.join(TARGET_MODES)}"
                f"{did_you_mean(self.target_mode, list(TARGET_MODES))}"
            )

    def build(self, family: str | None = None) -> Attack:
        """The attack with the dataset family's defaults (e.g. MNIST's PGD budget), then this spec's params."""
        cls = ATTACKS.get(self.attack)
        base = cls.for_dataset(family) if family else cls()
        return replace_fields(base, dict(self.params), f"attack '{self.label}'")

    def config(self, family: str | None = None) -> dict[str, Any]:
        """Everything that determines this attack's output (for run.json and cache keys)."""
        return {
            "label": self.label,
            "attack": self.attack,
            "params": self.build(family).params(),
            "target_mode": self.target_mode,
        }


@dataclass(frozen=True)
class ThreatModel:
    """A registered threat: its attacks and what the attacker knows (``access``, one of :data:`ACCESS`).

    ``knows_detector`` and ``needs_substitute`` must agree with ``access``: a white-box attacker
    knows the detector, a grey-box one or a corruption does not, and only a black-box threat
    crafts on a substitute (whose own detector its attacks may know, as 001 Table 11's C&W-wb).
    """

    name: str
    description: str
    attacks: tuple[AttackSpec, ...]
    access: str
    knows_detector: bool = False
    source: str = ""
    # Black-box transfer: the attacks run on a substitute model (``--substitute``) and are evaluated on the target.
    needs_substitute: bool = False
    # The cascade mode (robench.scoring.cascade) a run of this threat uses unless --cascade / a suite says otherwise;
    # None: no cascade. AutoAttack's ensemble is a per-sample cascade by definition.
    default_cascade: str | None = None
    # The detectors a run of this threat scores unless --detector says otherwise; None: every one that applies.
    detectors: tuple[str, ...] | None = None
    # Whether ``--threat all`` runs it: the papers' six threats and minimum-norm do; AutoAttack and threats in TOML
    # files run by name (``all`` stays the papers' protocol, and its cost does not grow with every file loaded).
    in_all: bool = False
    # The budgets its worst case is stated at, per dataset family ({"mnist": ("linf:0.3", ...)}); None, or a family
    # not named: the family's nominal budgets in its attacks' norms (robench.specs.budgets).
    budgets: Mapping[str, tuple[str, ...]] | None = None
    # Labels of bounded attacks that also run at every other budget of their norm (``at_budgets``), so that each
    # budget of the worst case is attacked at its own eps, not only by outputs that happen to fall inside it.
    per_budget: tuple[str, ...] = ()
    # Labels of attacks that target detectors (a ``detector`` parameter) and run once per detector the run scores
    # (``at_detectors``): ``SPGD[kd]`` is SPGD against KD alone, so every scored detector is attacked on its own.
    per_detector: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "budgets", B.check_own(self.name, self.budgets))
        if self.access not in ACCESS:
            raise ConfigError(
                f"threat '{self.name}': access '{self.access}' is not one of {', '.join(ACCESS)}"
                f"{did_you_mean(self.access, list(ACCESS))}"
            )
        if self.access == "white-box" and not self.knows_detector:
            raise ConfigError(f"threat '{self.name}': a white-box attacker knows the detector (knows_detector=True)")
        if self.access in ("grey-box", "none") and self.knows_detector:
            raise ConfigError(
                f"threat '{self.name}': a {self.access} threat does not know the detector (knows_detector=False)"
            )
        if self.needs_substitute and self.access != "black-box":
            raise ConfigError(
                f"threat '{self.name}': only a black-box threat crafts on a substitute (access '{self.access}')"
            )

    @property
    def gradient_access(self) -> bool:
        """Whether the attacks take gradients of the evaluated model itself (white-box or grey-box)."""
        return self.access in GRADIENT_ACCESS

    def labels(self) -> list[str]:
        return [a.label for a in self.attacks]

    def at_budgets(self, family: str | None, run: tuple[str, ...] = ()) -> ThreatModel:
        """This threat plus, for each ``per_budget`` attack it holds, a copy at every other budget of its norm:
        ``APGD-CE@Linf 0.1`` is APGD-CE with eps 0.1 (its other settings, overrides included, as the original's)."""
        budgets = self.budgets_for(family, run)
        labels = set(self.labels())
        added = []
        for spec in self.attacks:
            if spec.label not in self.per_budget:
                continue
            attack = spec.build(family)
            if attack.budget_param != "eps":
                continue
            own = float(getattr(attack, "eps"))
            for budget in budgets:
                if budget.norm != attack.norm or budget.is_at(own):
                    continue
                label = f"{spec.label}@{budget.label}"
                if label not in labels:
                    added.append(replace(spec, label=label, params={**spec.params, "eps": budget.eps}))
                    labels.add(label)
        return replace(self, attacks=(*self.attacks, *added)) if added else self

    def at_detectors(self, detectors: tuple[str, ...] | list[str]) -> ThreatModel:
        """Each ``per_detector`` attack replaced by one copy per scored detector, ``LABEL[detector]`` with that
        ``detector`` parameter (its other settings, overrides included, as the original's); with no detector
        scored, the attack is dropped. ``per_budget`` names the copies in its place, so each is also run per budget."""
        if not self.per_detector:
            return self
        specs: list[AttackSpec] = []
        per_budget = [label for label in self.per_budget if label not in self.per_detector]
        for spec in self.attacks:
            if spec.label not in self.per_detector:
                specs.append(spec)
                continue
            for name in detectors:
                specs.append(
                    replace(spec, label=detector_label(spec.label, name), params={**spec.params, "detector": name})
                )
                if spec.label in self.per_budget:
                    per_budget.append(detector_label(spec.label, name))
        return replace(self, attacks=tuple(specs), per_budget=tuple(per_budget), per_detector=())

    def budgets_for(self, family: str | None, run: tuple[str, ...] = ()) -> tuple[Budget, ...]:
        """The budgets of its worst case on a dataset family, ``run``'s own when given (robench.specs.budgets)."""
        if self.access == "none":
            return ()
        norms = [str(getattr(spec.build(family), "norm", "none")) for spec in self.attacks]
        return B.resolve(norms, family, self.budgets, run)

    def with_overrides(self, overrides: Mapping[str, Any]) -> ThreatModel:
        """Apply ``{"LABEL.PARAM": value}`` (and ``LABEL.target_mode``); unknown labels or params get did-you-mean
        errors."""
        specs = {a.label: a for a in self.attacks}
        collected: dict[str, dict[str, Any]] = {}
        for key, value in overrides.items():
            label, dot, param = key.rpartition(".")
            if not dot or not label:
                raise ConfigError(
                    f"setting '{key}' must be ATTACK.PARAM (attacks of '{self.name}': {', '.join(specs)})"
                )
            if label not in specs:
                raise ConfigError(
                    f"threat '{self.name}' has no attack '{label}'{did_you_mean(label, list(specs))}; "
                    f"its attacks: {', '.join(specs)}"
                )
            if param == "target_mode":
                specs[label] = replace(specs[label], target_mode=str(value))
            else:
                collected.setdefault(label, {})[param] = value
        for label, params in collected.items():  # validated together: one setting may depend on another
            spec = specs[label]
            merged = {**spec.params, **params}
            built = replace_fields(ATTACKS.get(spec.attack)(), merged, f"attack '{label}'")
            check_bounds(built, params, f"attack '{label}'")
            specs[label] = replace(spec, params=merged)
        return replace(self, attacks=tuple(specs[a.label] for a in self.attacks))

    def with_added(self, added: list[Mapping[str, Any]]) -> ThreatModel:
        """This threat plus attacks ``{"label", "attack", "params", "target_mode"}`` (a suite's ``[[threat.add]]``).

        A label must be new; the attack must be registered (did-you-mean); its parameters are
        checked when the attack is built.
        """
        if len(added) > MAX_ATTACKS:
            raise ConfigError(
                f"threat '{self.name}': {len(added)} added attacks; robench adds at most {MAX_ATTACKS} to a threat"
            )
        specs = list(self.attacks)
        labels = {s.label for s in specs}
        for entry in added:
            label = entry["label"]
            if label in labels:
                raise ConfigError(
                    f"threat '{self.name}' already has an attack labelled {label!r}; "
                    "give the added attack another label"
                )
            ATTACKS.get(entry["attack"])
            spec = AttackSpec(label, entry["attack"], dict(entry.get("params", {})), entry.get("target_mode", "none"))
            check_bounds(spec.build(), spec.params, f"attack {label!r}")  # its parameters checked now, their bounds too
            specs.append(spec)
            labels.add(label)
        return replace(self, attacks=tuple(specs))

    def only(self, labels: list[str]) -> ThreatModel:
        """Keep the named attacks only (``--attack``)."""
        known = self.labels()
        for label in labels:
            if label not in known:
                raise ConfigError(
                    f"threat '{self.name}' has no attack '{label}'{did_you_mean(label, known)}; "
                    f"its attacks: {', '.join(known)}"
                )
        return replace(self, attacks=tuple(a for a in self.attacks if a.label in labels))


def detector_label(label: str, detector: str) -> str:
    """The label of attack ``label``'s copy against one scored detector (``ThreatModel.at_detectors``)."""
    return f"{label}[{detector}]"


THREATS: Registry[ThreatModel] = Registry("threat model", base=ThreatModel)

# Paper 001 Sec. 4.4.1 (FGSM eps 0.1; BIM/ILCM 20 iterations of 0.01; C&W 5 binary-search steps, kappa 0 / 10),
# targets drawn at random among the wrong classes (ILCM: the least-likely class); paper 004 Sec. 4.3
# (PGD and MIM, eps 8/255, step 2/255, 10 and 50 steps, untargeted and targeted; on MNIST-like data
# the attacks' family defaults give eps 0.3, step 0.01 as in 004 Fig. 3).
THREATS.register(
    ThreatModel(
        name="semi-white-box",
        description="attacker knows the model but not the detector (001 Sec. 4.4.1; PGD/MIM from 004 Sec. 4.3)",
        attacks=(
            AttackSpec("FGSM", "fgsm", {}, "random"),
            AttackSpec("BIM", "bim", {}, "random"),
            AttackSpec("ILCM", "ilcm", {}, "least-likely"),
            AttackSpec("C&W", "cw-l2", {}, "random"),
            AttackSpec("C&W-hc", "cw-hc", {}, "random"),
            AttackSpec("PGD-10-un", "pgd", {"steps": 10}, "none"),
            AttackSpec("PGD-50-un", "pgd", {"steps": 50}, "none"),
            AttackSpec("PGD-10-tar", "pgd", {"steps": 10}, "random"),
            AttackSpec("MIM-10-un", "mim", {"steps": 10}, "none"),
            AttackSpec("MIM-10-tar", "mim", {"steps": 10}, "random"),
        ),
        access="grey-box",
        source="001 Sec. 4.4.1; 004 Sec. 4.3",
        in_all=True,
        per_budget=("PGD-50-un",),  # FGSM and BIM alone would be the only attacks at L-inf 0.1 and 0.2
    ),
)

# Paper 001 Sec. 4.4.2 (C&W-wb, Tables 9-10) and paper 004 Sec. 4.3 + App. B.4: the attacker knows the
# defense and attacks it through its own loss (PGD: L_Ada^1, C&W: L_Ada^2, the margin form), and C&W-wb
# also attacks the kernel-density detector.
THREATS.register(
    ThreatModel(
        name="white-box",
        description="attacker knows the model, its defense's loss and every scored detector "
        "(001 Sec. 4.4.2; 004 Sec. 4.3, App. B.4; APGD: Croce & Hein 2020; SPGD: Bryniarski et al. 2022)",
        attacks=(
            AttackSpec("C&W-wb", "cw-wb", {}, "random"),
            AttackSpec("PGD-10-un", "pgd", {"steps": 10, "objective": "adaptive"}, "none"),
            AttackSpec("PGD-50-un", "pgd", {"steps": 50, "objective": "adaptive"}, "none"),
            AttackSpec("PGD-10-tar", "pgd", {"steps": 10, "objective": "adaptive"}, "random"),
            AttackSpec("PGD-50-tar", "pgd", {"steps": 50, "objective": "adaptive"}, "random"),
            AttackSpec("C&W-un", "cw-l2", {"objective": "adaptive-margin"}, "none"),
            AttackSpec("C&W-tar", "cw-l2", {"objective": "adaptive-margin"}, "random"),
            # The field's standard L-inf attacks (Croce & Hein 2020), on the defense's adaptive objective (its
            # gradient form, and its margin form scaled as DLR), so the threat's worst case is never weaker than them.
            AttackSpec("APGD-CE", "apgd", {"objective": "adaptive"}, "none"),
            AttackSpec("APGD-DLR", "apgd", {"objective": "adaptive-dlr"}, "none"),
            # Bounded joint attacks on the classifier and one scored detector at a time (Bryniarski et al. 2022,
            # selective PGD; BU and KD+BU with an expectation over dropout masks): one copy per scored detector
            # (SPGD[kd], ...), each also at every budget of its norm, so every detector-aware figure at every
            # budget comes from attacks that knew that detector. Selective, not orthogonal: on the committed GM
            # model orthogonal PGD left 97.5-100% of 40 samples correct or flagged at L-inf 0.3 where selective PGD
            # left 0-17.5% (docs/attacks.md); orthogonal-pgd stays available (--attack orthogonal-pgd).
            AttackSpec("SPGD", "selective-pgd", {}, "none"),
            AttackSpec("SPGD-L2", "selective-pgd-l2", {}, "none"),
        ),
        access="white-box",
        knows_detector=True,
        source="001 Sec. 4.4.2; 004 Sec. 4.3, App. B.4; Bryniarski et al. 2022",
        in_all=True,
        # APGD: step-size free (Croce & Hein 2020), no retuning per eps; SPGD's step is 2.5 eps / steps
        per_budget=("APGD-CE", "APGD-DLR", "SPGD", "SPGD-L2"),
        per_detector=("SPGD", "SPGD-L2"),
    ),
)

# Paper 001 Sec. 4.4.3 (Table 11: C&W-wb crafted on a substitute against the substitute's own KD) and
# paper 004 Sec. 4.4 (Fig. 4: untargeted PGD and MIM transferred; targeted ones transfer poorly).
# Success is judged on the target: misclassified by it, whatever the crafting target was.
THREATS.register(
    ThreatModel(
        name="black-box",
        description="transfer: crafted on a substitute model (--substitute) knowing the defense, "
        "evaluated on the target (001 Sec. 4.4.3; 004 Sec. 4.4)",
        attacks=(
            AttackSpec("C&W-wb", "cw-wb", {}, "random"),
            AttackSpec("PGD-10-un", "pgd", {"steps": 10, "objective": "adaptive"}, "none"),
            AttackSpec("MIM-10-un", "mim", {"steps": 10, "objective": "adaptive"}, "none"),
        ),
        access="black-box",
        knows_detector=True,
        source="001 Sec. 4.4.3, Table 11; 004 Sec. 4.4, Fig. 4",
        needs_substitute=True,
        in_all=True,
        per_budget=("PGD-10-un", "MIM-10-un"),
    ),
)

# Paper 004 Sec. 4.4 (Table 2 Part II, Table 3): gradient-free SPSA on the adaptive objective.
THREATS.register(
    ThreatModel(
        name="spsa",
        description="gradient-free SPSA on the adaptive objective, 128 samples, Adam lr 0.01, delta 0.01 "
        "(004 Sec. 4.4)",
        attacks=(
            AttackSpec("SPSA-un", "spsa", {}, "none"),
            AttackSpec("SPSA-tar", "spsa", {}, "random"),
        ),
        access="black-box",
        source="004 Sec. 4.4, Tables 2-3",
        in_all=True,
        # 004 Table 3's one budget (8/255; MNIST-like: the family's eps 0.3): SPSA's 256 x 100 queries per sample are
        # too dear to repeat per budget
        budgets={"mnist": ("linf:0.3",), "cifar10": (f"linf:{8 / 255!r}",), "cifar100": (f"linf:{8 / 255!r}",)},
    ),
)

# AutoAttack's standard ensemble (Croce & Hein 2020, Sec. 4 and the reference implementation's "standard"
# version): APGD-CE, APGD-T (9 target classes), FAB-T (9 target classes), Square (5,000 queries), one restart
# each and 100 iterations for the first three, at the dataset family's L-inf budget (MNIST-like 0.3, CIFAR-like
# 8/255), run from torchattacks' components through robench's adapters. torchattacks' own AutoAttack leaves
# APGD, APGD-T and FAB at their 10-step defaults; here they take the paper's 100. The ensemble is a per-sample
# cascade by definition: each attack runs on the samples the earlier ones left robust. The attacker knows the
# model (logits) but neither the defense's loss nor the detector, so the access is grey-box; every detector is
# scored on the final adversarial examples.
THREATS.register(
    ThreatModel(
        name="autoattack",
        description="AutoAttack's standard ensemble from torchattacks: APGD-CE, APGD-T, FAB-T, Square, "
        "as a per-sample cascade (Croce & Hein 2020)",
        attacks=(
            AttackSpec("APGD-CE", "torchattacks:APGD", {"loss": "ce", "steps": 100, "n_restarts": 1}, "none"),
            AttackSpec("APGD-T", "torchattacks:APGDT", {"steps": 100, "n_restarts": 1}, "none"),
            AttackSpec("FAB-T", "torchattacks:FAB", {"multi_targeted": True, "steps": 100, "n_restarts": 1}, "none"),
            AttackSpec("Square", "torchattacks:Square", {"n_queries": 5000, "n_restarts": 1}, "none"),
        ),
        access="grey-box",
        source="Croce & Hein 2020 (ICML), AutoAttack standard version",
        default_cascade="misclassified",
        # AutoAttack is run at one budget: the family's eps (the attacks' defaults); --budget states others
        budgets={"mnist": ("linf:0.3",), "cifar10": (f"linf:{8 / 255!r}",), "cifar100": (f"linf:{8 / 255!r}",)},
    ),
)

# Minimum-norm attacks, untargeted, on the defense's adaptive objective (004 App. B.4): the Fast Minimum-Norm attack
# in L2 and L-inf (Pintor, Roli, Brendel, Biggio, NeurIPS 2021, Alg. 1; adaptive margin) and the Decoupled Direction
# and Norm attack (Rony et al., CVPR 2019, Alg. 1; adaptive gradient form), 100 steps each with the defaults of
# foolbox 3.3.4 (attacks/fmn.py, attacks/ddn.py). They have no budget: each returns every sample's smallest
# adversarial perturbation found, so the summary's distortion (the records' l2 / linf) is what they measure. The
# attacker knows the model and its defense's loss but not the detector: grey-box.
THREATS.register(
    ThreatModel(
        name="minimum-norm",
        description="minimum-norm attacks on the adaptive objective: FMN-L2, FMN-Linf (Pintor et al. 2021) and DDN "
        "(Rony et al. 2019), 100 steps",
        attacks=(
            AttackSpec("FMN-L2", "fmn-l2", {}, "none"),
            AttackSpec("FMN-Linf", "fmn-linf", {}, "none"),
            AttackSpec("DDN", "ddn", {}, "none"),
        ),
        access="grey-box",
        source="Pintor et al., NeurIPS 2021 (FMN); Rony et al., CVPR 2019 (DDN); foolbox 3.3.4's defaults",
        in_all=True,
    ),
)

THREATS.register(
    ThreatModel(
        name="noise",
        description="Gaussian noise, sigma 0.05 of the input range, clipped (004 Sec. 4.5)",
        attacks=(AttackSpec("noise-0.05", "gaussian-noise", {"sigma": 0.05}, "none"),),
        access="none",
        source="004 Sec. 4.5",
        in_all=True,
    ),
)

THREATS.register(
    ThreatModel(
        name="rotation",
        description="uniform random rotation within +-30 degrees (004 Sec. 4.5)",
        attacks=(AttackSpec("rotation-30", "rotation", {"max_degrees": 30.0}, "none"),),
        access="none",
        source="004 Sec. 4.5",
        in_all=True,
    ),
)


def noise_threat(sigmas: list[float]) -> ThreatModel:
    """The noise threat with one attack per sigma (``--sigma 0.05 --sigma 0.1``)."""
    base = THREATS.get("noise")
    if any(sigma < 0 for sigma in sigmas):
        raise ConfigError(f"noise sigmas must be >= 0, got {sigmas}")
    if len(sigmas) > MAX_ATTACKS:
        raise ConfigError(f"{len(sigmas)} noise sigmas; robench runs at most {MAX_ATTACKS} attacks of a threat")
    specs = tuple(AttackSpec(f"noise-{s:g}", "gaussian-noise", {"sigma": s}, "none") for s in sigmas)
    for spec in specs:
        check_bounds(spec.build(), ("sigma",), f"noise sigma {spec.params['sigma']:g}")
    labels = [spec.label for spec in specs]
    twice = sorted({label for label in labels if labels.count(label) > 1})
    if twice:  # two attacks of one label would write the same records twice
        raise ConfigError(f"noise sigmas must differ (as labels): {', '.join(twice)} given more than once")
    return replace(base, attacks=specs)


ALL = "all"


def distribute(threats: list[ThreatModel], overrides: Mapping[str, Any], labels: tuple[str, ...]) -> list[ThreatModel]:
    """Apply ``LABEL.PARAM`` settings and ``--attack`` labels to every threat that has the label.

    A label no selected threat has is an error (with the labels there are); threats left with no
    attack after ``--attack`` are dropped. A library attack (``--attack torchattacks:APGD``,
    ``foolbox:NAME``: a resolver prefix of ``ATTACKS``) that a threat lacks is added to it first,
    labelled by its name, to every selected threat that can host it (:func:`_with_library_attacks`),
    so ``--set torchattacks:APGD.steps=50`` then applies; so is a registered robench attack that no
    selected threat has as a label (``--attack fmn-l2``, with the dataset family's defaults). Every attack that declares
    ``check_spec`` (the library adapters) is checked against its threat and target mode here,
    before anything runs.
    """
    threats = _with_library_attacks(threats, labels)
    known = sorted({a.label for t in threats for a in t.attacks})
    for key in overrides:
        label = key.rpartition(".")[0]
        if len(threats) > 1 and label and label not in known:
            raise ConfigError(f"no selected threat has an attack '{label}'{did_you_mean(label, known)}")
    for label in labels:
        if label not in known:
            raise ConfigError(
                f"no selected threat has an attack '{label}'{did_you_mean(label, known)}; attacks: {', '.join(known)}"
            )
    out = []
    for threat in threats:
        own = {a.label for a in threat.attacks}
        mine = overrides if len(threats) == 1 else {k: v for k, v in overrides.items() if k.rpartition(".")[0] in own}
        threat = threat.with_overrides(mine)
        if labels:
            wanted = [label for label in labels if label in own]
            if not wanted:
                continue
            threat = threat.only(wanted)
        _check_specs(threat)
        out.append(threat)
    return out


def _is_library_name(label: str) -> bool:
    """``LIB:NAME`` with a resolver prefix of ``ATTACKS`` (``torchattacks:APGD``, ``foolbox:NAME``)."""
    prefix, sep, rest = label.partition(":")
    return bool(sep and rest) and prefix in ATTACKS.prefixes()


def _check_spec(threat: ThreatModel, spec: AttackSpec) -> None:
    """The attack's own refusal of this threat / target mode (library adapters declare ``check_spec``), if any."""
    check = getattr(ATTACKS.get(spec.attack), "check_spec", None)
    if check is not None:
        check(
            label=spec.label,
            threat=threat.name,
            access=threat.access,
            needs_substitute=threat.needs_substitute,
            target_mode=spec.target_mode,
        )


def _check_specs(threat: ThreatModel) -> None:
    for spec in threat.attacks:
        _check_spec(threat, spec)


def _with_library_attacks(threats: list[ThreatModel], labels: tuple[str, ...]) -> list[ThreatModel]:
    """Add each ``--attack NAME`` that is an attack's name, not a label, to the threats lacking it, untargeted.

    NAME is a library attack (``LIB:NAME``, ``torchattacks:APGD``) or a registered robench attack
    that no selected threat has as a label (``--attack fmn-l2``, ``ddn``, ``apgd-l2``): it is added
    as ``AttackSpec(NAME, NAME)``, labelled by its name, with the dataset family's defaults and
    target mode none. One selected threat: it is added there, or the attack's refusal of that
    threat is the error. Several (``--threat all``): it is added to each threat that can host it
    (a gradient-based attack to those with the model's gradients or a substitute; a corruption to
    those without an attacker), an error when none can. A robench attack is refused by a threat
    without an attacker (access none) unless it is a corruption, by one with an attacker if it is,
    by a query-only black-box threat unless it is gradient-free (spsa), and by an attacker who does
    not know the detector if it attacks the detector (cw-wb). Unknown library classes get the
    resolver's did-you-mean error; any other NAME that is neither a label nor a registered attack
    gets one over both.
    """
    labelled = sorted({a.label for t in threats for a in t.attacks})
    for label in dict.fromkeys(labels):
        if label not in labelled and not _is_library_name(label) and label not in ATTACKS.names():
            raise ConfigError(
                f"no selected threat has an attack '{label}'{did_you_mean(label, [*labelled, *ATTACKS.names()])}; "
                f"attacks: {', '.join(labelled)}; or a registered attack's name (robench list attacks)"
            )
    wanted = [
        label
        for label in dict.fromkeys(labels)
        if _is_library_name(label) or (label in ATTACKS.names() and label not in labelled)
    ]
    if not wanted:
        return threats
    out = list(threats)
    for label in wanted:
        cls = ATTACKS.get(label)  # unknown class: did-you-mean; missing library: one line
        spec = AttackSpec(label, label)
        refusals: list[ConfigError] = []
        hosts = 0
        for i, threat in enumerate(out):
            if label in threat.labels():
                hosts += 1
                continue
            try:
                if _is_library_name(label):
                    _check_spec(threat, spec)
                else:  # robench's own attack: the rules a threat file's [[attack]] follows, and the threat's attacker
                    what = f"attack '{label}' cannot join threat '{threat.name}'"
                    corruption = cls.norm == "none"
                    if corruption != (threat.access == "none"):
                        raise ConfigError(
                            f"{what}: it is {'a corruption' if corruption else f'an attack ({cls.norm})'}, and the "
                            f"threat's access is '{threat.access}'"
                        )
                    if threat.access == "black-box" and not threat.needs_substitute and label != "spsa":
                        raise ConfigError(
                            f"{what}: it takes the model's gradients, and the threat is black-box with queries only"
                        )
                    needs = spec.build().needs()
                    if (needs.density or needs.detectors) and not threat.knows_detector:
                        raise ConfigError(
                            f"{what}: it attacks the detector, which a {threat.access} attacker does not know"
                        )
                    if needs.detectors and threat.needs_substitute:  # kd through the density: the substitute's own
                        raise ConfigError(
                            f"{what}: it attacks the evaluated model's detectors, which an attacker crafting on a "
                            "substitute does not know"
                        )
            except ConfigError as refusal:
                refusals.append(refusal)
                continue
            out[i] = replace(threat, attacks=(*threat.attacks, spec))
            hosts += 1
        if not hosts:
            raise refusals[0] if refusals else ConfigError(f"no selected threat can host attack '{label}'")
    return out
