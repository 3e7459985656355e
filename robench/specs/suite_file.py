"""Suite files: one TOML file pairs models with threat models (:func:`load_suite`); :mod:`robench.runs.suite` runs them.

::

    threat_files = ["threats/*.toml"]  # optional, before any table: threat TOML files
                                       # (paths or patterns, relative to the suite file)

    [defaults]                 # any run setting: n, batch_size, seed, device, detectors
    n = 200

    [[model]]
    name = "gm"
    path = "models/gm.pt"      # relative to the suite file

    [[threat]]
    name = "semi-white-box"
    attacks = ["FGSM", "BIM"]  # optional subset (noise: sigmas = [0.05, 0.1])
    n = 100                    # optional: this threat's own n / batch_size / detectors
    models = ["gm"]            # optional: only these models
    [threat.set]
    "BIM.steps" = 10

    [[threat.add]]             # optional: an attack added to this threat (several allowed)
    label = "C&W-wb-class"     # a new label: the records' attack name
    attack = "cw-wb"           # a registered attack
    target_mode = "random"
    params = {eta_mode = "class", steps = 200}

    [[threat]]
    name = "black-box"
    substitute = ["softmax"]   # craft on these suite models, evaluate on each other model

    [[threat]]
    name = "linf-adaptive"     # a threat a file of threat_files defines (robench.specs.threat_files)

    [[threat]]
    file = "threats/apgd-library.toml"  # or load one file and run its threat (name optional: must agree)

``attacks`` selects among the threat's own attacks and ``[[threat.add]]`` adds new ones: with
both, the selected and the added attacks run (:class:`~robench.specs.run_config.RunConfig` adds
the added labels to ``attacks``).

A suite is read like every user file (:mod:`robench.core.files`: a regular file of at most 1 MiB,
bounded TOML nesting) and holds at most :data:`MAX_MODELS` models, :data:`MAX_THREATS` threats,
256 added attacks or sigmas per threat and :data:`MAX_PAIRS` pairs; every error is one line.

Each pair writes ``OUT/<model>/<threat>/`` (``OUT/<model>/<threat>-from-<substitute>/``
for transfer; records, summary, run.json); the combined ``OUT/summary.csv``
concatenates their summaries. A model is never paired with itself as substitute
(that is the white-box threat).
"""

from __future__ import annotations

import reprlib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from robench.core.errors import ConfigError
from robench.core.files import UserFileError, load_user_toml, one_line_errors, safe_name
from robench.core.registry import did_you_mean
from robench.specs.run_config import RunConfig
from robench.specs.threat_files import load_threat_file, load_threat_patterns
from robench.specs.threats import MAX_ATTACKS

_DEFAULT_KEYS = {
    "n",
    "batch_size",
    "seed",
    "device",
    "detectors",
    "data_root",
    "precision",
    "cascade",
    "channels_last",
    "compile",
    "budgets",
}
_MODEL_KEYS = {"name", "path"}
_THREAT_KEYS = {
    "name",
    "file",
    "set",
    "attacks",
    "models",
    "detectors",
    "sigmas",
    "substitute",
    "n",
    "batch_size",
    "add",
    "cascade",
    "budgets",
}

# The most [[model]] and [[threat]] tables of a suite, and model x threat (x substitute) pairs: far above the
# papers' suites (at most 9 pairs each); a suite file is also at most 1 MiB (robench.core.files).
MAX_MODELS = 256
MAX_THREATS = 256
MAX_PAIRS = 4096


@dataclass(frozen=True)
class SuitePair:
    model_name: str
    config: RunConfig
    substitute: str | None = None

    @property
    def folder(self) -> str:
        """The pair's output folder under OUT/<model>/."""
        return self.config.threat if self.substitute is None else f"{self.config.threat}-from-{self.substitute}"


# A name that becomes a folder: a letter or digit first (no ".", "..", "/" or absolute paths), at most 64 characters.
def _brief(value: Any) -> str:
    """``value``'s type and a short repr (a huge or deeply nested value stays short)."""
    return f"{type(value).__name__} {reprlib.repr(value)}"


