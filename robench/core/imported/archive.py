"""Checking a ``torch.export`` archive (``.pt2``) before anything in it is deserialized.

``torch.export.load`` is not safe on untrusted bytes (torch 2.14, ``torch/export/pt2_archive/_package.py``
and ``torch/_export/serde/serialize.py``): it unpickles with ``weights_only=False`` the weights and
constants it stores pickled, falls back to ``weights_only=False`` for the sample inputs, unpickles
custom-object constants, loads AOTInductor shared libraries, parses every symbolic shape with
``sympy.sympify`` (which evaluates Python), resolves each node's target by walking attributes from the
``torch`` module (so a node can name ``os.system`` through ``torch.serialization.os.system``), and, where
its reader fails, retries the file as a legacy zip of pickles. So robench reads an archive in three steps:

1. :func:`check_program_archive` reads the archive's members with the same zip reader torch uses and
   refuses, in one line naming the member, anything that could run code: a pickled member that does not
   load with ``torch.load(weights_only=True)``, a custom or opaque object constant, compiled code, a
   symbolic expression outside the grammar torch writes, a node whose target is not an operator of the
   ``aten`` / ``prims`` namespaces (or one of the few Python operators torch emits for shape arithmetic).
2. :func:`load_checked_program` then deserializes it with torch's PT2 reader only (never the legacy path).
3. The caller (robench.core.imported.program) rebuilds the model from the program and checks its shapes.
"""

from __future__ import annotations

import io
import json
import math
import operator
import pickle
import re
import warnings
from collections.abc import Iterator
from typing import Any

import torch

from robench.core.errors import BundleError

# Python operators torch.export emits for shape arithmetic (``_operator.*`` targets) and the math functions.
_PY_OPERATORS = {
    "getitem", "add", "sub", "mul", "truediv", "floordiv", "mod", "neg", "pos", "pow", "abs",
    "eq", "ne", "lt", "le", "gt", "ge", "and_", "or_", "xor", "not_", "invert",
}  # fmt: skip
_MATH = {"ceil", "floor", "trunc", "sqrt", "exp", "log", "log2", "log10", "sin", "cos", "tan", "pi", "inf"}
_SYM_FUNCTIONS = {"sym_float", "sym_int", "sym_max", "sym_min", "sym_not", "sym_ite", "sym_sum", "sym_sqrt", "_sym_sqrt"}
# Higher-order operators that only run subgraphs of the same archive (checked like the main graph).
_HIGHER_ORDER = {"cond", "while_loop", "wrap_with_set_grad_enabled", "wrap_with_autocast", "map_impl", "scan", "invoke_subgraph"}
_OP_NAMESPACES = {"aten", "prims"}

# Symbolic shapes as torch writes them: "Symbol('s31', positive=True, integer=True)", "2*s0 + 1", "Max(2, s0)".
_SYMPY_NAMES = {
    "Symbol", "Integer", "Float", "Rational", "True", "False", "positive", "integer", "real", "nonnegative",
    "negative", "finite", "nonzero", "Max", "Min", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "And", "Or", "Not",
    "oo", "zoo", "nan", "floor", "ceiling", "Abs", "Mod", "Piecewise", "sqrt",
    "FloorDiv", "ModularIndexing", "Where", "PythonMod", "CleanDiv", "CeilToInt", "FloorToInt", "CeilDiv",
    "LShift", "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv", "IntTrueDiv", "IsNonOverlappingAndDenseIndicator",
    "TruncToFloat", "TruncToInt", "RoundToInt", "RoundDecimal", "ToFloat", "Identity",
}  # fmt: skip
_EXPR_TOKEN = re.compile(
    r"\s*(?:(?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)|(?P<string>'[A-Za-z0-9_]{1,64}')|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op>\*\*|//|==|!=|<=|>=|[-+*/%(),<>=&|~]))"
)
_SYMBOL_NAME = re.compile(r"[a-z]{1,4}\d{1,9}")
MAX_EXPR_LENGTH = 4096
MAX_ARCHIVE_BYTES = 4 * 1024**3


