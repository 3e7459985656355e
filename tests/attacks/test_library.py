"""The peer libraries' attacks inside robench (``torchattacks:NAME``, ``foolbox:NAME``, robench.attacks.library).

On the committed regression bundles (reports/regression/models/gm.pt and softmax.pt, mnist-5k
cnn models) and the first 100 bundled test images: success rates through robench against the
library called directly on the same inputs (within 2 points), reproducibility from robench's
generator with the global RNG untouched, bounds other than [0, 1], the registry's resolver,
the adapters' fields, and the one-line refusals.
"""

from __future__ import annotations

from pathlib import Path

import foolbox
import pytest
import torch
import torchattacks
from torch import nn

from robench.attacks import ATTACKS, AttackTarget, Bounds, foolbox_adapter, torchattacks_adapter
from robench.attacks.library import LibraryAttack, forked_global_rng
from robench.attacks.targets import choose_targets
from robench.checkpoints.bundle import load_bundle
from robench.core.config import replace_fields
from robench.core.data import load_dataset
from robench.core.errors import ConfigError, UnknownNameError
from robench.core.models import Classifier
from robench.core.registry import Registry
from robench.specs.threat_files import select_threats
from robench.specs.threats import THREATS, AttackSpec, distribute

MODELS = Path(__file__).resolve().parents[2] / "reports" / "regression" / "models"
N = 100
UNIT = Bounds(0.0, 1.0)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def models() -> dict[str, Classifier]:
    out = {}
    for name in ("gm", "softmax"):
        model = load_bundle(MODELS / f"{name}.pt").model
        out[name] = model.eval()
    return out


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    test = load_dataset("mnist-5k").test
    return test.x[:N], test.y[:N]


def _target(model: Classifier, bounds: Bounds = UNIT) -> AttackTarget:
    from robench.defenses import DEFENSES

    return AttackTarget(model, DEFENSES.get("softmax")(), bounds)


def _rate(model: nn.Module, adv: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None = None) -> float:
    with torch.no_grad():
        predicted = model(adv).argmax(1)
    return float((predicted == targets if targets is not None else predicted != y).float().mean())


