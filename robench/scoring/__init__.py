"""Per-sample records and what is computed from them: metrics, worst cases, cascade rules, the KD+BU combiner.

Records (:mod:`robench.scoring.records`) are the single source of truth: every number is a metric
(:mod:`robench.scoring.metrics`) computed from them.
"""
