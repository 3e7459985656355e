"""Where an imported model comes from: an exported program, a TorchScript archive, a factory or a timm name.

Each loader returns an ``nn.Module`` that maps normalized inputs to the model's output, in eval mode:
an eager module (factory, timm) with the user's weights loaded strictly, or the unflattened program
(``torch.export.unflatten``, which keeps the submodule names a feature layer is named by).

Weights files are untrusted input: ``safetensors`` (no code at all) or ``torch.load(weights_only=True)``
(refuses every pickled object but tensors and plain containers). A ``.pt2`` archive is checked by
:mod:`robench.checkpoints.imported.archive` before torch deserializes it. A factory, a TorchScript archive and
timm are programs: importing one runs it, as running the user's own code does, so import only what you
trust; the bundle written from it holds only a checked exported program and weights.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import re
import sys
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from robench.checkpoints.imported.archive import load_checked_program
from robench.core.errors import BundleError, ConfigError, UnknownNameError
from robench.core.registry import did_you_mean
from robench.core.safe_load import load_weights_only

FACTORY_PATTERN = re.compile(r"(?P<module>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):(?P<attr>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)")
# timm keyword arguments that would fetch or read weights behind robench's back.
TIMM_FORBIDDEN = (
    "pretrained",
    "pretrained_cfg",
    "pretrained_cfg_overlay",
    "pretrained_strict",
    "checkpoint_path",
    "cache_dir",
)


@contextlib.contextmanager
def quiet_torch() -> Iterator[None]:
    """torch.export and the TorchScript converter log warnings (0/1 specialization, ...) to stderr; the CLI's errors are
    one line."""
    loggers = [
        logging.getLogger(name)
        for name in (
            "torch._export",
            "torch.export",
            "torch._dynamo",
            "torch.fx.experimental.symbolic_shapes",
            "torch._subclasses",
        )
    ]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:200]}" if text else type(exc).__name__


def detect_kind(source: str) -> str:
    """``export`` (a .pt2 file), ``torchscript`` (a TorchScript zip), ``factory`` (``module:function``) or ``timm``
    (``timm:NAME``)."""
    if source.startswith("timm:"):
        return "timm"
    path = Path(source)
    if path.is_file():
        if path.suffix == ".pt2":
            return "export"
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
            if any(name.endswith("archive_format") for name in names):
                return "export"
            if any("/code/" in name for name in names) and any(name.endswith("constants.pkl") for name in names):
                return "torchscript"
        raise ConfigError(
            f"{source} is neither a torch.export program (.pt2) nor a TorchScript archive; a state dict is imported "
            f"with its architecture: --kind factory package.module:function --weights {source}"
        )
    if FACTORY_PATTERN.fullmatch(source):
        return "factory"
    raise ConfigError(f"{source}: no such file, and not a factory 'package.module:function' or 'timm:NAME'")


# ---------------------------------------------------------------- weights files


def _looks_like_safetensors(path: Path) -> bool:
    if path.suffix == ".safetensors":
        return True
    with open(path, "rb") as handle:
        head = handle.read(9)
    return len(head) == 9 and int.from_bytes(head[:8], "little") < 100_000_000 and head[8:9] == b"{"


def load_weights(path: Path) -> dict[str, Tensor]:
    """A flat state dict from a safetensors file or a weights-only torch file; every problem is one line."""
    if not path.exists():
        raise BundleError(f"{path}: no such file")
    if not path.is_file():
        raise BundleError(f"{path}: not a file")
    if _looks_like_safetensors(path):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state: Any = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise BundleError(f"{path}: not a readable safetensors file ({_first_line(exc)})") from None
    else:
        state = load_weights_only(
            path,
            None,
            after_global="weights must be tensors only",
            refused="refused: torch.load(weights_only=True) does not read it (pickled objects other than tensors?)",
            unreadable="not a readable weights file (truncated, corrupt, or not a torch / safetensors file)",
        )
    if isinstance(state, Mapping) and state.get("format") == "robench-bundle":
        raise BundleError(f"{path} is a robench bundle already: pass it to 'robench run --model' directly")
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):  # e.g. a Lightning checkpoint
        state = state["state_dict"]
    if (
        not isinstance(state, Mapping)
        or not state
        or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items())
    ):
        raise BundleError(f"{path}: not a state dict (a mapping of parameter names to tensors)")
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise BundleError(f"{path}: weight '{name}' holds NaN or inf values")
    return dict(state)


def apply_weights(module: nn.Module, state: Mapping[str, Tensor], path: Path) -> None:
    """Load ``state`` into ``module`` strictly: a missing, unexpected or mis-shaped tensor is a one-line error."""
    expected = module.state_dict()
    for name in sorted(set(expected) | set(state)):
        if name not in state:
            problem = f"missing {name}"
        elif name not in expected:
            problem = f"unexpected {name}{did_you_mean(name, list(expected))}"
        elif tuple(state[name].shape) != tuple(expected[name].shape):
            problem = (
                f"{name} has shape {list(state[name].shape)} in the file but {list(expected[name].shape)} in the model"
            )
        else:
            continue
        raise BundleError(f"{path}: the weights do not fit the model: {problem}")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise BundleError(f"{path}: the weights do not fit the model ({_first_line(exc)})") from None


# ---------------------------------------------------------------- the four sources


@contextlib.contextmanager
def _cwd_importable() -> Iterator[None]:
    """The current folder on ``sys.path`` while the factory's module is imported (as ``python -m`` would have it)."""
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def from_factory(source: str, kwargs: Mapping[str, Any]) -> nn.Module:
    """``package.module:function`` called with ``kwargs``; it must return an ``nn.Module``."""
    match = FACTORY_PATTERN.fullmatch(source)
    if match is None:
        raise ConfigError(f"factory '{source}' must be written package.module:function")
    module_name, attr = match.group("module"), match.group("attr")
    try:
        with _cwd_importable():
            obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"factory '{source}': cannot import module '{module_name}' ({_first_line(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - the user's module failed while importing
        raise ConfigError(f"factory '{source}': importing '{module_name}' raised {_first_line(exc)}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            known = [n for n in dir(obj) if not n.startswith("_")]
            raise ConfigError(f"factory '{source}': '{module_name}' has no '{attr}'{did_you_mean(part, known)}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"factory '{source}' is a {type(obj).__name__}, not a callable that builds the model")
    try:
        model = obj(**kwargs)
    except Exception as exc:  # noqa: BLE001 - the user's factory failed
        raise ConfigError(f"factory '{source}' raised {_first_line(exc)}") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"factory '{source}' returned a {type(model).__name__}, not a torch.nn.Module")
    return model


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    """Hugging Face Hub offline (timm fetches configs and weights through it) for the duration."""
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def from_timm(name: str, kwargs: Mapping[str, Any]) -> nn.Module:
    """``timm.create_model(name, pretrained=False, **kwargs)``, offline; names and kwargs that would fetch are
    refused."""
    for key in kwargs:
        if key in TIMM_FORBIDDEN:
            raise ConfigError(
                f"timm argument '{key}' is refused: robench never downloads or reads weights behind --weights; pass "
                "the weights file with --weights"
            )
    if not re.fullmatch(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)?", name):
        raise ConfigError(
            f"timm model '{name}' is refused: only a plain architecture name (no hub or local-dir prefix) is imported, "
            "its weights with --weights"
        )
    try:
        import timm
    except ImportError:
        raise ConfigError("importing a timm model needs timm: pip install 'robench[timm]'") from None
    architecture = name.split(".")[0]
    known = timm.list_models()
    if architecture not in known:
        raise UnknownNameError(f"unknown timm model '{architecture}'{did_you_mean(architecture, known)}")
    try:
        with _offline():
            return timm.create_model(name, pretrained=False, **kwargs)
    except Exception as exc:  # noqa: BLE001 - timm's errors for bad kwargs vary
        raise ConfigError(f"timm.create_model('{name}') raised {_first_line(exc)}") from None


def from_export(path: Path) -> nn.Module:
    """The checked program of a ``.pt2`` file, unflattened (its submodules keep their names)."""
    if not path.is_file():
        raise BundleError(f"{path}: no such file")
    ep = load_checked_program(path.read_bytes(), str(path))
    inputs = [n for n in ep.graph.nodes if n.op == "placeholder" and n.name in ep.graph_signature.user_inputs]
    shapes = [getattr(n.meta.get("val"), "shape", None) for n in inputs]
    if len(inputs) != 1 or shapes[0] is None or len(shapes[0]) != 4:
        raise ConfigError(
            f"{path}: the program takes {len(inputs)} inputs; "
            "robench imports programs of one image batch (N x C x H x W)"
        )
    if isinstance(shapes[0][0], int):
        raise ConfigError(
            f"{path}: the program was exported for batches of exactly {shapes[0][0]}; export it with a dynamic batch: "
            "torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim('batch')},))"
        )
    return _unflatten(ep, path)


def from_torchscript(path: Path, example: Tensor) -> nn.Module:
    """A TorchScript archive converted to an exported program (``TS2EPConverter``), unflattened."""
    if not path.is_file():
        raise BundleError(f"{path}: no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scripted = torch.jit.load(io.BytesIO(path.read_bytes()), map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - torch.jit.load raises RuntimeError / ValueError variously
        raise BundleError(f"{path}: not a readable TorchScript archive ({_first_line(exc)})") from None
    try:
        from torch._export.converter import TS2EPConverter

        with quiet_torch():
            ep = TS2EPConverter(scripted, (example,)).convert()
    except Exception as exc:  # noqa: BLE001 - the converter fails in many ways; each is one line
        raise ConfigError(
            f"{path}: the TorchScript model does not convert to an exported program on inputs of shape "
            f"{tuple(example.shape[1:])} ({_first_line(exc)})"
        ) from None
    try:
        return mark_module_outputs(ep.module())
    except Exception as exc:  # noqa: BLE001 - any failure to recover the modules is one line
        raise ConfigError(
            f"{path}: the converted TorchScript program's modules cannot be recovered ({_first_line(exc)})"
        ) from None


class ModuleOutput(nn.Module):
    """Stands where a TorchScript submodule was: holds its weights, and is called (identity) on its output."""

    def forward(self, x: Any) -> Any:
        return x


def mark_module_outputs(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Give a flat converted graph its module boundaries back, for the weighted modules.

    TorchScript keeps no module calls at run time, so its conversion to an exported program is one
    flat graph reading ``conv.weight``, ``fc.bias``, ... For every module holding weights, the output
    of the last operation that reads one of them (its own or a descendant's) is taken as the
    module's output: the module is replaced by a :class:`ModuleOutput` (same weights) called on that
    value, so forward hooks, and with them the feature layer, work as on an eager module. Modules
    without weights (ReLU, pooling, dropout) have no boundary left and cannot be named.
    """
    order = {node: i for i, node in enumerate(gm.graph.nodes)}
    last: dict[str, torch.fx.Node] = {}
    for node in gm.graph.nodes:
        if node.op != "get_attr":
            continue
        parts = str(node.target).split(".")[:-1]
        for user in node.users:
            for depth in range(1, len(parts) + 1):
                prefix = ".".join(parts[:depth])
                if prefix not in last or order[user] > order[last[prefix]]:
                    last[prefix] = user
    for prefix in sorted(last, key=lambda p: p.count(".")):  # parents first: their submodules are rebuilt inside them
        *path, leaf = prefix.split(".")
        parent = gm.get_submodule(".".join(path)) if path else gm
        old = parent._modules[leaf]
        marker = ModuleOutput()
        marker._parameters, marker._buffers, marker._modules = old._parameters, old._buffers, old._modules
        marker.__dict__.update({k: v for k, v in vars(old).items() if isinstance(v, Tensor)})
        parent._modules[leaf] = marker
    for prefix in sorted(last, key=lambda p: -p.count(".")):  # innermost first, so each marker runs after its parts
        node = last[prefix]
        with gm.graph.inserting_after(node):
            marked = gm.graph.call_module(prefix, (node,))
        node.replace_all_uses_with(marked, delete_user_cb=lambda user: user is not marked)
        last = {k: (marked if v is node else v) for k, v in last.items()}
    gm.recompile()
    gm.marked_module_outputs = True  # for the feature layer's error message
    return gm


def _unflatten(ep: torch.export.ExportedProgram, path: Path) -> nn.Module:
    try:
        with quiet_torch():
            return torch.export.unflatten(ep)
    except Exception as exc:  # noqa: BLE001 - any failure to unflatten is one line
        raise ConfigError(f"{path}: the program's submodules cannot be recovered ({_first_line(exc)})") from None