def _direct(call, seed: int = 0):
    """The library called the way its users call it: on the global RNG, seeded (forked so the test leaves no trace)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return call()


# ---------------------------------------------------------------- the registry's resolver


def test_registry_resolver_builds_once_caches_and_keeps_names_own():
    built: list[str] = []

    class Widget:
        name = "widget"

    def build(rest: str) -> type:
        if rest not in ("Alpha", "Beta"):
            raise UnknownNameError(f"no library widget '{rest}'")
        built.append(rest)
        return type(f"W{rest}", (Widget,), {"name": f"lib:{rest}"})

    reg: Registry[type] = Registry("widget", base=Widget)
    reg.register(Widget)
    reg.add_resolver("lib", build, lambda: ["Alpha", "Beta"])
    first = reg.get("lib:Alpha")
    assert reg.get("lib:Alpha") is first and built == ["Alpha"]  # built once, then cached
    assert reg.names() == ["widget"] and len(reg) == 1  # names() stays the registry's own
    assert "lib:Alpha" in reg and "lib:Beta" in reg and "lib:Gamma" not in reg and "other:Alpha" not in reg
    assert reg.prefixes() == ["lib"] and reg.resolvable("lib") == ["Alpha", "Beta"]
    with pytest.raises(UnknownNameError, match="did you mean 'lib:Alpha'"):
        reg.get("lbi:Alpha")  # a misspelt prefix
    with pytest.raises(UnknownNameError, match="or lib:NAME"):
        reg.get("widgte")
    with pytest.raises(UnknownNameError, match="use lib:NAME"):
        reg.get("lib:")
    with pytest.raises(ConfigError, match="already added"):
        reg.add_resolver("lib", build)
    reg.add_resolver("bad", lambda rest: int)  # not a Widget: refused like a registration
    with pytest.raises(ConfigError, match="must be a subclass of Widget"):
        reg.get("bad:x")


def test_library_names_resolve_with_did_you_mean_and_are_not_listed():
    cls = ATTACKS.get("torchattacks:APGD")
    assert ATTACKS.get("torchattacks:APGD") is cls and issubclass(cls, LibraryAttack)
    assert "torchattacks:APGD" in ATTACKS and "foolbox:LinfPGD" in ATTACKS and "torchattacks:Nope" not in ATTACKS
    assert not [n for n in ATTACKS.names() if ":" in n]
    assert set(ATTACKS.prefixes()) >= {"torchattacks", "foolbox"}
    for name, hint in (
        ("torchattacks:APGX", "did you mean 'torchattacks:APGD'"),
        ("foolbox:LinfPDG", "did you mean 'foolbox:LinfPGD'"),
    ):
        with pytest.raises(UnknownNameError) as info:
            ATTACKS.get(name)
        assert hint in str(info.value) and "\n" not in str(info.value)
    assert "MultiAttack" not in torchattacks_adapter.names() and "DatasetAttack" not in foolbox_adapter.names()


def test_a_missing_library_is_a_one_line_error(monkeypatch):
    def no_import(name: str, *args):
        raise ModuleNotFoundError(f"No module named '{name}'")

    for module in (torchattacks_adapter, foolbox_adapter):
        module._classes.cache_clear()
        monkeypatch.setattr(module.importlib, "import_module", no_import)
        try:
            with pytest.raises(ConfigError) as info:
                module.build("APGD")
            assert f"needs the {module.PREFIX} package" in str(info.value) and "\n" not in str(info.value)
        finally:
            monkeypatch.undo()
            module._classes.cache_clear()


# ---------------------------------------------------------------- fields, defaults, traits


def test_fields_come_from_the_constructor_typed_and_checked():
    apgd = ATTACKS.get("torchattacks:APGD")
    assert apgd().params() == {
        "norm": "linf",
        "eps": 8 / 255,
        "steps": 10,
        "n_restarts": 1,
        "loss": "ce",
        "eot_iter": 1,
        "rho": 0.75,
    }
    assert apgd.for_dataset("mnist").eps == 0.3  # robench's PGD budget on MNIST-like data
    pgd = ATTACKS.get("torchattacks:PGD").for_dataset("mnist")
    assert (pgd.eps, pgd.alpha, pgd.steps, pgd.random_start) == (0.3, 0.01, 10, True)
    changed = replace_fields(apgd(), {"steps": "50", "norm": "L2", "loss": "dlr"}, "attack 'x'")
    assert (changed.steps, changed.norm, changed.loss) == (
        50,
        "l2",
        "dlr",
    )  # CLI strings coerced; norm in robench's spelling
    with pytest.raises(ConfigError, match="did you mean 'dlr'"):
        replace_fields(apgd(), {"loss": "drl"}, "attack 'x'")
    with pytest.raises(ConfigError, match="steps must be an integer >= 1"):
        apgd(steps=0)
    with pytest.raises(ConfigError, match="has no parameter 'seed'"):  # robench owns the seed
        replace_fields(apgd(), {"seed": "3"}, "attack 'x'")
    assert ATTACKS.get("torchattacks:APGDT")().n_classes is None and ATTACKS.get("torchattacks:CW")().c == 1.0
    assert isinstance(replace_fields(ATTACKS.get("torchattacks:CW")(), {"c": "0.5"}, "x").c, float)
    linf_pgd = ATTACKS.get("foolbox:LinfPGD")
    assert linf_pgd().eps == 8 / 255 and linf_pgd.for_dataset("mnist").eps == 0.3 and linf_pgd().steps == 40
    assert replace_fields(linf_pgd(), {"abs_stepsize": "0.01"}, "x").abs_stepsize == 0.01
    assert ATTACKS.get("foolbox:HopSkipJumpAttack")().norm == "l2"
    assert "foolbox" in linf_pgd.description and "LinfProjectedGradientDescentAttack" in linf_pgd.description
    assert "torchattacks" in apgd.description and "APGD" in apgd.description


@pytest.mark.parametrize(
    "name, norm, budget, gradient_free, single_step",
    [
        ("torchattacks:APGD", "linf", "eps", False, False),
        ("torchattacks:PGDL2", "l2", "eps", False, False),
        ("torchattacks:DeepFool", "l2", None, False, False),
        ("torchattacks:CW", "l2", None, False, False),
        ("torchattacks:FGSM", "linf", "eps", False, True),
        ("torchattacks:Square", "linf", "eps", True, False),
        ("foolbox:LinfPGD", "linf", "eps", False, False),
        ("foolbox:L2DeepFoolAttack", "l2", None, False, False),
        ("foolbox:FGSM", "linf", "eps", False, True),
        ("foolbox:HopSkipJumpAttack", "l2", None, True, False),
        ("foolbox:L2CarliniWagnerAttack", "l2", None, False, False),
    ],
)
def test_declared_traits(name, norm, budget, gradient_free, single_step):
    cls = ATTACKS.get(name)
    assert (cls.norm, cls.budget_param, cls.gradient_free, cls.single_step, cls.iterative) == (
        norm,
        budget,
        gradient_free,
        single_step,
        not single_step,
    )


def test_cost_orders_the_cascade_by_steps_times_restarts():
    cost = {
        n: ATTACKS.get(n)().cost()
        for n in (
            "torchattacks:FGSM",
            "torchattacks:APGD",
            "torchattacks:APGDT",
            "torchattacks:Square",
            "foolbox:LinfPGD",
        )
    }
    assert cost["torchattacks:FGSM"] == 1 and cost["torchattacks:APGD"] == 10 and cost["foolbox:LinfPGD"] == 40
    assert (
        cost["torchattacks:APGDT"] == 90
    )  # 9 target classes of 10 steps (n_classes None: 10 assumed for the estimate)
    assert cost["torchattacks:Square"] == 5000
    assert ATTACKS.get("torchattacks:APGD")(steps=100, n_restarts=5).cost() == 500


# ---------------------------------------------------------------- against the libraries called directly


def _torchattacks_case(name: str, params: dict, make, model_name: str, targeted: bool, models, batch):
    x, y = batch
    model = models[model_name]
    targets = choose_targets("random", model(x).detach(), y, _gen(1)) if targeted else None
    result = ATTACKS.get(name)(**params)(_target(model), x, y, targets, generator=_gen(0))
    attack = make(model)
    if targeted:
        attack.set_mode_targeted_by_label(quiet=True)
    adv = _direct(lambda: attack(x, targets if targeted else y))
    return float(result.success.float().mean()), _rate(model, adv, y, targets)


@pytest.mark.parametrize(
    "name, params, make, model_name, targeted",
    [
        ("torchattacks:APGD", {"eps": 0.1, "steps": 5}, lambda m: torchattacks.APGD(m, eps=0.1, steps=5), "gm", False),
        (
            "torchattacks:PGD",
            {"eps": 0.15, "alpha": 0.02, "steps": 5},
            lambda m: torchattacks.PGD(m, eps=0.15, alpha=0.02, steps=5),
            "softmax",
            False,
        ),
        (
            "torchattacks:PGD",
            {"eps": 0.2, "alpha": 0.02, "steps": 10},
            lambda m: torchattacks.PGD(m, eps=0.2, alpha=0.02, steps=10),
            "gm",
            True,
        ),
    ],
)
def test_torchattacks_success_matches_the_library_called_directly(
    name, params, make, model_name, targeted, models, batch
):
    ours, theirs = _torchattacks_case(name, params, make, model_name, targeted, models, batch)
    assert 0.05 < theirs < 0.95  # a rate with room to disagree
    assert abs(ours - theirs) <= 0.02


@pytest.mark.parametrize(
    "name, params, make, eps, model_name, targeted",
    [
        (
            "foolbox:LinfPGD",
            {"eps": 0.15, "steps": 10, "rel_stepsize": 0.1},
            lambda: foolbox.attacks.LinfPGD(steps=10, rel_stepsize=0.1),
            0.15,
            "softmax",
            False,
        ),
        (
            "foolbox:L2DeepFoolAttack",
            {"steps": 5, "candidates": 3},
            lambda: foolbox.attacks.L2DeepFoolAttack(steps=5, candidates=3),
            None,
            "gm",
            False,
        ),
        (
            "foolbox:LinfPGD",
            {"eps": 0.2, "steps": 10, "rel_stepsize": 0.1},
            lambda: foolbox.attacks.LinfPGD(steps=10, rel_stepsize=0.1),
            0.2,
            "gm",
            True,
        ),
    ],
)
def test_foolbox_success_matches_the_library_called_directly(
    name, params, make, eps, model_name, targeted, models, batch
):
    x, y = batch
    model = models[model_name]
    targets = choose_targets("random", model(x).detach(), y, _gen(1)) if targeted else None
    result = ATTACKS.get(name)(**params)(_target(model), x, y, targets, generator=_gen(0))
    criterion = (
        foolbox.criteria.TargetedMisclassification(targets) if targeted else foolbox.criteria.Misclassification(y)
    )
    fmodel = foolbox.PyTorchModel(model, bounds=(0.0, 1.0), device="cpu")
    _, adv, _ = _direct(lambda: make()(fmodel, x, criterion, epsilons=eps))
    ours, theirs = float(result.success.float().mean()), _rate(model, adv, y, targets)
    assert 0.05 < theirs < 0.95
    assert abs(ours - theirs) <= 0.02
    if eps is not None:
        assert float((result.x_adv - x).abs().max()) <= eps + 1e-6


# ---------------------------------------------------------------- reproducibility and the global RNG


@pytest.mark.parametrize(
    "name, params",
    [
        ("torchattacks:APGD", {"steps": 3}),
        ("torchattacks:PGD", {"steps": 2}),
        ("foolbox:LinfPGD", {"steps": 2}),
        ("torchattacks:Square", {"n_queries": 20}),
    ],
)
def test_same_seed_same_result_and_the_global_rng_is_untouched(name, params, models, batch):
    x, y = batch[0][:20], batch[1][:20]
    attack = ATTACKS.get(name).for_dataset("mnist", params)
    target = _target(models["softmax"])
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    tracker = getattr(torch.cuda, "_lazy_seed_tracker", None)  # CUDA seeds queued while CUDA is not initialised
    queued = repr(vars(tracker)) if tracker is not None else None
    first = attack(target, x, y, generator=_gen(7))
    assert torch.equal(torch.get_rng_state(), state)  # APGD / Square reseed the global RNG themselves: forked
    assert tracker is None or repr(vars(tracker)) == queued
    if cuda is not None:
        assert all(torch.equal(a, b) for a, b in zip(torch.cuda.get_rng_state_all(), cuda))
    again = attack(target, x, y, generator=_gen(7))
    assert torch.equal(first.x_adv, again.x_adv) and torch.equal(first.success, again.success)
    other = attack(target, x, y, generator=_gen(8))
    assert not torch.equal(first.x_adv, other.x_adv)  # the randomness is robench's generator's


def test_forked_global_rng_restores_the_state_and_seeds_the_block():
    torch.manual_seed(5)
    state = torch.get_rng_state()
    with forked_global_rng(11):
        inside = torch.rand(3)
        torch.manual_seed(99)  # what torchattacks' APGD does
    with forked_global_rng(11):
        assert torch.equal(torch.rand(3), inside)
    assert torch.equal(torch.get_rng_state(), state)


# ---------------------------------------------------------------- bounds other than [0, 1]


class _Signed(nn.Module):
    """[-1, 1] inputs -> the [0, 1] ones the bundled model was trained on."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + 1) / 2