def _table(value: Any, where: str, example: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a TOML table, e.g. {example}; got {_brief(value)}")
    return value


def _tables(value: Any, where: str, example: str, most: int | None = None) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(f"{where} must be an array of tables, each written {example}; got {_brief(value)}")
    if most is not None and len(value) > most:
        raise UserFileError(f"{where}: {len(value)} tables; a suite holds at most {most}")
    return value


def _check_keys(table: dict[str, Any], allowed: set[str], where: str) -> None:
    for key in table:
        if key not in allowed:
            raise ConfigError(
                f"{where}: unknown key '{key}'{did_you_mean(key, sorted(allowed))}; allowed: "
                f"{', '.join(sorted(allowed))}"
            )


def load_suite(path: Path, overrides: dict[str, Any] | None = None) -> list[SuitePair]:
    """Parse and validate a suite file into run configs (one per model x threat pair).

    The file is read as :mod:`robench.core.files` reads every user file (a regular file of at most
    1 MiB, UTF-8, TOML of bounded depth); every error is one line (user text in it escaped).
    """
    with one_line_errors():
        return _load_suite(Path(path), overrides)


def _load_suite(path: Path, overrides: dict[str, Any] | None) -> list[SuitePair]:
    raw, _ = load_user_toml(path, "suite file")
    _check_keys(raw, {"defaults", "model", "threat", "threat_files"}, str(path))
    if "threat_files" in raw:  # registered before the threats name them
        load_threat_patterns(raw["threat_files"], path.parent, str(path))
    defaults = dict(_table(raw.get("defaults", {}), f"{path}: [defaults]", "[defaults] with n = 200 below it"))
    _check_keys(defaults, _DEFAULT_KEYS, f"{path} [defaults]")
    defaults.update(overrides or {})
    models = _tables(
        raw.get("model", []), f"{path}: model", '[[model]] with name = "..." and path = "..." below it', MAX_MODELS
    )
    threats = _tables(raw.get("threat", []), f"{path}: threat", '[[threat]] with name = "..." below it', MAX_THREATS)
    if not models or not threats:
        raise ConfigError(f"{path}: a suite needs at least one [[model]] and one [[threat]]")
    names = []
    for model in models:
        _check_keys(model, _MODEL_KEYS, f"{path} [[model]]")
        if "name" not in model or "path" not in model:
            raise ConfigError(f"{path}: every [[model]] needs a name and a path")
        names.append(safe_name(model["name"], f"{path} [[model]]"))
        if not isinstance(model["path"], str) or not model["path"]:
            raise ConfigError(
                f"{path}: model '{model['name']}': path must be a non-empty string, got {reprlib.repr(model['path'])}"
            )
    folded = [n.casefold() for n in names]  # case-insensitive file systems would merge 'GM' and 'gm'
    if len(set(folded)) != len(folded):
        raise ConfigError(
            f"{path}: model names must be unique (ignoring case): {', '.join(sorted(names, key=str.casefold))}"
        )
    if "data_root" in defaults and not isinstance(defaults["data_root"], str):
        raise ConfigError(
            f"{path} [defaults]: 'data_root' must be a folder path string, got {reprlib.repr(defaults['data_root'])}"
        )
    if "detectors" in defaults and defaults["detectors"] is not None and not _is_strings(defaults["detectors"]):
        raise ConfigError(
            f"{path} [defaults]: 'detectors' must be a list of names, e.g. detectors = [\"kd\"], got "
            f"{reprlib.repr(defaults['detectors'])}"
        )
    valid = {f.name for f in fields(RunConfig)}
    pairs = []
    seen: set[tuple[str, str]] = set()
    for threat in threats:
        _check_keys(threat, _THREAT_KEYS, f"{path} [[threat]]")
        if "file" in threat:
            threat = _threat_from_file(threat, path)
        if "name" not in threat:
            raise ConfigError(f'{path}: every [[threat]] needs a name (or a file = "threat.toml" defining one)')
        safe_name(threat["name"], f"{path} [[threat]]")
        for key in ("attacks", "models", "detectors", "substitute"):
            if key in threat and not _is_strings(threat[key]):
                raise ConfigError(
                    f"{path}: threat '{threat['name']}': '{key}' must be a list of names, e.g. {key} = [\"...\"], got "
                    f"{reprlib.repr(threat[key])}"
                )
        if "sigmas" in threat and not (
            isinstance(threat["sigmas"], list)
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in threat["sigmas"])
        ):
            raise ConfigError(
                f"{path}: threat '{threat['name']}': 'sigmas' must be a list of numbers, e.g. sigmas = [0.05, 0.1], "
                f"got {reprlib.repr(threat['sigmas'])}"
            )
        _table(
            threat.get("set", {}),
            f"{path}: threat '{threat['name']}': set",
            '[threat.set] with "BIM.steps" = 10 below it',
        )
        added = _tables(
            threat.get("add", []),
            f"{path}: threat '{threat['name']}': add",
            '[[threat.add]] with label = "...", attack = "..." below it',
        )
        if len(added) > MAX_ATTACKS:
            raise UserFileError(
                f"{path}: threat '{threat['name']}': {len(added)} [[threat.add]] attacks; a threat takes at most "
                f"{MAX_ATTACKS}"
            )
        if "sigmas" in threat and len(threat["sigmas"]) > MAX_ATTACKS:
            raise UserFileError(
                f"{path}: threat '{threat['name']}': {len(threat['sigmas'])} sigmas; a threat runs at most "
                f"{MAX_ATTACKS} attacks"
            )
        only = threat.get("models", names)
        substitutes: list[str | None] = list(threat.get("substitute", [None]))
        for unknown in (set(only) | set(substitutes) - {None}) - set(names):
            raise ConfigError(
                f"{path}: threat '{threat['name']}' names unknown model '{unknown}'{did_you_mean(str(unknown), names)}"
            )
        paths = {m["name"]: path.parent / m["path"] for m in models}
        found = 0
        for model, substitute in ((m, s) for m in models for s in substitutes):
            if model["name"] not in only or substitute == model["name"]:
                continue
            found += 1
            if len(pairs) >= MAX_PAIRS:
                raise UserFileError(
                    f"{path}: more than {MAX_PAIRS} model x threat pairs; a suite runs at most {MAX_PAIRS}"
                )
            if (model["name"], threat["name"], substitute) in seen:
                raise ConfigError(
                    f"{path}: model '{model['name']}' meets threat '{threat['name']}' twice; their outputs would "
                    "overwrite each other"
                )
            seen.add((model["name"], threat["name"], substitute))
            settings = {k: v for k, v in defaults.items() if k in valid}
            for key in ("detectors", "n", "batch_size", "cascade", "budgets"):  # a threat's own value beats [defaults]
                if key in threat:
                    settings[key] = threat[key]
            if settings.get("detectors") is not None:
                settings["detectors"] = tuple(settings["detectors"])
            if settings.get("data_root") is not None:
                settings["data_root"] = path.parent / settings["data_root"]  # relative to the suite file, like models
            for key in ("n", "batch_size", "seed"):
                if key in settings and (not isinstance(settings[key], int) or isinstance(settings[key], bool)):
                    raise ConfigError(f"{path}: '{key}' must be an integer, got {reprlib.repr(settings[key])}")
            config = RunConfig(
                model=(path.parent / model["path"]),
                threat=threat["name"],
                settings=dict(threat.get("set", {})),
                attacks=tuple(
                    threat.get("attacks", ())
                ),  # with [[threat.add]], RunConfig adds the added labels (the union runs)
                sigmas=tuple(float(v) for v in threat.get("sigmas", ())),
                model_name=model["name"],
                substitute=paths[substitute] if substitute is not None else None,
                substitute_name=substitute,
                extra_attacks=tuple(added),
                **settings,
            )
            pairs.append(SuitePair(model["name"], config, substitute))
        if not found:
            raise ConfigError(f"{path}: threat '{threat['name']}' pairs no model (a model is not its own substitute)")
    return pairs


def _threat_from_file(threat: dict[str, Any], path: Path) -> dict[str, Any]:
    """A ``[[threat]]`` with ``file = "x.toml"`` (relative to the suite file): load it; the entry then names its
    threat."""
    file = threat["file"]
    if not isinstance(file, str) or not file:
        raise ConfigError(
            f"{path} [[threat]]: 'file' must be a threat TOML file path, e.g. file = \"threats/x.toml\", got "
            f"{reprlib.repr(file)}"
        )
    loaded = load_threat_file(path.parent / file)
    if "name" in threat and threat["name"] != loaded.name:
        raise ConfigError(
            f"{path} [[threat]]: name '{threat['name']}' differs from the threat '{loaded.name}' that {file} defines; "
            "leave the name out"
        )
    return {**{k: v for k, v in threat.items() if k != "file"}, "name": loaded.name}


def _is_strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)
