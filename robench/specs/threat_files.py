"""Threat models defined in TOML files: a name, what the attacker knows, the attacks with their parameters.

::

    name = "linf-adaptive"            # a new name: letters, digits, '.', '_', '+', '-'
    description = "PGD-100 and MIM on each defense's adaptive loss"
    access = "white-box"              # white-box | grey-box | black-box | none (robench.specs.threats.ACCESS)
    detectors = ["kd", "max-prob"]    # optional: the detectors a run scores unless --detector says otherwise
    cascade = "misclassified"         # optional: the default cascade (none | misclassified | undetected)
    substitute = false                # optional, black-box only: the attacks are crafted on --substitute
    knows_detector = false            # optional, black-box only (white-box knows it, grey-box and none do not)
    source = "004 Sec. 4.3"           # optional: where the threat comes from

    [[attack]]
    label = "PGD-100"                 # the records' attack name, unique in the file
    attack = "pgd"                    # a registered attack (``robench list attacks``)
    target_mode = "none"              # optional: none | random | least-likely | ...
    per_budget = true                 # optional: also a copy at every other budget of its norm ("PGD-100@Linf 0.1")
    per_detector = false              # optional, attacks with a detector parameter: one copy per scored detector
    [attack.params]                   # optional: the attack's parameters, checked against its fields
    steps = 100
    objective = "adaptive"

:func:`parse_threat_file` validates a file into a :class:`~robench.specs.threats.ThreatModel`
(every error is one :class:`~robench.core.errors.ConfigError` line naming the file, and the
attack's label where it is about an attack); :func:`load_threat_file` also registers it in
:data:`~robench.specs.threats.THREATS`, so ``--threat NAME``, suites and ``--threat all`` see it.
Loading a definition again is a no-op; a second, different definition of a name is an error,
as is a name of a built-in threat, or one that differs from a registered threat's only in case
(a threat's name is a folder: ``WHITE-BOX`` and ``white-box`` are one on a case-insensitive disk).

A file is untrusted input: it is read by :mod:`robench.core.files` (a regular file, never a FIFO
or device; at most 1 MiB; TOML keys of at most 32 dotted parts, nesting at most 32 deep), holds at
most :data:`~robench.specs.threats.MAX_ATTACKS` (256) attacks, each parameter it sets is bounded
(:mod:`robench.specs.param_bounds`: e.g. steps <= 100,000), and a folder, ``ROBENCH_THREAT_PATH`` or a
suite's ``threat_files`` loads at most :data:`MAX_THREAT_FILES` (256) files at once. :func:`threat_record`
is what run.json records of a threat (its access, detectors, cascade, source and, for a file's threat,
the file and its SHA-256).
"""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robench.attacks.base import ATTACKS, Attack
from robench.core.errors import ConfigError, RobenchError, UnknownNameError
from robench.core.files import UserFileError, load_user_toml, one_line_errors, safe_name, shown
from robench.core.registry import did_you_mean
from robench.detectors import DETECTORS
from robench.scoring.cascade import check_cascade
from robench.specs.param_bounds import check_bounds
from robench.specs.threats import ACCESS, ALL, MAX_ATTACKS, THREATS, AttackSpec, ThreatModel

# os.pathsep-separated threat files and folders of them, loaded when the robench command starts.
THREAT_PATH_ENV = "ROBENCH_THREAT_PATH"
SUFFIX = ".toml"
# The most threat files one --threats folder, ROBENCH_THREAT_PATH or a suite's threat_files loads. Each file is at
# most MAX_TEXT_BYTES (1 MiB, robench.core.files) and holds at most MAX_ATTACKS (256) attacks (robench.specs.threats).
MAX_THREAT_FILES = 256

FILE_KEYS = (
    "name",
    "description",
    "access",
    "detectors",
    "cascade",
    "substitute",
    "knows_detector",
    "source",
    "budgets",
    "attack",
)
ATTACK_KEYS = ("label", "attack", "target_mode", "params", "per_budget", "per_detector")
_NO_CASCADE = "none"