@pytest.mark.parametrize(
    "name, eps, step",
    [
        ("torchattacks:PGD", 0.2, "alpha"),
        ("foolbox:LinfPGD", 0.2, None),
        ("torchattacks:APGD", 0.1, None),
    ],  # foolbox's step is relative to eps
)
def test_bounds_other_than_unit_are_the_models_own(name, eps, step, models, batch):
    x, y = batch[0][:40], batch[1][:40]
    model = models["gm"]
    signed = Classifier(nn.Sequential(_Signed(), model.normalize), model.backbone, model.head).eval()
    steps = {step: 0.05} if step else {}
    unit = ATTACKS.get(name)(eps=eps, steps=3, **steps)
    twice = ATTACKS.get(name)(
        eps=2 * eps, steps=3, **{k: 2 * v for k, v in steps.items()}
    )  # the same budget on a range twice as wide
    ours = unit(_target(model), x, y, generator=_gen(3))
    wide = twice(_target(signed, Bounds(-1.0, 1.0)), 2 * x - 1, y, generator=_gen(3))
    assert float(wide.x_adv.min()) < -0.5 and float(wide.x_adv.max()) <= 1.0  # not clamped to [0, 1]
    assert float((wide.x_adv - (2 * x - 1)).abs().max()) <= 2 * eps + 1e-5
    assert torch.allclose((wide.x_adv + 1) / 2, ours.x_adv, atol=1e-4)
    assert torch.equal(wide.success, ours.success)


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "name, threat, target_mode, fragment",
    [
        ("torchattacks:APGD", "semi-white-box", "random", "supports only default mode"),
        ("torchattacks:SPSA", "spsa", "random", "never calls get_target_label"),
        ("torchattacks:FAB", "semi-white-box", "least-likely", "multi_targeted"),
        ("foolbox:L2DeepFoolAttack", "semi-white-box", "random", "does not implement TargetedMisclassification"),
        ("foolbox:GenAttack", "spsa", "none", "implements only TargetedMisclassification"),
        ("torchattacks:PGD", "spsa", "none", "black-box with queries only"),
        ("foolbox:LinfPGD", "spsa", "none", "black-box with queries only"),
        ("torchattacks:Square", "noise", "none", "has no attacker"),
    ],
)
def test_combinations_the_library_runs_wrong_are_refused_in_one_line(name, threat, target_mode, fragment):
    known = THREATS.get(threat)
    with pytest.raises(ConfigError) as info:
        ATTACKS.get(name).check_spec(
            label=name,
            threat=threat,
            access=known.access,
            needs_substitute=known.needs_substitute,
            target_mode=target_mode,
        )
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_combinations_that_work_are_accepted():
    for name, threat, mode in (
        ("torchattacks:Square", "spsa", "none"),
        ("torchattacks:Square", "spsa", "random"),
        ("torchattacks:PGD", "black-box", "none"),  # transfer from a substitute: gradients of the substitute
        ("torchattacks:PGD", "semi-white-box", "least-likely"),
        ("foolbox:LinfPGD", "white-box", "random"),
        ("foolbox:HopSkipJumpAttack", "spsa", "none"),
    ):
        known = THREATS.get(threat)
        ATTACKS.get(name).check_spec(
            label=name, threat=threat, access=known.access, needs_substitute=known.needs_substitute, target_mode=mode
        )


