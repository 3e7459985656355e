"""C&W-wb (cw-wb) against detectors other than KD: gm-likelihood at the target class, max-prob, BU with EOT; needs,
configuration, batched = one at a time, and the threats that refuse a detector-aware attacker."""

from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

from robench.attacks.base import ATTACKS, AttackTarget, Bounds
from robench.attacks.cw_wb import CarliniWagnerWhiteBox, _Draws, level_penalty, target_score
from robench.attacks.detector_terms import KnownDetector
from robench.attacks.targets import choose_targets
from robench.core.data import load_dataset
from robench.core.errors import ConfigError
from robench.core.models import Forward
from robench.defenses import DEFENSES
from robench.detectors import DETECTORS
from robench.detectors.combined import KDBUDetector
from robench.specs import threat_files as TF
from robench.specs.threat_files import select_threats
from robench.specs.threats import distribute
from tiny import make_tiny

UNIT = Bounds(0.0, 1.0)
FAST = {"steps": 100, "binary_search_steps": 3, "lr": 0.1, "initial_const": 1.0}


def _briefly_trained(defense_name: str, dropout: float = 0.0, epochs: int = 2):
    """A tiny model (tests/tiny.py) trained for ``epochs`` on mnist-5k with Adam: an untrained one maps every input
    to nearly the same features, where no detector score means anything. About 2.5 s per epoch on one core."""
    model, meta = make_tiny(defense_name, dropout=dropout)
    defense = DEFENSES.get(defense_name).for_dataset("mnist", meta.defense_params)
    data = load_dataset("mnist-5k")
    generator = torch.Generator().manual_seed(0)
    optimiser = torch.optim.Adam(model.parameters(), 3e-3)
    model.train()
    with torch.random.fork_rng():  # dropout's masks, without touching the global RNG other tests see
        torch.manual_seed(0)
        for _ in range(epochs):
            order = torch.randperm(len(data.train.x), generator=generator)
            for i in range(0, len(order), 64):
                batch = order[i : i + 64]
                loss = defense.loss(model.head, model.features(data.train.x[batch]), data.train.y[batch]).total
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
    model.eval()
    return model, defense, data


@pytest.fixture(scope="module")
def trained_gm():
    return _briefly_trained("gm")


@pytest.fixture(scope="module")
def trained_dropout():
    return _briefly_trained("softmax", dropout=0.5, epochs=1)


def known_detector(name: str, model, defense, x: torch.Tensor) -> KnownDetector:
    """The detector as the attacker knows it, built by hand from the clean scores of inputs ``x`` (none of them
    attacked): threshold at 5% FPR, level = median, scale = interquartile range / 1.349."""
    detector = DETECTORS.get(name)()
    with torch.no_grad():
        scores = detector.score(model, defense, Forward.of(model, x)).double()
    q = torch.quantile(scores, torch.tensor([0.05, 0.25, 0.5, 0.75], dtype=scores.dtype))
    return KnownDetector(name, detector, threshold=float(q[0]), scale=float(q[3] - q[1]) / 1.349, level=float(q[2]))


def inputs(data, model, n: int, seed: int = 0):
    x, y = data.test.x[:n], data.test.y[:n]
    with torch.no_grad():
        logits = model(x)
    return x, y, choose_targets("random", logits, y, torch.Generator().manual_seed(seed))


