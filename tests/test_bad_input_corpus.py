"""A corpus of bad input, generated from the registries and the commands' option types, plus hand-written cases.

Every case must end, before any training, detector fit or attack runs, in a non-zero exit of the expected
kind (2 for a bad name or option, 1 for a bad file; either where it is ambiguous), exactly one line on
stderr starting ``robench: error:``, no traceback or "internal error", and no file written anywhere: each
case runs in a fresh empty current folder that must stay empty, an audit hook (:class:`WriteAudit`) sees no
write outside the case's temporary folder, the shared inputs (the "world", see tests/corpus_helpers.py)
must stay as they were, a pickle payload's marker file must never appear, and no new file may appear in
the repository (``git status``) over the whole corpus.

The heavy steps (training, detector fits, a suite's runs, the demo's models) are replaced by a guard that
raises :class:`ValidationPassed`: a case whose bad value slips through validation ends as
"robench: internal error: ValidationPassed: ..." in a few milliseconds instead of training or attacking.
``test_contexts_are_valid`` checks that each command line a generated case builds on does pass
validation, so that a case fails because of its one bad value and not because of its context.

Bugs the corpus found are listed in ``KNOWN_BUGS`` (case id -> reason): those cases are strict xfails, so
the suite stays green, a fix turns them into an XPASS failure, and the entry must then be removed.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

import robench
from corpus_helpers import (
    BAD_BASELINES,
    BAD_CHECKPOINTS,
    DATA_ROOTS,
    MARKER,
    RUN_FOLDERS,
    build_world,
    snapshot,
    suite_texts,
)
from import_fixtures import bad_imports, small_net, write_bad_imports, write_import_sources
from robench.attacks import ATTACKS
from robench.attacks.cw_wb import ETA_MODES
from robench.checkpoints.training import TrainConfig
from robench.cli.commands import cli
from robench.core.data import DATASETS
from robench.core.errors import ConfigError, RobenchError
from robench.core.models import ARCHITECTURES
from robench.defenses import DEFENSES
from robench.detectors import DETECTORS
from robench.report.tables import FORMATS, LAYOUTS
from robench.scoring.metrics import METRICS, POPULATIONS
from robench.specs.run_config import RunConfig
from robench.specs.threats import THREATS
from test_cli import assert_one_line_error
from test_cli import run as run_cli

REPO = Path(__file__).resolve().parents[1]
W = "{W}"  # stands for the world folder in a case's arguments
HUGE = "99999999999999999999999"
NAME_CODES = (2,)
FILE_CODES = (1, 2)

# ---------------------------------------------------------------- the bugs this corpus found (strict xfails)


KNOWN_BUGS: dict[str, str] = {}  # every bug the corpus found so far is fixed; add new ones here as strict xfails


class ValidationPassed(Exception):
    """Raised where the heavy work would start: the bad input was not caught by validation."""


def _refuse(what: str):
    def refuse(*args, **kwargs):
        raise ValidationPassed(f"validation passed: {what} would start")

    return refuse


def _detect_fit_or_load(detector, bundle, *args, **kwargs):
    """``robench detect``: the applicability check still runs; a detector that needs a fit hits the guard."""
    detector.check_applicable(bundle.model, bundle.defense)
    if detector.needs_fit:
        raise ValidationPassed(f"validation passed: fitting detector '{detector.name}' would start")
    return False


GUARDS = [
    ("robench.checkpoints.train_bundle.train", _refuse("training")),
    ("robench.runs.runner.run_plans", _refuse("the run's detector fits and attacks")),
    ("robench.runs.detection.fit_or_load", _detect_fit_or_load),
    ("robench.runs.suite._run_pairs", _refuse("the suite's runs")),
    ("robench.app.demo.ensure_model", _refuse("the demo's training")),
    ("robench.checkpoints.imported.importer._export", _refuse("the import's export")),
]

# ---------------------------------------------------------------- command lines the generated cases build on

CONTEXTS: dict[str, list[str]] = {
    "train": ["train", "--out", "x.pt", "--device", "cpu", "--no-progress"],
    "run": [
        "run",
        "--model",
        f"{W}/softmax.pt",
        "--threat",
        "noise",
        "--device",
        "cpu",
        "--no-progress",
        "--no-sanity",
        "--detector",
        "max-prob",
        "--out",
        "o",
    ],
    "detect": ["detect", "--model", f"{W}/softmax.pt", "--detector", "kd", "--device", "cpu"],
    "suite": ["suite", f"{W}/good-suite.toml", "--out", "o", "--no-progress"],
    "demo": ["demo", "--out", "o", "--models-dir", "m", "--device", "cpu", "--no-progress"],
    "report": ["report", f"{W}/run", "--ci"],
    "baseline": ["baseline", f"{W}/run", "--out", "b.json"],
    "check": ["check", f"{W}/run", "--baseline", f"{W}/baseline.json"],
    "info": ["info", f"{W}/softmax.pt"],
    "list": ["list"],
    "import": [
        "import",
        f"{W}/import/net.pt2",
        "--out",
        "x.pt",
        "--feature-layer",
        "penultimate",
        "--dataset",
        "mnist-5k",
    ],
}


def _without(args: list[str], option: str) -> list[str]:
    """``args`` less ``option`` and its value."""
    i = args.index(option)
    return args[:i] + args[i + 2 :]


def _run_ctx(threat: str = "noise", model: str = "softmax") -> list[str]:
    args = _without(CONTEXTS["run"], "--threat") + ["--threat", threat]
    if model != "softmax":
        args = _without(args, "--model") + ["--model", f"{W}/{model}.pt"]
    return args


def misspell(name: str, known) -> str:
    """A near miss of ``name`` that is not itself a known name: its last character doubled (or an 'x' added)."""
    for candidate in (name + name[-1], name + "x", name + "xx"):
        if candidate not in known:
            return candidate
    raise AssertionError(name)


# ---------------------------------------------------------------- case bookkeeping

CASES: list = []
_IDS: set[str] = set()


def case(case_id: str, args: list[str], codes=NAME_CODES, fragments=()) -> None:
    """Add one CLI case; each fragment must appear in the error line (a tuple fragment: any one of them)."""
    assert case_id not in _IDS, case_id
    _IDS.add(case_id)
    marks = [pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[case_id])] if case_id in KNOWN_BUGS else []
    CASES.append(pytest.param(list(args), tuple(codes), tuple(fragments), id=case_id, marks=marks))


def did_you_mean(name: str) -> tuple[str, str]:
    return ("did you mean", f"'{name}'")


# ---------------------------------------------------------------- generated: misspelled registered names


def _names() -> None:
    for command in cli.list_commands(None):
        case(
            f"command:{command}",
            [misspell(command, cli.list_commands(None))],
            fragments=("unknown command", *did_you_mean(command)),
        )
    kinds = ["datasets", "architectures", "defenses", "detectors", "attacks", "threats"]
    for kind in kinds:
        case(f"list:{kind}", ["list", misspell(kind, kinds)], fragments=("unknown kind", *did_you_mean(kind)))
    for option, registry in (("--dataset", DATASETS), ("--arch", ARCHITECTURES), ("--defense", DEFENSES)):
        for name in registry.names():
            case(
                f"train{option}:{name}",
                CONTEXTS["train"] + [option, misspell(name, registry.names())],
                fragments=did_you_mean(name),
            )
    for name in THREATS.names():
        case(f"run--threat:{name}", _run_ctx(misspell(name, [*THREATS.names(), "all"])), fragments=did_you_mean(name))
        threat = THREATS.get(name)
        labels = threat.labels()
        context = _run_ctx(name) + (["--substitute", f"{W}/gm.pt"] if threat.needs_substitute else [])
        for label in labels:
            case(
                f"run--attack:{name}:{label}",
                context + ["--attack", misspell(label, labels)],
                fragments=did_you_mean(label),
            )
            case(
                f"run--set-label:{name}:{label}",
                context + ["--set", f"{misspell(label, labels)}.steps=1"],
                fragments=did_you_mean(label),
            )
    for name in DETECTORS.names():
        bad = misspell(name, DETECTORS.names())
        case(
            f"run--detector:{name}",
            _without(_run_ctx(), "--detector") + ["--detector", bad],
            fragments=did_you_mean(name),
        )
        case(
            f"detect--detector:{name}",
            _without(CONTEXTS["detect"], "--detector") + ["--detector", bad],
            fragments=did_you_mean(name),
        )
    for name in DATASETS.names():
        case(
            f"run--dataset:{name}",
            _run_ctx() + ["--dataset", misspell(name, DATASETS.names())],
            fragments=did_you_mean(name),
        )
    for name in LAYOUTS.names():
        case(
            f"report--layout:{name}",
            CONTEXTS["report"] + ["--layout", misspell(name, LAYOUTS.names())],
            fragments=did_you_mean(name),
        )
    for name in FORMATS:
        case(
            f"report--format:{name}",
            CONTEXTS["report"] + ["--format", misspell(name, FORMATS)],
            fragments=("--format",),
        )
    for name in POPULATIONS:
        case(
            f"report--population:{name}",
            CONTEXTS["report"] + ["--population", misspell(name, list(POPULATIONS))],
            fragments=did_you_mean(name),
        )
    for name in ETA_MODES:
        wb = _without(_run_ctx("white-box"), "--detector") + ["--detector", "kd", "--attack", "C&W-wb"]
        case(
            f"run--set:eta_mode:{name}",
            wb + ["--set", f"C&W-wb.eta_mode={misspell(name, list(ETA_MODES))}"],
            fragments=did_you_mean(name),
        )
    for name in METRICS.names():
        case(
            f"check--tolerance:{name}",
            CONTEXTS["check"] + ["--tolerance", f"{misspell(name, METRICS.names())}=0.1"],
            fragments=did_you_mean(name),
        )


# ---------------------------------------------------------------- generated: numeric options of every command

COUNTS = {"--epochs", "--batch-size", "--n", "--resamples"}  # ints that count something: -1 and 0 are bad
# Where a huge int is accepted by design, not a bug: a count beyond what there is means "all of it" (run.json
# records how many; a batch beyond the split is one batch), epochs have no upper bound (a long training is not
# an invalid one), and baseline's --seed is hashed (sha256 of its text), so any integer seeds it.
HUGE_IS_VALID = {
    ("run", "--n"), ("run", "--batch-size"), ("suite", "--n"), ("demo", "--n"),
    ("train", "--batch-size"), ("train", "--epochs"), ("baseline", "--seed"),
}  # fmt: skip
NEGATIVE_IS_VALID: set[tuple[str, str]] = set()  # float options that may be negative (none yet)


def numeric_options() -> list[tuple[str, click.Option]]:
    found = []
    for name, command in sorted(cli.commands.items()):
        for param in command.params:
            if isinstance(param, click.Option) and isinstance(
                param.type, (click.types.IntParamType, click.types.FloatParamType)
            ):
                found.append((name, param))
    return found


def _numeric() -> None:
    for command, param in numeric_options():
        option = max(param.opts, key=len)
        is_int = isinstance(param.type, click.types.IntParamType)
        values = ["nan", "inf", "-inf", "abc", "1e400"]
        if is_int and option in COUNTS:
            values += ["-1", "0"]
        if is_int and (command, option) not in HUGE_IS_VALID:
            values.append(HUGE)
        if not is_int and (command, option) not in NEGATIVE_IS_VALID:
            values.append("-1")
        stem = option.lstrip("-")
        for value in values:
            case(
                f"{command}{option}={value}",
                CONTEXTS[command] + [option, value],
                fragments=((stem, stem.replace("-", "_")),),
            )


# ---------------------------------------------------------------- generated: attack, detector, defense, training
#                                                                  and architecture fields


def _first_label(attack: str) -> tuple[str, str] | None:
    """(threat, label) of the first threat running ``attack``, preferring threats without a substitute."""
    threats = sorted(THREATS.items(), key=lambda item: item[1].needs_substitute)
    for name, threat in threats:
        for spec in threat.attacks:
            if spec.attack == attack:
                return name, spec.label
    return None


def _fields(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init]


def _attack_fields() -> None:
    for attack, cls in ATTACKS.items():
        found = _first_label(attack)
        if found is None:  # a registered attack no threat uses: reachable through the Python API only
            continue
        threat, label = found
        context = _run_ctx(threat) + (["--substitute", f"{W}/gm.pt"] if THREATS.get(threat).needs_substitute else [])
        names = _fields(cls)
        for field in names:
            for value in ("nan", "abc"):
                case(
                    f"run--set:{attack}:{label}.{field}={value}",
                    context + ["--set", f"{label}.{field}={value}"],
                    fragments=(field,),
                )
            case(
                f"run--set:{attack}:{label}.{field}-misspelled",
                context + ["--set", f"{label}.{misspell(field, names)}=1"],
                fragments=did_you_mean(field),
            )


DETECTOR_MODELS = {"bu": "dropout", "kd+bu": "dropout", "gm-likelihood": "gm"}  # a bundle each detector applies to
RUN_REFUSES: set[str] = set()  # detectors 'robench run' refuses whatever their parameters (none since kd+bu runs)


def _detector_fields() -> None:
    for detector, cls in DETECTORS.items():
        model = DETECTOR_MODELS.get(detector, "softmax")
        run_context = _without(_run_ctx(model=model), "--detector") + ["--detector", detector]
        detect_context = _without(_without(CONTEXTS["detect"], "--detector"), "--model") + [
            "--model",
            f"{W}/{model}.pt",
            "--detector",
            detector,
        ]
        names = _fields(cls)
        for field in names:
            for value in ("nan", "abc"):
                if detector not in RUN_REFUSES:
                    case(
                        f"run--detector-set:{detector}.{field}={value}",
                        run_context + ["--detector-set", f"{detector}.{field}={value}"],
                        fragments=(field,),
                    )
                case(
                    f"detect--set:{detector}.{field}={value}",
                    detect_context + ["--set", f"{detector}.{field}={value}"],
                    fragments=(field,),
                )
            bad = f"{detector}.{misspell(field, names)}=1"
            case(
                f"detect--set:{detector}.{field}-misspelled",
                detect_context + ["--set", bad],
                fragments=did_you_mean(field),
            )


def _defense_fields() -> None:
    for defense, cls in DEFENSES.items():
        names = _fields(cls)
        for field in names:
            for value in ("nan", "inf", "abc"):
                case(
                    f"train--defense-param:{defense}.{field}={value}",
                    CONTEXTS["train"] + ["--defense", defense, "--defense-param", f"{field}={value}"],
                    fragments=(field,),
                )
            case(
                f"train--defense-param:{defense}.{field}-misspelled",
                CONTEXTS["train"] + ["--defense", defense, "--defense-param", f"{misspell(field, names)}=1"],
                fragments=did_you_mean(field),
            )


def _train_fields() -> None:
    names = _fields(TrainConfig)
    for field in names:
        for value in ("nan", "abc"):
            case(
                f"train--train-param:{field}={value}",
                CONTEXTS["train"] + ["--train-param", f"{field}={value}"],
                fragments=(field,),
            )
        case(
            f"train--train-param:{field}-misspelled",
            CONTEXTS["train"] + ["--train-param", f"{misspell(field, names)}=1"],
            fragments=did_you_mean(field),
        )


def _arch_kwargs(arch: str) -> list[str]:
    return [
        p.name
        for p in inspect.signature(ARCHITECTURES.get(arch).build).parameters.values()
        if p.default is not inspect.Parameter.empty
    ]


def _arch_fields() -> None:
    for arch in ARCHITECTURES.names():
        context = CONTEXTS["train"] + ["--arch", arch] + ([] if arch == "cnn" else ["--dataset", "digits"])
        names = _arch_kwargs(arch)
        for field in names:
            for value in ("nan", "NaN", "abc", "-1"):
                case(
                    f"train--arch-param:{arch}.{field}={value}",
                    context + ["--arch-param", f"{field}={value}"],
                    fragments=(field,),
                )
            case(
                f"train--arch-param:{arch}.{field}-misspelled",
                context + ["--arch-param", f"{misspell(field, names)}=1"],
                fragments=did_you_mean(field),
            )


# ---------------------------------------------------------------- hand-written: checkpoints


def _checkpoints() -> None:
    for name in BAD_CHECKPOINTS:
        path = f"{W}/{name}"
        case(f"info:{name}", ["info", path], FILE_CODES, (name,))
        case(f"info--json:{name}", ["info", path, "--json"], FILE_CODES, (name,))
        case(f"detect--model:{name}", _without(CONTEXTS["detect"], "--model") + ["--model", path], FILE_CODES, (name,))
        case(f"run--model:{name}", _without(_run_ctx(), "--model") + ["--model", path], FILE_CODES, (name,))
        case(f"run--substitute:{name}", _run_ctx("black-box") + ["--substitute", path], FILE_CODES, (name,))


# ---------------------------------------------------------------- hand-written: suites


def _suites() -> None:
    for name in suite_texts():
        case(f"suite:{name}", ["suite", f"{W}/suite-{name}.toml", "--out", "o", "--no-progress"], FILE_CODES)
    case("suite:missing-file", ["suite", f"{W}/no-such-suite.toml", "--out", "o"], FILE_CODES, ("no-such-suite.toml",))
    case("suite:a-directory", ["suite", f"{W}/suite-dir.toml", "--out", "o"], FILE_CODES, ("suite-dir.toml",))
    case("suite:not-a-toml-file", ["suite", f"{W}/softmax.pt", "--out", "o"], FILE_CODES)
    case("suite--out:a-file", ["suite", f"{W}/good-suite.toml", "--out", f"{W}/a-file"], NAME_CODES, ("--out",))
    case("suite--device:tpu", CONTEXTS["suite"] + ["--device", "tpu"], NAME_CODES, ("tpu",))
    case("suite:a-fifo", ["suite", f"{W}/fifo.toml", "--out", "o"], FILE_CODES, ("FIFO",))
    case("suite:dev-zero", ["suite", "/dev/zero", "--out", "o"], FILE_CODES, ("character device",))
    case("run--threats:dev-zero", _run_ctx() + ["--threats", "/dev/zero"], FILE_CODES, ("character device",))
    case("run--threat:a-fifo", _without(_run_ctx(), "--threat") + ["--threat", f"{W}/fifo.toml"], FILE_CODES, ("FIFO",))
    steps = ["--attack", "BIM", "--set", "BIM.steps=1000000000000"]
    case("run--set:steps-huge", _run_ctx("semi-white-box") + steps, NAME_CODES, ("100,000",))
    case("run--ray:line-break", _run_ctx() + ["--ray", "10.0.0.1:6379\nX"], NAME_CODES, ("not a cluster address",))


# ---------------------------------------------------------------- hand-written: baselines and run folders


def _baselines() -> None:
    for name in BAD_BASELINES:
        case(
            f"check--baseline:{name}",
            _without(CONTEXTS["check"], "--baseline") + ["--baseline", f"{W}/baselines/{name}.json"],
            NAME_CODES,
        )
    for value in ("abc", "nan", "inf", "-inf", "1e400", "-1", ""):
        case(
            f"check--tolerance:auc_roc={value}",
            CONTEXTS["check"] + ["--tolerance", f"auc_roc={value}"],
            NAME_CODES,
            ("auc_roc",),
        )
    case("check--tolerance:no-equals", CONTEXTS["check"] + ["--tolerance", "auc_roc"], NAME_CODES, ("KEY=VALUE",))
    case("check--tolerance:no-key", CONTEXTS["check"] + ["--tolerance", "=0.1"], NAME_CODES, ("KEY=VALUE",))
    case("baseline--out:exists", ["baseline", f"{W}/run", "--out", f"{W}/a-file"], NAME_CODES, ("exists", "--force"))
    case("baseline--out:a-directory", ["baseline", f"{W}/run", "--out", f"{W}/dir.pt"], NAME_CODES, ("--out",))
    case("baseline--out:empty", ["baseline", f"{W}/run", "--out", ""], NAME_CODES, ("must not be empty",))
    case(
        "baseline--out:empty-force",
        ["baseline", f"{W}/run", "--out", "", "--force"],
        NAME_CODES,
        ("must not be empty",),
    )
    case("report--out:pdf", CONTEXTS["report"] + ["--out", "x.pdf"], NAME_CODES, ("--format",))
    case("report--out:no-suffix", CONTEXTS["report"] + ["--out", "tables"], NAME_CODES, ("--format",))
    case(
        "report--out:exists",
        CONTEXTS["report"] + ["--out", f"{W}/a-file", "--format", "csv"],
        NAME_CODES,
        ("exists", "--force"),
    )
    case("report--out:empty", CONTEXTS["report"] + ["--out", ""], NAME_CODES, ("must not be empty",))
    case(
        "report--out:empty-force",
        CONTEXTS["report"] + ["--out", "", "--force", "--format", "csv"],
        NAME_CODES,
        ("must not be empty",),
    )
    case(
        "report--standalone:csv",
        CONTEXTS["report"] + ["--standalone", "--format", "csv"],
        NAME_CODES,
        ("--standalone",),
    )
    case("report--plots-dir:a-file", CONTEXTS["report"] + ["--plots-dir", f"{W}/a-file"], NAME_CODES, ("--plots-dir",))
    for name in RUN_FOLDERS:
        path = f"{W}/{name}"
        case(f"report:{name}", ["report", path], FILE_CODES)
        case(f"baseline:{name}", ["baseline", path, "--out", "b.json"], FILE_CODES)
        case(f"check:{name}", ["check", path, "--baseline", f"{W}/baseline.json"], NAME_CODES)


# ---------------------------------------------------------------- hand-written: data roots


def _data_roots() -> None:
    for name in DATA_ROOTS:
        root = f"{W}/{name}"
        case(f"run--data-root:{name}", _run_ctx() + ["--dataset", "mnist", "--data-root", root], FILE_CODES, (name,))
        case(
            f"train--data-root:{name}",
            CONTEXTS["train"] + ["--dataset", "mnist", "--data-root", root],
            FILE_CODES,
            (name,),
        )
    case("run--dataset:mnist-without-data-root", _run_ctx() + ["--dataset", "mnist"], FILE_CODES, ("--data-root",))
    case(
        "run--data-root:a-file",
        _run_ctx() + ["--dataset", "mnist", "--data-root", f"{W}/data/a-file"],
        NAME_CODES,
        ("--data-root",),
    )
    case(
        "train--data-root:cifar10-pickle-payload",
        CONTEXTS["train"] + ["--dataset", "cifar10", "--data-root", f"{W}/data/cifar-evil"],
        FILE_CODES,
        ("cifar",),
    )
    case("run--dataset:shape-mismatch", _run_ctx() + ["--dataset", "digits"], FILE_CODES, ("shape",))


# ---------------------------------------------------------------- hand-written: options of run, detect, train, demo
#                                                                  and the group


def _options() -> None:
    run = _run_ctx("semi-white-box")
    case("run--set:no-equals", run + ["--set", "FGSM.eps"], NAME_CODES, ("KEY=VALUE",))
    case("run--set:no-key", run + ["--set", "=0.1"], NAME_CODES, ("KEY=VALUE",))
    case("run--set:no-label", run + ["--set", "eps=0.1"], NAME_CODES, ("ATTACK.PARAM",))
    case("run--set:target-mode", run + ["--set", "FGSM.target_mode=abc"], NAME_CODES, ("target mode",))
    case("run--set:int-as-float", run + ["--set", "BIM.steps=2.5"], NAME_CODES, ("steps",))
    case("run--set:bool-word", run + ["--set", "BIM.random_start=maybe"], NAME_CODES, ("random_start",))
    case("run--set:eps-negative", run + ["--set", "FGSM.eps=-0.1"], NAME_CODES, ("eps",))
    case("run--set:steps-zero", run + ["--set", "BIM.steps=0"], NAME_CODES, ("steps",))
    case("run--set:label-of-another-threat", _run_ctx("noise") + ["--set", "FGSM.eps=0.1"], NAME_CODES, ("FGSM",))
    case("run--detector-set:no-dot", _run_ctx() + ["--detector-set", "kd=1"], NAME_CODES, ("DETECTOR.PARAM",))
    case("run--detector-set:not-selected", _run_ctx() + ["--detector-set", "kd.bandwidth=1"], NAME_CODES, ("kd",))
    case(
        "run--detector:inapplicable",
        _without(_run_ctx(), "--detector") + ["--detector", "gm-likelihood"],
        NAME_CODES,
        ("Gaussian",),
    )
    case(
        "run--detector:kd+bu-needs-dropout",
        _without(_run_ctx(), "--detector") + ["--detector", "kd+bu"],
        NAME_CODES,
        ("dropout",),
    )
    case("run--sigma:wrong-threat", run + ["--sigma", "0.1"], NAME_CODES, ("--sigma",))
    case("run--sigma:duplicate", _run_ctx() + ["--sigma", "0.1", "--sigma", "0.1"], NAME_CODES, ("sigma",))
    case("run--sigma:same-label", _run_ctx() + ["--sigma", "0.1", "--sigma", "0.10000000001"], NAME_CODES, ("sigma",))
    case("run--threat:black-box-without-substitute", _run_ctx("black-box"), NAME_CODES, ("--substitute",))
    case("run--threat:all-unknown-attack", _run_ctx("all") + ["--attack", "FGSMM"], NAME_CODES, ("FGSMM",))
    case("run--threat:empty", _run_ctx(""), NAME_CODES)
    case("run--attack:of-another-threat", _run_ctx("noise") + ["--attack", "FGSM"], NAME_CODES, ("FGSM",))
    case(
        "run--substitute:same-model",
        _run_ctx("black-box") + ["--substitute", f"{W}/softmax.pt"],
        NAME_CODES,
        ("white-box",),
    )
    for device in ("tpu", "cuda:abc", "cuda:-1", "", "cpu:0:1"):
        case(
            f"run--device:{device or 'empty'}",
            _without(_run_ctx(), "--device") + ["--device", device],
            NAME_CODES,
            ("device",),
        )
        case(
            f"detect--device:{device or 'empty'}",
            _without(CONTEXTS["detect"], "--device") + ["--device", device],
            NAME_CODES,
            ("device",),
        )
        case(
            f"train--device:{device or 'empty'}",
            _without(CONTEXTS["train"], "--device") + ["--device", device],
            NAME_CODES,
            ("device",),
        )
    case("demo--device:tpu", _without(CONTEXTS["demo"], "--device") + ["--device", "tpu"], NAME_CODES, ("device",))
    case("run--out:a-file", _without(_run_ctx(), "--out") + ["--out", f"{W}/a-file"], NAME_CODES, ("--out",))
    case("run--out:empty", _without(_run_ctx(), "--out") + ["--out", ""], NAME_CODES, ("--out",))
    case("run--model:missing-option", ["run", "--threat", "noise"], NAME_CODES, ("--model",))
    case("run:unknown-option", _run_ctx() + ["--bogus"], NAME_CODES, ("--bogus",))
    case("detect--set:no-equals", CONTEXTS["detect"] + ["--set", "kd"], NAME_CODES, ("KEY=VALUE",))
    case("detect--set:not-selected", CONTEXTS["detect"] + ["--set", "bu.passes=1"], NAME_CODES, ("bu",))
    case(
        "detect--detector:inapplicable",
        _without(CONTEXTS["detect"], "--detector") + ["--detector", "bu"],
        NAME_CODES,
        ("dropout",),
    )
    case("detect--fpr:above-one", CONTEXTS["detect"] + ["--fpr", "1.5"], NAME_CODES, ("fpr",))
    case("train--out:exists", _without(CONTEXTS["train"], "--out") + ["--out", f"{W}/a-file"], NAME_CODES, ("exists",))
    case(
        "train--out:a-directory",
        _without(CONTEXTS["train"], "--out") + ["--out", f"{W}/dir.pt"],
        NAME_CODES,
        ("--out",),
    )
    case("train--arch-param:no-equals", CONTEXTS["train"] + ["--arch-param", "width"], NAME_CODES, ("KEY=VALUE",))
    case(
        "train--defense-param:of-a-defense-without-params",
        CONTEXTS["train"] + ["--defense-param", "alpha=1"],
        NAME_CODES,
        ("alpha",),
    )
    case(
        "train--train-param:optimizer-unknown",
        CONTEXTS["train"] + ["--train-param", "optimizer=sgdd"],
        NAME_CODES,
        ("optimizer",),
    )
    case(
        "train--download:needs-data-root",
        CONTEXTS["train"] + ["--dataset", "mnist", "--download"],
        FILE_CODES,
        ("--data-root",),
    )
    case("demo--out:a-file", _without(CONTEXTS["demo"], "--out") + ["--out", f"{W}/a-file"], NAME_CODES, ("--out",))
    case(
        "demo--models-dir:a-file",
        _without(CONTEXTS["demo"], "--models-dir") + ["--models-dir", f"{W}/a-file"],
        NAME_CODES,
        ("--models-dir",),
    )
    case("list:extra-argument", ["list", "attacks", "defenses"], NAME_CODES, ("unexpected extra argument",))
    case("info:missing-argument", ["info"], NAME_CODES, ("Missing argument",))
    case("group:unknown-option", ["--bogus"], NAME_CODES, ("--bogus",))


# ---------------------------------------------------------------- hand-written: robench import (import_fixtures.py)


def _imports() -> None:
    for name, (args, fragments) in bad_imports(Path(f"{W}/import")).items():
        case(f"import:{name}", ["import", *map(str, args), "--out", "x.pt"], FILE_CODES, fragments)
    case(
        "import--out:exists",
        CONTEXTS["import"][:-6] + ["--out", f"{W}/a-file", *CONTEXTS["import"][-4:]],
        NAME_CODES,
        ("exists", "--force"),
    )
    case("import--kind:unknown", CONTEXTS["import"] + ["--kind", "onnx"], NAME_CODES, ("--kind",))
    case(
        "import--feature-layer:missing",
        CONTEXTS["import"][:-4] + CONTEXTS["import"][-2:],
        NAME_CODES,
        ("--feature-layer",),
    )


for _generate in (
    _names,
    _numeric,
    _attack_fields,
    _detector_fields,
    _defense_fields,
    _train_fields,
    _arch_fields,
    _checkpoints,
    _suites,
    _baselines,
    _data_roots,
    _options,
    _imports,
):
    _generate()


# ---------------------------------------------------------------- fixtures


def _new_repo_files() -> set[str]:
    """Untracked, not ignored files of the repository (``git status``); ignored outputs are left to the write audit."""
    result = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO, capture_output=True, text=True, check=True
    )
    return {line[3:] for line in result.stdout.splitlines() if line.startswith("??")}


class WriteAudit:
    """Every path this process opens for writing, creates, renames or removes (a ``sys.addaudithook`` hook, on only
    during a case): the cases must write nothing outside their temporary folder, whether it stays or not."""

    WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    EVENTS = {
        "os.mkdir",
        "os.rename",
        "os.replace",
        "os.remove",
        "os.rmdir",
        "os.symlink",
        "os.link",
        "os.truncate",
        "shutil.copyfile",
        "shutil.rmtree",
    }

    def __init__(self) -> None:
        self.paths: list[str] | None = None
        sys.addaudithook(self._hook)

    def _hook(self, event: str, args: tuple) -> None:
        if self.paths is None or not args:
            return
        if event == "open":
            path, mode, flags = (tuple(args) + (None, None))[:3]
            writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & self.WRITE_FLAGS
            )
            if writes and isinstance(path, (str, bytes, os.PathLike)):
                self.paths.append(os.fsdecode(path))
        elif event in self.EVENTS:
            for path in args[:2]:
                if isinstance(path, (str, bytes, os.PathLike)):
                    self.paths.append(os.fsdecode(path))

    def outside(self, folder: Path) -> list[str]:
        root = str(folder.resolve())
        return sorted(
            {
                p
                for p in self.paths or []
                if not os.path.abspath(p).startswith(root + os.sep) and not p.startswith("/dev/")
            }
        )


AUDIT = WriteAudit()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Every input of the corpus, built once; no new file may appear in the repository while the corpus runs."""
    before = _new_repo_files()
    root = build_world(tmp_path_factory.mktemp("corpus") / "world")
    write_import_sources(root / "import", small_net().eval())  # robench import's inputs, and its bad ones
    write_bad_imports(root / "import", root / MARKER)
    yield root
    assert not (root / MARKER).exists(), "a pickle payload ran"
    # Others may add source files meanwhile; anything else new in the tree was written by a case.
    new = sorted(p for p in _new_repo_files() - before if not p.endswith((".py", ".md")))
    assert new == [], f"files appeared in the repository tree: {new}"


