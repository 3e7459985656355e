"""The evaluation layer: threat models, the runner and its part store, per-sample records, metrics, sanity flags, suites.

Records (:mod:`robench.eval.records`) are the single source of truth: every number is a metric
(:mod:`robench.eval.metrics`) computed from them.
"""
