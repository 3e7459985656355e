"""Attacks on the ``torch.export`` archive reader: generated variants of a real archive never run code or hang.

A small model is exported with ``torch.export.save``; every variant below is that archive with one
hostile change: an extra member under every folder of the archive (a second program among them), case
variants and duplicates of the members, a code-running pickle in every member torch reads, hostile and
huge symbolic expressions, Python in ``guards_code`` and in node metadata, node targets outside the
tensor operators, tensor descriptions that would allocate gigabytes, pytree specs naming other types.
Each is read by :func:`robench.checkpoints.imported.archive.load_checked_program` under an alarm: it must be
refused in one line (or, for what robench drops, load and run), the payload's marker file must never
appear, and nothing may take longer than the alarm. The same program inside a bundle (content hash
recomputed, as an attacker can) goes through ``load_bundle`` and the CLI.
"""

from __future__ import annotations

import io
import json
import re
import signal
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import import_fixtures as F
from robench.checkpoints.imported import archive as A
from robench.checkpoints.imported.sym_expr import ExpressionError, canonical_expression
from robench.core.errors import BundleError

ALARM_S = 60
Members = dict[str, bytes]


class Hang(Exception):
    pass


def _on_alarm(signum, frame):  # noqa: ARG001 - a signal handler takes both arguments
    raise Hang(f"no answer within {ALARM_S} s")


