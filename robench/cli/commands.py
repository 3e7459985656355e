"""The ``robench`` command line.

Every user error ends as one line on stderr (``robench: error: ...``) and a
non-zero exit; a traceback appears only with ``ROBENCH_DEBUG=1``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Any

import click

from robench.checkpoints.training import SEED_RANGE
from robench.cli.params import NonEmptyPath
from robench.core.config import parse_assignments
from robench.core.errors import ConfigError, RobenchError
from robench.core.files import one_line, shown
from robench.core.registry import did_you_mean


class _Group(click.Group):
    """A click group whose unknown-command error suggests the closest command."""

    def resolve_command(self, ctx: click.Context, args: list[str]):  # type: ignore[override]
        name = args[0] if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            raise click.UsageError(f"unknown command '{name}'{did_you_mean(name, self.list_commands(ctx))}")
        return super().resolve_command(ctx, args)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="robench")
def cli() -> None:
    """Adversarial-robustness evaluation harness for PyTorch image classifiers."""
    if os.environ.get(_THREAT_PATH_ENV, "").strip():  # threat TOML files named by the environment, for every command
        from robench.specs.threat_files import load_env

        load_env()


# os.pathsep-separated threat files and folders (robench.specs.threat_files.THREAT_PATH_ENV; named here so that
# commands that never look at threats do not import the attacks to find out the variable is unset)
_THREAT_PATH_ENV = "ROBENCH_THREAT_PATH"


def _threat_paths_option(command):
    """--threats PATH (repeatable): threat TOML files or folders of them, registered before the command runs."""
    return click.option(
        "--threats",
        "threat_paths",
        multiple=True,
        metavar="PATH",
        type=click.Path(path_type=Path),
        help=f"Threat TOML file, or folder of *.toml, to load first (repeatable; also {_THREAT_PATH_ENV}).",
    )(command)


def _load_threats(paths: tuple[Path, ...]) -> None:
    if paths:
        from robench.specs.threat_files import load_threat_paths

        load_threat_paths(paths, "--threats")


def _echo_err(message: str) -> None:
    click.echo(message, err=True)


SEED = click.IntRange(*SEED_RANGE)  # what torch.Generator.manual_seed accepts


@cli.command()
@click.option("--dataset", default="mnist-5k", show_default=True, help="Registered dataset (see 'robench list').")
@click.option("--arch", default="cnn", show_default=True, help="Registered architecture.")
@click.option("--defense", default="softmax", show_default=True, help="Registered defense (head + loss).")
@click.option("--epochs", type=int, default=None, help="Training epochs [default: the dataset family's].")
@click.option("--batch-size", type=int, default=None, help="Mini-batch size [default: the dataset family's].")
@click.option("--lr", type=float, default=None, help="Learning rate [default: the dataset family's].")
@click.option(
    "--seed", type=SEED, default=0, show_default=True, help="Seed for init, shuffling, augmentation and dropout."
)
@click.option("--out", type=NonEmptyPath(dir_okay=False, path_type=Path), required=True, help="Bundle file to write.")
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option(
    "--data-root", type=click.Path(file_okay=False, path_type=Path), default=None, help="Folder of on-disk datasets."
)
@click.option("--download", is_flag=True, help="Let torchvision download the dataset into --data-root first.")
@click.option(
    "--split-seed", type=SEED, default=0, show_default=True, help="Seed of the train/test split for carved datasets."
)
@click.option("--arch-param", multiple=True, metavar="KEY=VALUE", help="Architecture keyword argument (repeatable).")
@click.option(
    "--defense-param", multiple=True, metavar="KEY=VALUE", help="Defense hyper-parameter, e.g. alpha=0.5 (repeatable)."
)
@click.option("--train-param", multiple=True, metavar="KEY=VALUE", help="Training setting, e.g. shift=0 (repeatable).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
def train(
    dataset: str,
    arch: str,
    defense: str,
    epochs: int | None,
    batch_size: int | None,
    lr: float | None,
    seed: int,
    out: Path,
    force: bool,
    device: str,
    data_root: Path | None,
    download: bool,
    split_seed: int,
    arch_param: tuple[str, ...],
    defense_param: tuple[str, ...],
    train_param: tuple[str, ...],
    progress: bool,
) -> None:
    """Train a model and write a checkpoint bundle."""
    from robench.checkpoints.bundle import save_bundle
    from robench.checkpoints.train_bundle import train_bundle
    from robench.core.data import DATASETS
    from robench.core.devices import resolve_device
    from robench.core.models import ARCHITECTURES
    from robench.defenses import DEFENSES

    DATASETS.get(dataset), ARCHITECTURES.get(arch), DEFENSES.get(defense)  # fail fast on unknown names
    if out.exists() and not force:
        raise ConfigError(f"{out} exists; pass --force to overwrite it")
    overrides: dict[str, Any] = dict(parse_assignments(train_param, "--train-param"))
    for key, value in (("epochs", epochs), ("batch_size", batch_size), ("lr", lr)):
        if value is not None:
            overrides[key] = value
    bundle = train_bundle(
        dataset=dataset,
        arch=arch,
        defense=defense,
        seed=seed,
        device=resolve_device(device),
        arch_kwargs=_typed(parse_assignments(arch_param, "--arch-param")),
        defense_params=parse_assignments(defense_param, "--defense-param"),
        train_overrides=overrides,
        data_root=data_root,
        download=download,
        split_seed=split_seed,
        progress=progress,
    )
    content_hash = save_bundle(out, bundle.model, bundle.meta)
    meta = bundle.meta
    click.echo(
        f"trained {meta.defense} {meta.arch} on {meta.dataset}: clean test accuracy {100 * meta.clean_accuracy:.2f}% "
        f"in {meta.train_seconds:.1f} s; wrote {out} (content hash {content_hash[:12]})"
    )


def _typed(raw: dict[str, str]) -> dict[str, Any]:
    """Architecture kwargs come as strings; read them as JSON where they parse (ints, floats, null)."""
    typed: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            typed[key] = json.loads(value)
        except ValueError:
            typed[key] = value
    return typed


@cli.command()
@click.argument("bundle_path", metavar="BUNDLE", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def info(bundle_path: Path, as_json: bool) -> None:
    """Show a checkpoint bundle's metadata (verifying it first)."""
    import dataclasses

    from robench.checkpoints.bundle import load_bundle

    bundle = load_bundle(bundle_path)
    meta = dataclasses.asdict(bundle.meta)
    history = meta["train_config"].pop("history", [])
    record = {
        "path": str(bundle_path),
        "content_hash": bundle.content_hash,
        "n_parameters": sum(p.numel() for p in bundle.model.parameters()),
        **meta,
        "epochs_trained": len(history),
    }
    if as_json:
        click.echo(json.dumps(record, sort_keys=True))
        return
    width = max(len(k) for k in record)
    for key, value in record.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        elif key == "clean_accuracy" and value is not None:
            value = f"{100 * value:.2f}%"
        click.echo(f"{key:<{width}}  {value}")