@dataclass(frozen=True)
class ThreatFile:
    """A loaded threat file: where it is, the SHA-256 of its bytes, and the threat it defines."""

    path: Path
    sha256: str
    threat: ThreatModel


_LOADED: dict[str, ThreatFile] = {}  # threat name -> the file that registered it


def is_threat_file(name: str) -> bool:
    """Whether a ``--threat`` value names a TOML file rather than a registered threat."""
    return name.lower().endswith(SUFFIX)


def parse_threat_file(path: Path | str) -> ThreatModel:
    """Validate a threat TOML file into a ThreatModel (not registered); one-line ConfigError on any problem."""
    with one_line_errors():
        return _parse(Path(path))[0]


def load_threat_file(path: Path | str) -> ThreatModel:
    """Parse ``path`` and register its threat in THREATS (a no-op if this definition is already registered)."""
    with one_line_errors():
        return _load(Path(path))


def _load(path: Path) -> ThreatModel:
    threat, digest = _parse(path)
    name = threat.name
    at = shown(path)
    known = _LOADED.get(name)
    if known is not None:
        if known.threat == threat:  # the same definition again (the same file, or a copy): idempotent
            return known.threat
        raise ConfigError(
            f"{at}: threat '{name}' is already defined differently by {shown(known.path)}; rename one of them"
        )
    if name in THREATS:
        raise ConfigError(f"{at}: threat name '{name}' is a built-in threat model's; choose another name")
    for (
        other
    ) in THREATS.names():  # a threat's name is a folder: 'WHITE-BOX' and 'white-box' are one on a case-insensitive disk
        if other.casefold() == name.casefold():
            owner = _LOADED.get(other)
            by = f"the threat file {shown(owner.path)}'s" if owner is not None else "a built-in threat model's"
            raise ConfigError(
                f"{at}: threat name '{name}' differs only in case from '{other}', {by}; threat names must be unique "
                "ignoring case"
            )
    THREATS.register(threat)
    _LOADED[name] = ThreatFile(path.resolve(), digest, threat)
    return threat


def load_threat_paths(paths: Iterable[Path | str], where: str | None = None) -> list[ThreatModel]:
    """Load threat files and folders (a folder: its ``*.toml`` files, not recursively, in name order).

    ``where`` prefixes errors about a path that is missing or a folder without threat files
    (e.g. ``--threats`` or ``ROBENCH_THREAT_PATH``).
    """
    with one_line_errors():
        return _load_paths(paths, where)


def _load_paths(paths: Iterable[Path | str], where: str | None) -> list[ThreatModel]:
    prefix = f"{where}: " if where else ""
    files: list[Path] = []
    for entry in paths:
        path = Path(entry)
        if path.is_dir():
            # every *.toml but folders: a FIFO or device named *.toml is refused when read, not skipped in silence
            found = sorted(p for p in path.glob(f"*{SUFFIX}") if not p.is_dir())
            if not found:
                raise ConfigError(f"{prefix}folder {shown(path)} holds no *{SUFFIX} threat file")
            files.extend(found)
        elif path.exists() or path.is_symlink():
            files.append(path)
        else:
            raise UserFileError(f"{prefix}no such threat file or folder: {shown(path)}")
        if len(files) > MAX_THREAT_FILES:
            raise UserFileError(
                f"{prefix}more than {MAX_THREAT_FILES} threat files (at {shown(path)}); robench loads at most "
                f"{MAX_THREAT_FILES} at once"
            )
    return [_load(f) for f in files]


