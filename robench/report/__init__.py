"""The reporting layer: run directories, bootstrap intervals, paper-layout tables and renderers, figures, the
regression gate.

It reads records and computes every number through :mod:`robench.scoring.metrics`.
"""