def _number_list(text: str | None, option: str, count: int | None = None, kind: type = float) -> tuple | None:
    """``"0.1,0.2"`` -> (0.1, 0.2) for an option of comma-separated numbers (``count`` of them if given);
    None stays None."""
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    try:
        values = tuple(kind(p) for p in parts)
    except ValueError:
        raise ConfigError(
            f"{option} must be comma-separated {'integers' if kind is int else 'numbers'}, got '{text}'"
        ) from None
    if kind is float and not all(math.isfinite(v) for v in values):
        raise ConfigError(f"{option} must be finite numbers, got '{text}'")
    if count is not None and len(values) != count:
        raise ConfigError(f"{option} needs {count} comma-separated values, got '{text}'")
    return values


@cli.command(name="import")
@click.argument("source", metavar="SOURCE")
@click.option("--out", type=NonEmptyPath(dir_okay=False, path_type=Path), required=True, help="Bundle file to write.")
@click.option("--kind", type=click.Choice(["auto", "export", "torchscript", "factory", "timm"]), default="auto",
              show_default=True,
              help="What SOURCE is: a .pt2 program, a TorchScript archive, package.module:function, "
                   "a timm name [auto: from SOURCE].")  # fmt: skip
@click.option(
    "--weights",
    type=click.Path(path_type=Path),
    default=None,
    help="Weights for a factory or timm model: .safetensors, or a state dict torch.load(weights_only=True) reads.",
)
@click.option(
    "--feature-layer",
    required=True,
    help="Module name (as in named_modules) whose output is the feature vector z for KD.",
)
@click.option(
    "--dataset", default=None, help="Registered dataset the model takes (sets input shape, classes and value range)."
)
@click.option("--input-shape", default=None, metavar="C,H,W", help="Input shape, without --dataset.")
@click.option(
    "--num-classes", type=click.IntRange(2, 100_000), default=None, help="Number of classes, without --dataset."
)
@click.option(
    "--value-range", default=None, metavar="LO,HI", help="Input value range [default: the dataset's, else 0,1]."
)
@click.option(
    "--mean",
    default=None,
    metavar="M1,...",
    help="Per-channel mean to normalize with, if the model does not normalize itself.",
)
@click.option("--std", default=None, metavar="S1,...", help="Per-channel std to normalize with (with --mean).")
@click.option(
    "--defense",
    default="softmax",
    show_default=True,
    help="Defense whose head the model's last layer is (its adaptive objective applies).",
)
@click.option("--defense-param", multiple=True, metavar="KEY=VALUE", help="Defense hyper-parameter (repeatable).")
@click.option(
    "--factory-kwarg",
    multiple=True,
    metavar="KEY=VALUE",
    help="Keyword argument for the factory or timm.create_model (repeatable; JSON values).",
)
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
def import_command(
    source: str,
    out: Path,
    kind: str,
    weights: Path | None,
    feature_layer: str,
    dataset: str | None,
    input_shape: str | None,
    num_classes: int | None,
    value_range: str | None,
    mean: str | None,
    std: str | None,
    defense: str,
    defense_param: tuple[str, ...],
    factory_kwarg: tuple[str, ...],
    force: bool,
) -> None:
    """Import your own model (torch.export .pt2, TorchScript, factory + weights, timm + weights) as a verified
    bundle."""
    from robench.checkpoints.bundle import input_shape_problem
    from robench.checkpoints.imported.importer import ImportRequest, import_model, write_imported

    if out.exists() and not force:
        raise ConfigError(f"{out} exists; pass --force to overwrite it")
    shape = _number_list(input_shape, "--input-shape", 3, int)
    if shape is not None and (
        problem := input_shape_problem(shape)
    ):  # bounded before any batch of that shape is allocated
        raise ConfigError(f"--input-shape {','.join(map(str, shape))}: {problem}")
    request = ImportRequest(
        source=source, feature_layer=feature_layer, kind=kind, weights=weights, dataset=dataset,
        input_shape=shape, num_classes=num_classes,
        value_range=_number_list(value_range, "--value-range", 2),
        mean=_number_list(mean, "--mean"), std=_number_list(std, "--std"),
        defense=defense, defense_params=parse_assignments(defense_param, "--defense-param"),
        factory_kwargs=_typed(parse_assignments(factory_kwarg, "--factory-kwarg")),
    )  # fmt: skip
    bundle = write_imported(import_model(request), out)
    meta = bundle.meta
    kwargs = meta.arch_kwargs
    head = (
        f"{meta.defense} head (adaptive objective)"
        if kwargs["head"] == "separate"
        else "none separable (attacked through its logits)"
    )
    bu = f"MC dropout p={kwargs['mc_dropout']:g}" if kwargs["mc_dropout"] > 0 else "not applicable (no dropout)"
    accuracy = (
        f"; clean test accuracy {100 * meta.clean_accuracy:.2f}% on {meta.dataset}"
        if meta.clean_accuracy is not None
        else ""
    )
    click.echo(
        f"imported {kwargs['source']} model {source}: features from '{meta.feature_layer}' (d={meta.feature_dim}), "
        f"head: {head}, "
        f"BU: {bu}{accuracy}; wrote {out} (content hash {bundle.content_hash[:12]})"
    )


