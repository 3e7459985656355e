"""The JSON members of a ``torch.export`` archive, checked field by field and printed back in canonical form.

What torch's reader would otherwise act on (torch 2.14, ``torch/_export/serde/serialize.py`` and
``torch/export/_unlift.py``), and what robench does with it:

- a node's ``target`` is resolved by walking attributes from ``torch``, ``operator`` or ``math``: only
  ``aten`` / ``prims`` operators, higher-order operators that run subgraphs of the same program, and the
  few Python operators torch emits for shape arithmetic are accepted (:func:`check_target`);
- every ``expr_str`` goes to ``sympy.sympify``: it is parsed by :mod:`robench.checkpoints.imported.sym_expr`
  and replaced by the canonical text of the parse;
- ``guards_code`` is Python that ``ExportedProgram.module()`` compiles and runs: robench never carries it
  (it holds the guards torch's tracer found; the input-shape guards torch derives from the range
  constraints, which are checked integers here, stay);
- a node's ``metadata`` may name functions (``source_fn_stack``, ``torch_fn``), hold JSON of any shape
  (``custom``, ``from_node``) and free text (``stack_trace``): only ``nn_module_stack`` is kept (it names
  the submodules a feature layer is chosen by), with each of its paths and type names checked;
- custom (torchbind) and opaque objects, tokens and inputs that are not tensors are refused;
- pytree specs (``in_spec``, ``out_spec``) may only nest tuples, lists and dicts with identifier keys.

Every string must be short and free of control characters, names must be identifiers, every integer
bounded, and the whole document at most :data:`MAX_NODES` objects deep and wide.
"""

from __future__ import annotations

import json
import keyword
import math
import operator
import re
from collections.abc import Callable
from typing import Any

import torch

from robench.checkpoints.imported.sym_expr import ExpressionError, canonical_expression, is_symbol_name

Fail = Callable[[str], Exception]

# Python operators torch.export emits for shape arithmetic (``_operator.*`` targets) and the math functions.
_PY_OPERATORS = {
    "getitem", "add", "sub", "mul", "truediv", "floordiv", "mod", "neg", "pos", "abs",
    "eq", "ne", "lt", "le", "gt", "ge", "and_", "or_", "xor", "not_", "invert",
}  # fmt: skip
_MATH = {"ceil", "floor", "trunc", "sqrt"}
_SYM_FUNCTIONS = {
    "sym_float",
    "sym_int",
    "sym_max",
    "sym_min",
    "sym_not",
    "sym_ite",
    "sym_sum",
    "sym_sqrt",
    "_sym_sqrt",
}
# Higher-order operators that only run subgraphs of the same archive (checked like the main graph) a bounded number
# of times: while_loop is not among them (a loop whose condition never fails would hang every load).
_HIGHER_ORDER = {
    "cond",
    "wrap_with_set_grad_enabled",
    "wrap_with_autocast",
    "map_impl",
    "scan",
    "invoke_subgraph",
}
# Operators with effects outside their output tensors, refused whatever their schema says: from_file maps a file
# (with shared=True, writes to it), print writes to stdout.
_EFFECT_OPERATORS = {"from_file", "_print", "print", "save", "load"}
_OP_NAMESPACES = {"aten", "prims"}