def test_gm_likelihood_reaches_the_level_where_plain_cw_does_not(trained_gm):
    model, defense, data = trained_gm
    known = known_detector("gm-likelihood", model, defense, data.train.x[-300:])
    x, y, targets = inputs(data, model, 16)
    settings = {**FAST, "steps": 200}
    target = AttackTarget(model, defense, UNIT, known_detectors=(known,))
    wb = CarliniWagnerWhiteBox(**settings, detector="gm-likelihood")(target, x, y, targets, generator=torch.Generator())
    plain = ATTACKS.get("cw-l2")(**settings)(
        AttackTarget(model, defense, UNIT), x, y, targets, generator=torch.Generator()
    )
    with torch.no_grad():
        wb_score = target_score(known, target, wb.forward, targets, None, 2)
        plain_score = target_score(known, target, plain.forward, targets, None, 2)
        # at the target class, which is the predicted one on a success: the scored detector's own score there
        scored = known.detector.score(model, defense, wb.forward)
    assert torch.allclose(wb_score[wb.success], scored[wb.success])
    # every success is classified as the target with f_2 = 0
    assert (wb.predicted[wb.success] == targets[wb.success]).all()
    assert (wb_score[wb.success] >= known.level).all()
    assert (level_penalty(wb_score, known)[wb.success] == 0).all()
    # plain C&W reaches the target but leaves the likelihood below the level; C&W-wb lifts most of those above it
    below = plain.success & (plain_score < known.level)
    assert below.sum() >= 6
    assert (wb.success & below).sum() >= 0.75 * below.sum()
    assert not (wb.best_attempt & wb.success).any()


def test_batched_equals_one_at_a_time_for_a_deterministic_detector(trained_gm, float64):
    model, defense, data = trained_gm
    model = copy.deepcopy(model).double().eval()
    known = known_detector("gm-likelihood", model, defense, data.train.x[-300:].double())
    x, y, targets = inputs(data, model, 5, seed=3)
    x = x.double()
    target = AttackTarget(model, defense, UNIT, known_detectors=(known,))
    attack = CarliniWagnerWhiteBox(**{**FAST, "steps": 60}, detector="gm-likelihood")
    batched = attack(target, x, y, targets, generator=torch.Generator())
    assert batched.success.any() and not batched.success.all()  # the equality below covers both outcomes
    for i in range(len(x)):
        alone = attack(target, x[i : i + 1], y[i : i + 1], targets[i : i + 1], generator=torch.Generator())
        assert bool(alone.success[0]) == bool(batched.success[i])
        assert (alone.x_adv[0] - batched.x_adv[i]).abs().max() < 1e-5, i


def test_max_prob_runs_batched_and_keeps_its_criterion(trained_dropout):
    model, defense, data = trained_dropout
    known = known_detector("max-prob", model, defense, data.train.x[-300:])
    x, y, targets = inputs(data, model, 12)
    target = AttackTarget(model, defense, UNIT, known_detectors=(known,))
    attack = CarliniWagnerWhiteBox(**FAST, detector="max-prob")
    result = attack(target, x, y, targets, generator=torch.Generator())
    # f_2 on p_t, not on the predicted class's probability: with the latter half of these end stuck at the level
    # in their clean class (cw_wb.target_score)
    assert result.success.sum() >= 10
    probability = torch.softmax(result.forward.logits, 1).max(1).values
    assert (probability[result.success] >= known.level).all()
    assert (result.predicted[result.success] == targets[result.success]).all()
    plain = ATTACKS.get("cw-l2")(**FAST)(AttackTarget(model, defense, UNIT), x, y, targets, generator=torch.Generator())
    plain_probability = torch.softmax(plain.forward.logits, 1).max(1).values
    assert (plain_probability[plain.success] < known.level).sum() > (probability[result.success] < known.level).sum()


def bu_scores(model, x: torch.Tensor, passes: int = 200) -> torch.Tensor:
    """A many-pass BU score (-uncertainty), the reference the attack's 4-pass estimates are noisy versions of."""
    return DETECTORS.get("bu")(passes=passes, seed=7).score(model, None, Forward.of(model, x))


