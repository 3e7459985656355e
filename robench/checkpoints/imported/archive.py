"""Reading a ``torch.export`` archive (``.pt2``) without letting torch act on anything robench has not checked.

``torch.export.load`` is not safe on untrusted bytes (torch 2.14, ``torch/export/pt2_archive/_package.py``,
``torch/_export/serde/serialize.py``, ``torch/export/_unlift.py``): it reads *every* program under
``models/``; unpickles weights, constants and sample inputs with ``weights_only=False`` (the sample inputs
as a fallback when ``weights_only=True`` fails); unpickles custom and opaque objects; loads AOTInductor
shared libraries; hands every symbolic shape to ``sympy.sympify`` (Python evaluation); resolves node
targets by walking attributes from ``torch``; compiles the stored ``guards_code`` as Python when the
program is turned into a module; and, where its reader fails, retries the file as a legacy zip of pickles.

So robench never gives torch the user's archive. :func:`load_checked_program`:

1. reads the zip with Python's :mod:`zipfile`, sizes bounded before anything is decompressed, and accepts
   it only when its member list is exactly the set ``torch.export.save`` writes for one program named
   ``model`` (:func:`allowed_member`): one top folder, the fixed members, the two payload configs, the
   weight and constant files those configs name (each named at least once, none else), no duplicate,
   no name differing from another only in case;
2. checks each part: the program JSON field by field (:mod:`robench.checkpoints.imported.program_json`, its
   symbolic shapes re-parsed by robench's own grammar, :mod:`robench.checkpoints.imported.sym_expr`), the payload
   configs entry by entry, every pickled member through ``torch.load(weights_only=True)`` (a pickled
   weight must be a plain tensor), the sample inputs likewise (then dropped: robench never uses them);
3. writes a new archive from the checked parts only: the canonical JSON, raw tensor bytes as they were,
   pickled tensors re-saved by robench, empty sample inputs; and hands *that* to torch's PT2 reader
   (never its legacy fallback), so the only pickles torch's ``weights_only=False`` ever sees are robench's.

The caller (:mod:`robench.checkpoints.imported.loading`, at every bundle load, and the importer) then checks the
program's signature, weights and shapes. Every refusal is one :class:`BundleError` line naming the member.
"""

from __future__ import annotations

import io
import json
import math
import pickle
import re
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from robench.checkpoints.imported.program_json import canonical_program, parse_json
from robench.core.errors import BundleError
from robench.core.safe_load import check_torch_zip

MAX_ARCHIVE_BYTES = 2 * 1024**3  # uncompressed, all members together
MAX_JSON_BYTES = 64 * 1024**2
MAX_MEMBERS = 100_000
MAX_ELEMENTS = 100_000_000  # tensor elements the configs may describe (robench builds at most 100M weights)
MODEL = "model"
ROOT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
FIXED = {"archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id"}
REQUIRED = {"archive_format", "archive_version", "models/model.json", "data/weights/model_weights_config.json",
            "data/constants/model_constants_config.json"}  # fmt: skip
PROGRAM = "models/model.json"
WEIGHTS_CONFIG = "data/weights/model_weights_config.json"
CONSTANTS_CONFIG = "data/constants/model_constants_config.json"
SAMPLE_INPUTS = "data/sample_inputs/model.pt"
WEIGHT_FILE = re.compile(r"data/weights/(weight_\d{1,9})")
CONSTANT_FILE = re.compile(r"data/constants/(tensor_\d{1,9})")
DEVICES = {"cpu", "cuda", "meta"}
META_KEYS = {"dtype", "sizes", "requires_grad", "device", "strides", "storage_offset", "layout"}
ENTRY_KEYS = {"path_name", "is_param", "use_pickle", "tensor_meta"}
STRIDED_LAYOUT = 7  # torch/_export/serde/schema.py Layout.Strided


def allowed_member(name: str) -> bool:
    """True for a member name (below the archive's top folder) that ``torch.export.save`` writes for one program
    named 'model'."""
    return (
        name in FIXED
        or name in (PROGRAM, WEIGHTS_CONFIG, CONSTANTS_CONFIG, SAMPLE_INPUTS)
        or WEIGHT_FILE.fullmatch(name) is not None
        or CONSTANT_FILE.fullmatch(name) is not None
    )


def _fail(source: str, member: str, why: str) -> BundleError:
    return BundleError(f"{source}: refused: archive member '{member[:120]}' {why}; robench does not deserialize it")


def _failing(source: str, member: str) -> Callable[[str], BundleError]:
    return lambda why: _fail(source, member, why)


