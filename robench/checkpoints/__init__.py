"""Checkpoint bundles: a model built from its description, trained, imported from your own code, saved and loaded
safely.

Above :mod:`robench.defenses` (a bundle names its defense) and below everything that evaluates a model.
"""
