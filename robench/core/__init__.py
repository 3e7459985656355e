"""The core layer: registry, typed configs, errors, provenance, devices, data, models, bundles, training.

Nothing here knows about attacks, threat models or reports; every other layer builds on it
(``core`` -> ``eval`` -> ``report`` -> ``cli``).
"""