def load_threat_patterns(patterns: Any, base: Path, where: str) -> list[ThreatModel]:
    """A suite's ``threat_files``: paths or glob patterns (``threats/*.toml``) relative to ``base``; each must match."""
    if not isinstance(patterns, list) or not all(isinstance(p, str) and p for p in patterns):
        raise ConfigError(
            f'{where}: threat_files must be a list of paths or patterns, e.g. threat_files = ["threats/*.toml"], got '
            f"{_brief(patterns)}"
        )
    with one_line_errors():
        paths: list[str] = []
        for pattern in patterns:
            full = str(base / pattern)
            if glob.has_magic(pattern):
                matched = []
                for match in glob.iglob(
                    full, recursive=True
                ):  # lazily: a pattern matching a whole disk stops at the bound
                    matched.append(match)
                    if len(paths) + len(matched) > MAX_THREAT_FILES:
                        raise UserFileError(
                            f"{where}: threat_files match more than {MAX_THREAT_FILES} files; robench loads at most "
                            f"{MAX_THREAT_FILES} at once"
                        )
                if not matched:
                    raise ConfigError(
                        f"{where}: threat_files pattern {pattern!r} matches no file (relative to {shown(base)})"
                    )
                paths.extend(sorted(matched))
            else:
                paths.append(full)
        return _load_paths(paths, where)


def _brief(value: Any) -> str:
    """``value``'s type and a short repr (a huge or deeply nested value stays short)."""
    import reprlib

    return f"{type(value).__name__} {reprlib.repr(value)}"


def load_env(environ: Mapping[str, str] | None = None) -> list[ThreatModel]:
    """Load the files and folders named by ``ROBENCH_THREAT_PATH`` (os.pathsep-separated; empty entries skipped)."""
    value = (os.environ if environ is None else environ).get(THREAT_PATH_ENV, "")
    entries = [e for e in value.split(os.pathsep) if e.strip()]
    return load_threat_paths(entries, THREAT_PATH_ENV)


def threat_file(name: str) -> ThreatFile | None:
    """The file that defined the registered threat ``name``, or None (a built-in or Python-registered one)."""
    return _LOADED.get(name)


def unload(name: str) -> None:
    """Unregister a threat loaded from a file (tests, long-lived processes re-reading an edited file)."""
    if name not in _LOADED:
        raise ConfigError(f"threat '{name}' was not loaded from a threat file")
    del _LOADED[name]
    THREATS.unregister(name)


def threat_record(threat: ThreatModel) -> dict[str, Any]:
    """What run.json records of a threat besides its attacks: what the attacker knows, its defaults, where it is
    defined.

    ``file`` / ``file_sha256`` name the TOML file a threat was loaded from (None for a built-in), so a
    run can be traced to the exact definition; a rerun without the file is refused (unknown threat).
    """
    loaded = _LOADED.get(threat.name)
    return {
        "name": threat.name,
        "description": threat.description,
        "access": threat.access,
        "knows_detector": threat.knows_detector,
        "needs_substitute": threat.needs_substitute,
        "default_cascade": threat.default_cascade,
        "budgets": {k: list(v) for k, v in threat.budgets.items()} if threat.budgets is not None else None,
        "detectors": list(threat.detectors) if threat.detectors is not None else None,
        "source": threat.source,
        "file": str(loaded.path) if loaded is not None else None,
        "file_sha256": loaded.sha256 if loaded is not None else None,
    }


# ---------------------------------------------------------------- parsing


def _read(path: Path) -> tuple[dict[str, Any], str]:
    """The file's table and SHA-256: a regular file of at most MAX_TEXT_BYTES, UTF-8 (a BOM tolerated), valid TOML
    (robench.core.files)."""
    raw, data = load_user_toml(path, "threat file", folder_hint="--threats takes folders")
    return raw, hashlib.sha256(data).hexdigest()