def test_bu_with_an_expectation_over_dropout_masks(trained_dropout):
    model, defense, data = trained_dropout
    known = known_detector("bu", model, defense, data.train.x[-300:])
    assert known.randomized
    x, y, targets = inputs(data, model, 12)
    target = AttackTarget(model, defense, UNIT, known_detectors=(known,))
    attack = CarliniWagnerWhiteBox(**FAST, detector="bu", eot=4)
    result = attack(target, x, y, targets, generator=torch.Generator().manual_seed(1))
    assert result.success.sum() >= 4
    assert (result.predicted[result.success] == targets[result.success]).all()
    # fresh masks from the attack's generator: the same seed reproduces the run, another one changes it
    again = attack(target, x, y, targets, generator=torch.Generator().manual_seed(1))
    other = attack(target, x, y, targets, generator=torch.Generator().manual_seed(2))
    assert torch.equal(again.x_adv, result.x_adv) and not torch.equal(other.x_adv, result.x_adv)
    # the outputs look clean to a many-pass estimate far more often than plain C&W's
    plain = ATTACKS.get("cw-l2")(**FAST)(AttackTarget(model, defense, UNIT), x, y, targets, generator=torch.Generator())
    above = (bu_scores(model, result.x_adv) >= known.threshold)[result.success].float().mean()
    plain_above = (bu_scores(model, plain.x_adv) >= known.threshold)[plain.success].float().mean()
    assert above > plain_above + 0.2


def test_a_bu_candidate_is_kept_only_where_an_independent_estimate_reaches_the_level(trained_dropout):
    """The smallest output yet must reach the level again on fresh masks (as many passes as the scorer draws):
    one noisy estimate would let through iterates whose expected score lies below it."""
    model, defense, data = trained_dropout
    known = known_detector("bu", model, defense, data.train.x[-300:])
    x, y, targets = inputs(data, model, 8)
    target = AttackTarget(model, defense, UNIT, known_detectors=(known,))
    attack = CarliniWagnerWhiteBox(**FAST, detector="bu", eot=4)
    forward = Forward.of(model, x)
    candidates = torch.tensor([True, False] * 4)

    def kept(level: float) -> torch.Tensor:
        draws = _Draws(dataclasses.replace(known, level=level), torch.Generator().manual_seed(0))
        return attack._confirmed(target, forward, targets, draws, candidates)

    assert kept(1e9).tolist() == [False, True] * 4  # unreachable: every candidate dropped, the others untouched
    assert kept(-1e9).all()
    # a deterministic detector's f_2 needs no second look
    max_prob = known_detector("max-prob", model, defense, data.train.x[-300:])
    draws = _Draws(dataclasses.replace(max_prob, level=1e9), torch.Generator().manual_seed(0))
    assert attack._confirmed(target, forward, targets, draws, candidates).all()


def test_bu_criterion_judged_again_in_fp32(trained_dropout):
    """At bf16 the criterion is judged again in fp32, on masks from a fixed seed: every success meets it there."""
    model, defense, data = trained_dropout
    known = known_detector("bu", model, defense, data.train.x[-300:])
    x, y, targets = inputs(data, model, 8)
    target = AttackTarget(model, defense, UNIT, known_detectors=(known,), precision="bf16")
    attack = CarliniWagnerWhiteBox(**FAST, detector="bu", eot=4)
    result = attack(target, x, y, targets, generator=torch.Generator().manual_seed(0))
    fp32 = AttackTarget(model, defense, UNIT, known_detectors=(known,))
    criterion = attack.criterion(fp32, x, y, targets, result.forward)
    assert result.success.any()
    assert (criterion | ~result.success).all()
    assert not torch.equal(criterion, result.predicted == targets)  # f_2 = 0 is part of it, not only the target