def test_refusals_also_hold_when_called_directly(models, batch):
    x, y = batch[0][:4], batch[1][:4]
    targets = (y + 1) % 10
    with pytest.raises(ConfigError, match="supports only default mode"):
        ATTACKS.get("torchattacks:APGD")()(_target(models["softmax"]), x, y, targets, generator=_gen())
    with pytest.raises(ConfigError, match="does not implement TargetedMisclassification"):
        ATTACKS.get("foolbox:L2DeepFoolAttack")()(_target(models["softmax"]), x, y, targets, generator=_gen())


def test_torchattacks_cw_is_refused_on_negative_logits_and_runs_on_softmax(models, batch):
    x, y = batch[0][:4], batch[1][:4]
    cw = ATTACKS.get("torchattacks:CW")(steps=2)
    with pytest.raises(ConfigError) as info:
        cw(_target(models["gm"]), x, y, generator=_gen())
    assert "cw-l2" in str(info.value) and "negative" in str(info.value) and "\n" not in str(info.value)
    result = cw(_target(models["softmax"]), x, y, generator=_gen())
    assert result.x_adv.shape == x.shape


def test_library_refusals_of_arguments_become_one_line():
    attack = ATTACKS.get("torchattacks:PGD")()

    def refuses(kind):
        def call():
            raise kind("bad\nargument")

        return call

    for kind in (ValueError, AssertionError, NotImplementedError, TypeError):
        with pytest.raises(ConfigError) as info:
            attack._library_call(refuses(kind))
        assert "torchattacks refused the call: bad argument" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(RuntimeError):  # not an argument problem (e.g. out of memory): left to the runner
        attack._library_call(refuses(RuntimeError))


