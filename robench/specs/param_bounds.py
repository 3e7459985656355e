"""Upper bounds on the numbers a user gives an attack's parameters (threat files, a suite's set / add, ``--set``).

The attacks' own fields say what is valid (``steps >= 1``, ``eps > 0``); these bounds say what is
sane to run: a typo such as ``steps = 1000000000000`` would otherwise run until it is killed.
Each bound is far above anything the papers or the field use (C&W's 10,000 steps, SPSA's 8,192
samples, Square's 5,000-10,000 queries, foolbox's Boundary attack's 25,000 steps).

======================================  ==========  ==============================================
parameters                              at most     what they count
======================================  ==========  ==============================================
steps, max_iterations, nb_iter,          100,000     iterations (each a pass of the model, or more)
num_iter_set, n_queries,
max_gradient_eval_steps,
initial_gradient_eval_steps,
directions, repeats, lr_num_decay
n_restarts, restarts                     1,000       restarts (each reruns every iteration)
binary_search_steps, first_search_steps  100         binary-search steps over C&W's constant
samples, nb_sample, eot_iter,            65,536      samples / copies per iteration
noise_batch_size, population, popsize,
N, m
max_batch, max_batch_size, batch_max,    65,536      inputs per forward pass (memory)
inf_batch
any other number (eps, lr, kappa, ...)   1,000,000   in magnitude
======================================  ==========  ==============================================

Only the parameters a user sets are checked (a library's own defaults are its business).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from robench.core.errors import ConfigError

ITERATIONS = 100_000
RESTARTS = 1_000
SEARCH_STEPS = 100
SAMPLES = 65_536
BATCH = 65_536
ANY_NUMBER = 1_000_000

_GROUPS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (ITERATIONS, "iterations", ("steps", "max_iterations", "nb_iter", "num_iter_set", "n_queries",
                                "max_gradient_eval_steps", "initial_gradient_eval_steps", "directions", "repeats",
                                "lr_num_decay")),
    (RESTARTS, "restarts", ("n_restarts", "restarts")),
    (SEARCH_STEPS, "binary-search steps", ("binary_search_steps", "first_search_steps")),
    (SAMPLES, "samples per iteration", ("samples", "nb_sample", "eot_iter", "noise_batch_size", "population",
                                        "popsize", "N", "m")),
    (BATCH, "inputs per forward pass", ("max_batch", "max_batch_size", "batch_max", "inf_batch")),
)  # fmt: skip

# parameter name -> (its maximum, what it counts)
PARAM_BOUNDS: dict[str, tuple[int, str]] = {name: (limit, unit) for limit, unit, names in _GROUPS for name in names}


def bound_of(name: str) -> tuple[int, str]:
    """(the maximum, what it counts) of parameter ``name``; any other number's magnitude is at most ANY_NUMBER."""
    return PARAM_BOUNDS.get(name, (ANY_NUMBER, "any attack parameter's magnitude"))


def _number(value: int | float) -> str:
    if isinstance(value, int) and value.bit_length() > 128:
        return f"an integer of {value.bit_length()} bits"
    return f"{value:g}" if isinstance(value, float) else str(value)


def check_bounds(attack: Any, names: Iterable[str], what: str) -> None:
    """A one-line ConfigError if a parameter in ``names`` of the built ``attack`` exceeds its bound
    (:data:`PARAM_BOUNDS`)."""
    for name in names:
        value = getattr(attack, name, None)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        limit, unit = bound_of(name)
        if abs(value) > limit:
            raise ConfigError(
                f"{what}: {name} must be at most {limit:,} ({unit}; robench's bound, see robench.specs.param_bounds), "
                f"got {_number(value)}"
            )