@pytest.fixture
def isolated(world, tmp_path, monkeypatch):
    """A fresh empty current folder, the guards in place; afterwards, nothing may have been written anywhere."""
    for target, guard in GUARDS:
        monkeypatch.setattr(target, guard)
    monkeypatch.delenv("ROBENCH_DEBUG", raising=False)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    before = snapshot(world)
    AUDIT.paths = []
    try:
        yield cwd
        # the registry of running robench processes (robench.core.threads) is an advisory write by design
        active = os.environ.get("ROBENCH_ACTIVE_DIR", "\0")
        outside = [p for p in AUDIT.outside(tmp_path) if not os.path.abspath(p).startswith(active)]
    finally:
        AUDIT.paths = None
    assert outside == [], f"the case wrote outside its temporary folder: {outside}"
    assert not (world / MARKER).exists(), "a pickle payload ran"
    assert snapshot(world) == before, "the case changed the corpus' inputs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd"], "the case wrote next to the current folder"


def _fill(items, world: Path) -> list[str]:
    return [item.replace(W, str(world)) for item in items]


def _assert_fragments(line: str, fragments) -> None:
    for fragment in fragments:
        options = fragment if isinstance(fragment, tuple) else (fragment,)
        assert any(option in line for option in options), f"none of {options} in: {line}"