def _members(data: bytes, source: str) -> tuple[str, dict[str, bytes]]:
    """The archive's top folder and its members (name below that folder -> bytes), or a one-line refusal."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, RuntimeError, NotImplementedError):
        raise BundleError(f"{source}: not a torch.export program archive (.pt2 written by torch.export.save)") from None
    if len(infos) > MAX_MEMBERS:
        raise BundleError(f"{source}: refused: the archive has {len(infos):,} members, more than {MAX_MEMBERS:,}")
    if sum(info.file_size for info in infos) > MAX_ARCHIVE_BYTES:
        raise BundleError(f"{source}: refused: the archive unpacks to more than {MAX_ARCHIVE_BYTES // 1024**3} GiB")
    names = [info.filename for info in infos]
    if len({n.lower() for n in names}) != len(names):
        twin = next(n for n in names if sum(m.lower() == n.lower() for m in names) > 1)
        raise _fail(source, twin, "appears twice (perhaps in another case)")
    roots = {n.split("/", 1)[0] for n in names}
    if len(roots) != 1 or not ROOT.fullmatch(next(iter(roots))) or any("/" not in n for n in names):
        raise BundleError(f"{source}: not a torch.export program archive (its members must share one top folder)")
    root = next(iter(roots))
    members: dict[str, bytes] = {}
    for info in infos:
        name = info.filename[len(root) + 1 :]
        if not allowed_member(name):
            raise _fail(source, info.filename, "is not one that torch.export.save writes for one program named 'model'")
        if name.endswith(".json") and info.file_size > MAX_JSON_BYTES:
            raise _fail(source, info.filename, f"is larger than {MAX_JSON_BYTES // 1024**2} MiB")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise _fail(source, info.filename, "uses a compression robench does not read")
        try:
            members[name] = archive.read(info)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, RuntimeError, NotImplementedError):
            raise _fail(source, info.filename, "is corrupt") from None
        if len(members[name]) != info.file_size:
            raise _fail(source, info.filename, "is not the size its header says")
    missing = sorted(REQUIRED - set(members))
    if missing:
        raise BundleError(
            f"{source}: not a program archive robench reads: it lacks '{missing[0]}' "
            "(one program named 'model', saved by torch.export.save)"
        )
    return root, members


def _text(members: dict[str, bytes], name: str, source: str) -> str:
    try:
        return members[name].decode("utf-8")
    except UnicodeDecodeError:
        raise _fail(source, name, "is not UTF-8 text") from None


def _load_tensor_pickle(data: bytes, member: str, source: str) -> Any:
    """A pickled member through ``torch.load(weights_only=True)``; the object it holds, or a one-line refusal."""
    problem = check_torch_zip(data, MAX_ARCHIVE_BYTES)
    if problem is not None:
        raise _fail(source, member, f"is refused: {problem}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        match = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = (
            f"references {match.group(1)}, which could run code"
            if match
            else "is a pickle that torch.load(weights_only=True) refuses"
        )
        raise _fail(source, member, what) from None
    except Exception:  # noqa: BLE001 - any failure to read it as plain tensors is a refusal
        raise _fail(source, member, "is not readable as plain tensors") from None


def _int_of(value: Any) -> int | None:
    """The integer of a serialized SymInt that must be concrete ({"as_int": n}); None if it is anything else."""
    if (
        isinstance(value, dict)
        and set(value) == {"as_int"}
        and isinstance(value["as_int"], int)
        and not isinstance(value["as_int"], bool)
    ):
        return value["as_int"]
    return None


def _check_tensor_meta(meta: Any, fail: Callable[[str], BundleError], what: str) -> int:
    """A payload entry's tensor_meta: known keys, a dtype, concrete bounded sizes and strides; its element count."""
    if not isinstance(meta, dict) or set(meta) != META_KEYS:
        raise fail(f"has a malformed tensor description for {what}")
    sizes = [_int_of(v) for v in meta["sizes"]] if isinstance(meta["sizes"], list) else [None]
    strides = [_int_of(v) for v in meta["strides"]] if isinstance(meta["strides"], list) else [None]
    offset = _int_of(meta["storage_offset"])
    device = meta["device"]
    if (
        any(s is None or s < 0 for s in sizes) or any(s is None or s < 0 for s in strides) or len(sizes) != len(strides)
        or len(sizes) > 8 or offset is None or offset < 0
        or not isinstance(meta["dtype"], int) or isinstance(meta["dtype"], bool) or not 0 <= meta["dtype"] < 64
        or meta["layout"] != STRIDED_LAYOUT or not isinstance(meta["requires_grad"], bool)
        or not isinstance(device, dict) or device.get("type") not in DEVICES
    ):  # fmt: skip
        raise fail(f"describes {what} with sizes, strides, dtype, layout or device robench does not read")
    count = math.prod(sizes)  # type: ignore[arg-type]
    if count > MAX_ELEMENTS:
        raise fail(f"describes {what} with {count:,} elements, more than {MAX_ELEMENTS:,}")
    return count


@dataclass
class _Payload:
    """A checked payload config: its canonical JSON and the members it names (name -> bytes to write)."""

    config: str
    files: dict[str, bytes]