def test_kd_bu_through_the_attackers_regression(trained_dropout):
    model, defense, data = trained_dropout
    detector = KDBUDetector(per_class=50, passes=20)
    detector.fit(model, defense, data.train, torch.device("cpu"))
    held_out = data.train.x[-300:]
    # the attacker's regression: clean held-out inputs against detector-blind C&W outputs (Feinman et al.'s recipe)
    blind = ATTACKS.get("cw-l2")(**{**FAST, "steps": 50})(
        AttackTarget(model, defense, UNIT),
        held_out[150:200],
        data.train.y[-150:-100],
        None,
        generator=torch.Generator(),
    )
    detector.fit_combiner(
        detector.raw_features(model, defense, Forward.of(model, held_out[:150])),
        detector.raw_features(model, defense, blind.forward)[blind.success],
    )
    with torch.no_grad():
        scores = detector.score(model, defense, Forward.of(model, held_out[200:])).double()
    q = torch.quantile(scores, torch.tensor([0.05, 0.25, 0.5, 0.75], dtype=scores.dtype))
    known = KnownDetector(
        "kd+bu", detector, float(q[0]), float(q[3] - q[1]) / 1.349, float(q[2]), combiner=detector.combiner
    )
    x, y, targets = inputs(data, model, 12)
    target = AttackTarget(model, defense, UNIT, known_detectors=(known,))
    result = CarliniWagnerWhiteBox(**FAST, detector="kd+bu", eot=4)(
        target, x, y, targets, generator=torch.Generator().manual_seed(0)
    )
    # a success is confirmed on a 20-pass estimate (the scorer's passes), so fewer are claimed than reach the target
    # (measured: 2 of 12, 7 reach it); every output that reaches the target counts against the scored detector
    hit = result.predicted == targets
    assert result.success.sum() >= 2 and bool((hit | ~result.success).all())
    plain = ATTACKS.get("cw-l2")(**FAST)(AttackTarget(model, defense, UNIT), x, y, targets, generator=torch.Generator())
    unflagged_hits = (detector.score(model, defense, result.forward) >= known.threshold) & hit
    assert int(unflagged_hits.sum()) >= 5
    unflagged = unflagged_hits[hit].float().mean()
    plain_unflagged = (detector.score(model, defense, plain.forward) >= known.threshold)[plain.success].float().mean()
    assert unflagged > plain_unflagged + 0.4


def test_needs_and_attacked_detectors():
    scored = ["kd", "gm-likelihood", "max-prob", "bu"]
    for name in ("gm-likelihood", "max-prob", "bu", "kd+bu"):
        attack = CarliniWagnerWhiteBox(detector=name)
        needs = attack.needs()
        assert needs.detectors == name and not needs.density
        assert attack.attacked_detectors(scored) == ((name,) if name in scored else ())
    kd = CarliniWagnerWhiteBox()
    assert kd.needs().density and kd.needs().detectors is None and kd.attacked_detectors(scored) == ("kd",)
    assert CarliniWagnerWhiteBox(detector="bu").randomized and not CarliniWagnerWhiteBox(detector="max-prob").randomized
    # BU's passes per step make it dearer; a score read off the forward pass costs nothing extra, KD doubles it
    costs = [CarliniWagnerWhiteBox(detector=d).cost() for d in ("max-prob", "kd", "bu")]
    assert costs == sorted(costs) and costs[0] < costs[1] < costs[2]


def test_a_target_without_the_detector_is_a_one_line_error(tiny_gm):
    model, meta = tiny_gm
    defense = DEFENSES.get("gm").for_dataset("mnist", meta.defense_params)
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1])
    known = known_detector("max-prob", model, defense, torch.rand(20, 1, 28, 28))
    for target in (
        AttackTarget(model, defense, UNIT),
        AttackTarget(model, defense, UNIT, known_detectors=(known,)),
    ):
        with pytest.raises(ConfigError, match="targets detector 'gm-likelihood', which this run does not score") as e:
            CarliniWagnerWhiteBox(**FAST, detector="gm-likelihood")(target, x, y, 1 - y, generator=torch.Generator())
        assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"eta_mode": "class"}, "eta_mode only applies to detector=kd, not to 'max-prob'"),
        ({"kd_per_class": 100, "kd_subset": "first"}, "kd_per_class, kd_subset only apply to detector=kd"),
        ({"kd_bandwidth": 0.5}, "kd_bandwidth only applies"),
        ({"eot": 1}, "eot must be an integer >= 2"),
    ],
)
def test_kd_fields_are_refused_with_another_detector(params, fragment):
    with pytest.raises(ConfigError, match=re.escape(fragment)) as error:
        CarliniWagnerWhiteBox(detector="max-prob", **params)
    assert "\n" not in str(error.value)
    CarliniWagnerWhiteBox(**{k: v for k, v in params.items() if k != "eot"})  # the same fields are kd's own