@cli.command(name="list")
@click.argument("kind", required=False)
@_threat_paths_option
def list_(kind: str | None, threat_paths: tuple[Path, ...]) -> None:
    """List registered datasets, architectures, defenses, detectors, attacks and threat models."""
    from robench.attacks import ATTACKS
    from robench.attacks.library import library_rows
    from robench.core.data import DATASETS
    from robench.core.models import ARCHITECTURES
    from robench.defenses import DEFENSES
    from robench.detectors import DETECTORS
    from robench.specs.threat_files import threat_file
    from robench.specs.threats import THREATS

    _load_threats(threat_paths)
    sections = {
        "datasets": [(n, s.description + (" [--data-root]" if s.needs_data_root else "")) for n, s in DATASETS.items()],
        "architectures": [(n, s.description) for n, s in ARCHITECTURES.items()],
        "defenses": [(n, f"{c.description}; params: {c().params() or 'none'}") for n, c in DEFENSES.items()],
        "detectors": [(n, f"{c.description}; params: {c().params() or 'none'}") for n, c in DETECTORS.items()],
        "attacks": [(n, f"{c.description}; params: {c().params() or 'none'}") for n, c in ATTACKS.items()]
        + library_rows(ATTACKS),
        "threats": [(n, _threat_row(t, threat_file(n))) for n, t in THREATS.items()],
    }
    if kind is not None and kind not in sections:
        raise ConfigError(f"unknown kind '{kind}'{did_you_mean(kind, list(sections))}; known: {', '.join(sections)}")
    for name, rows in sections.items():
        if kind not in (None, name):
            continue
        click.echo(f"{name}:")
        width = max(len(r[0]) for r in rows)
        for row_name, text in rows:
            click.echo(f"  {row_name:<{width}}  {text}")


