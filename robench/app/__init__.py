"""Applications built on robench: the demo and the L-inf budget sweep (the CLI lives in :mod:`robench.cli`)."""