def _check_payload(
    members: dict[str, bytes], config_name: str, pattern: re.Pattern[str], directory: str, source: str
) -> _Payload:
    fail = _failing(source, config_name)
    config = parse_json(_text(members, config_name, source), fail)
    entries = config.get("config") if isinstance(config, dict) and set(config) == {"config"} else None
    if not isinstance(entries, dict):
        raise fail("is malformed")
    files: dict[str, bytes] = {}
    total = 0
    for name, entry in entries.items():
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_]{1,200}(?:\.[A-Za-z0-9_]{1,200}){0,63}", name):
            raise fail(f"names the weight {str(name)[:60]!r}, which is not a plain name")
        if (
            not isinstance(entry, dict)
            or set(entry) != ENTRY_KEYS
            or not isinstance(entry["is_param"], bool)
            or not isinstance(entry["use_pickle"], bool)
        ):
            raise fail(f"has a malformed entry for '{name}'")
        member = f"{directory}{entry['path_name']}" if isinstance(entry["path_name"], str) else ""
        if pattern.fullmatch(member) is None:
            raise fail(f"stores '{name}' in {str(entry['path_name'])[:60]!r}, not a numbered file of {directory}")
        if member not in members:
            raise fail(f"names the missing member '{member}'")
        if entry["use_pickle"]:
            tensor = _load_tensor_pickle(members[member], member, source)
            if type(tensor) not in (torch.Tensor, torch.nn.Parameter) or tensor.layout != torch.strided:
                raise _fail(source, member, "holds something other than a plain tensor")
            if tensor.numel() > MAX_ELEMENTS:
                raise _fail(source, member, f"holds more than {MAX_ELEMENTS:,} elements")
            buffer = io.BytesIO()
            torch.save(tensor, buffer)  # what torch will unpickle is robench's own pickle of a plain tensor
            files[member] = buffer.getvalue()
            total += tensor.numel()
        else:
            total += _check_tensor_meta(entry["tensor_meta"], fail, f"'{name}'")
            files[member] = members[member]
        if total > MAX_ELEMENTS:
            raise fail(f"describes more than {MAX_ELEMENTS:,} elements in all")
    unnamed = sorted(m for m in members if pattern.fullmatch(m) and m not in files)
    if unnamed:
        raise _fail(source, unnamed[0], f"is not named by {config_name}")
    return _Payload(json.dumps(config), files)


def checked_archive(data: bytes, source: str) -> bytes:
    """A new archive built from the checked parts of ``data`` (module docstring), or a one-line :class:`BundleError`."""
    from torch.export.pt2_archive import constants as names
    from torch.export.pt2_archive._package import PT2ArchiveWriter

    root, members = _members(data, source)
    if members["archive_format"] != names.ARCHIVE_FORMAT_VALUE.encode():
        raise _fail(source, "archive_format", "does not say pt2")
    if members["archive_version"] != names.ARCHIVE_VERSION_VALUE.encode():
        raise BundleError(
            f"{source}: program archive version {members['archive_version'][:20]!r} "
            f"is not the one this torch reads ({names.ARCHIVE_VERSION_VALUE})"
        )
    if SAMPLE_INPUTS in members and members[SAMPLE_INPUTS]:
        _load_tensor_pickle(
            members[SAMPLE_INPUTS], SAMPLE_INPUTS, source
        )  # refused if it is not plain data; never passed on
    program = canonical_program(_text(members, PROGRAM, source), _failing(source, PROGRAM))
    weights = _check_payload(members, WEIGHTS_CONFIG, WEIGHT_FILE, "data/weights/", source)
    constants = _check_payload(members, CONSTANTS_CONFIG, CONSTANT_FILE, "data/constants/", source)
    buffer = io.BytesIO()
    with PT2ArchiveWriter(buffer) as writer:
        writer.write_string(names.ARCHIVE_FORMAT_PATH, names.ARCHIVE_FORMAT_VALUE)
        writer.write_string(names.ARCHIVE_VERSION_PATH, names.ARCHIVE_VERSION_VALUE)
        writer.write_string(names.MODELS_FILENAME_FORMAT.format(MODEL), program)
        writer.write_string(names.WEIGHTS_CONFIG_FILENAME_FORMAT.format(MODEL), weights.config)
        writer.write_string(names.CONSTANTS_CONFIG_FILENAME_FORMAT.format(MODEL), constants.config)
        for member, payload in {**weights.files, **constants.files}.items():
            writer.write_bytes(member, payload)
        writer.write_bytes(names.SAMPLE_INPUTS_FILENAME_FORMAT.format(MODEL), b"")
    return buffer.getvalue()


def load_checked_program(data: bytes, source: str) -> torch.export.ExportedProgram:
    """The program of ``data`` as torch reads it from :func:`checked_archive`'s rebuilt archive; one-line errors."""
    from torch.export.pt2_archive._package import load_pt2

    rebuilt = checked_archive(data, source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            contents = load_pt2(io.BytesIO(rebuilt))
        return contents.exported_programs[MODEL]
    except Exception as exc:  # noqa: BLE001 - a malformed archive that passed the safety checks
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise BundleError(f"{source}: the exported program does not deserialize ({first})") from None


def check_expression(text: str) -> bool:
    """True when ``text`` (a symbolic shape) is in robench's grammar (:mod:`robench.checkpoints.imported.sym_expr`)."""
    from robench.checkpoints.imported.sym_expr import ExpressionError, canonical_expression

    try:
        canonical_expression(text)
    except ExpressionError:
        return False
    return True