# ---------------------------------------------------------------- the tests


def test_corpus_size():
    assert len(CASES) > 300


def test_every_numeric_option_has_a_context():
    assert {command for command, _ in numeric_options()} <= set(CONTEXTS)


def test_known_bugs_name_real_cases():
    api_ids = (
        {f"RunConfig({n})" for n in API_CONFIG_CASES}
        | {f"robench.run({n})" for n in API_RUN_CASES}
        | set(API_CALL_CASES)
    )
    assert set(KNOWN_BUGS) <= _IDS | api_ids, set(KNOWN_BUGS) - _IDS - api_ids


def test_write_audit_sees_writes(tmp_path):
    """The audit that every case relies on sees Python-level writes: open, os.open, mkdir, replace, and robench's
    atomic writer, through which every product write goes (bundles, caches, parquet and figures via buffers)."""
    from robench.core.provenance import atomic_write_bytes

    AUDIT.paths = []
    try:
        (tmp_path / "a.txt").write_text("x")
        os.close(os.open(tmp_path / "b.bin", os.O_WRONLY | os.O_CREAT))
        (tmp_path / "d").mkdir()
        os.replace(tmp_path / "b.bin", tmp_path / "c.bin")
        atomic_write_bytes(tmp_path / "t.pt", b"x")
        (tmp_path / "a.txt").read_text()
        seen = AUDIT.outside(tmp_path / "elsewhere")
    finally:
        AUDIT.paths = None
    assert {str(tmp_path / n) for n in ("a.txt", "b.bin", "c.bin", "d", "t.pt")} <= set(seen), seen
    assert AUDIT.outside(tmp_path) == []


