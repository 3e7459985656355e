"""C&W-wb: the white-box Carlini & Wagner attack on a classifier *and* a detector (kernel density by default).

Carlini & Wagner 2017, "Adversarial Examples Are Not Easily Detected" (Sec. on density
estimation), as paper 001 Sec. 4.4.2 uses it (Tables 9-11). Targeted, the target drawn at random
among the wrong classes; per sample it minimises

    ||x' - x||_2^2 + c * ( f_cw(x') + f_2(x') ),    f_2(x') = max(-log KD_t(F(x')) - eta, 0)

where f_cw is the C&W margin (``objective``, as ``cw-l2``), KD_t the Gaussian kernel density of
the *target* class over training features in the model's feature layer F
(:class:`robench.detectors.kd.KernelDensityDetector`, differentiable), and eta a density level
(``eta_mode``, :data:`ETA_MODES`):

- ``global`` (paper 001 Sec. 4.4.2's definition, the default): the median of -log KD over the
  training set, each training point under its own class, leaving itself out
  (:meth:`KernelDensityDetector.training_nll`); the runner computes it once per model and
  passes it as ``AttackTarget.detector_eta``;
- ``class``: the same median taken per class, and eta the target class's (the RCE reference
  code's ``median_for_attack``, Pang et al. 2018), ``AttackTarget.detector_eta_per_class``;
- ``clean`` (Carlini & Wagner 2017b's reference code): -log KD of the clean input under its
  predicted class, so the adversarial input must look at least as dense as the image it came from.

Success, for the binary search, for keeping a candidate and in the records, is as in 001: classified
as the target *and* f_2 = 0 (and the margin at -kappa). Everything else (Adam in tanh space, the
per-sample binary search over c, per-sample early abort, batching) is ``cw-l2``'s, through its
``_context`` / ``_penalty`` hooks, so a test can check batched against one-at-a-time runs.

The density the attacker descends on is the estimator the runner gives it. By default it has the
scored ``kd`` detector's settings (bandwidth, training points per class, seed), so the attacker
attacks exactly the detector that scores it (the protocol of 001 Sec. 4.4.2); ``kd_per_class``
(0 = all; Carlini's reference keeps the first 100 per class), ``kd_subset`` (``first``: the first
``kd_per_class`` points in training-split order) and ``kd_bandwidth`` set it apart, and a sanity
flag (``attacker-estimator-differs``) then says the attacker's estimator is not the scored one.

The reference-copy attacker (:data:`CARLINI_REFERENCE`, the suite label ``C&W-wb/carlini`` of
reports/reproduce/bundled/001-table10.toml) is the parameter set of Carlini & Wagner's public
code (carlini/nn_breaking_detection, ``density_estimation.py``): its own kernel
exp(-||z - z_j||^2 / 20) (``DensityEstimate``, lines 283-298: ``tf.exp(-self.dist/self.sigma)`` with
the squared distance and ``sigma=20``), i.e. a Gaussian of width sqrt(10) (the normalising constant
cancels in f_2, since eta is measured with the same kernel), the first 100 training points per
class (line 421, ``[:100]``), and eta the clean input's own -log KD.

Two phases (``two_phase=True``), as both reference codes do: a plain targeted C&W first
(``first_search_steps`` search steps at ``first_lr``, starting at c = ``first_initial_const`` = 1.0), then the
density phase starting from its output (distances still measured to the clean input). A sample the first
phase did not move starts from the clean input. The first phase is Carlini's
(``density_estimation.py`` lines 449-451: ``CarliniL2(..., max_iterations=3000, binary_search_steps=3,
initial_const=1.0, learning_rate=1e-1)``), hence ``first_search_steps`` = 3, ``first_lr`` = 0.1 and
``first_initial_const`` = 1.0; the RCE reference (P2333/Reverse-Cross-Entropy, ``test_adv.py``,
``apply_attack_carlini``) starts at ``initial_const=1.0`` too in ``carliniL2_highden`` (lines 368-373; its
``carliniL2_specific`` at 10.0, lines 384-389). An earlier robench default of 1e-3, documented as the RCE
reference's, is not what either code does.

Differences from the reference, and why:

- it runs batched (the reference attacks one image at a time);
- by default one phase: the search starts from the clean input with the reference's initial
  constant c = 1 for the density phase, and the binary search over c does the rest;
- the kernel is the normalised Gaussian of the KD detector (its width selected per model on held-out
  training features, Feinman et al.'s procedure) rather than the reference's exp(-d^2/20), so the
  attacked density is exactly the detected one (:data:`CARLINI_REFERENCE` is the reference's).

Any other differentiable detector (``detector``, a scored detector's name; default ``kd``, everything above).
C&W's construction carries over to every detector whose score s (higher = looks clean) has a gradient: the
attacker gets the fitted, scored detector as :class:`~robench.attacks.detector_terms.KnownDetector` (the runner
fills ``AttackTarget.known_detectors``; ``needs()`` asks for the one named) and minimises the same objective with

    f_2(x') = max(level - s_t(x'), 0) / scale

- s_t is the detector's score *at the target class* t where the detector scores per class (it scores the
  predicted class, which is t wherever the attack succeeds), as KD_t above: ``gm-likelihood``'s log p(z | t)
  under the defense's Gaussian model (``Defense.class_log_likelihood`` at t; paper 002 Sec. 4.3), ``max-prob``'s
  softmax probability p_t, and ``kd+bu``'s attacker regression on [log KD_t, BU]. At the predicted class instead,
  f_2 could be paid off by making the *clean* class look more typical, against f_cw: the binary search cannot
  trade the two (c weighs both), and on a briefly trained small MNIST CNN half the samples then end stuck at the
  level in their clean class, where with p_t every one reaches the target (tests/attacks/test_cw_wb_detectors.py).
  Elsewhere s_t is the detector's own score (:meth:`KnownDetector.score`): ``bu``. A randomized score (``bu``, the
  BU of ``kd+bu``) is an expectation over dropout masks (EOT, Athalye et al. 2018): ``eot`` stochastic passes,
  fresh masks at every step, drawn from the attack's generator (reproducible).
- ``level`` is the KnownDetector's median held-out clean score: the analogue of eta = the median training
  -log KD (001 Sec. 4.4.2), "as clean-looking as the median clean input". Not the attacker's flag threshold
  (its 5%-FPR quantile): an output just above that threshold sits on the attacker's estimate of the decision
  boundary, and the scorer's threshold (set on the evaluated samples' clean scores) differs from it; the
  median leaves the margin that eta leaves for KD.
- ``scale``, the spread of the held-out clean scores, puts f_2 in units of the clean scores' spread, so one c
  (and its binary search) weighs it against the C&W margin whatever the detector's units (log-densities,
  probabilities, variances).

Success is as for KD: classified as the target and f_2 = 0. For a randomized detector f_2 = 0 is judged on the
step's own EOT estimate, and an iterate that would become the smallest output yet is judged again on an independent
estimate (fresh masks, as many passes as the scored detector draws, at least ``eot``) before it is kept: one noisy
estimate alone would favour iterates whose expected score lies below the level. Judged again in fp32 under a lower
precision, the estimate uses masks from a fixed seed.
``eta_mode`` and the ``kd_*`` fields apply to ``kd`` only and are refused with another detector; ``eot`` applies
to randomized detectors only.

Why written here: neither torchattacks nor foolbox has a detector term (or a correct margin on the
all-negative logits of GM and MMC models, see :mod:`robench.attacks.cw`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from robench.attacks.base import ATTACKS, AttackNeeds, AttackTarget, Crafted
from robench.attacks.cw import CarliniWagnerL2
from robench.attacks.detector_terms import KnownDetector, randomized_detector, scored_passes, select_known
from robench.core.config import Constraint, boolean, choice, constrained, finite, integer, positive_int
from robench.core.errors import ConfigError
from robench.core.models import Forward
from robench.core.precision import full_precision
from robench.core.registry import did_you_mean
from robench.detectors import DETECTORS
from robench.detectors.combined import KDBUDetector, combiner_scores
from robench.detectors.kd import KernelDensityDetector
from robench.detectors.likelihood import GMLikelihoodDetector, MaxProbabilityDetector

ETA_MODES = ("global", "class", "clean")
# The reference-copy attacker: Carlini & Wagner's nn_breaking_detection (density_estimation.py lines 283-298, 421):
# kernel exp(-d^2 / 20) = a Gaussian of width sqrt(10), the first 100 training points per class, eta = the clean
# input's own -log KD. A suite gives it as params of 'cw-wb' (reports/reproduce/bundled/001-table10.toml).
REFERENCE_COPY_LABEL = "C&W-wb/carlini"  # its label in suites and tables (the white-box layout shows it beside C&W-wb)
CARLINI_REFERENCE = {"kd_bandwidth": 10.0**0.5, "kd_per_class": 100, "kd_subset": "first", "eta_mode": "clean"}
# The fields of the kernel-density attacker (detector = "kd") alone; another detector refuses a non-default value.
KD_ONLY_FIELDS = ("eta_mode", "kd_per_class", "kd_bandwidth", "kd_subset")
# A randomized detector's f_2 judged again in fp32 (Attack.criterion, which gets no generator): masks from this seed.
_CRITERION_SEED = 0


@ATTACKS.register
@dataclass(frozen=True)
class CarliniWagnerWhiteBox(CarliniWagnerL2):
    """C&W-wb (paper 001 Sec. 4.4.2): ``cw-l2`` plus a detector term f_2 (kernel density by default); targeted only.

    Fields beyond ``cw-l2``'s:

    - ``detector`` = "kd": the scored detector f_2 attacks, any registered detector's name; ``kd`` is the
      kernel-density attacker below, every other one f_2 = max(level - s_t, 0) / scale on the runner's
      :class:`~robench.attacks.detector_terms.KnownDetector` (module docstring).
    - ``eot`` = 10: dropout passes per step (>= 2) in the expectation over masks of a randomized detector's
      score (``bu``, ``kd+bu``); unused for the others.
    - ``eta_mode`` = "global": how eta is set, one of ``global``, ``class``, ``clean`` (module docstring).
      It and the three ``kd_*`` fields apply to ``detector = "kd"`` only.
    - ``kd_per_class`` = -1: training points per class in the attacker's estimator; -1 = the
      scored ``kd`` detector's (all points when the run scores no KD), 0 = all.
    - ``kd_subset`` = "scored": which ``kd_per_class`` points, ``random`` (seeded) or ``first`` (training-split
      order, Carlini's reference, density_estimation.py line 421); ``scored`` = the scored ``kd`` detector's.
    - ``kd_bandwidth`` = 0: the attacker's kernel bandwidth; 0 = the scored ``kd`` detector's
      (KD's default, a width selected on held-out training features, when the run scores no KD).
    - ``initial_const`` = 1.0: the constant for the density phase, Carlini & Wagner's
      (``density_estimation.py`` lines 452-454) and the RCE reference's ``carliniL2_highden``
      (``test_adv.py`` lines 374-378).
    - ``two_phase`` = False: a plain C&W first (``first_search_steps`` = 3 search steps at
      ``first_lr`` = 0.1 from c = ``first_initial_const`` = 1.0), then the density phase from its output.
      ``first_initial_const`` = 1.0, ``first_search_steps`` = 3 and ``first_lr`` = 0.1: Carlini's first phase
      (``density_estimation.py`` lines 449-451); the RCE reference's ``carliniL2_highden`` starts at 1.0 too
      (``test_adv.py`` lines 368-373).
    """

    initial_const: float = 1.0
    eta_mode: str = choice("global", *ETA_MODES)
    kd_per_class: int = integer(-1, low=-1, note="-1 = the scored kd detector's, 0 = all")
    kd_bandwidth: float = finite(0.0, low=0, note="0 = the scored kd detector's")
    kd_subset: str = choice("scored", "scored", "random", "first", note="scored = the scored kd detector's")
    two_phase: bool = boolean(False)
    first_search_steps: int = positive_int(3)
    first_lr: float = finite(0.1, low=0, low_open=True)
    first_initial_const: float = finite(1.0, low=0, low_open=True)
    detector: str = constrained(
        "kd",
        Constraint(
            "one detector's name (" + ", ".join(DETECTORS.names()) + ")",
            lambda v: isinstance(v, str) and v in DETECTORS.names(),
            lambda v: did_you_mean(str(v), DETECTORS.names()),
        ),
    )
    eot: int = integer(10, low=2, note="dropout passes per step for a randomized detector")

    name: ClassVar[str] = "cw-wb"
    description: ClassVar[str] = (
        "white-box C&W against the classifier and a detector (KD by default), f_2 = max(-log KD_t - eta, 0) "
        "(001 Sec. 4.4.2)"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.detector != "kd":
            defaults = {f.name: f.default for f in dataclasses.fields(self)}
            changed = [name for name in KD_ONLY_FIELDS if getattr(self, name) != defaults[name]]
            if changed:
                raise ConfigError(
                    f"{self.describe()}: {', '.join(changed)} only appl{'ies' if len(changed) == 1 else 'y'} to "
                    f"detector=kd, not to '{self.detector}'"
                )

    @property
    def randomized(self) -> bool:
        """Whether the attacked detector draws dropout masks (its f_2 is then an expectation over ``eot`` passes)."""
        return randomized_detector(self.detector)

    # kd: the runner gives this attack a fitted KD estimator (AttackTarget.detector) and eta; any other detector:
    # the scored one as the attacker knows it (AttackTarget.known_detectors).
    def needs(self) -> AttackNeeds:
        """kd: an attacker-side KD (the scored detector's settings unless ``kd_per_class`` / ``kd_bandwidth`` set
        them) and its eta; another detector: that scored detector, with the attacker's level and scale."""
        if self.detector != "kd":
            return AttackNeeds(detectors=self.detector)
        return AttackNeeds(
            density=True,
            kd_per_class=None if self.kd_per_class < 0 else self.kd_per_class,
            kd_bandwidth=self.kd_bandwidth or None,
            kd_subset=None if self.kd_subset == "scored" else self.kd_subset,
        )

    def cost(self) -> float:
        """``cw-l2``'s, doubled for the kernel density over the training features at every step (``eot`` more
        passes per step for a randomized detector; nothing more for a score read off the forward pass), plus the
        first phase."""
        first = self.first_search_steps * self.steps if self.two_phase else 0
        per_step = 2 if self.detector == "kd" else (1 + self.eot if self.randomized else 1)
        return float(per_step * self.binary_search_steps * self.steps + first)

    def run(
        self, target: AttackTarget, x: Tensor, y: Tensor, targets: Tensor | None, generator: torch.Generator
    ) -> Crafted:
        if targets is None:
            raise ConfigError(f"attack '{self.name}' is targeted: give it a target mode such as 'random'")
        randomized = False
        if self.detector != "kd":  # a one-line error before any work when the run does not score it
            randomized = self._known(target).randomized
        elif not isinstance(target.detector, KernelDensityDetector):
            raise ConfigError(f"attack '{self.name}' needs a fitted 'kd' detector in its AttackTarget")
        elif self.eta_mode == "global" and target.detector_eta is None:
            raise ConfigError(f"attack '{self.name}' with eta_mode=global needs AttackTarget.detector_eta")
        elif self.eta_mode == "class" and target.detector_eta_per_class is None:
            raise ConfigError(f"attack '{self.name}' with eta_mode=class needs AttackTarget.detector_eta_per_class")
        start = None
        if self.two_phase:
            first = CarliniWagnerL2(
                binary_search_steps=self.first_search_steps,
                steps=self.steps,
                lr=self.first_lr,
                initial_const=self.first_initial_const,
                kappa=self.kappa,
                abort_early=self.abort_early,
                objective=self.objective,
                likelihood_weight=self.likelihood_weight,
                return_attempt=False,
            )
            start = first._search(target, x, y, targets).x_adv
        # kd is deterministic; a randomized detector draws every step's dropout masks from the generator
        return self._search(target, x, y, targets, start, generator if randomized else None)

    def _known(self, target: AttackTarget) -> KnownDetector:
        """The attacked detector as the attacker knows it (``AttackTarget.known_detectors``); a one-line error when
        the run does not score it."""
        return select_known(target.known_detectors, self.detector, self.name)[0]

    def _context(
        self,
        target: AttackTarget,
        x: Tensor,
        y: Tensor,
        targets: Tensor | None,
        generator: torch.Generator | None = None,
    ) -> Tensor | _Draws:
        """kd: eta per sample; another detector: the known detector and the generator its masks come from."""
        if self.detector != "kd":
            return _Draws(self._known(target), generator)
        if self.eta_mode == "global":
            return torch.full(
                (x.shape[0],),
                float(target.detector_eta),  # type: ignore[arg-type]
                dtype=x.dtype,
                device=x.device,
            )
        if self.eta_mode == "class":
            assert targets is not None and target.detector_eta_per_class is not None
            return target.detector_eta_per_class.to(device=x.device, dtype=x.dtype)[targets]
        with torch.no_grad():
            forward = target.forward(x)
            return -target.detector.log_density(forward.z, forward.predicted).to(x.dtype)  # type: ignore[union-attr]

    def _penalty(
        self, target: AttackTarget, forward: Forward, targets: Tensor | None, context: Tensor | _Draws | None
    ) -> Tensor:
        """kd: f_2 = max(-log KD_t(z) - eta, 0), differentiable in z (paper 001 Sec. 4.4.2); another detector:
        f_2 = max(level - s_t(x'), 0) / scale (module docstring), differentiable in x'."""
        assert targets is not None and context is not None
        if isinstance(context, _Draws):
            known = context.known
            generator = context.generator
            if generator is None and known.randomized:  # the criterion judged again: reproducible masks
                generator = torch.Generator().manual_seed(_CRITERION_SEED)
            return level_penalty(target_score(known, target, forward, targets, generator, self.eot), known)
        return density_penalty(target.detector.log_density(forward.z, targets), context)  # type: ignore[union-attr]

    def _confirmed(
        self, target: AttackTarget, forward: Forward, targets: Tensor | None, context: object, candidates: Tensor
    ) -> Tensor:
        """A randomized detector's f_2 = 0 judged again on the candidates, on an independent estimate (fresh masks
        from the attack's generator) with as many passes as the scorer's own detector draws: the step's ``eot``-pass
        estimate is noisy, and keeping the smallest-distortion iterate that one estimate let through would favour
        iterates whose expected score lies below the level (then flagged more often than the attack believes)."""
        if not isinstance(context, _Draws) or not context.known.randomized or context.generator is None:
            return torch.ones_like(candidates)
        assert targets is not None
        known = context.known
        rows = candidates.nonzero().squeeze(1)
        sub = Forward(x=forward.x[rows], z=forward.z[rows], logits=forward.logits[rows])
        passes = max(self.eot, scored_passes(known))
        score = target_score(known, target, sub, targets[rows], context.generator, passes)
        kept = torch.ones_like(candidates)
        kept[rows] = level_penalty(score, known) <= 0
        return kept


@dataclass(frozen=True)
class _Draws:
    """The context of f_2 on a known detector: the detector, and the generator a randomized score draws its masks
    from (None: none given). Shared by every sample, so indexing a batch's samples returns it unchanged."""

    known: KnownDetector
    generator: torch.Generator | None

    def __getitem__(self, index: Tensor) -> _Draws:
        return self


def density_penalty(log_density: Tensor, eta: Tensor) -> Tensor:
    """f_2 of C&W-wb: max(-log KD - eta, 0); zero exactly when -log KD <= eta."""
    return (-log_density - eta).clamp_min(0.0)


def level_penalty(score: Tensor, known: KnownDetector) -> Tensor:
    """f_2 of C&W-wb on any detector: max(level - score, 0) / scale; zero exactly when the score reaches the
    attacker's level (the median held-out clean score)."""
    # a level that could not be computed (no finite held-out score) falls back to the threshold, as the joint attacks
    level = known.level if math.isfinite(known.level) else known.threshold
    return (level - score).clamp_min(0.0) / known.scale


def target_score(
    known: KnownDetector,
    target: AttackTarget,
    forward: Forward,
    targets: Tensor,
    generator: torch.Generator | None,
    passes: int,
) -> Tensor:
    """s_t: the detector's score (N,) at the attack's target class where it scores per class, else its own score.

    A detector that scores the *predicted* class is scored at the target t here, which is the same number wherever
    the attack succeeds (classified as t), but a gradient that never pays off by making the clean class look more
    typical (which f_cw then has to undo):

    - ``gm-likelihood`` (log p(z | predicted class) under the defense's Gaussian model, paper 002 Sec. 4.3):
      log p(z | t), ``Defense.class_log_likelihood`` at t, with the head in fp32 (its distances are expanded squares,
      which bf16 would cancel away), as ``AttackTarget.forward`` computes the logits;
    - ``max-prob`` (the predicted class's softmax probability): p_t;
    - ``kd+bu``: the attacker's regression on [log KD_t(z), -U(x')], U over ``passes`` dropout masks from
      ``generator``.

    Every other detector (``bu``): :meth:`KnownDetector.score` (a randomized one with ``passes`` dropout passes
    whose masks come from ``generator``). Differentiable in ``forward.x``.
    """
    detector = known.detector
    if isinstance(detector, GMLikelihoodDetector):
        with full_precision(forward.z.device):
            log_lik = target.defense.class_log_likelihood(target.model.head, forward.z)
        if log_lik is None:  # a discriminative head: the detector's own one-line refusal
            detector.check_applicable(target.model, target.defense)
        return log_lik.gather(1, targets[:, None]).squeeze(1)
    if isinstance(detector, MaxProbabilityDetector):
        return torch.softmax(forward.logits, dim=1).gather(1, targets[:, None]).squeeze(1)
    if isinstance(detector, KDBUDetector):
        assert known.combiner is not None  # KnownDetector refuses a KD+BU without the attacker's regression
        kd = detector.kd.log_density(forward.z, targets)
        # BU's expectation over masks as KnownDetector draws it for a bare BU detector
        bu = dataclasses.replace(known, detector=detector.bu, combiner=None).score(target, forward, generator, passes)
        return combiner_scores(known.combiner, torch.stack([kd, bu.to(kd.dtype)], dim=1)).to(forward.x.dtype)
    return known.score(target, forward, generator, passes).to(forward.x.dtype)