def _fail(source: str, member: str, why: str) -> BundleError:
    return BundleError(f"{source}: refused: archive member '{member}' {why}; robench does not deserialize it")


def check_expression(text: str) -> bool:
    """True when ``text`` (a symbolic shape) uses only numbers, symbol names, sympy's shape functions and operators."""
    if not isinstance(text, str) or len(text) > MAX_EXPR_LENGTH:
        return False
    position = 0
    while position < len(text):
        if text[position:].strip() == "":
            return True
        match = _EXPR_TOKEN.match(text, position)
        if match is None or match.end() == position:
            return False
        name = match.group("name")
        if name is not None and name not in _SYMPY_NAMES and not _SYMBOL_NAME.fullmatch(name):
            return False
        position = match.end()
    return True


def resolve_target(target: str) -> Any:
    """What torch's deserializer resolves a node target to, without calling anything (None: not resolvable)."""
    for prefix, root in (("_operator.", operator), ("torch.", torch), ("math.", math)):
        if target.startswith(prefix):
            obj: Any = root
            for name in target[len(prefix) :].split("."):
                if not name or name.startswith("__") or not hasattr(obj, name):
                    return None
                obj = getattr(obj, name)
            return obj
    return None


def check_target(target: Any) -> str | None:
    """None when a node target is allowed, else why it is not."""
    if not isinstance(target, str):
        return "has a node whose target is not a string"
    if target.startswith("_operator."):
        return None if target[len("_operator.") :] in _PY_OPERATORS else f"calls {target}"
    if target.startswith("math."):
        return None if target[len("math.") :] in _MATH else f"calls {target}"
    if target.startswith("torch.") and target.count(".") == 1 and target[len("torch.") :] in _SYM_FUNCTIONS:
        return None
    if target.startswith("torch.ops.higher_order."):
        name = target[len("torch.ops.higher_order.") :]
        return None if name in _HIGHER_ORDER else f"calls the higher-order operator {target}"
    if target.startswith("torch.ops."):
        parts = target.split(".")
        if len(parts) in (4, 5) and parts[2] in _OP_NAMESPACES:
            resolved = resolve_target(target)
            if isinstance(resolved, (torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
                return None
            return f"names the unknown operator {target}"
        return f"calls {target}, outside the aten and prims operators"
    return f"calls {target[:80]}, which is not a tensor operator"


def _walk(value: Any) -> Iterator[dict[str, Any]]:
    """Every JSON object in ``value`` (depth first, iteratively: a deep archive cannot overflow the stack)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _check_graph_json(text: str, member: str, source: str) -> None:
    try:
        program = json.loads(text)
    except (ValueError, RecursionError):
        raise _fail(source, member, "is not valid JSON") from None
    for obj in _walk(program):
        if "target" in obj and "inputs" in obj and "outputs" in obj:  # a graph node
            problem = check_target(obj["target"])
            if problem is not None:
                raise _fail(source, member, problem)
        expr = obj.get("expr_str")
        if expr is not None and not check_expression(expr):
            raise _fail(source, member, f"holds the symbolic expression {str(expr)[:60]!r}, which would be evaluated as Python")
        if "as_custom_obj" in obj or "custom_obj" in obj:
            raise _fail(source, member, "uses a custom (torchbind) object")


def _load_weights_only(data: bytes, member: str, source: str) -> None:
    if not data:  # torch writes an empty member for "no sample inputs" and reads it as such
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        match = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f"references {match.group(1)}, which could run code" if match else "is a pickle that torch.load(weights_only=True) refuses"
        raise _fail(source, member, what) from None
    except Exception:  # noqa: BLE001 - any failure to read it as plain tensors is a refusal
        raise _fail(source, member, "is not readable as plain tensors") from None


def _check_payload_config(reader: Any, config_member: str, directory: str, source: str, constants: bool) -> None:
    from torch.export.pt2_archive import constants as names

    try:
        config = json.loads(reader.read_string(config_member))
    except Exception:  # noqa: BLE001
        raise _fail(source, config_member, "is missing or not valid JSON") from None
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        raise _fail(source, config_member, "is malformed")
    for name, meta in entries.items():
        if not isinstance(meta, dict) or not isinstance(meta.get("path_name"), str):
            raise _fail(source, config_member, f"has a malformed entry for '{name}'")
        path = meta["path_name"]
        member = f"{directory}{path}"
        if constants and not path.startswith(names.TENSOR_CONSTANT_FILENAME_PREFIX):
            raise _fail(source, member, f"is a pickled object constant ('{name}')")
        if meta.get("use_pickle"):
            _load_weights_only(reader.read_bytes(member), member, source)


def check_program_archive(data: bytes, source: str) -> None:
    """Refuse (one-line :class:`BundleError`) a ``.pt2`` archive that ``torch.export.load`` could not read safely."""
    from torch.export.pt2_archive import constants as names
    from torch.export.pt2_archive._package import PT2ArchiveReader

    if len(data) > MAX_ARCHIVE_BYTES:
        raise BundleError(f"{source}: refused: the program archive is larger than {MAX_ARCHIVE_BYTES // 1024**3} GiB")
    try:
        reader = PT2ArchiveReader(io.BytesIO(data))
        members = list(reader.get_file_names())
        version = reader.read_string(names.ARCHIVE_VERSION_PATH)
    except Exception:  # noqa: BLE001 - torch's reader raises RuntimeError / AssertionError / UnicodeDecodeError
        raise BundleError(f"{source}: not a torch.export program archive (.pt2 written by torch.export.save)") from None
    if version != names.ARCHIVE_VERSION_VALUE:
        raise BundleError(f"{source}: program archive version {version!r} is not the one this torch reads ({names.ARCHIVE_VERSION_VALUE})")
    for member in members:
        for directory, what in ((names.AOTINDUCTOR_DIR, "is compiled code (AOTInductor)"), (names.EXECUTORCH_DIR, "is an ExecuTorch program"),
                                (names.MTIA_DIR, "is compiled code (MTIA)"), (names.XL_MODEL_WEIGHTS_DIR, "is an external weights file")):  # fmt: skip
            if member.startswith(directory):
                raise _fail(source, member, what)
    programs = [m for m in members if m.startswith(names.MODELS_DIR) and m.endswith(".json")]
    if programs != [names.MODELS_FILENAME_FORMAT.format("model")]:
        raise BundleError(f"{source}: a program archive must hold exactly one program named 'model', found {len(programs)}")
    model = names.MODELS_FILENAME_FORMAT.format("model")
    _check_graph_json(reader.read_string(model), model, source)
    for legacy in (f"{names.WEIGHTS_DIR}model.pt", f"{names.CONSTANTS_DIR}model.pt"):
        if legacy in members:
            _load_weights_only(reader.read_bytes(legacy), legacy, source)
    if f"{names.WEIGHTS_DIR}model.pt" not in members:
        _check_payload_config(reader, names.WEIGHTS_CONFIG_FILENAME_FORMAT.format("model"), names.WEIGHTS_DIR, source, constants=False)
    if f"{names.CONSTANTS_DIR}model.pt" not in members:
        _check_payload_config(reader, names.CONSTANTS_CONFIG_FILENAME_FORMAT.format("model"), names.CONSTANTS_DIR, source, constants=True)
    sample = names.SAMPLE_INPUTS_FILENAME_FORMAT.format("model")
    if sample in members:
        _load_weights_only(reader.read_bytes(sample), sample, source)


def load_checked_program(data: bytes, source: str) -> torch.export.ExportedProgram:
    """:func:`check_program_archive`, then torch's PT2 reader (never its legacy pickle fallback); one-line errors."""
    from torch.export.pt2_archive._package import load_pt2

    check_program_archive(data, source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            contents = load_pt2(io.BytesIO(data))
        return contents.exported_programs["model"]
    except Exception as exc:  # noqa: BLE001 - a malformed archive that passed the safety checks
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise BundleError(f"{source}: the exported program does not deserialize ({first})") from None