@pytest.mark.parametrize("command", sorted(CONTEXTS))
def test_contexts_are_valid(isolated, world, capsys, command):
    """Each base command line passes validation: it reaches a guard (or, for the light commands, succeeds)."""
    code, out, err = run_cli(capsys, *_fill(CONTEXTS[command], world))
    reached_guard = "ValidationPassed" in err
    assert reached_guard or code == 0, (code, out, err)
    for path in list(isolated.iterdir()):  # what a light command wrote (baseline's b.json) is its own output
        shutil.rmtree(path) if path.is_dir() else path.unlink()


@pytest.mark.parametrize(("args", "codes", "fragments"), CASES)
def test_bad_input(isolated, world, capsys, args, codes, fragments):
    code, out, err = run_cli(capsys, *_fill(args, world))
    assert code in codes, f"exit {code}, expected one of {codes}: {err or out}"
    assert_one_line_error(code, err)
    line = err.strip()
    assert "internal error" not in err and "Traceback" not in out + err, err
    _assert_fragments(line, fragments)
    assert list(isolated.iterdir()) == [], (
        f"bad input wrote {sorted(p.name for p in isolated.iterdir())} into the current folder"
    )


# ---------------------------------------------------------------- the Python API


def _config(world: Path, **kwargs) -> RunConfig:
    return RunConfig(
        **{
            "model": world / "softmax.pt",
            "threat": "noise",
            "device": "cpu",
            "detectors": ("max-prob",),
            "sanity": False,
            **kwargs,
        }
    )