def _check_keys(table: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    for key in table:
        if key not in allowed:
            raise ConfigError(
                f"{where}: unknown key '{key}'{did_you_mean(key, list(allowed))}; allowed: {', '.join(allowed)}"
            )


def _typed(
    table: Mapping[str, Any], key: str, kind: type, where: str, example: str, default: Any = None, empty: bool = False
) -> Any:
    """``table[key]`` if it is a ``kind`` (a string: non-blank unless ``empty``), ``default`` if absent; else a one-line
    error."""
    if key not in table:
        return default
    value = table[key]
    if not isinstance(value, kind) or (kind is str and not empty and not value.strip()):
        raise ConfigError(f"{where}: '{key}' must be {example}, got {_brief(value)}")
    return value


def _safe(name: str, where: str) -> str:
    safe_name(name, where)  # the rule for names that become folders (suite pairs, default --out)
    if name == ALL or is_threat_file(name):
        raise ConfigError(
            f"{where}: name '{name}' is reserved ({'--threat all' if name == ALL else 'it reads as a threat file'}); "
            "choose another"
        )
    return name


def _scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool))


def _parse(path: Path) -> tuple[ThreatModel, str]:
    raw, digest = _read(path)
    where = shown(path)
    _check_keys(raw, FILE_KEYS, where)
    if "name" not in raw:
        raise ConfigError(f'{where}: a threat file needs a name, e.g. name = "linf-strong"')
    name = _safe(_typed(raw, "name", str, where, 'a string, e.g. name = "linf-strong"'), f"{where}: threat")
    description = _typed(raw, "description", str, where, "a string", "", empty=True)
    source = _typed(raw, "source", str, where, "a string", "", empty=True)
    if "access" not in raw:
        raise ConfigError(
            f"{where}: threat '{name}' needs an access: one of {', '.join(ACCESS)} (what the attacker knows)"
        )
    access = _typed(raw, "access", str, where, f"one of {', '.join(ACCESS)}")
    if access not in ACCESS:
        raise ConfigError(
            f"{where}: access '{access}' is not one of {', '.join(ACCESS)}{did_you_mean(access, list(ACCESS))}"
        )
    substitute = _typed(raw, "substitute", bool, where, "true or false", False)
    if substitute and access != "black-box":
        raise ConfigError(
            f"{where}: substitute = true needs access = \"black-box\" (transfer from --substitute), not '{access}'"
        )
    knows = _knows_detector(raw, access, where)
    detectors = _detectors(raw, where)
    cascade = _typed(raw, "cascade", str, where, "one of none, misclassified, undetected", _NO_CASCADE)
    try:
        check_cascade(cascade)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    specs, per_budget, per_detector = _attacks(raw, name, access, knows, substitute, where)
    try:
        threat = ThreatModel(
            name=name,
            description=description,
            attacks=specs,
            access=access,
            knows_detector=knows,
            source=source,
            needs_substitute=substitute,
            default_cascade=None if cascade == _NO_CASCADE else cascade,
            detectors=detectors,
            budgets=raw.get("budgets"),  # [budgets] mnist = ["linf:0.3"]: checked by ThreatModel
            per_budget=per_budget,
            per_detector=per_detector,
        )
    except RobenchError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return threat, digest


def _knows_detector(raw: Mapping[str, Any], access: str, where: str) -> bool:
    """White-box knows the detector, grey-box and none do not; black-box says so (default: it does not)."""
    derived = access == "white-box"
    if "knows_detector" not in raw:
        return derived
    value = _typed(raw, "knows_detector", bool, where, "true or false")
    if access != "black-box" and value != derived:
        raise ConfigError(
            f"{where}: knows_detector = {str(value).lower()} contradicts access '{access}' "
            "(a white-box attacker knows the detector, a grey-box one or a corruption does not); only a black-box "
            "threat sets it"
        )
    return value


def _detectors(raw: Mapping[str, Any], where: str) -> tuple[str, ...] | None:
    if "detectors" not in raw:
        return None
    value = raw["detectors"]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError(
            f"{where}: 'detectors' must be a non-empty list of detector names, e.g. detectors = [\"kd\"] "
            f"(leave it out for every detector that applies), got {_brief(value)}"
        )
    for detector in value:
        if detector not in DETECTORS:
            known = DETECTORS.names()
            raise ConfigError(
                f"{where}: unknown detector '{detector}'{did_you_mean(detector, known)}; known: {', '.join(known)}"
            )
    twice = sorted({d for d in value if value.count(d) > 1})
    if twice:
        raise ConfigError(f"{where}: detector(s) listed twice: {', '.join(twice)}")
    return tuple(value)


