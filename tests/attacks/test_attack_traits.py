"""Traits declared on the attack classes for tables and sanity checks: iterative, single-step, budget parameter."""

import dataclasses

import pytest

from robench.attacks import ATTACKS

ITERATIVE = {
    "bim",
    "ilcm",
    "pgd",
    "mim",
    "cw-l2",
    "cw-hc",
    "cw-wb",
    "spsa",
    "apgd",
    "apgd-l2",
    "fmn-l2",
    "fmn-linf",
    "ddn",
    "orthogonal-pgd",
    "orthogonal-pgd-l2",
    "selective-pgd",
    "selective-pgd-l2",
}
BUDGET = {
    "fgsm": "eps",
    "bim": "eps",
    "ilcm": "eps",
    "pgd": "eps",
    "mim": "eps",
    "spsa": "eps",
    "apgd": "eps",
    "apgd-l2": "eps",
    "gaussian-noise": "sigma",
    "rotation": "max_degrees",
    "cw-l2": None,
    "cw-hc": None,
    "cw-wb": None,
    "fmn-l2": None,
    "fmn-linf": None,
    "ddn": None,
    "orthogonal-pgd": "eps",
    "orthogonal-pgd-l2": "eps",
    "selective-pgd": "eps",
    "selective-pgd-l2": "eps",
}


def test_every_attack_is_classified():
    assert set(ATTACKS.names()) == set(BUDGET)
    assert {name for name, cls in ATTACKS.items() if cls.iterative} == ITERATIVE
    assert {name for name, cls in ATTACKS.items() if cls.single_step} == {"fgsm"}
    assert {name: cls.budget_param for name, cls in ATTACKS.items()} == BUDGET


@pytest.mark.parametrize("name", ATTACKS.names())
def test_budget_param_names_a_field(name: str):
    cls = ATTACKS.get(name)
    if cls.budget_param is not None:
        assert cls.budget_param in {f.name for f in dataclasses.fields(cls)}
    assert not (cls.iterative and cls.single_step)