API_CONFIG_CASES = {
    "attacks=str": {"attacks": "BIM"},
    "attacks=int": {"attacks": 3},
    "n=True": {"n": True},
    "n=2.5": {"n": 2.5},
    "n=nan": {"n": math.nan},
    "n=inf": {"n": math.inf},
    "n=0": {"n": 0},
    "n=str": {"n": "10"},
    "batch_size=-1": {"batch_size": -1},
    "seed=x": {"seed": "x"},
    "seed=huge": {"seed": 2**70},
    "seed=nan": {"seed": math.nan},
    "settings=list": {"settings": [1]},
    "settings=str": {"settings": "BIM.steps=10"},
    "settings=int-keys": {"settings": {1: 2}},
    "detectors=str": {"detectors": "kd"},
    "detectors=int": {"detectors": 3},
    "detector_settings=list": {"detector_settings": [("kd", 1)]},
    "detector_settings=flat": {"detector_settings": {"kd": 1.0}},
    "sigmas=str": {"sigmas": "0.1"},
    "sigmas=nan": {"sigmas": (math.nan,)},
    "sigmas=negative": {"sigmas": (-1.0,)},
    "sigmas=wrong-threat": {"sigmas": (0.1,), "threat": "semi-white-box"},
    "model=None": {"model": None},
    "model=int": {"model": 3},
    "threat=int": {"threat": 3},
    "threat=None": {"threat": None},
    "device=list": {"device": ["cpu"]},
    "dataset=int": {"dataset": 3},
    "data_root=int": {"data_root": 3},
    "model_name=int": {"model_name": 3},
    "substitute=list": {"substitute": ["gm.pt"]},
    "sanity=str": {"sanity": "no"},
}