def _attacks(
    raw: Mapping[str, Any], name: str, access: str, knows: bool, substitute: bool, where: str
) -> tuple[tuple[AttackSpec, ...], tuple[str, ...], tuple[str, ...]]:
    """The ``[[attack]]`` entries as specs, and the labels of those with ``per_budget`` and ``per_detector``."""
    entries = raw.get("attack")
    example = '[[attack]] with label = "PGD-100" and attack = "pgd" below it'
    if entries is None or entries == []:
        raise ConfigError(f"{where}: threat '{name}' needs at least one attack: {example}")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConfigError(
            f"{where}: 'attack' must be an array of tables, each written {example}; got {_brief(entries)}"
        )
    if len(entries) > MAX_ATTACKS:  # before any is built: each build checks its parameters
        raise UserFileError(
            f"{where}: threat '{name}' has {len(entries)} attacks; a threat file holds at most {MAX_ATTACKS}"
        )
    specs: list[AttackSpec] = []
    labels: set[str] = set()
    per_budget: list[str] = []
    per_detector: list[str] = []
    for number, entry in enumerate(entries, start=1):
        label = entry.get("label")
        if not isinstance(label, str) or not label.strip():
            raise ConfigError(
                f"{where}: attack #{number} needs a label (a non-empty string: the records' attack name), got "
                f"{_brief(label)}"
            )
        if "=" in label or not label.isprintable() or label != label.strip():
            raise ConfigError(
                f"{where}: attack #{number}: label {label!r} cannot contain '=', line breaks, control characters "
                "or surrounding spaces "
                f"(--set LABEL.PARAM=VALUE names it)"
            )
        at = f"{where}: attack '{label}'"
        if label in labels:
            raise ConfigError(f"{at}: label used twice; every attack of a threat needs its own label")
        _check_keys(entry, ATTACK_KEYS, at)
        spec, built = _spec(entry, label, name, access, knows, substitute, at)
        specs.append(spec)
        labels.add(label)
        if _typed(entry, "per_budget", bool, at, "true or false", False):
            if built.budget_param != "eps" or built.norm == "none":
                raise ConfigError(
                    f"{at}: per_budget = true repeats a bounded attack at each budget's eps, but '{spec.attack}' has "
                    "no eps budget"
                )
            per_budget.append(label)
        if _typed(entry, "per_detector", bool, at, "true or false", False):
            if not hasattr(built, "detector"):
                raise ConfigError(
                    f"{at}: per_detector = true makes one copy per scored detector, but '{spec.attack}' has no "
                    "detector parameter (the joint attacks and cw-wb have one)"
                )
            if substitute:  # an attack on detectors the attacker does not know is refused above (_spec)
                raise ConfigError(
                    f"{at}: per_detector = true attacks the evaluated model's detectors, which an attacker crafting "
                    "on a substitute does not know"
                )
            per_detector.append(label)
    return tuple(specs), tuple(per_budget), tuple(per_detector)