def test_an_unknown_detector_is_one_line_with_a_suggestion():
    with pytest.raises(ConfigError, match="did you mean 'max-prob'") as error:
        CarliniWagnerWhiteBox(detector="max-prb")
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="detector must be one detector's name"):
        CarliniWagnerWhiteBox(detector="all")


# ---------------------------------------------------------------- threats that refuse a detector-aware attacker


@dataclass(frozen=True)
class _MaxProbWhiteBox(CarliniWagnerWhiteBox):
    """cw-wb on max-prob by default, so that adding it to a threat by name builds it with a known detector."""

    detector: str = "max-prob"
    name: ClassVar[str] = "test-cw-wb-max-prob"


def test_an_attack_on_known_detectors_is_refused_where_the_detector_is_unknown_or_a_substitute_crafts():
    attack = ATTACKS.registered(_MaxProbWhiteBox)
    with attack:
        assert _MaxProbWhiteBox().needs().detectors == "max-prob"
        with pytest.raises(ConfigError, match="attacks the detector, which a grey-box attacker does not know") as e:
            distribute(select_threats("semi-white-box", False), {}, (_MaxProbWhiteBox.name,))
        assert "\n" not in str(e.value)
        with pytest.raises(ConfigError, match="crafting on a substitute does not know") as e:
            distribute(select_threats("black-box", True), {}, (_MaxProbWhiteBox.name,))
        assert "\n" not in str(e.value)
        (white,) = distribute(select_threats("white-box", False), {}, (_MaxProbWhiteBox.name,))
        assert _MaxProbWhiteBox.name in white.labels()
    # cw-wb on KD through the density crafts on the substitute's own KD (001 Table 11): accepted
    (black,) = distribute(select_threats("black-box", True), {}, ("cw-wb",))
    assert "cw-wb" in black.labels()


def _threat_file(tmp_path, access: str, params: str, extra: str = "") -> str:
    path = tmp_path / "threat.toml"
    path.write_text(
        f'name = "cw-wb-detectors-test"\naccess = "{access}"\n{extra}\n'
        f'[[attack]]\nlabel = "A"\nattack = "cw-wb"\ntarget_mode = "random"\nparams = {{{params}}}\n'
    )
    return str(path)


@pytest.mark.parametrize(
    ("access", "params", "extra", "fragment"),
    [
        ("grey-box", 'detector = "gm-likelihood"', "", "attacks the detector, which a grey-box attacker does not know"),
        ("black-box", 'detector = "max-prob"', "", "attacks the detector, which a black-box attacker does not know"),
        (
            "black-box",
            'detector = "bu"',
            "substitute = true\nknows_detector = true",
            "attacks the evaluated model's detectors (bu), which an attacker crafting on a substitute does not know",
        ),
    ],
)
def test_threat_files_refuse_a_detector_aware_attacker_in_one_line(tmp_path, access, params, extra, fragment):
    path = _threat_file(tmp_path, access, params, extra)
    with pytest.raises(ConfigError, match=re.escape(fragment)) as error:
        TF.parse_threat_file(path)
    assert "\n" not in str(error.value) and str(error.value).startswith(path)


@pytest.mark.parametrize(
    ("access", "params", "extra"),
    [
        ("white-box", 'detector = "gm-likelihood"', ""),
        ("black-box", "", "substitute = true\nknows_detector = true"),  # kd: the substitute's own KD
        ("black-box", 'detector = "max-prob"', "knows_detector = true"),  # queries the evaluated model, no substitute
    ],
)
def test_threat_files_accept_a_detector_aware_attacker_that_knows_it(tmp_path, access, params, extra):
    threat = TF.parse_threat_file(_threat_file(tmp_path, access, params, extra))
    assert threat.labels() == ["A"]