# Configs that construct but must be refused by robench.run before anything runs.
API_RUN_CASES = {
    "threat=unknown": {"threat": "noize"},
    "attacks=unknown": {"threat": "semi-white-box", "attacks": ("FGSMM",)},
    "settings=abc": {"threat": "semi-white-box", "settings": {"FGSM.eps": "abc"}},
    "settings=nan": {"threat": "semi-white-box", "settings": {"FGSM.eps": math.nan}},
    "settings=list-value": {"threat": "semi-white-box", "settings": {"FGSM.eps": [0.1]}},
    "settings=steps-float": {"threat": "semi-white-box", "settings": {"BIM.steps": 2.5}},
    "settings=steps-bool": {"threat": "semi-white-box", "settings": {"BIM.steps": True}},
    "settings=unknown-param": {"threat": "semi-white-box", "settings": {"FGSM.epz": 0.1}},
    "detector_settings=abc": {"detectors": ("kd",), "detector_settings": {"kd": {"bandwidth": "abc"}}},
    "detector_settings=nan": {"detectors": ("kd",), "detector_settings": {"kd": {"bandwidth": math.nan}}},
    "detectors=unknown": {"detectors": ("kdd",)},
    "device=tpu": {"device": "tpu"},
    "model=missing": {"model": "{W}/missing.pt"},
    "model=junk": {"model": "{W}/notbundle.pt"},
    "model=pickle-payload": {"model": "{W}/evil-pickle.pt"},
    "model=zip-payload": {"model": "{W}/evil-zip.pt"},
    "data_root=missing": {"dataset": "mnist", "data_root": "{W}/data/missing"},
    "data_root=garbage": {"dataset": "mnist", "data_root": "{W}/data/garbage"},
    "dataset=unknown": {"dataset": "mnistt"},
}