def test_empty_batch_and_dtype(models, batch):
    x, y = batch
    for name in ("torchattacks:PGD", "foolbox:LinfPGD"):
        out = ATTACKS.get(name)(steps=1)(_target(models["softmax"]), x[:0], y[:0], generator=_gen())
        assert out.x_adv.shape == (0, *x.shape[1:])


@pytest.mark.slow  # 25-40 s; tests/test_autoattack_threat.py runs the four components (shortened) in CI
def test_autoattack_components_take_their_standard_settings(models, batch):
    """APGD-CE, APGD-T (n_classes from the model), FAB-T and Square as the autoattack threat runs them (few images)."""
    x, y = batch[0][:6], batch[1][:6]
    target = _target(models["softmax"])
    apgdt = ATTACKS.get("torchattacks:APGDT")(steps=100, n_restarts=1)
    kwargs = apgdt.library_kwargs(target, 1.0, seed=3)
    assert kwargs["n_classes"] == 10 and kwargs["seed"] == 3 and kwargs["verbose"] is False
    for name, params in (
        ("torchattacks:APGD", {"loss": "ce", "n_restarts": 1, "steps": 100}),
        ("torchattacks:APGDT", {"n_restarts": 1, "steps": 100}),
        ("torchattacks:FAB", {"multi_targeted": True, "n_restarts": 1, "steps": 100}),
        ("torchattacks:Square", {"n_queries": 5000, "n_restarts": 1}),
    ):
        result = ATTACKS.get(name).for_dataset("mnist", params)(target, x, y, generator=_gen())
        assert float((result.x_adv - x).abs().max()) <= 0.3 + 1e-6
        assert bool(result.success.all()), name  # eps 0.3 on MNIST: every standard component breaks these six