def _payload(marker: Path) -> bytes:
    buffer = io.BytesIO()
    torch.save(F.Payload(marker), buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> tuple[str, Members]:
    root = tmp_path_factory.mktemp("archive")
    F.export_program(F.small_net(), root / "net.pt2")
    with zipfile.ZipFile(root / "net.pt2") as archive:
        infos = archive.infolist()
        top = infos[0].filename.split("/")[0]
        return top, {info.filename: archive.read(info) for info in infos}


def _zip(built: Members | list[tuple[str, bytes]], marker: Path) -> bytes:
    """The variant as a zip; "@@MARKER@@" in any member becomes the marker's path (JSON payloads name it so)."""
    buffer = io.BytesIO()
    items = built.items() if isinstance(built, dict) else built
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as out:
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names, which one variant is
        for name, data in items:
            out.writestr(name, data.replace(b"@@MARKER@@", str(marker).encode()))
    return buffer.getvalue()


def _json(members: Members, top: str, name: str) -> dict:
    return json.loads(members[f"{top}/{name}"])


def _set_json(members: Members, top: str, name: str, value: dict) -> Members:
    return {**members, f"{top}/{name}": json.dumps(value).encode()}


def _edit_program(edit: Callable[[dict], None]) -> Callable[[str, Members, Path], Members]:
    def variant(top: str, members: Members, marker: Path) -> Members:  # noqa: ARG001 - the variant signature
        program = _json(members, top, "models/model.json")
        edit(program)
        return _set_json(members, top, "models/model.json", program)

    return variant


def _replace_expr(new: str) -> Callable[[str, Members, Path], Members]:
    def variant(top: str, members: Members, marker: Path) -> Members:
        text = members[f"{top}/models/model.json"].decode()
        old = re.search(r"Symbol\('s\d+', positive=True, integer=True\)", text).group(0)
        return {
            **members,
            f"{top}/models/model.json": text.replace(json.dumps(old)[1:-1], json.dumps(new)[1:-1]).encode(),
        }

    return variant


def _nodes(program: dict) -> list[dict]:
    return program["graph_module"]["graph"]["nodes"]


# ---------------------------------------------------------------- the variants


FOLDERS = ["", ".data/", "models/", "data/", "data/weights/", "data/constants/", "data/sample_inputs/", "extra/",
           "data/aotinductor/model/", "data/executorch/", "data/xl_model_weights/", "data/mtia/", "code/"]  # fmt: skip


def _extra_member(folder: str, name: str) -> Callable[[str, Members, Path], Members]:
    def variant(top: str, members: Members, marker: Path) -> Members:
        data = members[f"{top}/models/model.json"] if name.endswith(".json") else _payload(marker)
        return {**members, f"{top}/{folder}{name}": data}

    return variant


def _second_program(extension: str) -> Callable[[str, Members, Path], Members]:
    """A whole second program 'evil' beside 'model' (torch reads every member of models/ as one,
    whatever its extension)."""
    return lambda top, members, marker: _second_program_members(top, members, marker, extension)


def _second_program_members(top: str, members: Members, marker: Path, extension: str) -> Members:
    """Its own pickled weights and sample inputs carry the payload."""
    weights = _json(members, top, "data/weights/model_weights_config.json")
    first = next(iter(weights["config"]))
    evil_weights = {"config": {first: {**weights["config"][first], "path_name": "weight_99", "use_pickle": True}}}
    return {
        **members,
        f"{top}/models/evil{extension}": members[f"{top}/models/model.json"],
        f"{top}/data/sample_inputs/evil.pt": _payload(marker),
        f"{top}/data/weights/evil_weights_config.json": json.dumps(evil_weights).encode(),
        f"{top}/data/weights/weight_99": _payload(marker),
        f"{top}/data/constants/evil_constants_config.json": b'{"config": {}}',
    }


def _renamed(old: str, new: str, keep: bool = False) -> Callable[[str, Members, Path], Members]:
    def variant(top: str, members: Members, marker: Path) -> Members:  # noqa: ARG001 - the variant signature
        out = dict(members)
        data = out[f"{top}/{old}"] if keep else out.pop(f"{top}/{old}")
        out[f"{top}/{new}"] = data
        return out

    return variant


def _duplicate_entry(top: str, members: Members, marker: Path) -> list[tuple[str, bytes]]:
    return [*members.items(), (f"{top}/models/model.json", members[f"{top}/models/model.json"])]


def _pickle_in(member: str) -> Callable[[str, Members, Path], Members]:
    def variant(top: str, members: Members, marker: Path) -> Members:
        out = dict(members)
        if member.startswith("data/weights/weight_"):
            config = _json(members, top, "data/weights/model_weights_config.json")
            for entry in config["config"].values():
                if f"data/weights/{entry['path_name']}" == member:
                    entry["use_pickle"] = True
            out = _set_json(out, top, "data/weights/model_weights_config.json", config)
        out[f"{top}/{member}"] = _payload(marker)
        return out

    return variant


def _constant(prefix: str) -> Callable[[str, Members, Path], Members]:
    def variant(top: str, members: Members, marker: Path) -> Members:
        config = {
            "config": {"evil": {"path_name": f"{prefix}0", "is_param": False, "use_pickle": True, "tensor_meta": None}}
        }
        out = _set_json(members, top, "data/constants/model_constants_config.json", config)
        out[f"{top}/data/constants/{prefix}0"] = _payload(marker)
        return out

    return variant


def _huge_zero_weight(top: str, members: Members, marker: Path) -> Members:  # noqa: ARG001 - the variant signature
    """A weight described as 2**40 elements stored in an empty record: torch would allocate it with torch.zeros."""
    config = _json(members, top, "data/weights/model_weights_config.json")
    entry = next(iter(config["config"].values()))
    entry["tensor_meta"]["sizes"] = [{"as_int": 2**20}, {"as_int": 2**20}]
    entry["tensor_meta"]["strides"] = [{"as_int": 2**20}, {"as_int": 1}]
    out = _set_json(members, top, "data/weights/model_weights_config.json", config)
    out[f"{top}/data/weights/{entry['path_name']}"] = b""
    return out


def _guards(program: dict, marker: Path | None = None) -> None:
    program["guards_code"] = ["__import__('os').system('touch @@MARKER@@') == 0"]


def _metadata(program: dict) -> None:
    for node in _nodes(program):
        node["metadata"]["source_fn_stack"] = "x,torch.serialization.os.system"
        node["metadata"]["torch_fn"] = "x;os.system"
        node["metadata"]["custom"] = json.dumps({"a": "__import__('os')"})
        node["metadata"]["stack_trace"] = "line\n__import__('os').system('touch @@MARKER@@')\n"


def _target(target: str) -> Callable[[dict], None]:
    def edit(program: dict) -> None:
        _nodes(program)[0]["target"] = target

    return edit


def _spec_type(type_name: str) -> Callable[[dict], None]:
    def edit(program: dict) -> None:
        signature = program["graph_module"]["module_call_graph"][0]["signature"]
        spec = json.loads(signature["in_spec"])
        spec[1]["children_spec"][0]["type"] = type_name
        signature["in_spec"] = json.dumps(spec)

    return edit


def _string_input(program: dict) -> None:
    for spec in program["graph_module"]["signature"]["input_specs"]:
        if "user_input" in spec:
            spec["user_input"]["arg"] = {"as_string": "' or __import__('os').system('touch @@MARKER@@') or '"}


def _custom_obj(program: dict) -> None:
    program["graph_module"]["graph"]["custom_obj_values"] = {"obj": {"class_fqn": "os.system"}}


def _named_tuples(program: dict) -> None:
    program["graph_module"]["treespec_namedtuple_fields"] = {"os.system": {"field_names": ["a"]}}


def _range_key(program: dict) -> None:
    program["range_constraints"]["__import__('os')"] = {"min_val": 0, "max_val": None}


def _huge_hint(program: dict) -> None:
    text = json.dumps(program).replace('"hint": {"as_int": 4}', f'"hint": {{"as_int": {10**40}}}')
    program.clear()
    program.update(json.loads(text))


def _verifier(program: dict) -> None:
    program["verifiers"] = ["os.system"]


def _node_name(program: dict) -> None:
    _nodes(program)[0]["name"] = "x = __import__('os').system('touch @@MARKER@@')"


def _as_name_payload(program: dict) -> None:
    _nodes(program)[0]["inputs"].append(
        {"name": "", "arg": {"as_sym_int": {"as_name": "z=__import__('os').system('touch @@MARKER@@')"}}, "kind": 1}
    )


def _huge_symbol_index(program: dict) -> None:
    program["range_constraints"]["u999999999"] = {"min_val": 0, "max_val": None}  # torch counts up to the index


def _deflated_pickle(top: str, members: Members, marker: Path) -> Members:  # noqa: ARG001 - the variant signature
    """Sample inputs whose torch.save zip holds a DEFLATE record: torch.load would inflate it whole, unchecked."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as inner:
        inner.writestr("archive/data.pkl", b"\x00" * 1_000_000)
    return {**members, f"{top}/data/sample_inputs/model.pt": buffer.getvalue()}


HOSTILE_EXPRESSIONS = {
    "tower-of-powers": "2**2**2**2**2**2**2**2**2**2",
    "python-call": "__import__('os').system('touch @@MARKER@@')",
    "dunder": "Symbol('s0').__class__",
    "symbol-kwarg-exec": "Symbol('s0', positive=True, evaluate=exec)",
    "deep-parens": "(" * 5000 + "s0" + ")" * 5000,
    "long-sum": " + ".join(["s0"] * 3000),
    "huge-integer": "9" * 400,
    "deep-max": "Max(" * 200 + "s0" + ", 1)" * 200,
    "lambda": "lambda: s0",
    "string-symbol": "Symbol('__import__')",
    "float-power": "Pow(s0, 10**100)",
    "attribute": "s0.func",
    "products-of-sums": "(s77+1)*(s77+2)*(s77+3)*(s77+4)*(s77+5)*(s77+6)",
    "huge-symbol-index": "u999999999",
}

REFUSED: dict[str, Callable[[str, Members, Path], object]] = {
    **{
        f"extra-{folder or 'top/'}{name}": _extra_member(folder, name)
        for folder in FOLDERS
        for name in ("evil.json", "evil.pt")
    },
    **{
        f"second-program{ext or '-no-extension'}": _second_program(ext)
        for ext in (".json", ".JSON", ".Json", "", ".txt")
    },
    "case-program": _renamed("models/model.json", "models/Model.json"),
    "case-extension": _renamed("models/model.json", "models/model.JSON"),
    "case-folder": _renamed("models/model.json", "MODELS/model.json"),
    "case-twin": _renamed("models/model.json", "models/MODEL.json", keep=True),
    "case-twin-weight": _renamed("data/weights/weight_0", "data/weights/WEIGHT_0", keep=True),
    "duplicate-entry": _duplicate_entry,
    "dot-dot": _renamed("byteorder", "../byteorder", keep=True),
    "second-top-folder": lambda top, m, marker: {**m, f"other/{'models/model.json'}": m[f"{top}/models/model.json"]},
    "pickle-in-weights-config": _pickle_in("data/weights/model_weights_config.json"),
    "pickle-in-constants-config": _pickle_in("data/constants/model_constants_config.json"),
    "pickle-in-program": _pickle_in("models/model.json"),
    "pickle-in-sample-inputs": _pickle_in("data/sample_inputs/model.pt"),
    "pickle-in-weight": _pickle_in("data/weights/weight_0"),
    "pickled-tensor-constant": _constant("tensor_"),
    "custom-object-constant": _constant("custom_obj_"),
    "opaque-object-constant": _constant("opaque_obj_"),
    "zero-record-of-2**40": _huge_zero_weight,
    "target-os-system": _edit_program(_target("torch.serialization.os.system")),
    "target-eval": _edit_program(_target("builtins.eval")),
    "target-private-torch": _edit_program(_target("torch._C._set_grad_enabled")),
    "target-dunder": _edit_program(_target("torch.ops.aten.__class__.default")),
    "target-from-file": _edit_program(_target("torch.ops.aten.from_file.default")),
    "target-out-variant": _edit_program(_target("torch.ops.aten.add.out")),
    "target-while-loop": _edit_program(_target("torch.ops.higher_order.while_loop")),
    "as-name-payload": _edit_program(_as_name_payload),
    "range-key-huge-index": _edit_program(_huge_symbol_index),
    "deflated-pickle": _deflated_pickle,
    "in-spec-namedtuple": _edit_program(_spec_type("collections.namedtuple")),
    "in-spec-os": _edit_program(_spec_type("os.system")),
    "string-input": _edit_program(_string_input),
    "custom-obj-values": _edit_program(_custom_obj),
    "namedtuple-fields": _edit_program(_named_tuples),
    "range-key": _edit_program(_range_key),
    "huge-hint": _edit_program(_huge_hint),
    "verifier": _edit_program(_verifier),
    "node-name": _edit_program(_node_name),
    "deep-json": lambda top, m, marker: {**m, f"{top}/models/model.json": b"[" * 200_000 + b"]" * 200_000},
    **{f"expr-{name}": _replace_expr(text) for name, text in HOSTILE_EXPRESSIONS.items()},
}
# What robench drops rather than refuses: the program loads and runs, and the payload never does.
DROPPED: dict[str, Callable[[str, Members, Path], object]] = {
    "guards-code": _edit_program(_guards),
    "node-metadata": _edit_program(_metadata),
}


def _read(data: bytes) -> torch.export.ExportedProgram:
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(ALARM_S)
    try:
        ep = A.load_checked_program(data, "variant.pt2")
        with torch.no_grad():
            ep.module()(torch.rand(3, 1, 28, 28))  # turning it into a module is where torch compiles guards
        return ep
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_hostile_archive_is_refused_in_one_line(base, tmp_path, name):
    top, members = base
    marker = tmp_path / "MARKER"
    data = _zip(REFUSED[name](top, members, marker), marker)
    with pytest.raises(BundleError) as info:
        _read(data)
    message = str(info.value)
    assert "\n" not in message and len(message) < 600, message
    assert not marker.exists(), "a code payload ran"


@pytest.mark.parametrize("name", sorted(DROPPED))
def test_what_robench_drops_never_runs(base, tmp_path, name):
    top, members = base
    marker = tmp_path / "MARKER"
    ep = _read(_zip(DROPPED[name](top, members, marker), marker))
    assert ep._guards_code == []
    assert all(set(node.meta) <= {"nn_module_stack", "val", "tensor_meta", "stack_trace", "torch_fn", "source_fn_stack",
                                  "custom", "from_node", "seq_nr", "unbacked_bindings"}
               for node in ep.graph.nodes)  # fmt: skip
    assert not any("os.system" in str(node.meta.get("source_fn_stack", "")) for node in ep.graph.nodes)
    assert not marker.exists(), "a code payload ran"


def test_the_plain_archive_loads_and_matches(base):
    top, members = base
    ep = _read(_zip(members, Path("unused")))
    assert len(ep.graph_signature.user_inputs) == 1


def test_limits_are_checked_before_reading(base, monkeypatch):
    top, members = base
    monkeypatch.setattr(A, "MAX_ARCHIVE_BYTES", 1000)
    with pytest.raises(BundleError, match="unpacks to more than"):
        A.load_checked_program(_zip(members, Path("unused")), "big.pt2")
    monkeypatch.setattr(A, "MAX_ARCHIVE_BYTES", 2 * 1024**3)
    monkeypatch.setattr(A, "MAX_JSON_BYTES", 100)
    with pytest.raises(BundleError, match="larger than"):
        A.load_checked_program(_zip(members, Path("unused")), "big.pt2")


@pytest.mark.parametrize(
    "text, canonical",
    [
        ("s0", "s0"),
        ("Symbol('s31', positive=True, integer=True)", "Symbol('s31', positive=True, integer=True)"),
        ("2*s0 + 1", "((2 * s0) + 1)"),
        ("Max(2, s0) - FloorDiv(s0, 2)", "(Max(2, s0) - FloorDiv(s0, 2))"),
        ("s0 // 2 + s1 % 3", "(FloorDiv(s0, 2) + Mod(s1, 3))"),
        ("-(s0)", "(-s0)"),
    ],
)
def test_grammar_accepts_what_torch_writes(text, canonical):
    assert canonical_expression(text) == canonical


@pytest.mark.parametrize("name", sorted(HOSTILE_EXPRESSIONS))
def test_grammar_refuses_hostile_expressions_fast(name):
    with pytest.raises(ExpressionError):
        canonical_expression(HOSTILE_EXPRESSIONS[name])
