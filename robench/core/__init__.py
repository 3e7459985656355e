"""The foundation: registry, typed configs, errors, user files, provenance, devices, data, the classifier's
building blocks.

Nothing here knows about defenses, bundles, attacks, threat models or reports; every other layer
builds on it (the layers: docs/development.md, checked by tests/test_layers.py).
"""