def _threat_row(threat: Any, source: Any) -> str:
    """A threat's line in 'robench list threats'; one defined in a TOML file also shows its access and the file."""
    text = f"{threat.description}; attacks: {', '.join(threat.labels())}"
    if source is None:
        return text
    return f"{text}; access: {threat.access}; file: {source.path}"


@cli.command()
@click.option("--model", "model_path", type=click.Path(path_type=Path), required=True, help="Checkpoint bundle.")
@click.option(
    "--detector", "detector_names", multiple=True, help="Detector to fit (repeatable) [default: all that apply]."
)
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="DETECTOR.PARAM=VALUE",
    help="Detector parameter, e.g. kd.bandwidth=1.0.",
)
@click.option("--fpr", type=float, default=0.05, show_default=True, help="False-positive rate to set thresholds at.")
@click.option("--device", default="auto", show_default=True)
@click.option("--data-root", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--cache/--no-cache", default=True, show_default=True, help="Reuse fits cached next to the bundle.")
def detect(
    model_path: Path,
    detector_names: tuple[str, ...],
    settings: tuple[str, ...],
    fpr: float,
    device: str,
    data_root: Path | None,
    cache: bool,
) -> None:
    """Fit a model's detectors (cached next to the bundle) and calibrate thresholds on held-out clean data."""
    from robench.checkpoints.bundle import load_bundle
    from robench.core.data import load_dataset
    from robench.core.devices import resolve_device
    from robench.runs.detection import applicable_detectors, build_detectors, calibrate

    if not (math.isfinite(fpr) and 0.0 <= fpr <= 1.0):  # before anything is fitted or cached
        raise ConfigError(f"--fpr must be a false-positive rate in [0, 1], got {fpr}")
    torch_device = resolve_device(device)
    bundle = load_bundle(model_path, device=torch_device)
    data = load_dataset(bundle.meta.dataset, data_root=data_root, split_seed=bundle.meta.split_seed)
    overrides = _detector_settings(settings, "--set")
    names = applicable_detectors(bundle, detector_names)
    detectors = build_detectors(names, data.spec.family, overrides)
    table = calibrate(
        bundle,
        detectors,
        data.train,
        data.test,
        torch_device,
        fpr,
        use_cache=cache,
        train_name=f"{data.name}:{data.split_seed}",
    )
    click.echo(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))


def _settings(items: tuple[str, ...], option: str) -> dict[str, str]:
    return parse_assignments(items, option)


