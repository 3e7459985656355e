"""Suites: one TOML file pairs models with threat models; every pair runs into one combined summary.

::

    threat_files = ["threats/*.toml"]  # optional, before any table: threat TOML files (paths or patterns, relative to the suite file)

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
    name = "linf-adaptive"     # a threat a file of threat_files defines (robench.eval.threat_files)

    [[threat]]
    file = "threats/apgd-library.toml"  # or load one file and run its threat (name optional: must agree)

``attacks`` selects among the threat's own attacks and ``[[threat.add]]`` adds new ones: with
both, the selected and the added attacks run (:class:`~robench.eval.run_config.RunConfig` adds
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

import re
import reprlib
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from robench.core.errors import ConfigError
from robench.core.files import UserFileError, load_user_toml, one_line_errors, safe_name
from robench.core.provenance import atomic_write_text
from robench.core.registry import did_you_mean
from robench.eval.lock import output_lock
from robench.eval.output import SANITY_FLAGS, contained, with_sanity_flags
from robench.eval.prepare import Loader, prepare
from robench.eval.run_config import RunConfig
from robench.eval.backend import Backend, open_backend
from robench.eval.driver import run_plans
from robench.eval.plan import RunPlan, RunResult
from robench.eval.threat_files import load_threat_file, load_threat_patterns
from robench.eval.threats import MAX_ATTACKS

if TYPE_CHECKING:
    from robench.eval.ray_backend import RayBackend
    from robench.eval.ray_cluster import RaySettings

_DEFAULT_KEYS = {"n", "batch_size", "seed", "device", "detectors", "data_root", "precision", "cascade", "channels_last", "compile"}
_MODEL_KEYS = {"name", "path"}
_THREAT_KEYS = {"name", "file", "set", "attacks", "models", "detectors", "sigmas", "substitute", "n", "batch_size", "add", "cascade"}

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
            raise ConfigError(f"{where}: unknown key '{key}'{did_you_mean(key, sorted(allowed))}; allowed: {', '.join(sorted(allowed))}")


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
    models = _tables(raw.get("model", []), f"{path}: model", '[[model]] with name = "..." and path = "..." below it', MAX_MODELS)
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
            raise ConfigError(f"{path}: model '{model['name']}': path must be a non-empty string, got {reprlib.repr(model['path'])}")
    folded = [n.casefold() for n in names]  # case-insensitive file systems would merge 'GM' and 'gm'
    if len(set(folded)) != len(folded):
        raise ConfigError(f"{path}: model names must be unique (ignoring case): {', '.join(sorted(names, key=str.casefold))}")
    if "data_root" in defaults and not isinstance(defaults["data_root"], str):
        raise ConfigError(f"{path} [defaults]: 'data_root' must be a folder path string, got {reprlib.repr(defaults['data_root'])}")
    if "detectors" in defaults and defaults["detectors"] is not None and not _is_strings(defaults["detectors"]):
        raise ConfigError(f"{path} [defaults]: 'detectors' must be a list of names, e.g. detectors = [\"kd\"], got {reprlib.repr(defaults['detectors'])}")
    valid = {f.name for f in fields(RunConfig)}
    pairs = []
    seen: set[tuple[str, str]] = set()
    for threat in threats:
        _check_keys(threat, _THREAT_KEYS, f"{path} [[threat]]")
        if "file" in threat:
            threat = _threat_from_file(threat, path)
        if "name" not in threat:
            raise ConfigError(f"{path}: every [[threat]] needs a name (or a file = \"threat.toml\" defining one)")
        safe_name(threat["name"], f"{path} [[threat]]")
        for key in ("attacks", "models", "detectors", "substitute"):
            if key in threat and not _is_strings(threat[key]):
                raise ConfigError(f"{path}: threat '{threat['name']}': '{key}' must be a list of names, e.g. {key} = [\"...\"], got {reprlib.repr(threat[key])}")
        if "sigmas" in threat and not (isinstance(threat["sigmas"], list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in threat["sigmas"])):
            raise ConfigError(f"{path}: threat '{threat['name']}': 'sigmas' must be a list of numbers, e.g. sigmas = [0.05, 0.1], got {reprlib.repr(threat['sigmas'])}")
        _table(threat.get("set", {}), f"{path}: threat '{threat['name']}': set", '[threat.set] with "BIM.steps" = 10 below it')
        added = _tables(threat.get("add", []), f"{path}: threat '{threat['name']}': add", '[[threat.add]] with label = "...", attack = "..." below it')
        if len(added) > MAX_ATTACKS:
            raise UserFileError(f"{path}: threat '{threat['name']}': {len(added)} [[threat.add]] attacks; a threat takes at most {MAX_ATTACKS}")
        if "sigmas" in threat and len(threat["sigmas"]) > MAX_ATTACKS:
            raise UserFileError(f"{path}: threat '{threat['name']}': {len(threat['sigmas'])} sigmas; a threat runs at most {MAX_ATTACKS} attacks")
        only = threat.get("models", names)
        substitutes: list[str | None] = list(threat.get("substitute", [None]))
        for unknown in (set(only) | set(substitutes) - {None}) - set(names):
            raise ConfigError(f"{path}: threat '{threat['name']}' names unknown model '{unknown}'{did_you_mean(str(unknown), names)}")
        paths = {m["name"]: path.parent / m["path"] for m in models}
        found = 0
        for model, substitute in ((m, s) for m in models for s in substitutes):
            if model["name"] not in only or substitute == model["name"]:
                continue
            found += 1
            if len(pairs) >= MAX_PAIRS:
                raise UserFileError(f"{path}: more than {MAX_PAIRS} model x threat pairs; a suite runs at most {MAX_PAIRS}")
            if (model["name"], threat["name"], substitute) in seen:
                raise ConfigError(f"{path}: model '{model['name']}' meets threat '{threat['name']}' twice; their outputs would overwrite each other")
            seen.add((model["name"], threat["name"], substitute))
            settings = {k: v for k, v in defaults.items() if k in valid}
            for key in ("detectors", "n", "batch_size", "cascade"):  # a threat's own value beats [defaults]
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
                attacks=tuple(threat.get("attacks", ())),  # with [[threat.add]], RunConfig adds the added labels (the union runs)
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
    """A ``[[threat]]`` with ``file = "x.toml"`` (relative to the suite file): load it; the entry then names its threat."""
    file = threat["file"]
    if not isinstance(file, str) or not file:
        raise ConfigError(f"{path} [[threat]]: 'file' must be a threat TOML file path, e.g. file = \"threats/x.toml\", got {reprlib.repr(file)}")
    loaded = load_threat_file(path.parent / file)
    if "name" in threat and threat["name"] != loaded.name:
        raise ConfigError(f"{path} [[threat]]: name '{threat['name']}' differs from the threat '{loaded.name}' that {file} defines; leave the name out")
    return {**{k: v for k, v in threat.items() if k != "file"}, "name": loaded.name}


def _is_strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def run_suite(
    path: Path, out: Path, overrides: dict[str, Any] | None = None, progress: bool = True, echo: Callable[[str], None] = print, wait: bool = False,
    ray: RayBackend | RaySettings | None = None,
) -> pd.DataFrame:
    """Run every pair of the suite file into ``out`` (holding its lock, :mod:`robench.eval.lock`) and return the combined summary.

    ``ray`` (a :class:`~robench.eval.ray_backend.RaySettings` or a connected backend): every
    pair's parts run as Ray tasks, all pairs at once; the combined summary is the same as without.
    """
    pairs = load_suite(path, overrides)
    loader = Loader()  # every bundle and dataset is loaded once, however many pairs use it
    prepared = [prepare(pair.config, loader) for pair in pairs]  # validate every pair before spending time on any
    for pair, ready in zip(pairs, prepared):
        for note in ready.notes:
            echo(f"{pair.model_name} x {pair.folder}: {note}")
    with output_lock(out, wait=wait), open_backend(ray, echo) as backend:  # after every pair is validated: bad input never waits for Ray
        return _run_pairs(pairs, prepared, out, progress, echo, backend)


def _run_pairs(pairs: list[SuitePair], prepared: list, out: Path, progress: bool, echo: Callable[[str], None], backend: Backend) -> pd.DataFrame:
    """Every pair at once on ``backend``, each holding its folder's lock (as :func:`robench.eval.runner.run` holds it)."""
    folders = [contained(out, pair.model_name, pair.folder) for pair in pairs]  # every write stays inside OUT
    with ExitStack() as locks:
        for folder in folders:
            locks.enter_context(output_lock(folder))
        echo(f"running {len(pairs)} pairs: {', '.join(f'{pair.model_name} x {pair.folder}' for pair in pairs)}")
        plans = [RunPlan(pair.config, folder, ready, progress, echo) for pair, ready, folder in zip(pairs, prepared, folders)]
        results = run_plans(backend, plans)
    sanity = suite_sanity(results)
    combined = with_sanity_flags(pd.concat([r.summary for r in results], ignore_index=True).drop(columns=SANITY_FLAGS), sanity)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "summary.csv", combined.to_csv(index=False))
    atomic_write_text(out / "sanity.csv", sanity.to_csv(index=False))
    for row in sanity[sanity["flagged"]].itertuples() if len(sanity) else ():
        echo(f"sanity: {row.model} {row.threat}: {row.check} flagged ({row.detail})")
    return combined


def suite_sanity(results: list[RunResult]) -> pd.DataFrame:
    """Every pair's model probes, plus the record checks over all pairs at once: a model's black-box and
    white-box attacks run as separate pairs, and only together can the black-box one be seen to beat the other."""
    from robench.eval.sanity import SANITY_CHECKS, attack_names_of, record_flags, sanity_table

    # every pair's own checks (model probes, configuration checks); the record checks are redone over all pairs
    model_checks = [name for name in SANITY_CHECKS.names() if SANITY_CHECKS.get(name).kind != "records"]
    probes = [r.sanity[r.sanity["check"].isin(model_checks)] for r in results if len(r.sanity)]
    records = pd.concat([r.records for r in results], ignore_index=True)
    combined = sanity_table(record_flags(records, attack_names=attack_names_of([r.info for r in results])))
    frames = [f for f in (*probes, combined) if len(f)]
    if not frames:
        return combined
    return pd.concat(frames, ignore_index=True).drop_duplicates(subset=["model", "threat", "check"]).reset_index(drop=True)