# ---------------------------------------------------------------- threats: --attack LIB:NAME, --set, suites


def test_attack_option_adds_a_library_attack_and_set_applies_to_it():
    (threat,) = distribute(
        select_threats("semi-white-box", False), {"torchattacks:APGD.steps": "50"}, ("torchattacks:APGD", "FGSM")
    )
    assert threat.labels() == ["FGSM", "torchattacks:APGD"]
    spec = threat.attacks[1]
    assert (spec.attack, spec.params, spec.target_mode) == ("torchattacks:APGD", {"steps": "50"}, "none")
    assert spec.build("mnist").steps == 50 and spec.build("mnist").eps == 0.3
    with pytest.raises(ConfigError, match="supports only default mode"):
        distribute(
            select_threats("semi-white-box", False), {"torchattacks:APGD.target_mode": "random"}, ("torchattacks:APGD",)
        )
    with pytest.raises(ConfigError, match="black-box with queries only"):
        distribute(select_threats("spsa", False), {}, ("torchattacks:APGD",))
    with pytest.raises(UnknownNameError, match="did you mean 'torchattacks:APGD'"):
        distribute(select_threats("semi-white-box", False), {}, ("torchattacks:APGX",))
    (spsa,) = distribute(select_threats("spsa", False), {"torchattacks:Square.n_queries": 10}, ("torchattacks:Square",))
    assert spsa.labels() == ["torchattacks:Square"]


def test_threat_all_hosts_a_gradient_attack_only_where_gradients_are_known():
    threats = distribute(select_threats("all", False), {}, ("torchattacks:PGD",))
    hosts = {t.name for t in threats}
    assert {"semi-white-box", "white-box"} <= hosts and not hosts & {"spsa", "noise", "rotation"}


def test_suite_added_library_attacks_are_checked():
    base = THREATS.get("semi-white-box")
    added = base.with_added(
        [{"label": "APGD-lib", "attack": "torchattacks:APGD", "params": {"steps": 5}, "target_mode": "none"}]
    )
    (threat,) = distribute([added], {"APGD-lib.n_restarts": 2}, ("APGD-lib",))
    assert threat.attacks[0].build("mnist").n_restarts == 2
    wrong = base.with_added([{"label": "APGD-tar", "attack": "torchattacks:APGD", "target_mode": "random"}])
    with pytest.raises(ConfigError, match="APGD-tar"):
        distribute([wrong], {}, ())
    assert AttackSpec("x", "torchattacks:APGD").config("mnist")["params"]["eps"] == 0.3