def _api_kwargs(world: Path, kwargs: dict) -> dict:
    return {
        k: Path(v.replace(W, str(world))) if isinstance(v, str) and v.startswith(W) else v for k, v in kwargs.items()
    }


def _assert_one_line(exc: BaseException) -> None:
    assert isinstance(exc, RobenchError), f"{type(exc).__name__}: {exc}"
    message = str(exc)
    assert message.strip() and "\n" not in message, message


API_CASES = (
    [
        pytest.param(
            "config", kwargs, id=f"RunConfig({name})",
            marks=[pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[f"RunConfig({name})"])]
            if f"RunConfig({name})" in KNOWN_BUGS else [],
        )
        for name, kwargs in API_CONFIG_CASES.items()
    ]
    + [
        pytest.param(
            "run", kwargs, id=f"robench.run({name})",
            marks=[pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[f"robench.run({name})"])]
            if f"robench.run({name})" in KNOWN_BUGS else [],
        )
        for name, kwargs in API_RUN_CASES.items()
    ]
)  # fmt: skip


@pytest.mark.parametrize(("how", "kwargs"), API_CASES)
def test_python_api_bad_input(isolated, world, how, kwargs):
    kwargs = _api_kwargs(world, kwargs)
    with pytest.raises(Exception) as info:
        if how == "config":
            _config(world, **kwargs)
        else:
            config = _config(world, **kwargs)
            robench.run(config)
    _assert_one_line(info.value)
    if how == "config":
        assert isinstance(info.value, ConfigError), type(info.value)
    assert list(isolated.iterdir()) == []