TOP_KEYS = {
    "graph_module",
    "opset_version",
    "range_constraints",
    "schema_version",
    "verifiers",
    "torch_version",
    "guards_code",
}
GRAPH_MODULE_KEYS = {"graph", "signature", "module_call_graph", "metadata", "treespec_namedtuple_fields"}
VERIFIERS = {"", "ATEN", "TRAINING", "EXPORT"}
INPUT_SPEC_KINDS = {"user_input", "parameter", "buffer", "tensor_constant"}
OUTPUT_SPEC_KINDS = {
    "user_output",
    "loss_output",
    "buffer_mutation",
    "gradient_to_parameter",
    "gradient_to_user_input",
    "user_input_mutation",
}
REFUSED_KEYS = {
    "as_custom_obj": "uses a custom (torchbind) object",
    "custom_obj": "uses a custom (torchbind) object",
    "as_opaque_obj": "uses an opaque Python object",
    "as_token": "uses an effect token (a side effect)",
    "token": "uses an effect token (a side effect)",
    "as_operator": "passes an operator as a value",
    "as_sym_bool": "has symbolic booleans (runtime assertions robench does not carry)",
    "as_sym_bools": "has symbolic booleans (runtime assertions robench does not carry)",
    "as_sym_float": "has symbolic floats",
    "as_sym_floats": "has symbolic floats",
}
MAX_NODES = 1_000_000  # JSON objects and lists in one document
MAX_STRING = 4096
MAX_INT = 2**63
MAX_SPEC_DEPTH = 16
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,199}")
_DOTTED = re.compile(r"[A-Za-z0-9_]{1,200}(?:\.[A-Za-z0-9_]{1,200}){0,63}")
_MODULE_PATH = re.compile(r"(?:[A-Za-z0-9_]{1,200}(?:\.[A-Za-z0-9_]{1,200}){0,63})?")
_TYPE_NAME = re.compile(r"[A-Za-z0-9_.<>]{1,400}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_KEPT_NODE_METADATA = ("nn_module_stack",)
# Name fields that hold a dotted path (a weight's or submodule's name); every other "name" / "*_name" is an identifier.
DOTTED_NAME_KEYS = {"parameter_name", "buffer_name", "tensor_constant_name", "user_input_name", "target_name"}
SPEC_TYPES = {None, "builtins.tuple", "builtins.list", "builtins.dict"}


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
        if len(parts) == 5 and parts[2] in _OP_NAMESPACES and all(_NAME.fullmatch(p) for p in parts):
            resolved = resolve_target(target)
            if not isinstance(resolved, torch._ops.OpOverload):
                return f"names the unknown operator {target}"
            return _operator_problem(target, resolved)
        return f"calls {target[:80]}, outside the aten and prims operators"
    return f"calls {target[:80]}, which is not a tensor operator"


def _operator_problem(target: str, op: torch._ops.OpOverload) -> str | None:
    """None for a tensor operator that touches nothing but tensors of the program: no ``out=`` argument, no file.

    In-place operators (``relu_``: the name ends in ``_``) write into the program's own intermediate tensors, which
    torch.export keeps for modules such as ``nn.ReLU(inplace=True)``; no operator robench accepts can make a tensor
    whose memory is a file (``from_file`` is refused), so an in-place write stays inside the program's memory.
    """
    schema = op._schema
    packet = op._overloadpacket.__name__
    if packet in _EFFECT_OPERATORS:
        return f"calls {target}, which has effects outside its output"
    if schema.is_mutable and not packet.endswith("_"):
        return f"calls {target}, which writes into its arguments (out=); robench runs functional programs"
    for argument in schema.arguments:
        if "file" in argument.name or "path" in argument.name:
            return f"calls {target}, which takes a file ({argument.name})"
    return None


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


def parse_json(text: str, fail: Fail) -> Any:
    """``json.loads`` with its failures (and deep nesting) as one-line errors."""
    try:
        return json.loads(text)
    except RecursionError:
        raise fail("is nested too deeply") from None
    except ValueError:
        raise fail("is not valid JSON") from None


def _check_scalars(value: Any, fail: Fail) -> None:
    """Every string short and free of control characters, every number bounded, the document bounded in size."""
    stack, seen = [value], 0
    while stack:
        item = stack.pop()
        seen += 1
        if seen > MAX_NODES:
            raise fail(f"has more than {MAX_NODES:,} values")
        if isinstance(item, dict):
            for key, child in item.items():
                if len(key) > MAX_STRING or _CONTROL.search(key):
                    raise fail("has a key with control characters or over 4096 characters")
                stack.append(child)
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            if len(item) > MAX_STRING or _CONTROL.search(item):
                raise fail(f"has a string with control characters or over {MAX_STRING} characters ({item[:40]!r})")
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if abs(item) > MAX_INT:
                raise fail(f"has the integer {str(item)[:30]}, beyond 2**63")
        elif isinstance(item, float):
            continue
        else:  # pragma: no cover - json.loads makes nothing else
            raise fail("has a value of an unknown kind")


def _check_name(value: Any, what: str, fail: Fail, pattern: re.Pattern[str] = _NAME) -> None:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise fail(f"has the {what} {str(value)[:60]!r}, which is not a plain name")


def _check_spec(text: Any, what: str, fail: Fail) -> None:
    """A pytree spec string: protocol 1, nested tuples / lists / dicts (identifier keys) and leaves, bounded."""
    spec = parse_json(text, fail) if isinstance(text, str) else None
    if not (isinstance(spec, list) and len(spec) == 2 and spec[0] == 1):
        raise fail(f"has a malformed {what}")
    stack = [(spec[1], 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_SPEC_DEPTH or not isinstance(node, dict) or set(node) != {"type", "context", "children_spec"}:
            raise fail(f"has a {what} robench does not read (only tuples, lists and dicts of tensors)")
        if node["type"] not in SPEC_TYPES:
            raise fail(f"has a {what} holding a {str(node['type'])[:60]!r}; only tuples, lists and dicts are read")
        if node["type"] == "builtins.dict":
            keys = parse_json(node["context"], fail) if isinstance(node["context"], str) else None
            if not isinstance(keys, list) or not all(isinstance(k, str) and _NAME.fullmatch(k) for k in keys):
                raise fail(f"has a {what} whose dict keys are not plain names")
        elif node["context"] not in (None, "null"):
            raise fail(f"has a {what} with a context robench does not read")
        if not isinstance(node["children_spec"], list):
            raise fail(f"has a malformed {what}")
        stack.extend((child, depth + 1) for child in node["children_spec"])


def _check_module_stack(text: Any, fail: Fail) -> None:
    if not isinstance(text, str):
        raise fail("has a malformed nn_module_stack")
    for item in text.split(";"):
        parts = item.split(",")
        if len(parts) != 3:
            raise fail("has an nn_module_stack entry robench does not read")
        key, path, type_name = parts
        _check_name(key, "module key", fail, _DOTTED)
        _check_name(path, "module path", fail, _MODULE_PATH)
        _check_name(type_name, "module type", fail, _TYPE_NAME)


def _canonical_node(node: dict[str, Any], fail: Fail) -> None:
    problem = check_target(node.get("target"))
    if problem is not None:
        raise fail(problem)
    _check_name(node.get("name", "node"), "node name", fail)
    metadata = node.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise fail("has a node with malformed metadata")
    kept = {key: metadata[key] for key in _KEPT_NODE_METADATA if key in metadata}
    if "nn_module_stack" in kept:
        _check_module_stack(kept["nn_module_stack"], fail)
    node["metadata"] = kept


def _canonical_walk(value: Any, fail: Fail) -> None:
    """Check every object of the program in place: nodes, expressions, refused kinds, names."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
            continue
        if not isinstance(item, dict):
            continue
        for key, why in REFUSED_KEYS.items():
            if key in item:
                raise fail(why)
        if "target" in item and "inputs" in item and "outputs" in item:
            _canonical_node(item, fail)
        if "expr_str" in item:
            try:
                item["expr_str"] = canonical_expression(item["expr_str"])
            except ExpressionError as exc:
                raise fail(
                    f"holds the symbolic expression {str(item['expr_str'])[:60]!r}, "
                    f"outside robench's shape grammar ({exc})"
                ) from None
        for key, value in item.items():  # every name, anywhere (subgraphs too): fx writes names into Python source
            if key == "fqn":
                _check_name(value, "module name", fail, _MODULE_PATH)
            elif key in DOTTED_NAME_KEYS:
                _check_name(value, key.replace("_", " "), fail, _DOTTED)
            elif key in ("name", "as_name") or key.endswith("_name"):
                if key == "name" and value == "" and "arg" in item:  # a positional argument of a node (no keyword)
                    continue
                if not isinstance(value, str) or not _NAME.fullmatch(value) or keyword.iskeyword(value):
                    raise fail(f"has the {key.replace('_', ' ')} {str(value)[:60]!r}, which is not a plain name")
        stack.extend(item.values())


def _check_signature(signature: Any, fail: Fail) -> None:
    if (
        not isinstance(signature, dict)
        or not isinstance(signature.get("input_specs"), list)
        or not isinstance(signature.get("output_specs"), list)
    ):
        raise fail("has a malformed graph signature")
    for spec in signature["input_specs"]:
        kind = next(iter(spec), None) if isinstance(spec, dict) and len(spec) == 1 else None
        if kind not in INPUT_SPEC_KINDS:
            raise fail(
                f"has an input of kind {str(kind)[:40]!r}; "
                "robench reads tensors, parameters, buffers and tensor constants"
            )
        body = spec[kind]
        arg = body.get("arg") if isinstance(body, dict) else None
        if kind == "user_input" and not (isinstance(arg, dict) and set(arg) == {"as_tensor"}):
            raise fail("has an input that is not a tensor")
    for spec in signature["output_specs"]:
        kind = next(iter(spec), None) if isinstance(spec, dict) and len(spec) == 1 else None
        if kind not in OUTPUT_SPEC_KINDS:
            raise fail(f"has an output of kind {str(kind)[:40]!r}")


def _check_module_call_graph(entries: Any, fail: Fail) -> None:
    if not isinstance(entries, list):
        raise fail("has a malformed module call graph")
    for entry in entries:
        if not isinstance(entry, dict):
            raise fail("has a malformed module call graph")
        _check_name(entry.get("fqn"), "module name", fail, _MODULE_PATH)
        signature = entry.get("signature")
        if signature is None:
            continue
        if not isinstance(signature, dict):
            raise fail("has a malformed module call signature")
        _check_spec(signature.get("in_spec"), "input spec", fail)
        _check_spec(signature.get("out_spec"), "output spec", fail)
        for name in signature.get("forward_arg_names") or []:
            _check_name(name, "argument name", fail)


def _check_range_constraints(constraints: Any, fail: Fail) -> None:
    if not isinstance(constraints, dict):
        raise fail("has malformed range constraints")
    for name, bounds in constraints.items():
        if not is_symbol_name(name):
            raise fail(f"constrains {name[:40]!r}, which is not a shape symbol")
        if not isinstance(bounds, dict) or set(bounds) - {"min_val", "max_val"}:
            raise fail(f"has a malformed range for {name}")
        for value in bounds.values():
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise fail(f"has a range for {name} that is not integers")


def canonical_program(text: str, fail: Fail) -> str:
    """The program member ``models/model.json``, checked (module docstring) and printed back without what robench
    drops."""
    program = parse_json(text, fail)
    if not isinstance(program, dict) or set(program) - TOP_KEYS or "graph_module" not in program:
        raise fail("is not an exported program robench reads")
    gm = program["graph_module"]
    if not isinstance(gm, dict) or set(gm) - GRAPH_MODULE_KEYS or not isinstance(gm.get("graph"), dict):
        raise fail("has a malformed graph module")
    if gm.get("treespec_namedtuple_fields"):
        raise fail("registers named-tuple types")
    graph = gm["graph"]
    if graph.get("custom_obj_values"):
        raise fail("uses a custom (torchbind) object")
    for value in graph.get("inputs") or []:
        if not (isinstance(value, dict) and set(value) == {"as_tensor"}):
            raise fail("has a graph input that is not a tensor")
    verifiers = program.get("verifiers", [])
    if not isinstance(verifiers, list) or not all(v in VERIFIERS for v in verifiers):
        raise fail(f"names verifiers other than {sorted(VERIFIERS)}")
    guards = program.get("guards_code", [])
    if not isinstance(guards, list) or not all(isinstance(g, str) for g in guards):
        raise fail("has malformed guards")
    program["guards_code"] = []  # Python source that ExportedProgram.module() would compile: never carried
    gm["metadata"] = {}
    _check_signature(gm.get("signature"), fail)
    _check_module_call_graph(gm.get("module_call_graph", []), fail)
    _check_range_constraints(program.get("range_constraints", {}), fail)
    _canonical_walk(gm, fail)  # first: it drops node metadata (free text such as stack traces)
    _check_scalars(program, fail)
    return json.dumps(program)
