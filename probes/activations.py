"""The one vocabulary of activation functions: names, reference functions, identification.

Every part of the toolkit that names an activation uses the kinds defined here: the zoo builds
them (:data:`ACTIVATIONS`), discovery identifies them in third-party networks by what they
compute (:func:`activation_kind`, :func:`function_kind`), capture reads post-activation rows
off ``.pre`` rows where the activation is an exact clamp (:data:`EXACT`), the capture counts and
the activity metrics decide which units are active with one rule (:func:`active_mask`, defined
torch-free in :mod:`probes.sinks` as :func:`probes.sinks.active_terms`), and the exact inverse of
the reconstruction family undoes an activation where it is injective (:func:`invert`).

Identification never relies on a name table: the candidate (a parameter-free module, or a
torch function with its non-tensor arguments bound) is fed a ramp over [-8, 8] and compared
with each reference function of :data:`KINDS` to 1e-4; a random permutation of the ramp must
permute the output the same way (elementwise).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# Kinds with a flat (uninformative) region, for which the activity metrics are defined; the
# other kinds of ACTIVATIONS (linear, leaky_relu) have none. Defined in the sinks, which must
# import without torch, and part of this vocabulary.
from probes.sinks import ACTIVITY_KINDS, active_mask

__all__ = [
    "ACTIVATIONS",
    "ACTIVITY_KINDS",
    "EXACT",
    "KINDS",
    "active_mask",
    "activation_kind",
    "apply",
    "function_kind",
    "invert",
    "make_activation",
]

#: Activations the zoo builds and the analysis understands, in the zoo's order.
ACTIVATIONS: tuple[str, ...] = ("linear", "relu6", "relu", "leaky_relu", "hswish")

#: Kinds whose output is a clamp of the input: applying them to the stored ``.pre`` value of a
#: point reproduces the post-activation value bit for bit (in any floating dtype).
EXACT: tuple[str, ...] = ("relu", "relu6")

_LEAKY_SLOPE = 0.1  # the zoo's leaky ReLU

_REFERENCES: tuple[tuple[str, Callable[[torch.Tensor], torch.Tensor]], ...] = (
    ("linear", lambda x: x),
    ("relu", F.relu),
    ("relu6", F.relu6),
    ("hswish", F.hardswish),
    ("silu", F.silu),
    ("gelu", F.gelu),
    ("gelu", lambda x: F.gelu(x, approximate="tanh")),
    ("sigmoid", torch.sigmoid),
    ("hsigmoid", F.hardsigmoid),
    ("tanh", torch.tanh),
    ("elu", F.elu),
    ("mish", F.mish),
    ("softplus", F.softplus),
)

#: Every kind that identification can return besides "prelu" and unknown elementwise functions.
KINDS: tuple[str, ...] = tuple(dict.fromkeys([k for k, _ in _REFERENCES] + ["leaky_relu"]))


def apply(kind: str, x: torch.Tensor) -> torch.Tensor:
    """Apply the activation ``kind`` (one of :data:`KINDS`; leaky ReLU with slope 0.1).

    Parameters
    ----------
    kind : str
    x : Tensor of any shape

    Returns
    -------
    y : Tensor of the same shape and dtype

    Examples
    --------
    >>> apply("relu6", torch.tensor([-1.0, 3.0, 9.0]))
    tensor([0., 3., 6.])
    """
    if kind == "leaky_relu":
        return F.leaky_relu(x, _LEAKY_SLOPE)
    for name, fn in _REFERENCES:
        if name == kind:
            return fn(x)
    raise ValueError(f"The 'kind' parameter of apply must be one of {list(KINDS)}. Got {kind!r} instead.")


def invert(y: np.ndarray, kind: str, negative_slope: float = _LEAKY_SLOPE) -> tuple[np.ndarray, np.ndarray]:
    """The pre-activation z with y = act(z), on the units where the activation is injective.

    ``relu`` / ``relu6``: z = y where 0 < y (< 6), the active units of :func:`active_mask`;
    ``hswish``: hswish(z) = z (z + 3) / 6 on [-3, 3] and z above 3 is increasing for z > 0,
    so z = (-3 + sqrt(9 + 24 y)) / 2 below 3 and y above, usable where y > 0; ``leaky_relu``
    (slope ``negative_slope``): z = y / slope below 0, every unit; ``linear``: z = y.

    Parameters
    ----------
    y : ndarray of shape (n_points, n_units)
        Post-activation values.
    kind : {"linear", "relu6", "relu", "leaky_relu", "hswish"}
    negative_slope : float, default 0.1

    Returns
    -------
    z : ndarray, same shape as ``y``
        The pre-activation where ``usable`` (elsewhere meaningless).
    usable : ndarray of bool, same shape as ``y``

    Examples
    --------
    >>> z, ok = invert(np.array([[0.0, 2.0, 6.0]]), "relu6")
    >>> z.tolist(), ok.tolist()
    ([[0.0, 2.0, 6.0]], [[False, True, False]])
    """
    if kind in ("relu", "relu6"):
        return y, active_mask(y, kind)
    if kind == "hswish":
        small = (-3.0 + np.sqrt(9.0 + 24.0 * np.clip(y, 0.0, None))) / 2.0
        return np.where(y >= 3, y, small), y > 0
    if kind == "leaky_relu":
        return np.where(y >= 0, y, y / negative_slope), np.ones(y.shape, dtype=bool)
    if kind == "linear":
        return y, np.ones(y.shape, dtype=bool)
    raise ValueError(f"The 'kind' parameter of invert must be one of {list(ACTIVATIONS)}. Got {kind!r} instead.")


def make_activation(name: str) -> nn.Module:
    """A fresh module for ``name`` (one of :data:`ACTIVATIONS`); ``nn.Identity`` for "linear".

    The identity keeps the slot hookable (timm keeps absent stages the same way).
    """
    modules: dict[str, Callable[[], nn.Module]] = {
        "linear": nn.Identity,
        "relu6": lambda: nn.ReLU6(inplace=True),
        "relu": lambda: nn.ReLU(inplace=True),
        "leaky_relu": lambda: nn.LeakyReLU(_LEAKY_SLOPE, inplace=True),
        "hswish": lambda: nn.Hardswish(inplace=True),
    }
    if name not in modules:
        raise ValueError(
            f"The 'name' parameter of make_activation must be one of {list(ACTIVATIONS)}. "
            f"Got {name!r} instead."
        )
    return modules[name]()


def _leaky(x: torch.Tensor, y: torch.Tensor) -> bool:
    pos, neg = x > 0.5, x < -0.5
    if not torch.allclose(y[pos], x[pos], atol=1e-4, rtol=1e-4):
        return False
    slopes = y[neg] / x[neg]
    return bool(0 < slopes.mean() < 1 and (slopes - slopes.mean()).abs().max() < 1e-4)


def _classify(fn: Callable[[torch.Tensor], Any], shape: tuple[int, ...], fallback: str) -> str | None:
    n = int(np.prod(shape))
    if n < 16:
        shape, n = (1, 16), 16
    x = torch.linspace(-8.0, 8.0, n, dtype=torch.float32).reshape(shape)
    try:
        with torch.no_grad():
            y = fn(x.clone())
            if not isinstance(y, torch.Tensor) or y.shape != x.shape or not y.is_floating_point():
                return None
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
            y_perm = fn(x.reshape(-1)[perm].reshape(shape).clone())
    except Exception:  # noqa: BLE001 - anything that cannot take a ramp is no activation
        return None
    x, y = x.double().reshape(-1), y.double().reshape(-1)
    if not torch.allclose(y_perm.double().reshape(-1), y[perm], atol=1e-5, rtol=1e-5):
        return None  # not elementwise
    for kind, ref in _REFERENCES:
        if torch.allclose(y, ref(x), atol=1e-4, rtol=1e-4):
            return kind
    if _leaky(x, y):
        return "leaky_relu"
    return fallback


def activation_kind(module: nn.Module, shape: tuple[int, ...] = (1, 8, 4, 4)) -> str | None:
    """Identify an elementwise activation module by its behaviour.

    The module (called through ``forward`` so no hooks fire) is fed a ramp over [-8, 8] of
    ``shape`` and compared with the reference functions to 1e-4.

    Parameters
    ----------
    module : nn.Module
        Candidate module. Only modules without parameters or buffers are called
        (``nn.PReLU`` is recognised by type).
    shape : tuple of int
        Input shape to try, e.g. the shape the module saw in the network.

    Returns
    -------
    kind : str or None
        One of :data:`KINDS` ("linear" for identity, eval-mode dropout, drop-path) or "prelu";
        the lower-cased class name for another elementwise function; None when the module is
        not elementwise (pooling, softmax, convs, norms, ...).

    Examples
    --------
    >>> activation_kind(nn.ReLU6(inplace=True)), activation_kind(nn.Identity())
    ('relu6', 'linear')
    >>> activation_kind(nn.AdaptiveAvgPool2d(1)) is None
    True
    """
    if isinstance(module, nn.PReLU):
        return "prelu"
    if any(True for _ in module.parameters()) or any(True for _ in module.buffers()):
        return None
    return _classify(module.forward, shape, type(module).__name__.lower())


def function_kind(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any] | None,
                  position: int = 0) -> str | None:
    """Identify a torch function call as an activation: ``func`` with ``args[position]`` varied.

    The call is repeated on a ramp in place of the tensor argument, keeping every other
    argument, so ``torch.clamp(x, 0, 6)``, ``F.hardtanh(x, 0., 6.)`` and ``x.clamp_(min=0)``
    are told apart by what they compute.

    Parameters
    ----------
    func : callable
        As passed to ``__torch_function__`` (``F.relu6``, ``torch.Tensor.relu_``, ...).
    args, kwargs : the call's arguments; no tensor other than ``args[position]``.
    position : int
        Position of the activation's input in ``args``.

    Returns
    -------
    kind : str or None
        One of :data:`KINDS` other than "linear", or None (not an elementwise nonlinearity
        that :data:`KINDS` knows: views, arithmetic, reductions ...).

    Examples
    --------
    >>> function_kind(torch.clamp, (torch.zeros(2), 0, 6), {})
    'relu6'
    >>> function_kind(torch.Tensor.mul, (torch.zeros(2), 2.0), {}) is None
    True
    """
    kwargs = dict(kwargs or {})
    rest = list(args)  # in-place variants modify the ramp's clone, which is what is compared

    def call(x: torch.Tensor) -> Any:
        rest[position] = x
        return func(*rest, **kwargs)

    kind = _classify(call, (1, 16), "")
    return kind if kind not in (None, "", "linear") else None