API_CALL_CASES = {
    "robench.run(str)": lambda world: robench.run(str(world / "softmax.pt")),
    "robench.run(dict)": lambda world: robench.run({"model": str(world / "softmax.pt"), "threat": "noise"}),
    "robench.run(out=int)": lambda world: robench.run(_config(world), out=3),
    "robench.load_bundle(int)": lambda world: robench.load_bundle(3),
    "robench.load_bundle(pickle-payload)": lambda world: robench.load_bundle(world / "evil-pickle.pt"),
    "robench.train_bundle(dataset=unknown)": lambda world: robench.train_bundle(dataset="mnistt", progress=False),
    "robench.train_bundle(arch_kwargs=list)": lambda world: robench.train_bundle(arch_kwargs=[1], progress=False),
    "robench.train_bundle(train_overrides=nan-lr)": lambda world: robench.train_bundle(
        train_overrides={"lr": math.nan}, progress=False
    ),
}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, id=n, marks=[pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[n])] if n in KNOWN_BUGS else [])
        for n in API_CALL_CASES
    ],
)
def test_python_api_bad_calls(isolated, world, name):
    with pytest.raises(Exception) as info:
        API_CALL_CASES[name](world)
    _assert_one_line(info.value)
    assert list(isolated.iterdir()) == []
