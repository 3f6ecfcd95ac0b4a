"""What is probed and how: networks, inputs, hooks (design: ``docs/design.md``).

The public API is four functions; everything else lives in the submodules.

- :func:`load_checkpoint` (:mod:`probes.loading`): a zoo name or a weights file, loaded
  safely (safetensors, or ``torch.load(weights_only=True)``), with its input spec.
- :func:`load_dataset` (:mod:`probes.datasets`): ``digits``, ``shapes``, ``natural``, an
  ``.npz`` or an image folder, as float32 images (N, C, H, W) in [0, 1].
- :func:`probe` (:mod:`probes.capture`): run a dataset through a model and stream every
  capture point into mergeable sinks (moments, activity counts, a paired reservoir).
- :func:`capture` (:mod:`probes.capture`): the context manager behind :func:`probe`, for your
  own forward passes.

The formulas of the sinks (Chan's parallel moments, bottom-k hash sampling) are in
:mod:`probes.sinks`; the metrics computed from them are in :mod:`analysis`.

Examples
--------
>>> import torch
>>> from probes import capture, load_checkpoint, load_dataset, probe
>>> loaded = load_checkpoint("digits-linear-s0")
>>> images = load_dataset("digits", split="test").head(8)
>>> res = probe(loaded.model, images, input_spec=loaded.input_spec, points="blocks.1.*",
...             device="cpu", progress=False)
>>> list(res.points)[:3]
['blocks.1.input', 'blocks.1.expand.pre', 'blocks.1.expand']
>>> res.stats["blocks.1.expand"].activity.kind
'relu6'
>>> x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
>>> with capture(loaded.model, "blocks.0.output", example_input=x, moments="exact") as cap:
...     _ = loaded.model(x)
>>> cap.stats()["blocks.0.output"].moments.count   # 2 images x 16 x 16 positions
512
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__all__ = ["capture", "load_checkpoint", "load_dataset", "probe"]

# Imported on first use (PEP 562): ``from probes.sinks import Moments`` must not import torch.
_WHERE = {
    "capture": "probes.capture",
    "load_checkpoint": "probes.loading",
    "load_dataset": "probes.datasets",
    "probe": "probes.capture",
}

if TYPE_CHECKING:
    from probes.capture import capture, probe
    from probes.datasets import load_dataset
    from probes.loading import load_checkpoint


class _Package(types.ModuleType):
    """The ``probes`` package, whose attribute ``capture`` is always the function.

    Importing the submodule ``probes.capture`` would otherwise bind the *module* to that name
    (the import system sets a package attribute per loaded submodule), and ``from probes import
    capture`` would return a module or the function depending on what was imported before.
    The submodule stays in ``sys.modules``: ``from probes.capture import ProbeResult`` works.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _WHERE and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'probes' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
