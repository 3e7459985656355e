"""Bring your own model: ``robench import`` turns an exported program, a TorchScript archive, a factory +
weights or a timm architecture + weights into a verified robench bundle (see :mod:`.importer`).

The bundle holds a checked ``torch.export`` program (:mod:`.archive`), rebuilt at load time by
:mod:`.loading` into the :class:`~robench.core.models.Classifier` shape robench runs (:mod:`.program`).
"""

from robench.checkpoints.imported.program import IMPORTED_ARCH

__all__ = ["IMPORTED_ARCH"]
