"""Architecture registry, the :class:`Classifier` wrapper (normalize -> backbone -> head) and its :class:`Forward`
pass."""

from robench.core.models import cnn, resnet  # noqa: F401 - imported for its registration side effects
from robench.core.models.base import ARCHITECTURES, ArchSpec, Classifier, Normalize, build_backbone, head_num_classes
from robench.core.models.forward import Forward

__all__ = ["ARCHITECTURES", "ArchSpec", "Classifier", "Forward", "Normalize", "build_backbone", "head_num_classes"]
