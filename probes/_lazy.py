"""Importing torchvision without torch's compiler stack.

``import torchvision`` runs ``torchvision.ops.roi_align``, whose only use of ``torch._dynamo``
is ``from torch._dynamo.utils import is_compile_supported``; importing that module executes
all of ``torch._dynamo`` (and through it ``torch.distributed.fsdp``, ``torch.fx`` symbolic
shapes ...), about 1.5 s of CPU and more than half of torchvision's import time, for a function
that only RoI-align calls (never this toolkit). :func:`import_torchvision` hands torchvision a
stand-in ``torch._dynamo.utils`` during its import whose ``is_compile_supported`` imports the
real one on first call, so behaviour is unchanged and the compiler stack loads only if someone
uses it. The stand-in is removed from ``sys.modules`` as soon as torchvision is imported; if a
torchvision release wants more from that module, the import is redone the ordinary way.
"""

from __future__ import annotations

import sys
import types
from typing import Any

__all__ = ["import_torchvision"]


def _is_compile_supported(device_type: Any) -> Any:
    from torch._dynamo.utils import is_compile_supported

    return is_compile_supported(device_type)


def import_torchvision() -> types.ModuleType:
    """``import torchvision`` (with ``torchvision.models``), without importing ``torch._dynamo``.

    Returns
    -------
    module
        The ``torchvision`` package.
    """
    if "torchvision" in sys.modules or "torch._dynamo" in sys.modules:
        import torchvision
        import torchvision.models  # noqa: F401

        return torchvision
    stub = types.ModuleType("torch._dynamo.utils")
    stub.is_compile_supported = _is_compile_supported  # type: ignore[attr-defined]
    sys.modules["torch._dynamo.utils"] = stub
    try:
        import torchvision
        import torchvision.models  # noqa: F401
    except ImportError:
        # A torchvision that imports more from torch._dynamo.utils: forget the half-imported
        # package and import it the ordinary way.
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        del sys.modules["torch._dynamo.utils"]
        import torchvision
        import torchvision.models  # noqa: F401
    finally:
        if sys.modules.get("torch._dynamo.utils") is stub:
            del sys.modules["torch._dynamo.utils"]
    return torchvision