def _spec(
    entry: Mapping[str, Any], label: str, threat: str, access: str, knows: bool, substitute: bool, at: str
) -> tuple[AttackSpec, Attack]:
    """One ``[[attack]]``: its attack resolved by ATTACKS.get (robench's, or a library's ``torchattacks:NAME``), its
    params built; the spec and the attack it builds (without the family's defaults)."""
    if "attack" not in entry:
        raise ConfigError(f"{at}: needs an attack, e.g. attack = \"pgd\" (see 'robench list attacks')")
    attack = _typed(entry, "attack", str, at, 'an attack name, e.g. attack = "pgd"')
    target_mode = _typed(entry, "target_mode", str, at, 'a target mode, e.g. target_mode = "random"', "none")
    params = entry.get("params", {})
    if not isinstance(params, dict):
        raise ConfigError(
            f"{at}: 'params' must be a table, e.g. params = {{steps = 100}} or [attack.params] below the attack; got "
            f"{_brief(params)}"
        )
    for key, value in params.items():
        if not (_scalar(value) or isinstance(value, list) and all(_scalar(v) for v in value)):
            raise ConfigError(
                f"{at}: parameter '{key}' must be a number, string, boolean or a list of them, got {_brief(value)}"
            )
    try:
        cls = ATTACKS.get(attack)  # an unknown name: did-you-mean
        spec = AttackSpec(label, attack, dict(params), target_mode)
        built = spec.build(
            None
        )  # every parameter checked against the attack's fields (family defaults apply at run time)
        check_bounds(built, params, f"attack {label!r}")  # and against robench's bounds (steps <= 100,000, ...)
        check = getattr(cls, "check_spec", None)  # a library attack refuses threats and target modes it runs wrong
        if callable(check):
            check(label=label, threat=threat, access=access, needs_substitute=substitute, target_mode=target_mode)
    except RobenchError as exc:
        message = str(exc)  # without a repeat of the label that ``at`` names
        message = message.removeprefix(f"attack {label!r} ({attack})").removeprefix(f"attack {label!r}").lstrip(": ")
        raise type(exc)(f"{at}: {message}") from None
    if access == "none" and built.norm != "none":
        raise ConfigError(
            f"{at}: access 'none' is for corruptions (noise, rotation), but '{attack}' is a {built.norm} attack; give "
            "the threat an attacker's access"
        )
    needs = built.needs()
    if (needs.density or needs.detectors) and not knows:
        raise ConfigError(
            f"{at}: '{attack}' attacks the detector, which a {access} attacker does not know "
            f'(use access = "white-box", or black-box with knows_detector = true)'
        )
    if needs.detectors and substitute:  # kd through the density (C&W-wb's default) crafts on the substitute's own KD
        raise ConfigError(
            f"{at}: '{attack}' attacks the evaluated model's detectors ({needs.detectors}), which an attacker crafting "
            "on a substitute does not know (only the substitute's own KD: cw-wb with detector = 'kd')"
        )
    return spec, built


def select_threats(name: str, substitute: bool) -> list[ThreatModel]:
    """``name``'s threat model, or for ``all`` every registered one with ``in_all`` that applies (black-box only
    with a substitute).

    ``name`` may be a threat TOML file (``*.toml``, :mod:`robench.specs.threat_files`): it is loaded
    and registered first. An unknown name's error says how to load threats defined in files.
    """
    if name != ALL:
        with one_line_errors():  # a name with a line break: still one line
            return _select_one(name, substitute)
    return [
        THREATS.get(n)
        for n in THREATS.names()
        if THREATS.get(n).in_all and (substitute or not THREATS.get(n).needs_substitute)
    ]


def _select_one(name: str, substitute: bool) -> list[ThreatModel]:
    """One named threat (or a threat TOML file), checked against --substitute."""

    if is_threat_file(name):
        threat = load_threat_file(name)
        name = threat.name
    elif name not in THREATS:
        try:
            THREATS.get(name)
        except UnknownNameError as exc:  # did-you-mean over the registered ones, then where file-defined ones come from
            raise UnknownNameError(
                f"{exc}; a threat defined in a TOML file needs --threats FILE_OR_FOLDER (or {THREAT_PATH_ENV})"
            ) from None
    threat = THREATS.get(name)
    if threat.needs_substitute and not substitute:
        raise ConfigError(f"threat '{name}' crafts on a substitute model: pass --substitute MODEL.pt")
    if substitute and not threat.needs_substitute:
        raise ConfigError(f"--substitute applies to the black-box threat (or 'all'), not '{name}'")
    return [threat]