def _detector_settings(items: tuple[str, ...], option: str = "--detector-set") -> dict[str, dict[str, str]]:
    """``("kd.bandwidth=1",)`` -> ``{"kd": {"bandwidth": "1"}}``."""
    nested: dict[str, dict[str, str]] = {}
    for key, value in parse_assignments(items, option).items():
        detector, dot, param = key.partition(".")
        if not dot:
            raise ConfigError(f"{option} '{key}={value}' must name DETECTOR.PARAM")
        nested.setdefault(detector, {})[param] = value
    return nested


def _execution_options(command):
    """--precision, --cascade, --threads, --channels-last and --compile (run, suite, demo)."""
    options = [
        click.option(
            "--precision",
            type=click.Choice(["fp32", "bf16", "fp16"]),
            default=None,
            help="Attack loops under autocast at this precision; success, distortion and detector scores are judged "
            "in fp32 [default: fp32].",
        ),
        click.option(
            "--cascade",
            type=click.Choice(["none", "misclassified", "undetected"]),
            is_flag=False,
            flag_value="misclassified",
            default=None,
            help="Run each threat's attacks cheapest first, each on the samples still robust where it is run for "
            "(its norm's budgets that hold its ball; with undetected, also the detectors it targets and those no "
            "attack targets at that budget) "
            "(bare --cascade: misclassified) [default: none].",
        ),
        click.option(
            "--threads",
            type=click.IntRange(min=1, max=4096),
            default=None,
            help="CPU threads for torch [default: every core this process may use].",
        ),
        click.option(
            "--channels-last",
            "channels_last",
            type=click.Choice(["auto", "on", "off"]),
            default=None,
            help="NHWC memory format for model and inputs [default: auto: on CUDA, and on a CPU at bf16 or fp16].",
        ),
        click.option(
            "--compile/--no-compile",
            "compile_model",
            default=None,
            help="torch.compile the model's backbone (eager if compiling fails) [default: no].",
        ),
        click.option(
            "--budget",
            "budgets",
            multiple=True,
            metavar="NORM:EPS",
            help="A budget the worst case is stated at, in the model's input units (repeatable), e.g. linf:0.1, "
            "l2:2.0, linf:8/255 [default: each threat's nominal budgets for the dataset, docs/threat-models.md].",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _ray_options(command):
    """--ray, --ray-cpus, --ray-gpus and --ray-retries (run, suite): the parts as Ray tasks
    (robench.runs.ray_backend)."""
    options = [
        click.option(
            "--ray",
            "ray_address",
            is_flag=False,
            flag_value="local",
            default=None,
            metavar="[local|auto|ADDRESS]",
            help="Run the parts as Ray tasks: local (a bare --ray) starts a Ray on this machine for this command, "
            "auto joins the one "
            "'ray start' runs here, HOST:PORT or ray://HOST:PORT a cluster; "
            "--threads is then each task's CPUs and torch threads [default: 1]. "
            "Needs pip install 'robench[ray]'.",
        ),
        click.option(
            "--ray-cpus",
            type=click.IntRange(min=1, max=100_000),
            default=None,
            help="CPUs of a --ray local Ray [default: every core this process may use].",
        ),
        click.option(
            "--ray-gpus",
            type=click.FloatRange(min=0, max=64),
            default=None,
            help="GPUs per Ray task [default: 1 when the cluster has GPUs and --device is not cpu].",
        ),
        click.option(
            "--ray-retries",
            type=click.IntRange(min=0, max=100),
            default=3,
            show_default=True,
            help="Ray's retries of a task whose worker died.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _ray_settings(address: str | None, cpus: int | None, gpus: float | None, retries: int, threads: int | None) -> Any:
    """The Ray settings of --ray (None without it; --ray-cpus / --ray-gpus alone are refused)."""
    if address is None:
        for name, value in (("--ray-cpus", cpus), ("--ray-gpus", gpus)):
            if value is not None:
                raise click.UsageError(f"{name} needs --ray")
        return None
    _check_ray_address(address)
    from robench.runs.ray_cluster import RaySettings, import_ray

    settings = RaySettings(address=address, cpus=cpus, threads=threads or 1, gpus=gpus, retries=retries)
    import_ray()  # a missing extra fails now, in one line, before anything is loaded
    return settings


RAY_ADDRESS_MAX = 256  # characters of --ray ADDRESS (a host name is at most 253, a ray:// URL a few more)
_RAY_ADDRESS = re.compile(rf"[!-~]{{1,{RAY_ADDRESS_MAX}}}")  # printable ASCII without spaces


def _check_ray_address(address: str) -> None:
    """--ray ADDRESS, checked before anything uses it: printable ASCII, no whitespace or control characters,
    bounded length."""
    if not _RAY_ADDRESS.fullmatch(address):
        shown = repr(address[:60]) + (f"... ({len(address)} characters)" if len(address) > 60 else "")
        raise ConfigError(
            f"--ray {shown}: not a cluster address; "
            "use HOST:PORT (e.g. 10.0.0.5:6379), ray://HOST:10001, auto or local "
            f"(printable ASCII without spaces, at most {RAY_ADDRESS_MAX} characters)"
        )


def _execution(
    precision: str | None,
    cascade: str | None,
    channels_last: str | None,
    compile_model: bool | None,
    budgets: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The execution settings given on the command line (the others keep the config's or suite's values)."""
    given = {
        "precision": precision,
        "cascade": cascade,
        "channels_last": channels_last,
        "compile": compile_model,
        "budgets": tuple(budgets) or None,
    }
    return {k: v for k, v in given.items() if v is not None}


@contextlib.contextmanager
def _cores(threads: int | None, command: str):
    """Set torch's threads and register this process; warn (one line, stderr) when other robench runs share the
    cores."""
    from robench.core.threads import registered, set_threads

    n = set_threads(threads)
    with registered(n, command) as warning:
        if warning:
            _echo_err(f"robench: {warning}")
        yield n


@cli.command(name="run")
@click.option(
    "--model", "model_path", type=click.Path(path_type=Path), required=True, help="Checkpoint bundle to attack."
)
@click.option(
    "--threat",
    required=True,
    help="Threat model (see 'robench list threats'), a threat TOML file (FILE.toml), "
    "or 'all' for every one that applies.",
)
@click.option(
    "--substitute",
    "substitute_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Black-box threat: the model the attacks are crafted on.",
)
@click.option("--n", type=int, default=1000, show_default=True, help="Test samples to attack (a seeded random subset).")
@click.option("--batch-size", type=int, default=250, show_default=True)
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option(
    "--out",
    type=NonEmptyPath(file_okay=False, path_type=Path),
    default=None,
    help="Output folder [default: reports/runs/MODEL-THREAT].",
)
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="ATTACK.PARAM=VALUE",
    help="Attack parameter, e.g. BIM.steps=10 (repeatable).",
)
@click.option("--attack", "attacks", multiple=True, help="Run only these attacks of the threat model (repeatable).")
@click.option("--detector", "detectors", multiple=True, help="Detectors to score [default: all that apply].")
@click.option("--detector-set", "detector_settings", multiple=True, metavar="DETECTOR.PARAM=VALUE")
@click.option("--dataset", default=None, help="Evaluate on this dataset instead of the bundle's.")
@click.option("--data-root", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--sigma", "sigmas", type=float, multiple=True, help="Noise threat: one attack per sigma (repeatable).")
@click.option(
    "--sanity/--no-sanity",
    default=True,
    show_default=True,
    help="Run the sanity probes (gradient masking, determinism, unbounded budget); the checks that read the records "
    "(detector-not-attacked, budget-not-attacked, ...) run either way.",
)
@click.option("--progress/--no-progress", default=True, show_default=True)
@click.option(
    "--wait", is_flag=True, help="If another robench process is writing into --out, wait for it instead of stopping."
)
@_threat_paths_option
@_execution_options
@_ray_options
def run_command(
    model_path: Path,
    threat: str,
    substitute_path: Path | None,
    n: int,
    batch_size: int,
    seed: int,
    device: str,
    out: Path | None,
    settings: tuple[str, ...],
    attacks: tuple[str, ...],
    detectors: tuple[str, ...],
    detector_settings: tuple[str, ...],
    dataset: str | None,
    data_root: Path | None,
    sigmas: tuple[float, ...],
    sanity: bool,
    progress: bool,
    wait: bool,
    precision: str | None,
    cascade: str | None,
    threads: int | None,
    channels_last: str | None,
    compile_model: bool | None,
    budgets: tuple[str, ...],
    threat_paths: tuple[Path, ...],
    ray_address: str | None,
    ray_cpus: int | None,
    ray_gpus: float | None,
    ray_retries: int,
) -> None:
    """Attack a model under a threat model; write records.parquet, summary.csv, sanity.csv and run.json.

    --threat takes a registered name or a threat TOML file (FILE.toml). Finished parts are kept
    in OUT/parts: rerunning the same command resumes an interrupted run (with or without --ray).
    """
    ray = _ray_settings(ray_address, ray_cpus, ray_gpus, ray_retries, threads)
    from robench.specs.run_config import RunConfig
    from robench.specs.threat_files import is_threat_file, load_threat_file

    _load_threats(threat_paths)
    if is_threat_file(threat):  # run.json, records and the default --out then carry the threat's own name
        threat = load_threat_file(Path(threat)).name

    config = RunConfig(
        model=model_path,
        threat=threat,
        n=n,
        batch_size=batch_size,
        seed=seed,
        device=device,
        settings=_settings(settings, "--set"),
        attacks=attacks,
        detectors=detectors or None,
        detector_settings=_detector_settings(detector_settings),
        dataset=dataset,
        data_root=data_root,
        sigmas=sigmas,
        substitute=substitute_path,
        sanity=sanity,
        **_execution(precision, cascade, channels_last, compile_model, budgets),
    )
    out = out or Path("reports/runs") / f"{model_path.stem}-{threat}"
    with _cores(ray.threads if ray is not None else threads, f"robench run --model {model_path} --threat {threat}"):
        _run_prepared(config, model_path, substitute_path, out, progress, wait, ray)


def _run_prepared(
    config: Any, model_path: Path, substitute_path: Path | None, out: Path, progress: bool, wait: bool, ray: Any = None
) -> None:
    from robench.runs.output import format_summary
    from robench.runs.prepare import prepare
    from robench.runs.runner import run

    prepared = prepare(config)
    if prepared.substitute is not None and prepared.substitute.content_hash == prepared.bundle.content_hash:
        # The Python API allows it (transfer from the model itself reproduces white-box, a consistency check).
        raise ConfigError(
            f"--substitute {substitute_path} is the model {model_path} itself (same content hash): "
            "that is the white-box threat; pass another model"
        )
    for note in prepared.notes:
        _echo_err(f"robench: note: {note}")
    result = run(config, out, progress=progress, echo=click.echo, prepared=prepared, wait=wait, ray=ray)
    click.echo(format_summary(result.summary))
    if len(result.sanity):
        flagged = result.sanity[result.sanity["flagged"]]
        for row in flagged.itertuples():
            click.echo(f"sanity: {row.model} {row.threat}: {row.check} flagged ({row.detail})")
        if not len(flagged):
            click.echo(f"sanity: all {len(result.sanity)} checks quiet")
    click.echo(f"wrote {out}/records.parquet, summary.csv, run.json ({result.info['timings_seconds']['total']:.1f} s)")


@cli.command()
@click.argument("suite_file", metavar="SUITE", type=click.Path(path_type=Path))
@click.option("--out", type=NonEmptyPath(file_okay=False, path_type=Path), required=True)
@click.option("--n", type=click.IntRange(min=1), default=None, help="Override the suite's sample count.")
@click.option("--device", default=None)
@click.option("--progress/--no-progress", default=True, show_default=True)
@click.option(
    "--wait", is_flag=True, help="If another robench process is writing into --out, wait for it instead of stopping."
)
@click.option(
    "--data-root",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Folder of on-disk datasets (MNIST, CIFAR-10, ...), overriding the suite's data_root.",
)
@_threat_paths_option
@_execution_options
@_ray_options
def suite(
    suite_file: Path,
    out: Path,
    n: int | None,
    device: str | None,
    progress: bool,
    wait: bool,
    data_root: Path | None,
    precision: str | None,
    cascade: str | None,
    threads: int | None,
    channels_last: str | None,
    compile_model: bool | None,
    budgets: tuple[str, ...],
    threat_paths: tuple[Path, ...],
    ray_address: str | None,
    ray_cpus: int | None,
    ray_gpus: float | None,
    ray_retries: int,
) -> None:
    """Run every model x threat pair of a TOML suite into one combined summary
    (with --ray, all pairs' parts as Ray tasks)."""
    ray = _ray_settings(ray_address, ray_cpus, ray_gpus, ray_retries, threads)
    from robench.runs.output import format_summary
    from robench.runs.suite import run_suite

    _load_threats(threat_paths)
    overrides = {k: v for k, v in (("n", n), ("device", device)) if v is not None}
    overrides.update(_execution(precision, cascade, channels_last, compile_model, budgets))
    if data_root is not None:  # absolute: a suite's own data_root is relative to the suite file, this one to the shell
        overrides["data_root"] = str(data_root.resolve())
    with _cores(ray.threads if ray is not None else threads, f"robench suite {suite_file}"):
        combined = run_suite(suite_file, out, overrides, progress=progress, echo=click.echo, wait=wait, ray=ray)
    click.echo(format_summary(combined))
    click.echo(f"wrote {out}/summary.csv")


@cli.command()
@click.option(
    "--out", type=NonEmptyPath(file_okay=False, path_type=Path), default=Path("reports/demo"), show_default=True
)
@click.option(
    "--models-dir",
    type=NonEmptyPath(file_okay=False, path_type=Path),
    default=Path("reports/models"),
    show_default=True,
)
@click.option("--device", default="auto", show_default=True)
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option(
    "--n", type=click.IntRange(min=1), default=None, help="Test samples per attack [default: 100, with --full 200]."
)
@click.option(
    "--full",
    is_flag=True,
    help="The longer settings (make demo-full): twice the samples, C&W 5 x 100 / 150 Adam steps.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1, max=4096),
    default=None,
    help="CPU threads for torch [default: every core this process may use].",
)
@click.option("--progress/--no-progress", default=True, show_default=True)
def demo(
    out: Path, models_dir: Path, device: str, seed: int, n: int | None, full: bool, threads: int | None, progress: bool
) -> None:
    """The main job on the embedded default: train the bundled models if needed, run the threat models,
    write the tables."""
    from robench.app.demo import DEMO_N, FULL_BUDGET, FULL_N, DemoBudget, run_demo
    from robench.core.devices import resolve_device

    budget, default_n = (FULL_BUDGET, FULL_N) if full else (DemoBudget(), DEMO_N)
    with _cores(threads, "robench demo"):
        run_demo(
            out=out,
            models_dir=models_dir,
            device=resolve_device(device),
            seed=seed,
            progress=progress,
            echo=click.echo,
            n=n or default_n,
            budget=budget,
        )


def _register_subcommands() -> None:
    """Commands that live in their own modules (reports, regression), attached to the group."""
    from robench.cli.export import export
    from robench.cli.regression import baseline, check
    from robench.cli.report import report

    for command in (report, baseline, check, export):
        cli.add_command(command)


_register_subcommands()


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the CLI and turn every failure into one line and an exit code."""
    debug = os.environ.get("ROBENCH_DEBUG") == "1"
    try:
        result = cli.main(args=argv, prog_name="robench", standalone_mode=False)
        code = result if isinstance(result, int) else 0
    except click.ClickException as exc:
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path if ctx else 'robench'} --help')" if isinstance(exc, click.UsageError) else ""
        _echo_err(f"robench: error: {one_line(exc.format_message())}{hint}")
        code = exc.exit_code
    except OSError as exc:  # unwritable --out, a folder where a file was expected, a full disk, ...
        if debug:
            raise
        _echo_err(
            f"robench: error: {one_line(str(exc.strerror or exc))}{f': {shown(exc.filename)}' if exc.filename else ''}"
        )
        code = 1
    except (click.exceptions.Abort, KeyboardInterrupt):
        _echo_err("robench: interrupted")
        code = 130
    except RobenchError as exc:
        if debug:
            raise
        _echo_err(f"robench: error: {one_line(str(exc))}")
        code = exc.exit_code
    except Exception as exc:  # a bug: still one line, with a way to see more
        if debug:
            raise
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        _echo_err(
            f"robench: internal error: {type(exc).__name__}: {one_line(text)} "
            "(rerun with ROBENCH_DEBUG=1 for the traceback)"
        )
        code = 1
    sys.exit(code)
