"""The per-sample record schema: the one place that names a record column.

A run's records hold one row per (model, threat, attack, crafting model, test sample). Every
number robench reports is a metric (:mod:`robench.scoring.metrics`) computed from these rows;
every other module reads and writes them through the names and selectors defined here, so a
column is renamed, retyped or reinterpreted in one place. Bump :data:`FORMAT` when a column's
name or meaning changes: finished parts of older runs are then recomputed, never reused.

Populations (paper 001 Sec. 4.4 and Tables 7-11):

- *clean-correct*: samples whose clean input the evaluated model classifies correctly;
- *successful*: clean-correct samples whose attack succeeded (untargeted: misclassified;
  targeted: classified as the target; transfer: misclassified by the evaluated model; and, for
  an attack with a criterion of its own such as C&W-wb's f_2 = 0, that criterion met);
- *best attempts*: failures for which a searching attack returned its best iterate rather than
  the clean input (:data:`BEST_ATTEMPT`); they may be misclassified without being successes;
- *attacked*: the inputs a detector's flagged rate is measured on: the successful ones for an
  attack, every noisy or rotated input for a corruption (004 Sec. 4.5, a false-positive rate).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

FORMAT = 6  # bump when the records' columns or meaning change: old parts are then never reused


@dataclass(frozen=True)
class Column:
    """One record column: its name, its pandas dtype kind and what it holds."""

    name: str
    dtype: str  # "str", "bool", "int" or "float"
    description: str


MODEL = "model"
THREAT = "threat"
ATTACK = "attack"
CORRUPTION = "corruption"
CRAFTED_ON = "crafted_on"
SAMPLE = "sample"
LABEL = "label"
TARGET = "target"
CLEAN_PRED = "clean_pred"
ADV_PRED = "adv_pred"
SUCCESS = "success"
CRAFTED_SUCCESS = "crafted_success"
L2 = "l2"
LINF = "linf"
DISTORTION = "distortion"
INPUT_RANGE = "input_range"
BEST_ATTEMPT = "best_attempt"
ORDER = "order"
CASCADE = "cascade_mode"
BUDGETS = "worst_case_budgets"
IMAGE_PASSES = "attack_image_passes"
ATTACK_NORM = "attack_norm"
ATTACK_EPS = "attack_eps"
ATTACK_DETECTORS = "attack_detectors"
SUBSTITUTE_DETECTOR = "substitute:"  # in attack_detectors: a detector of the substitute the attack was crafted on
BROKEN_BY = "broken_by"
_SCORE_CLEAN = "score_clean:"
_SCORE_ADV = "score_adv:"

COLUMNS: tuple[Column, ...] = (
    Column(MODEL, "str", "the evaluated model's name"),
    Column(THREAT, "str", "the threat model"),
    Column(ATTACK, "str", "the attack's label within the threat (e.g. C&W-hc)"),
    Column(
        CORRUPTION, "bool", "a corruption (noise, rotation) rather than an attack: no AUC, flagged rate on every input"
    ),
    Column(CRAFTED_ON, "str", "the model the attack ran on: the model itself, or a black-box threat's substitute"),
    Column(SAMPLE, "int", "index of the test sample in the dataset's test split"),
    Column(LABEL, "int", "the true class"),
    Column(TARGET, "int", "the attack's target class, -1 when untargeted"),
    Column(CLEAN_PRED, "int", "the evaluated model's prediction on the clean input"),
    Column(ADV_PRED, "int", "the evaluated model's prediction on the attacked input"),
    Column(SUCCESS, "bool", "the attack succeeded on the evaluated model (see the module docstring)"),
    Column(
        BEST_ATTEMPT,
        "bool",
        "the attack missed its own criterion and returned its best attempt instead of the clean input (C&W family)",
    ),
    Column(CRAFTED_SUCCESS, "bool", "the attack succeeded on the crafting model (its own criterion)"),
    Column(L2, "float", "||x_adv - x||_2"),
    Column(LINF, "float", "||x_adv - x||_inf"),
    Column(DISTORTION, "float", "||x_adv - x||_2 / sqrt(h w c) (001 Sec. 4.4.2)"),
    Column(INPUT_RANGE, "float", "high - low of the model's declared input range (for distortion on the 0-255 scale)"),
    Column(
        ATTACK_NORM, "str", "the norm the attack is bounded in or minimises ('linf', 'l2', ...; 'none': a corruption)"
    ),
    Column(ATTACK_EPS, "float", "the attack's eps budget in its norm; NaN for a minimum-norm attack or a corruption"),
    Column(
        IMAGE_PASSES,
        "float",
        "images forwarded through the crafting model by the attack on this sample's batch, divided by the batch's "
        "size: summed over an attack's records, its forward(+backward) passes (the attack audit)",
    ),
    Column(
        ATTACK_DETECTORS,
        "str",
        "the scored detectors the attack descended on, comma-separated in the run's order ('' for a detector-blind "
        "attack; robench.attacks.base.Attack.attacked_detectors); 'substitute:NAME' for a substitute's own detector "
        "in a transfer threat, which is not the evaluated model's",
    ),
    Column(ORDER, "int", "the attack's place in its threat's cascade order, cheapest first (robench.scoring.cascade)"),
    Column(
        CASCADE,
        "str",
        "how the run cascaded the threat's attacks: 'none' (every "
        "attack on every sample), 'misclassified' or 'undetected'",
    ),
    Column(
        BUDGETS,
        "str",
        "the run's budgets for this threat (robench.scoring.budgets.format_budgets, e.g. 'linf:0.1;l2:2.0'): the "
        "balls the worst case is taken in",
    ),
)
# Plus, on the derived worst-case rows only (robench.scoring.worst_case): ``broken_by`` (str), the label of the
# first attack in cascade order that misclassified the sample ('' where it survived every attack).
# Plus, per detector D, ``score_clean:D`` and ``score_adv:D`` (float, higher = looks clean).

# A summary row's group: one target attacked from two substitutes gives two rows.
KEYS: tuple[str, ...] = (MODEL, THREAT, ATTACK, CRAFTED_ON)
SAMPLE_KEYS: tuple[str, ...] = (*KEYS, SAMPLE)  # unique per record
REQUIRED: tuple[str, ...] = (MODEL, THREAT, ATTACK, SAMPLE, LABEL, CLEAN_PRED, ADV_PRED, SUCCESS, DISTORTION)
# The columns the runner adds to every part after it is computed or reused (a part's content does not depend on them).
RUN_COLUMNS: tuple[str, ...] = (ORDER, CASCADE, BUDGETS)
NO_CASCADE = "none"
# The per-sample columns an attacked batch yields, in record order (after the identifying columns).
BATCH_COLUMNS: tuple[str, ...] = (
    LABEL,
    TARGET,
    CLEAN_PRED,
    ADV_PRED,
    SUCCESS,
    BEST_ATTEMPT,
    CRAFTED_SUCCESS,
    L2,
    LINF,
    DISTORTION,
    INPUT_RANGE,
    ATTACK_NORM,
    ATTACK_EPS,
    IMAGE_PASSES,
    ATTACK_DETECTORS,
)


# Combined detectors (KD+BU, robench.scoring.combiner): raw features per input kind, and the fit split.
RAW_KINDS: tuple[str, ...] = ("clean", "noisy", "adv")  # the inputs whose raw features a record holds
RAW_FEATURES: tuple[str, ...] = ("kd", "bu")  # in the order of KDBUDetector.raw_features' columns
_RAW = "raw_"
_FITTED_ON = "fitted_on:"


def raw_column(detector: str, kind: str, feature: str) -> str:
    """The float record column of one raw feature of a combined detector, e.g. ``raw_clean:kd+bu:kd``.

    ``kind`` is one of :data:`RAW_KINDS` (the clean input, the noisy input of
    :func:`robench.scoring.combiner.noisy_like`, the attacked input), ``feature`` one of :data:`RAW_FEATURES` (``kd``:
    log KD under the predicted class; ``bu``: the BU detector's score, minus the MC-dropout uncertainty). NaN where the
    feature was not computed.
    """
    if kind not in RAW_KINDS:
        raise ValueError(f"unknown input kind {kind!r}; kinds: {', '.join(RAW_KINDS)}")
    if feature not in RAW_FEATURES:
        raise ValueError(f"unknown raw feature {feature!r}; features: {', '.join(RAW_FEATURES)}")
    return f"{_RAW}{kind}:{detector}:{feature}"


def raw_columns_of(detector: str) -> list[str]:
    """Every raw-feature column of a combined detector, kind by kind."""
    return [raw_column(detector, kind, feature) for kind in RAW_KINDS for feature in RAW_FEATURES]


def fitted_column(detector: str) -> str:
    """The bool record column saying a sample was in the fit split of a combined detector, e.g. ``fitted_on:kd+bu``.

    True: the sample's group fitted a combiner and the sample was in its fit split, so its
    scores are NaN. False: the sample was scored, or its group fitted no combiner.
    """
    return _FITTED_ON + detector


def score_clean(detector: str) -> str:
    """The column of a detector's score on the clean input."""
    return _SCORE_CLEAN + detector


def score_adv(detector: str) -> str:
    """The column of a detector's score on the attacked input."""
    return _SCORE_ADV + detector


def is_score_column(column: str) -> bool:
    return column.startswith((_SCORE_CLEAN, _SCORE_ADV))


def detectors_in(records: pd.DataFrame) -> list[str]:
    """The detectors the records hold scores of, sorted by name."""
    return sorted(c[len(_SCORE_CLEAN) :] for c in records.columns if c.startswith(_SCORE_CLEAN))


def with_crafted_on(records: pd.DataFrame) -> pd.DataFrame:
    """Records of runs made before transfer attacks existed were all crafted on the model itself."""
    return records if CRAFTED_ON in records.columns else records.assign(**{CRAFTED_ON: records[MODEL]})


def scored_columns(group: pd.DataFrame) -> pd.DataFrame:
    """``group`` without the detector columns that are empty in it.

    Concatenating runs scored by different detectors (gm-likelihood applies to GM models only)
    leaves all-NaN score columns on the other runs' rows; they must not turn into detector rows
    of NaN in a summary.

    A detector's two columns go together: it is unscored in the group when both its clean and
    its adversarial scores are all NaN. One empty side alone is a scored detector with an
    undefined metric (a worst case where no attack misclassified anything has no adversarial
    score; its AUC is NaN), and keeps both columns.
    """
    empty = []
    for column in group.columns:
        if not column.startswith(_SCORE_CLEAN):
            continue
        detector = column[len(_SCORE_CLEAN) :]
        pair = [c for c in (score_clean(detector), score_adv(detector)) if c in group.columns]
        if all(group[c].isna().all() for c in pair):
            empty += pair
    # An adversarial column without its clean one names no detector (detectors_in): left out when empty, as before.
    empty += [
        c
        for c in group.columns
        if c.startswith(_SCORE_ADV) and score_clean(c[len(_SCORE_ADV) :]) not in group.columns and group[c].isna().all()
    ]
    return group.drop(columns=empty) if empty else group


def groups(records: pd.DataFrame) -> Iterator[tuple[dict[str, object], pd.DataFrame]]:
    """(key, rows) per summary group (model x threat x attack x crafting model), in first-appearance order."""
    for key, group in with_crafted_on(records).groupby(list(KEYS), sort=False):
        yield dict(zip(KEYS, key)), group


def is_corruption(group: pd.DataFrame) -> bool:
    """Whether one group's rows are a corruption (noise, rotation); records without the column hold attacks."""
    return bool(group[CORRUPTION].iloc[0]) if CORRUPTION in group and len(group) else False


def corruption_mask(records: pd.DataFrame) -> np.ndarray:
    return records[CORRUPTION].to_numpy(dtype=bool) if CORRUPTION in records else np.zeros(len(records), dtype=bool)


def clean_correct(records: pd.DataFrame) -> np.ndarray:
    """Per row: the clean input is classified correctly."""
    return records[CLEAN_PRED].to_numpy() == records[LABEL].to_numpy()


def robust(records: pd.DataFrame) -> np.ndarray:
    """Per row: the attacked input is classified correctly."""
    return records[ADV_PRED].to_numpy() == records[LABEL].to_numpy()


def successful(records: pd.DataFrame) -> np.ndarray:
    """Per row: clean-correct and the attack succeeded."""
    return clean_correct(records) & records[SUCCESS].to_numpy(dtype=bool)


def attacked(records: pd.DataFrame) -> np.ndarray:
    """Per row: an input a detector's flagged rate counts (successful attacks; every corrupted input)."""
    return successful(records) | corruption_mask(records)


def targeted(records: pd.DataFrame) -> np.ndarray:
    """Per row: the attack aimed at a target class."""
    return records[TARGET].to_numpy() >= 0


def hit_target(records: pd.DataFrame) -> np.ndarray:
    """Per row: the attacked input is classified as the target."""
    return records[ADV_PRED].to_numpy() == records[TARGET].to_numpy()


def success(records: pd.DataFrame) -> np.ndarray:
    return records[SUCCESS].to_numpy(dtype=bool)


def distortion(records: pd.DataFrame) -> np.ndarray:
    return records[DISTORTION].to_numpy(dtype=float)


def linf(records: pd.DataFrame) -> np.ndarray:
    return records[LINF].to_numpy(dtype=float)


def clean_scores(records: pd.DataFrame, detector: str) -> np.ndarray:
    """A detector's scores of the clean inputs (NaN where it did not score)."""
    return records[score_clean(detector)].to_numpy(dtype=float)


def adv_scores(records: pd.DataFrame, detector: str) -> np.ndarray:
    """A detector's scores of the attacked inputs (NaN where it did not score)."""
    return records[score_adv(detector)].to_numpy(dtype=float)


def has_scores(records: pd.DataFrame, detector: str) -> bool:
    column = score_clean(detector)
    return column in records and not records[column].isna().all()


def part(
    *,
    model: str,
    threat: str,
    attack: str,
    corruption: bool,
    crafted_on: str,
    samples: np.ndarray,
    columns: Mapping[str, np.ndarray],
    scores_clean: Mapping[str, np.ndarray],
    scores_adv: Mapping[str, np.ndarray],
) -> pd.DataFrame:
    """One attacked batch as records: the identifying columns, ``columns`` (:data:`BATCH_COLUMNS`), then the scores."""
    missing = [c for c in BATCH_COLUMNS if c not in columns]
    if missing:
        raise KeyError(f"an attacked batch lacks record column(s) {', '.join(missing)}")
    data: dict[str, object] = {
        MODEL: model,
        THREAT: threat,
        ATTACK: attack,
        CORRUPTION: corruption,
        CRAFTED_ON: crafted_on,
        SAMPLE: samples,
        **{c: columns[c] for c in BATCH_COLUMNS},
    }
    for detector in scores_clean:
        data[score_clean(detector)] = scores_clean[detector]
        data[score_adv(detector)] = scores_adv[detector]
    return pd.DataFrame(data)


def cascade_of(records: pd.DataFrame) -> np.ndarray:
    """Per row: the cascade mode of the run ('none' for records written before cascades existed)."""
    if CASCADE not in records:
        return np.full(len(records), NO_CASCADE, dtype=object)
    return records[CASCADE].to_numpy(dtype=object)


def missing_columns(frame: pd.DataFrame) -> list[str]:
    """The required record columns ``frame`` lacks."""
    return [c for c in REQUIRED if c not in frame.columns]


def duplicated(records: pd.DataFrame) -> pd.Series:
    """True for every row whose (group, sample) occurs more than once."""
    return with_crafted_on(records).duplicated(subset=list(SAMPLE_KEYS), keep=False)
