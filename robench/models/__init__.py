"""Architecture registry and the :class:`Classifier` wrapper (normalize -> backbone -> head)."""

from robench.models import cnn, resnet  # noqa: F401  (registration side effects)
from robench.models.base import ARCHITECTURES, ArchSpec, Classifier, Normalize, build_backbone

__all__ = ["ARCHITECTURES", "ArchSpec", "Classifier", "Normalize", "build_backbone"]
