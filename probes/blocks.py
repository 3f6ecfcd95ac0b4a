"""Find the inverted-residual blocks of any network and name their capture points.

Discovery works on structure and data flow, never on class names (docs/design.md "Capture
points"). One forward pass (eval mode, ``torch.no_grad``) records every module call in
execution order with the shapes of its first input and its output and a *fingerprint* of
their values: four fixed random linear functionals of the tensor, computed in float64 inside
the hooks, so in-place activations (``ReLU6(inplace=True)``) cannot overwrite what was seen
and no activation tensor is kept. Equal fingerprints mean "the same tensor flows from this
module into that one"; because the functionals are linear, a residual add shows up exactly
as ``fp(output) = fp(projection) + fp(block input)``.

Activations are seen wherever they are called. Modules are identified by what they compute
(:func:`probes.activations.activation_kind`); a ``torch.overrides.TorchFunctionMode`` active
during the pass sees every torch function called in a ``forward`` outside leaf modules, and a
call that computes a known activation of one tensor (``F.relu6(x)``, ``torch.clamp(x, 0, 6)``,
``x.relu_()``, ``F.hardswish(x)``; :func:`probes.activations.function_kind`) is recorded as if
it were a module, attributed to the tensor it consumed. A functional activation has no module
to hook: its output is read as the input of the first module that consumes it, or, for an
exact clamp (relu, relu6) that nothing consumes, derived from the ``.pre`` value
(``hook="derived"``). The same mode follows conv outputs through views and concatenations:
one that reaches ``matmul``/``softmax``/``scaled_dot_product_attention`` (query, key, value)
or is cut into tokens (its spatial layout changed before a module reads it) is never part of
a block.

Modules that act as one conv are one conv: split-kernel depthwise convs (MixNet's
``MixedConv2d``: depthwise convs on channel groups, concatenated), re-parameterisable parallel
depthwise branches (RepVGG / MobileOne: summed depthwise convs of the same input) and ghost
modules (a 1x1 conv and a cheap depthwise conv of its output, concatenated; GhostNet).

Roles come from widths and data flow (:data:`BLOCK_KINDS`):

- ``inverted_residual``: [1x1 expansion] -> depthwise -> [SE] -> 1x1 projection. The
  expansion is the depthwise conv's producer, followed back through activations and norms; a
  1x1 conv producing exactly the depthwise width. Anything else means t = 1 (no expansion
  points).
- ``depthwise_first``: depthwise (C) -> 1x1 widening (C -> tC) -> 1x1 narrowing (ConvNeXt,
  FastViT ``ConvMlp``, RepViT, MobileNetV4 ConvNeXt-like UIB). Points in data-flow order:
  ``depthwise`` (width C), ``expand`` (tC), ``project``.
- ``extra_dw``: an inverted residual with one more depthwise conv on its input (MobileNetV4
  ExtraDW UIB); the extra conv is listed in ``BlockInfo.extra_dw`` and has no points.
- ``ghost``: ghost module (the concatenated output is the expansion point; its activation
  runs on both halves, so there is no ``expand.pre``) -> [depthwise, stride 2] -> [SE] ->
  ghost module (the projection).
- ``fused``: Fused-MBConv, a dense kxk conv widening C -> tC then a 1x1 projection, or (t = 1)
  one dense kxk conv with an identity shortcut around it alone (its single conv is the
  projection). No depthwise points.

Squeeze-excitation convs (1x1 convs on a spatially pooled map) between the depthwise conv and
the projection are skipped and reported as ``se``. The residual is detected from values
(block output == projection + block input; depthwise first: or + the expansion's input). The
block module is the largest called module whose input is the block input, whose output is the
block output and whose convs are only this block's (single-child ``nn.Sequential`` wrappers
are looked through); blocks whose layers sit flat in a larger ``Sequential`` have none.

Not blocks, and said so in :attr:`Discovery.skipped`: depthwise convs with no 1x1 after them,
attention projections, the projection shortcut of a block (GhostNet, a depthwise + 1x1 branch
added to the block's output), 1x1 -> 1x1 MLPs without a depthwise conv (MobileNetV4 FFN UIB,
transformer MLPs).

A functional sigmoid or hard-sigmoid whose output is multiplied with its own input is one
activation (``x * torch.sigmoid(x)`` is SiLU, ``x * F.hardsigmoid(x)`` hard-swish).

Known limits: other activations composed of several ops (``x * F.relu6(x + 3) / 6``) are not
recognised; a depthwise conv must be a ``nn.Conv2d`` (or a module made of them, as above).
"""

from __future__ import annotations

import functools
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from probes.activations import EXACT, KINDS, activation_kind, function_kind
from probes.points import POINT_SUFFIXES, parse_point, point_name

__all__ = [
    "BLOCK_KINDS",
    "BlockInfo",
    "CapturePoint",
    "Discovery",
    "POINT_SUFFIXES",
    "activation_kind",
    "capture_points",
    "discover",
    "find_blocks",
    "fold_bn",
    "format_report",
]

#: Kinds of block that discovery reports (see the module docstring).
BLOCK_KINDS: tuple[str, ...] = ("inverted_residual", "depthwise_first", "extra_dw", "ghost", "fused")

_DEFAULT_SIZES = (64, 224)  # example input sides tried when none is given
_FOLD = 65521  # fingerprints fold the flattened tensor modulo this prime, then project
_N_FUNCTIONALS = 4
_MAX_SE_CONVS = 4


@dataclass(frozen=True)
class CapturePoint:
    """One tensor of one block that a hook can capture.

    Attributes
    ----------
    name : str
        ``"blocks.{i}.{suffix}"`` with a suffix from :data:`probes.points.POINT_SUFFIXES`
        (the grammar: :mod:`probes.points`).
    block : int
        Block index in execution order over the whole network.
    stage : str
        ``"input"``, ``"expand"``, ``"depthwise"``, ``"project"`` or ``"output"``.
    pre : bool
        True for ``.pre`` points: after conv + BN, before the activation.
    module_path : str
        Dotted path (as in ``model.named_modules()``, ``""`` for the model itself) of the
        module to hook in the original model.
    hook : str
        ``"output"``: forward hook, the value is the module's output. ``"input"``: forward
        pre-hook, the value is the module's first positional input. ``"derived"``: no hook of
        its own; the value is ``act`` (an exact clamp, :data:`probes.activations.EXACT`)
        applied to the block's ``{stage}.pre`` value (a functional activation whose output no
        module reads).
    channels : int
        Channels of the tensor at this point.
    stride : int
        Stride of the block (the largest stride of its convs).
    act : str
        Activation kind at this point. For ``.pre`` points the kind of the activation that
        follows; ``"linear"`` where none does. At ``input`` the kind that produced the block
        input; at ``output`` the bottleneck activation, or ``"linear"`` after a residual add.
    block_in, block_hidden, block_out : int
        The block's input, expanded (depthwise) and output channels.
    has_residual : bool
        The block adds its input to the projection.
    alias_of : str or None
        Name of the point that holds the very same tensor, where this one is a duplicate: a
        stage without activation (``blocks.i.project`` of a linear bottleneck is the alias of
        ``blocks.i.project.pre``) and ``output`` without residual (alias of the projection).
        Always names a point whose own ``alias_of`` is None.
    call_index : int
        Which call of ``module_path`` within one forward pass holds the value (0 unless a
        module instance is reused, e.g. one activation module applied twice).
    block_kind : str
        The block's kind, one of :data:`BLOCK_KINDS`.
    """

    name: str
    block: int
    stage: str
    pre: bool
    module_path: str
    hook: str
    channels: int
    stride: int
    act: str
    block_in: int
    block_hidden: int
    block_out: int
    has_residual: bool
    alias_of: str | None = None
    call_index: int = 0
    block_kind: str = "inverted_residual"


@dataclass(frozen=True)
class BlockInfo:
    """One inverted-residual block found by :func:`find_blocks`.

    Attributes
    ----------
    index : int
        Position in execution order.
    module_path : str or None
        The block module: its forward input is the block input, its output the block output
        (after the residual add). None when the block's layers have no module of their own.
    in_channels, hidden_channels, out_channels : int
        C_in, t*C_in (depthwise width) and C_out.
    stride, kernel_size : int
        Of the depthwise conv.
    expand_ratio : float
        ``hidden_channels / in_channels`` (1.0 without expansion).
    has_residual : bool
        Identity shortcut around the block, detected from values.
    bottleneck_act : str
        Activation kind after the projection, ``"linear"`` if none.
    expand_conv, expand_bn, expand_act : str or None
        Module paths of the expansion stage (all None when t = 1; ``*_bn``/``*_act`` None where
        absent).
    dw_conv, dw_bn, dw_act : str or None
        Depthwise stage (``dw_conv`` None only for ``ghost`` blocks of stride 1 and ``fused``
        blocks).
    project_conv, project_bn, project_act : str or None
        Projection stage (``project_conv`` always set).
    se : str or None
        Module holding the squeeze-excitation convs, when they have one of their own.
    se_convs : tuple of str
        Paths of the squeeze-excitation convs (empty without SE).
    points : tuple of CapturePoint
        The block's capture points in data-flow order.
    block_kind : str
        One of :data:`BLOCK_KINDS`.
    extra_dw : tuple of str
        Extra depthwise convs on the block input (``extra_dw`` blocks).
    expand_act_kind, dw_act_kind : str or None
        Activation kinds of the expansion and depthwise stages (None where absent).
    kernel_sizes : tuple of int
        Kernel sides of the spatial conv (several for a split-kernel depthwise conv).
    """

    index: int
    module_path: str | None
    in_channels: int
    hidden_channels: int
    out_channels: int
    stride: int
    kernel_size: int
    expand_ratio: float
    has_residual: bool
    bottleneck_act: str
    expand_conv: str | None
    expand_bn: str | None
    expand_act: str | None
    dw_conv: str | None
    dw_bn: str | None
    dw_act: str | None
    project_conv: str
    project_bn: str | None
    project_act: str | None
    se: str | None
    se_convs: tuple[str, ...]
    points: tuple[CapturePoint, ...]
    block_kind: str = "inverted_residual"
    extra_dw: tuple[str, ...] = ()
    expand_act_kind: str | None = None
    dw_act_kind: str | None = None
    kernel_sizes: tuple[int, ...] = ()

    def point(self, suffix: str) -> CapturePoint:
        """The point ``blocks.{index}.{suffix}``; KeyError if the block lacks it."""
        name = point_name(self.index, suffix)
        for p in self.points:
            if p.name == name:
                return p
        raise KeyError(f"Block {self.index} has no capture point {name!r}.")


# -- the traced forward pass -----------------------------------------------------------------

class _Functional(nn.Module):
    """An activation applied as a torch function inside a ``forward`` (``F.relu6(x)``,
    ``torch.clamp(x, 0, 6)``, ``x.relu_()``): the call with its other arguments bound, so that
    it is identified like an activation module."""

    def __init__(self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                 position: int) -> None:
        super().__init__()
        self.func, self.args, self.kwargs, self.position = func, args, kwargs, position

    def forward(self, x: torch.Tensor) -> Any:
        args = list(self.args)
        args[self.position] = x
        return self.func(*args, **self.kwargs)

    def extra_repr(self) -> str:
        return getattr(self.func, "__name__", repr(self.func))


class _Gated(nn.Module):
    """``x * gate(x)`` written out in a ``forward`` (``x * torch.sigmoid(x)`` is SiLU)."""

    def __init__(self, gate: nn.Module) -> None:
        super().__init__()
        self.gate = gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


@dataclass(frozen=True)
class _ConvSpec:
    """What the matcher needs of a conv: a real ``nn.Conv2d`` or a module acting as one."""

    in_channels: int
    out_channels: int
    kernel_sizes: tuple[int, ...]
    stride: int
    groups: int
    virtual: str | None = None  # "mixed" (split kernels), "parallel" (re-param branches), "ghost"

    @property
    def kernel(self) -> int:
        return max(self.kernel_sizes)

    @property
    def depthwise(self) -> bool:
        return (self.groups > 1 and self.groups == self.in_channels == self.out_channels
                and self.kernel > 1)

    @property
    def pointwise(self) -> bool:
        return self.kernel == 1 and (self.groups == 1 or self.groups < self.in_channels)

    @property
    def full(self) -> bool:
        """A dense kxk conv (k > 1, groups 1): spatial and channel mixing in one (Fused-MBConv)."""
        return self.kernel > 1 and self.groups == 1


def _conv_spec(m: nn.Module) -> _ConvSpec | None:
    if not isinstance(m, nn.Conv2d):
        return None
    return _ConvSpec(m.in_channels, m.out_channels, (int(max(m.kernel_size)),), int(m.stride[0]),
                     m.groups)


@dataclass
class _Call:
    """One module call (or functional activation): first input and output as shapes and value
    fingerprints."""

    idx: int
    path: str
    module: nn.Module
    parent: int | None
    atomic: bool
    inside: bool
    call_index: int
    in_shape: tuple[int, ...] | None
    in_fp: np.ndarray | None
    end: int = -1
    out_shape: tuple[int, ...] | None = None
    out_fp: np.ndarray | None = None
    functional: bool = False
    conv: _ConvSpec | None = None
    inner_act: "_Call | None" = None   # of a ghost module: the activation of its primary conv
    attention: str | None = None       # why the output is no feature map ("attention", "tokens")


def _is_norm(m: nn.Module) -> bool:
    return isinstance(m, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm))


def _is_depthwise(m: nn.Module) -> bool:
    spec = _conv_spec(m)
    return spec is not None and spec.depthwise


@functools.cache
def _functionals() -> torch.Tensor:
    """The fingerprints' fixed random functionals, (_FOLD, _N_FUNCTIONALS) float64, drawn once
    per process (only ever read)."""
    gen = torch.Generator().manual_seed(20180113)
    return torch.randn(_FOLD, _N_FUNCTIONALS, generator=gen, dtype=torch.float64)


class _Fingerprint:
    """Fixed random linear functionals of a tensor, in float64 (see module docstring)."""

    def __init__(self) -> None:
        self._w = _functionals()
        self._on: dict[torch.device, torch.Tensor] = {}

    def __call__(self, t: Any) -> tuple[tuple[int, ...] | None, np.ndarray | None]:
        if not isinstance(t, torch.Tensor):
            return None, None
        shape = tuple(t.shape)
        if not t.is_floating_point() or t.numel() == 0:
            return shape, None
        w = self._on.get(t.device)
        if w is None:
            w = self._on[t.device] = self._w.to(t.device)
        flat = t.detach().reshape(-1)
        n = flat.numel()
        if n <= _FOLD:
            return shape, (flat.to(torch.float64) @ w[:n]).cpu().numpy()
        # Folded modulo _FOLD: whole rows of _FOLD summed in float64 as they are read (no float64
        # copy of the tensor, no padded one: a quarter of the time), then the last partial row.
        full = n - n % _FOLD
        folded = flat[:full].view(-1, _FOLD).sum(0, dtype=torch.float64)
        if full < n:
            folded[:n - full] += flat[full:].to(torch.float64)
        return shape, (folded @ w).cpu().numpy()


_T = torch.Tensor
# Ops that move values without computing new ones: a conv output that reaches attention or is
# cut into tokens through them is no feature map.
_VIEWS = frozenset({
    _T.view, _T.reshape, _T.permute, _T.transpose, _T.flatten, _T.unflatten, _T.contiguous,
    _T.__getitem__, _T.chunk, _T.split, _T.unbind, _T.squeeze, _T.unsqueeze, _T.unfold,
    _T.tensor_split, torch.reshape, torch.permute, torch.transpose, torch.flatten, torch.chunk,
    torch.split, torch.unbind, torch.squeeze, torch.unsqueeze, torch.tensor_split, F.unfold,
    _T.mT.__get__, _T.T.__get__,
})
_ATTENTION = frozenset({
    torch.matmul, _T.matmul, _T.__matmul__, _T.__rmatmul__, torch.bmm, _T.bmm, torch.baddbmm,
    torch.einsum, F.scaled_dot_product_attention, F.softmax, _T.softmax, torch.softmax,
})
# Never activations; skipping them saves identifying every reshape with new sizes.
_MULS = frozenset({_T.__mul__, _T.__rmul__, _T.mul, torch.mul})
_ADDS = frozenset({_T.__add__, _T.__iadd__, _T.__radd__, _T.add, _T.add_, torch.add})
_NOT_ACTIVATION = _VIEWS | _ATTENTION | frozenset({
    _T.size, _T.dim, _T.__len__, _T.shape.__get__, _T.dtype.__get__, _T.device.__get__,
    _T.numel, _T.__add__, _T.__iadd__, _T.__radd__, _T.add, _T.add_, torch.add, _T.__sub__,
    _T.__rsub__, torch.cat, torch.stack, _T.expand, _T.expand_as, _T.mean, _T.sum, _T.to,
    _T.float, _T.__format__, _T.__bool__, _T.requires_grad.__get__, _T.is_floating_point,
    F.conv2d, F.linear, F.batch_norm, F.layer_norm, F.group_norm, F.adaptive_avg_pool2d,
    F.avg_pool2d, F.max_pool2d, F.pad, F.interpolate, _T.__setitem__, _T.clone, _T.detach,
})


def _tensors(x: Any) -> list[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, (list, tuple)):
        return [t for v in x for t in _tensors(v)]
    return []


class _Recorder(TorchFunctionMode):
    """Sees every torch function called outside atomic modules during the traced pass:
    records activation calls (attributed to the tensor they consume) and follows conv outputs
    through views into attention."""

    def __init__(self, tracer: "_Tracer") -> None:
        super().__init__()
        self.t = tracer
        self.kinds: dict[Any, str | None] = {}

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        t = self.t
        if t.busy or (t.stack and (t.calls[t.stack[-1]].atomic or t.calls[t.stack[-1]].inside)):
            return func(*args, **kwargs)
        if func in _VIEWS or func in _ATTENTION or func is torch.cat:
            out = func(*args, **kwargs)
            src = [o for x in _tensors(args[:1]) if id(x) in t.origin for o in t.origin[id(x)]]
            if src and func not in _ATTENTION:
                for o in _tensors(out):
                    t.keep.append(o)
                    # the spatial axes stay last through a channel shuffle, not through patching
                    t.origin[id(o)] = [(c, shape, relaid or o.dim() < 2
                                        or tuple(o.shape[-2:]) != shape[-2:])
                                       for c, shape, relaid in src]
            elif func in _ATTENTION:
                for x in _tensors(list(args)):
                    for c, _, _ in t.origin.get(id(x), ()):
                        t.calls[c].attention = "attention"
            return out
        pos = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
        if func in _MULS and len(pos) == 2 and t.gate is not None:
            call, x, g = t.gate
            if {id(args[0]), id(args[1])} == {id(x), id(g)}:
                out = func(*args, **kwargs)
                call.module, call.path = _Gated(call.module), call.path + "*x"
                call.end = len(t.calls)
                call.out_shape, call.out_fp = t.fp(out)
                t.gate = None
                return out
        if func in _ADDS and len(pos) == 2 and args[0].shape == args[1].shape:
            a, b = t.fp(args[0])[1], t.fp(args[1])[1]
            out = func(*args, **kwargs)
            t.adds.append((len(t.calls), tuple(out.shape), a, b, t.fp(out)[1]))
            return out
        if (func in _NOT_ACTIVATION or len(pos) != 1 or _tensors(list(kwargs.values()))
                or not args[pos[0]].is_floating_point()):
            return func(*args, **kwargs)
        p = pos[0]
        rest = tuple(None if i == p else a for i, a in enumerate(args))
        try:
            key = (func, repr(rest)[:200], repr(sorted(kwargs.items()))[:200])
            hash(key)
        except Exception:  # noqa: BLE001 - an argument without a stable repr: no activation
            return func(*args, **kwargs)
        if key not in self.kinds:
            self.kinds[key] = function_kind(func, args, kwargs, p)
        if self.kinds[key] is None:
            return func(*args, **kwargs)
        x = args[p]
        shape, fp = t.fp(x)
        parent = t.stack[-1] if t.stack else None
        base = t.calls[parent].path if parent is not None else ""
        name = getattr(func, "__name__", "activation")
        fn = _Functional(func, rest, kwargs, p)
        count = t.counts.get(key, 0)
        t.counts[key] = count + 1
        call = _Call(len(t.calls), f"{base}:{name}" if base else f":{name}", fn, parent, True,
                     False, count, shape, fp, functional=True)
        t.calls.append(call)
        out = func(*args, **kwargs)
        call.end = len(t.calls)
        call.out_shape, call.out_fp = t.fp(out)
        # a gate of its own input may be one half of a composed activation (x * sigmoid(x))
        t.gate = (call, x, out) if self.kinds[key] in ("sigmoid", "hsigmoid") else None
        return out


class _Tracer:
    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.names = {id(m): n for n, m in model.named_modules()}
        self.fingerprint = _Fingerprint()
        # (id, version) -> (weak reference to the tensor, its fingerprint): see :meth:`fp`
        self._fps: dict[tuple[int, int], tuple[weakref.ref, Any]] = {}
        self.calls: list[_Call] = []
        self.stack: list[int] = []
        self.counts: dict[Any, int] = {}
        # tensor id -> the conv calls (and their output shapes) whose values it moves
        # ... and whether they were cut into patches on the way
        self.origin: dict[int, list[tuple[int, tuple[int, ...], bool]]] = {}
        # (calls recorded before it, shape, fp of both operands, fp of the sum) per tensor add
        self.adds: list[tuple[int, tuple[int, ...], Any, Any, Any]] = []
        self.keep: list[torch.Tensor] = []  # ids stay unique while the pass runs
        self.busy = False  # the hooks' own tensor ops are not the model's
        self.gate: tuple[_Call, torch.Tensor, torch.Tensor] | None = None  # last functional gate

    def fp(self, x: Any) -> tuple[tuple[int, ...] | None, np.ndarray | None]:
        """:class:`_Fingerprint` of ``x``, computed once per tensor and in-place version.

        Most tensors are seen several times in a pass (a module's output is the next one's
        input and its container's output: 456 fingerprints of 152 distinct tensor values in
        torchvision's mobilenet_v2), so each is kept against the tensor's identity and version
        counter (an in-place op bumps it), behind a weak reference (a freed tensor whose id is
        reused is not mistaken for it; nothing is kept alive)."""
        key = None
        if isinstance(x, torch.Tensor):
            try:
                key = (id(x), x._version)
            except RuntimeError:   # an inference tensor has no version counter: not memoised
                key = None
            if key is not None:
                hit = self._fps.get(key)
                if hit is not None and hit[0]() is x:
                    return hit[1]
        self.busy = True
        try:
            out = self.fingerprint(x)
        finally:
            self.busy = False
        if key is not None:
            self._fps[key] = (weakref.ref(x), out)
        return out

    def pre(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        calls = self.calls
        parent = calls[self.stack[-1]] if self.stack else None
        inside = parent is not None and (parent.atomic or parent.inside)
        leaf = next(module.children(), None) is None
        atomic = not inside and (isinstance(module, nn.Conv2d) or _is_norm(module) or leaf)
        k = self.counts.get(id(module), 0)
        self.counts[id(module)] = k + 1
        x = args[0] if args else None
        shape, fp = self.fp(x)
        calls.append(_Call(len(calls), self.names[id(module)], module,
                           self.stack[-1] if self.stack else None, atomic, inside, k, shape, fp,
                           conv=_conv_spec(module) if atomic else None))
        if not inside and isinstance(x, torch.Tensor) and id(x) in self.origin:
            for src, src_shape, relaid in self.origin[id(x)]:
                # a changed spatial layout (patches, sequences), not a channel shuffle
                if ((relaid or x.dim() != 4 or tuple(x.shape[2:]) != src_shape[2:])
                        and calls[src].attention is None):
                    calls[src].attention = "tokens"
        self.stack.append(len(calls) - 1)

    def post(self, module: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        call = self.calls[self.stack.pop()]
        call.end = len(self.calls)
        call.out_shape, call.out_fp = self.fp(out)
        if call.conv is not None and isinstance(out, torch.Tensor):
            self.keep.append(out)
            self.origin[id(out)] = [(call.idx, tuple(out.shape), False)]

    def run(self, x: torch.Tensor) -> tuple[list[_Call], list[Any]]:
        handles = []
        try:
            for m in self.model.modules():
                handles.append(m.register_forward_pre_hook(self.pre))
                handles.append(m.register_forward_hook(self.post))
            with _Recorder(self):
                self.model(x)
        finally:
            for h in handles:
                h.remove()
            self.keep.clear()
            self.gate = None
        return self.calls, self.adds


def _trace(model: nn.Module, x: torch.Tensor) -> tuple[list[_Call], list[Any]]:
    return _Tracer(model).run(x)


# -- matching --------------------------------------------------------------------------------

@dataclass
class _Stage:
    conv: _Call
    norm: _Call | None
    act: _Call | None
    act_inside_norm: bool
    kind: str
    last: _Call  # the call whose output is the stage's final value
    post: tuple[str, str, int] | None = None  # where the post-activation value is hooked

    def paths(self) -> tuple[str, str | None, str | None]:
        return (self.conv.path, self.norm.path if self.norm else None,
                self.act.path if self.act else None)

    def pre_hook(self) -> tuple[str, str, int] | None:
        inner = self.conv.inner_act
        if inner is not None and self.conv.conv.virtual == "ghost":
            return None  # its activation runs on two halves before the concat
        if inner is not None:
            return inner.path, "input", inner.call_index
        if self.act is not None and self.act_inside_norm:
            return self.act.path, "input", self.act.call_index
        src = self.norm or self.conv
        return src.path, "output", src.call_index


def _same(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None or not np.any(b):
        return False  # an all-zero tensor says nothing about where it came from
    atol = 1e-12 * (np.abs(b).max() + 1e-300)
    if np.isfinite(a).all() and np.isfinite(b).all():
        # np.allclose(a, b, rtol=1e-9, atol=atol) written out for finite values (matching asks
        # this hundreds of times a pass, and allclose's wrapper costs more than the comparison)
        return bool((np.abs(a - b) <= atol + 1e-9 * np.abs(b)).all())
    return bool(np.allclose(a, b, rtol=1e-9, atol=atol))


@dataclass
class _Found:
    kind: str
    expand: _Stage | None
    dw: _Stage | None
    proj: _Stage
    se: list[_Call]
    extra_dw: list[_Stage]


class _Matcher:
    def __init__(self, calls: list[_Call], adds: list[Any], tol: float) -> None:
        self.calls = calls
        self.adds = adds
        self.tol = tol
        self._kinds: dict[int, str | None] = {}
        self.warnings: list[str] = []
        self.skipped: list[tuple[str, str]] = []
        self._virtual_convs()
        self.atomic = [c for c in calls if c.atomic]
        self.pos = {c.idx: i for i, c in enumerate(self.atomic)}
        self.convs = [c for c in self.atomic if c.conv is not None]
        self.used: set[int] = set()
        self.n_calls: dict[int, int] = {}
        for c in calls:
            self.n_calls[id(c.module)] = self.n_calls.get(id(c.module), 0) + 1

    # composite convs
    def _virtual_convs(self) -> None:
        """Modules that act as one conv become atomic: split-kernel depthwise convs (MixNet's
        ``MixedConv2d``), re-parameterisable parallel depthwise branches (RepVGG-style
        ``RepVggDw``, MobileOne) and ghost modules (1x1 conv + cheap depthwise conv, concat)."""
        for m in self.calls:
            if m.atomic or m.inside or m.in_shape is None or m.out_shape is None:
                continue
            if len(m.in_shape) != 4 or len(m.out_shape) != 4:
                continue
            inner = [c for c in self.calls[m.idx + 1:m.end] if c.atomic]
            convs = [c for c in inner if c.conv is not None]
            # one conv beside an identity branch (a norm of the module's input) is re-param too
            identity = any(_is_norm(c.module) and _same(c.in_fp, m.in_fp) for c in inner)
            if len(convs) < 2 and not (convs and identity):
                continue
            spec, act = self._composite(m, convs, inner)
            if spec is None:
                continue
            m.atomic, m.conv, m.inner_act = True, spec, act
            m.attention = next((c.attention for c in convs if c.attention), None)
            for c in self.calls[m.idx + 1:m.end]:
                c.atomic, c.inside = False, True

    def _composite(self, m: _Call, convs: list[_Call], inner: list[_Call]
                   ) -> tuple[_ConvSpec | None, _Call | None]:
        c_in, c_out = m.in_shape[1], m.out_shape[1]
        specs = [c.conv for c in convs]
        strides = {s.stride for s in specs}
        if len(strides) != 1:
            return None, None
        stride = strides.pop()
        dwish = all(s.groups == s.in_channels == s.out_channels and s.groups > 1 for s in specs)
        reads_input = all(_same(c.in_fp, m.in_fp) for c in convs)
        chained = any(_same(b.in_fp, a.out_fp) for a in inner for b in convs if a is not b)
        kernels = tuple(s.kernel for s in specs)
        pwish = all(s.pointwise and s.groups == 1 for s in specs)
        if ((dwish or pwish) and reads_input and c_in == c_out
                and all(s.in_channels == s.out_channels == c_in for s in specs)):
            # MobileOne applies its activation to the sum of the branches inside the module
            tail = next((c for c in reversed(inner) if c.out_shape == m.out_shape
                         and _same(c.out_fp, m.out_fp)), None)
            act = tail if tail is not None and self.kind(tail) not in (None, "linear") else None
            return _ConvSpec(c_in, c_out, (max(kernels),), stride, c_in if dwish else 1,
                             "parallel"), act
        if (dwish and not chained and sum(s.in_channels for s in specs) == c_in
                and sum(s.out_channels for s in specs) == c_out and c_in == c_out):
            return _ConvSpec(c_in, c_out, kernels, stride, c_in, "mixed"), None
        if (not chained and all(s.pointwise and s.groups == 1 for s in specs)
                and sum(s.in_channels for s in specs) == c_in
                and sum(s.out_channels for s in specs) == c_out):
            return _ConvSpec(c_in, c_out, (1,), stride, 1, "mixed"), None
        if len(convs) == 2:
            p, d = convs
            if (p.conv.pointwise and p.conv.groups == 1 and _same(p.in_fp, m.in_fp)
                    and d.conv.groups == d.conv.in_channels == p.conv.out_channels
                    and p.conv.out_channels < c_out <= p.conv.out_channels + d.conv.out_channels
                    and p.conv.in_channels == c_in):
                acts = [c for c in inner if p.idx < c.idx < d.idx and self.kind(c)]
                act = next((c for c in acts if self.kind(c) != "linear"), None)
                return _ConvSpec(c_in, c_out, (1,), p.conv.stride, 1, "ghost"), act
        return None, None

    # values
    def flows(self, src: _Call, dst: _Call) -> bool:
        """``dst`` reads the tensor that ``src`` output."""
        return src.out_shape == dst.in_shape and _same(dst.in_fp, src.out_fp)

    def is_sum(self, total: np.ndarray | None, a: np.ndarray, b: np.ndarray) -> bool:
        if total is None:
            return False
        scale = np.linalg.norm(a) + np.linalg.norm(b)
        return bool(np.linalg.norm(b) > 1e-6 * scale
                    and np.linalg.norm(total - a - b) <= self.tol * scale)

    def kind(self, c: _Call) -> str | None:
        if c.conv is not None or _is_norm(c.module):
            return None
        key = id(c.module)
        if key not in self._kinds:
            shape = c.in_shape or (1, 8, 4, 4)
            if len(shape) == 4:  # elementwise modules do not care; keep the ramp small
                shape = (1, shape[1], 2, 2)
            self._kinds[key] = activation_kind(c.module, shape)
        return self._kinds[key]

    def inner_act(self, norm: _Call) -> _Call | None:
        """A nonlinear activation called inside a composite norm (timm's BatchNormAct2d)."""
        found = None
        for c in self.calls[norm.idx + 1:norm.end]:
            if next(c.module.children(), None) is None and self.kind(c) not in (None, "linear"):
                found = c
        return found

    # stages
    def stage(self, conv: _Call) -> _Stage:
        """Attach the norm / activation that consume ``conv``'s output before the next conv."""
        norm = act = None
        inside = False
        cur = conv
        for c in self.atomic[self.pos[conv.idx] + 1:]:
            if c.conv is not None:
                break
            if not self.flows(cur, c):
                continue
            if _is_norm(c.module):
                if norm is not None or act is not None:
                    break
                norm = cur = c
                inner = self.inner_act(c)
                if inner is not None:
                    act, inside = inner, True
                continue
            kind = self.kind(c)
            if kind == "linear":
                cur = c
                continue
            if kind is None or act is not None:
                break
            act = cur = c
        if conv.inner_act is not None and act is None:
            kind = self.kind(conv.inner_act) or "linear"
        else:
            kind = (self.kind(act) if act is not None else None) or "linear"
        st = _Stage(conv, norm, act, inside, kind, cur)
        if conv.inner_act is not None and act is None:
            st.post = (conv.path, "output", conv.call_index)
        elif act is not None:
            st.post = self.post_hook(act, kind)
        return st

    def post_hook(self, act: _Call, kind: str) -> tuple[str, str, int] | None:
        """Where the post-activation value can be read: the activation module's output, the
        input of the first module that consumes a functional activation's output, or derived
        from the ``.pre`` value (exact clamps); None: nowhere."""
        if not act.functional:
            return act.path, "output", act.call_index
        for c in self.calls[act.end:]:
            if not c.functional and not c.inside and self.flows(act, c):
                return c.path, "input", c.call_index
        if kind in EXACT:
            return "", "derived", 0
        return None

    def producer(self, call: _Call) -> _Call | None:
        """The latest atomic call before ``call`` whose output ``call`` reads."""
        for c in reversed(self.atomic[:self.pos.get(call.idx, len(self.atomic))]):
            if self.flows(c, call):
                return c
        return None

    def source(self, call: _Call) -> _Call | None:
        """Walk back from ``call``'s input through norms and elementwise modules to a conv."""
        p = self.producer(call)
        while p is not None and p.conv is None:
            if not (_is_norm(p.module) or self.kind(p) is not None):
                return None
            p = self.producer(p)
        return p

    def input_kind(self, first: _Call) -> str:
        p = self.producer(first)
        while p is not None:
            if p.conv is not None and p.inner_act is not None:
                return self.kind(p.inner_act) or "linear"
            if _is_norm(p.module):
                inner = self.inner_act(p)
                return (self.kind(inner) if inner is not None else None) or "linear"
            k = self.kind(p)
            if k is None:
                return "linear"
            if k != "linear":
                return k
            p = self.producer(p)
        return "linear"

    def upstream(self, conv: _Call, width: int, test: Callable[[_ConvSpec], bool]) -> _Stage | None:
        src = self.source(conv)
        if (src is None or src.idx in self.used or not test(src.conv)
                or src.conv.out_channels != width):
            return None
        st = self.stage(src)
        return st if self.flows(st.last, conv) else None

    def next_conv(self, v: _Call, width: int) -> tuple[_Call | None, list[_Call]]:
        """The next conv that reads ``v``'s output (width ``width``) on the full feature map,
        skipping squeeze-excitation convs (1x1 convs on a pooled 1x1 map)."""
        v_hw = v.out_shape[2:] if v.out_shape else None
        v_pooled = v_hw is not None and all(s == 1 for s in v_hw)
        after = [c for c in self.convs if c.idx > v.idx][: _MAX_SE_CONVS + 2]
        se: list[_Call] = []
        i = 0
        while i < len(after):
            c = after[i]
            hw = c.in_shape[2:] if c.in_shape else None
            pooled = hw is not None and all(s == 1 for s in hw)
            if c.idx in self.used or len(se) > _MAX_SE_CONVS:
                break
            if c.conv.in_channels == width and hw == v_hw:
                if c.conv.pointwise and v_pooled and self._se_pair(after[i:i + 3], width):
                    se += after[i:i + 2]
                    i += 2
                    continue
                return c, se
            if pooled and not v_pooled and (se or c.conv.in_channels == width):
                se.append(c)
                i += 1
                continue
            break
        return None, []

    @staticmethod
    def _se_pair(cs: list[_Call], hidden: int) -> bool:
        """On a 1x1 map: reduce (hidden -> r), expand (r -> hidden), then a 1x1 conv on hidden."""
        if len(cs) < 3 or not all(c.conv.pointwise for c in cs):
            return False
        red, exp, nxt = (c.conv for c in cs)
        return exp.in_channels == red.out_channels and exp.out_channels == hidden == nxt.in_channels

    def ancestors(self, call: _Call) -> list[_Call]:
        out = []
        p = call.parent
        while p is not None:
            out.append(self.calls[p])
            p = self.calls[p].parent
        return out

    def inner_convs(self, a: _Call) -> set[int]:
        return {c.idx for c in self.convs if a.idx < c.idx < a.end}

    def block_module(self, first: _Call, last: _Call, out_fp: np.ndarray,
                     convs: set[int]) -> _Call | None:
        """The outermost valid block module (see module docstring), or None."""
        valid = []
        for a in self.ancestors(first):
            if a.end <= last.idx:
                continue  # does not enclose the whole block
            if (self.n_calls[id(a.module)] == 1 and self.inner_convs(a) <= convs
                    and a.in_shape == first.in_shape and _same(a.in_fp, first.in_fp)
                    and a.out_shape == last.out_shape and _same(a.out_fp, out_fp)):
                valid.append(a)
        if not valid:
            return None
        pick = len(valid) - 1  # outermost, looking through single-child Sequential wrappers
        while (pick > 0 and isinstance(valid[pick].module, nn.Sequential)
               and len(valid[pick].module) == 1 and valid[pick - 1].parent == valid[pick].idx):
            pick -= 1
        return valid[pick]

    def sum_after(self, last: _Call, other: np.ndarray | None, shape: tuple[int, ...] | None
                  ) -> tuple[np.ndarray, tuple[str, str, int]] | None:
        """Where ``last``'s output plus ``other`` is seen: an enclosing module's output or the
        next call's input (the add may happen in a parent's forward)."""
        w = last.out_fp
        if w is None or other is None or last.out_shape != shape:
            return None
        for a in self.ancestors(last):
            if a.out_shape == last.out_shape and self.is_sum(a.out_fp, w, other):
                return a.out_fp, (a.path, "output", a.call_index)
        after = self.atomic[self.pos[last.idx] + 1:]
        nxt = after[0] if after else None
        if nxt is not None and nxt.in_shape == last.out_shape and self.is_sum(nxt.in_fp, w, other):
            return nxt.in_fp, (nxt.path, "input", nxt.call_index)
        return None

    def scaled_sum(self, last: _Call, first: _Call
                   ) -> tuple[np.ndarray, tuple[str, str, int] | None] | None:
        """A tensor add of the block input and a value computed from ``last`` (through a layer
        scale, ``x.mul(gamma)``, drop-path) before the next conv: a residual whose branch is
        scaled per channel, which the fingerprint sum cannot see."""
        nxt = next((c for c in self.convs if c.idx > last.idx), None)
        stop = nxt.idx if nxt is not None else len(self.calls)
        for pos, shape, a, b, out in self.adds:
            if not (last.end <= pos <= stop) or shape != first.in_shape or out is None:
                continue
            if not (_same(a, first.in_fp) or _same(b, first.in_fp)):
                continue
            for anc in self.ancestors(last):
                if anc.out_shape == shape and _same(anc.out_fp, out):
                    return out, (anc.path, "output", anc.call_index)
            for c in self.calls[pos:]:
                if c.in_shape == shape and _same(c.in_fp, out):
                    return out, (c.path, "input", c.call_index)
            return out, None
        return None

    # blocks
    def blocks(self) -> list[BlockInfo]:
        found: list[_Found] = []
        for c in self.convs:
            if c.idx in self.used:
                continue
            if c.conv.depthwise:
                f = self._from_depthwise(c)
            elif c.conv.full and c.conv.out_channels > c.conv.in_channels:
                f = self._fused(c)
            elif c.conv.virtual == "ghost":
                f = self._ghost(c)
            else:
                f = None
            if f is None:
                continue
            reason = self._not_a_block(f, found)
            if reason is not None:
                self.skipped.append((f.dw.conv.path if f.dw else f.proj.conv.path, reason))
                continue
            for st in [f.expand, f.dw, f.proj, *f.extra_dw]:
                if st is not None:
                    self.used.add(st.conv.idx)
            self.used |= {s.idx for s in f.se}
            found.append(f)
        self._fused_t1(found)
        found.sort(key=lambda f: self._first(f).idx)
        self._report_leftovers()
        used = {c.path for c in self.convs if c.idx in self.used}
        self.skipped = [s for s in dict.fromkeys(self.skipped) if s[0] not in used]
        return [self._describe(i, f) for i, f in enumerate(found)]

    def _from_depthwise(self, dw: _Call) -> _Found | None:
        hidden = dw.conv.in_channels
        dw_stage = self.stage(dw)
        nxt, se = self.next_conv(dw_stage.last, hidden)
        if nxt is None or not nxt.conv.pointwise:
            why = ("followed by another depthwise conv" if nxt is not None and nxt.conv.depthwise
                   else "no 1x1 conv reads its output")
            self.skipped.append((dw.path, f"depthwise conv not in a block: {why}"))
            return None
        expand = self.upstream(dw, hidden, lambda s: s.pointwise or s.virtual == "ghost")
        if expand is not None and nxt.conv.out_channels > hidden:
            expand = None  # a projection that widens: depthwise-separable chain (LCNet), t = 1
        if expand is None and nxt.conv.out_channels > hidden:
            # depthwise first: dw (C) -> 1x1 widening (C -> tC) -> 1x1 narrowing (tC -> C')
            ex_stage = self.stage(nxt)
            proj, se2 = self.next_conv(ex_stage.last, nxt.conv.out_channels)
            if proj is not None and proj.conv.pointwise and proj.conv.out_channels < nxt.conv.out_channels:
                return _Found("depthwise_first", ex_stage, dw_stage, self.stage(proj), se + se2, [])
            if proj is not None and proj.conv.depthwise and self._narrows_after(proj):
                # an extra depthwise in front of an expansion (MobileNetV4 ExtraDW) is attached
                # to the block of the next depthwise conv; the entry is dropped then
                self.skipped.append((dw.path, "depthwise conv not in a block: followed by a 1x1 "
                                              "widening conv and another depthwise conv"))
                return None
        extra: list[_Stage] = []
        if expand is not None and nxt.conv.out_channels < hidden:
            pre = self.upstream(expand.conv, expand.conv.conv.in_channels, lambda s: s.depthwise)
            if pre is not None:
                extra.append(pre)
        kind = ("ghost" if nxt.conv.virtual == "ghost"
                or (expand is not None and expand.conv.conv.virtual == "ghost")
                else "inverted_residual")
        if kind != "ghost" and extra:
            kind = "extra_dw"
        return _Found(kind, expand, dw_stage, self.stage(nxt), se, extra)

    def _narrows_after(self, dw: _Call) -> bool:
        """``dw`` is followed by a narrowing 1x1 projection (an inverted residual's middle)."""
        nxt, _ = self.next_conv(self.stage(dw).last, dw.conv.in_channels)
        return nxt is not None and nxt.conv.pointwise and nxt.conv.out_channels < dw.conv.in_channels

    def _fused(self, conv: _Call) -> _Found | None:
        """Fused-MBConv: a dense kxk conv widening C -> tC, then a 1x1 projection."""
        st = self.stage(conv)
        proj, se = self.next_conv(st.last, conv.conv.out_channels)
        if proj is None or not proj.conv.pointwise or proj.conv.out_channels >= conv.conv.out_channels:
            return None
        return _Found("fused", st, None, self.stage(proj), se, [])

    def _ghost(self, g: _Call) -> _Found | None:
        """Ghost bottleneck without a depthwise stage: ghost module -> (SE) -> ghost module."""
        st = self.stage(g)
        proj, se = self.next_conv(st.last, g.conv.out_channels)
        if proj is None or proj.conv.virtual != "ghost":
            return None
        return _Found("ghost", st, None, self.stage(proj), se, [])

    def _fused_t1(self, found: list[_Found]) -> None:
        """A dense kxk conv with an identity shortcut around it alone: Fused-MBConv with t = 1."""
        for c in self.convs:
            if c.idx in self.used or not c.conv.full or c.conv.in_channels != c.conv.out_channels:
                continue
            st = self.stage(c)
            if self.sum_after(st.last, c.in_fp, c.in_shape) is None:
                continue
            self.used.add(c.idx)
            found.append(_Found("fused", None, None, st, [], []))

    @staticmethod
    def _first(f: _Found) -> _Call:
        stages = [*f.extra_dw, f.expand, f.dw, f.proj]
        return min((st.conv for st in stages if st is not None), key=lambda c: c.idx)

    def _not_a_block(self, f: _Found, found: list[_Found]) -> str | None:
        for st in (f.expand, f.dw, f.proj):
            if st is not None and st.conv.attention:
                what = ("feeds attention (query/key/value)" if st.conv.attention == "attention"
                        else "is cut into tokens (a transformer's input)")
                return f"not a block: the output of {st.conv.path} {what}"
        if f.expand is None and f.kind == "inverted_residual" and found:
            prev = found[-1]
            first = self._first(f)
            prev_first = self._first(prev)
            if _same(first.in_fp, prev_first.in_fp) and self.sum_after(
                    f.proj.last, prev.proj.last.out_fp, prev.proj.last.out_shape) is not None:
                return f"shortcut branch of the block at {prev_first.path} (added to its output)"
        return None

    def _report_leftovers(self) -> None:
        for c in self.convs:
            if c.idx in self.used or not c.conv.pointwise or c.conv.virtual:
                continue
            st = self.stage(c)
            nxt, _ = self.next_conv(st.last, c.conv.out_channels)
            if (nxt is not None and nxt.idx not in self.used and nxt.conv.pointwise
                    and c.conv.out_channels > c.conv.in_channels
                    and nxt.conv.out_channels < c.conv.out_channels and not c.attention):
                self.skipped.append(
                    (c.path, f"1x1 -> 1x1 ({c.conv.in_channels} -> {c.conv.out_channels} -> "
                             f"{nxt.conv.out_channels}) without a depthwise conv (an FFN/MLP): "
                             "not an inverted-residual block"))

    def residual(self, f: _Found, first: _Call, last: _Call
                 ) -> tuple[bool, np.ndarray | None, tuple[str, str, int] | None]:
        """Whether the block adds its input (or, depthwise first, the expansion's input) to the
        projection; the output's fingerprint, and where it is seen."""
        inputs = [first] + ([f.expand.conv] if f.kind == "depthwise_first" else [])
        hit = None
        for x in inputs:
            hit = hit or self.sum_after(last, x.in_fp, x.in_shape) or self.scaled_sum(last, x)
        if hit is None:
            return False, last.out_fp, None
        return True, hit[0], hit[1]

    def _describe(self, index: int, f: _Found) -> BlockInfo:
        expand, dw, proj = f.expand, f.dw, f.proj
        first = self._first(f)
        last = proj.last
        hidden = (expand.conv.conv.out_channels if expand is not None
                  else dw.conv.conv.in_channels if dw is not None else first.conv.in_channels)
        c_in = first.conv.in_channels
        c_out = proj.conv.conv.out_channels
        residual, out_fp, out_hook = self.residual(f, first, last)
        convs = {st.conv.idx for st in (expand, dw, proj, *f.extra_dw) if st is not None}
        convs |= {c.idx for c in f.se}
        block = self.block_module(first, last, out_fp, convs)
        spatial = dw or expand or proj
        stride = max(st.conv.conv.stride for st in (expand, dw, proj, *f.extra_dw) if st is not None)
        common = dict(block=index, stride=stride, block_in=c_in, block_hidden=hidden,
                      block_out=c_out, has_residual=residual, block_kind=f.kind)
        points: list[CapturePoint] = []

        def add(suffix: str, hook: tuple[str, str, int], channels: int, act: str,
                alias: str | None = None) -> None:
            name = point_name(index, suffix)
            parsed = parse_point(name)
            points.append(CapturePoint(
                name=name, stage=parsed.stage, pre=parsed.pre,
                module_path=hook[0], hook=hook[1], call_index=hook[2], channels=channels,
                act=act, alias_of=alias, **common))

        in_hook = (block.path, "input", 0) if block else (first.path, "input", first.call_index)
        add("input", in_hook, c_in, self.input_kind(first))
        order = [("expand", expand), ("depthwise", dw), ("project", proj)]
        if f.kind == "depthwise_first":
            order = [("depthwise", dw), ("expand", expand), ("project", proj)]
        for name, st in order:
            if st is None:
                continue
            if st.kind not in KINDS:
                self.warnings.append(
                    f"{point_name(index, name)}: the activation after {st.conv.path} is {st.kind!r}, not one "
                    f"of {list(KINDS)}; activity metrics will not apply to it.")
            ch = st.conv.conv.out_channels
            pre = st.pre_hook()
            if pre is not None:
                add(f"{name}.pre", pre, ch, st.kind)
            if st.act is None and st.conv.inner_act is None:
                add(name, pre, ch, "linear", alias=point_name(index, f"{name}.pre"))
            elif st.post is None:
                self.warnings.append(
                    f"{point_name(index, name)}: the {st.kind} activation after {st.conv.path} is applied "
                    "functionally and its output reaches no module and is no exact clamp; the "
                    f"point {point_name(index, name)} is left out.")
            elif st.post[1] == "derived":
                add(name, (pre[0], "derived", pre[2]), ch, st.kind)
            else:
                add(name, st.post, ch, st.kind)
        project = points[-1]
        if block is not None:
            out_hook = (block.path, "output", 0)
        if residual and out_hook is not None:
            add("output", out_hook, c_out, "linear")
        elif residual:
            self.warnings.append(
                f"{point_name(index, 'output')}: the residual add after {proj.conv.path} happens in a forward "
                "whose result no module reads; the point is left out.")
        elif project.name == point_name(index, "project"):
            add("output", (project.module_path, project.hook, project.call_index), c_out,
                proj.kind, alias=project.alias_of or project.name)
        elif block is not None:
            add("output", out_hook, c_out, proj.kind)

        se_module = self._se_module(f.se, convs - {c.idx for c in f.se})
        e_paths = expand.paths() if expand else (None, None, None)
        d_paths = dw.paths() if dw else (None, None, None)
        return BlockInfo(
            index=index, module_path=block.path if block else None,
            in_channels=c_in, hidden_channels=hidden, out_channels=c_out, stride=stride,
            kernel_size=spatial.conv.conv.kernel, expand_ratio=hidden / c_in,
            has_residual=residual, bottleneck_act=proj.kind,
            expand_conv=e_paths[0], expand_bn=e_paths[1], expand_act=e_paths[2],
            dw_conv=d_paths[0], dw_bn=d_paths[1], dw_act=d_paths[2],
            project_conv=proj.paths()[0], project_bn=proj.paths()[1],
            project_act=proj.paths()[2],
            se=se_module, se_convs=tuple(c.path for c in f.se), points=tuple(points),
            block_kind=f.kind, extra_dw=tuple(st.conv.path for st in f.extra_dw),
            expand_act_kind=expand.kind if expand else None,
            dw_act_kind=dw.kind if dw else None,
            kernel_sizes=spatial.conv.conv.kernel_sizes,
        )

    def _se_module(self, se: list[_Call], others: set[int]) -> str | None:
        """Innermost called module that holds all SE convs and none of the block's others."""
        if not se:
            return None
        for a in self.ancestors(se[0]):
            inner = self.inner_convs(a)
            if inner & others:
                return None
            if {c.idx for c in se} <= inner:
                return a.path
        return None


# -- public API ------------------------------------------------------------------------------

def _first_conv(model: nn.Module) -> nn.Conv2d | None:
    return next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)


def _run(model: nn.Module, example_input: torch.Tensor | None
         ) -> tuple[list[_Call], list[Any]]:
    if example_input is not None:
        if not isinstance(example_input, torch.Tensor):
            raise ValueError(
                "The 'example_input' parameter of find_blocks must be a torch.Tensor or None. "
                f"Got {type(example_input).__name__} instead."
            )
        try:
            return _trace(model, example_input)
        except Exception as exc:
            raise ValueError(
                f"The forward pass of {type(model).__name__} failed on 'example_input' of shape "
                f"{tuple(example_input.shape)}: {exc}"
            ) from exc
    conv = _first_conv(model)
    if conv is None:
        raise ValueError(
            f"No inverted-residual block in {type(model).__name__}: the model has no nn.Conv2d "
            "(a block is a 1x1 conv -> depthwise kxk conv -> 1x1 conv chain)."
        )
    ref = next(model.parameters(), None)
    device = ref.device if ref is not None else torch.device("cpu")
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
    errors = []
    for side in _DEFAULT_SIZES:
        x = torch.randn(1, conv.in_channels, side, side,
                        generator=torch.Generator().manual_seed(0)).to(device, dtype)
        try:
            return _trace(model, x)
        except Exception as exc:  # noqa: BLE001 - try the next size, report all below
            errors.append(f"{side}x{side}: {exc}")
    raise ValueError(
        f"The forward pass of {type(model).__name__} failed on a random input with "
        f"{conv.in_channels} channels ({'; '.join(errors)}). Pass 'example_input' explicitly."
    )


@dataclass(frozen=True)
class Discovery:
    """What :func:`discover` found and what it left out.

    Attributes
    ----------
    blocks : tuple of BlockInfo
        In execution order.
    skipped : tuple of (str, str)
        ``(module path, reason)`` for convs that look like parts of a block but are not in one
        (depthwise convs without a projection, attention projections, shortcut branches, MLPs).
    warnings : tuple of str
        Things discovery is unsure of; :func:`find_blocks` emits them as ``UserWarning``.
    model : str
        Class name of the model.
    """

    blocks: tuple[BlockInfo, ...]
    skipped: tuple[tuple[str, str], ...]
    warnings: tuple[str, ...]
    model: str


def discover(model: nn.Module, example_input: torch.Tensor | None = None) -> Discovery:
    """Find every inverted-residual block of ``model`` and say what was left out and why.

    Same as :func:`find_blocks` (parameters, errors) but returns a :class:`Discovery` and
    emits no warning; a model without any block gives ``blocks == ()`` instead of an error.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(
            f"The 'model' parameter of find_blocks must be a torch.nn.Module. "
            f"Got {type(model).__name__} instead."
        )
    flags = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            calls = _run(model, example_input)
            dtype = next((c.module.weight.dtype for c in calls[0]
                          if isinstance(c.module, nn.Conv2d)), torch.float32)
            tol = min(200 * float(torch.finfo(dtype).eps), 0.05)
            matcher = _Matcher(*calls, tol)
            blocks = matcher.blocks()
    finally:
        for m, flag in flags.items():
            m.training = flag
    warns = list(matcher.warnings)
    if not blocks:
        n_conv = sum(isinstance(c.module, nn.Conv2d) for c in calls[0])
        n_dw = sum(_is_depthwise(c.module) for c in calls[0])
        warns.append(
            f"No inverted-residual block found in {type(model).__name__}: its forward pass ran "
            f"{n_conv} Conv2d calls, {n_dw} of them depthwise, and no depthwise conv was followed "
            "by a 1x1 projection conv.")
    return Discovery(tuple(blocks), tuple(matcher.skipped), tuple(warns), type(model).__name__)


def find_blocks(model: nn.Module, example_input: torch.Tensor | None = None) -> list[BlockInfo]:
    """Find every inverted-residual block of ``model`` by one traced forward pass.

    Parameters
    ----------
    model : nn.Module
        Any network. It is run once in eval mode under ``torch.no_grad``; its train/eval flags
        are restored afterwards and no hook is left attached.
    example_input : Tensor of shape (1, C, H, W) or None
        Input for the traced pass. None: a seeded random 1 x C x 64 x 64 tensor (C from the
        first ``nn.Conv2d``), 224 x 224 if 64 fails. Use a random, not a zero, input: residual
        detection compares values.

    Returns
    -------
    blocks : list of BlockInfo
        In execution order, with their capture points. What discovery is unsure of is emitted
        as a ``UserWarning`` (see :func:`discover` for the full account).

    Raises
    ------
    ValueError
        If the forward pass fails or the model has no inverted-residual block.

    Examples
    --------
    >>> from probes.zoo import ZooConfig, build_model
    >>> blocks = find_blocks(build_model(ZooConfig(input_size=32, width_mult=0.35)))
    >>> len(blocks), blocks[0].expand_conv, blocks[1].expand_conv
    (17, None, 'blocks.1.expand.conv')
    """
    found = discover(model, example_input)
    if not found.blocks:
        raise ValueError(found.warnings[-1])
    for w in found.warnings:
        warnings.warn(w, UserWarning, stacklevel=2)
    return list(found.blocks)


def format_report(found: Discovery) -> str:
    """The discovery report: one line per block, then what was skipped and why.

    Each block line gives its index, kind, widths ``C_in -> hidden -> C_out``, stride,
    kernel, activation kinds (expansion / depthwise / bottleneck), residual and the module
    paths of its convs.

    Examples
    --------
    >>> from probes.zoo import ZooConfig, build_model
    >>> print(format_report(discover(build_model(ZooConfig(input_size=32)))).splitlines()[1])
    block  0 inverted_residual  32 ->   32 ->   16  s1 k3  act -/relu6/linear  residual no   dw=blocks.0.depthwise.conv proj=blocks.0.project.conv
    """
    lines = [f"{found.model}: {len(found.blocks)} inverted-residual blocks"]
    for b in found.blocks:
        acts = "/".join(k or "-" for k in (b.expand_act_kind, b.dw_act_kind, b.bottleneck_act))
        kernel = "+".join(str(k) for k in b.kernel_sizes) if len(b.kernel_sizes) > 1 else str(b.kernel_size)
        parts = [f"{k}={p}" for k, p in (("extra_dw", ",".join(b.extra_dw) or None),
                                         ("expand", b.expand_conv), ("dw", b.dw_conv),
                                         ("proj", b.project_conv)) if p]
        lines.append(
            f"block {b.index:2d} {b.block_kind:<17s} {b.in_channels:3d} -> {b.hidden_channels:4d} -> "
            f"{b.out_channels:4d}  s{b.stride} k{kernel}  act {acts}  "
            f"residual {'yes' if b.has_residual else 'no '}  {' '.join(parts)}")
    if found.skipped:
        lines.append(f"skipped ({len(found.skipped)}):")
        lines += [f"  {path}: {reason}" for path, reason in found.skipped]
    return "\n".join(lines)


def capture_points(model: nn.Module,
                   example_input: torch.Tensor | None = None) -> list[CapturePoint]:
    """All capture points of all blocks of ``model`` in order (see :func:`find_blocks`)."""
    return [p for b in find_blocks(model, example_input) for p in b.points]


def fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fold an eval-mode BatchNorm into the preceding conv: the effective affine map.

    With ``s = gamma / sqrt(running_var + eps)``::

        W' = W * s[:, None]          b' = beta + s * (conv_bias - running_mean)

    so that ``bn(conv(x))`` at every output position equals ``W' @ patch + b'``.

    Parameters
    ----------
    conv : nn.Conv2d
        Weight of shape (C_out, C_in / groups, kh, kw).
    bn : nn.BatchNorm2d or None
        With running statistics and ``C_out`` features. None: no norm (``s = 1``).

    Returns
    -------
    weight : ndarray of shape (C_out, C_in / groups * kh * kw)
        float64; (C_out, C_in) for a 1x1 conv, (C, kh * kw) for a depthwise conv.
    bias : ndarray of shape (C_out,)
        float64.

    Examples
    --------
    >>> w, b = fold_bn(nn.Conv2d(4, 8, 1, bias=False), nn.BatchNorm2d(8))
    >>> w.shape, b.shape
    ((8, 4), (8,))
    """
    if not isinstance(conv, nn.Conv2d):
        raise ValueError(
            f"The 'conv' parameter of fold_bn must be a torch.nn.Conv2d. "
            f"Got {type(conv).__name__} instead."
        )
    weight = conv.weight.detach().to("cpu", torch.float64).numpy()
    weight = weight.reshape(weight.shape[0], -1)
    bias = (conv.bias.detach().to("cpu", torch.float64).numpy() if conv.bias is not None
            else np.zeros(weight.shape[0]))
    if bn is None:
        return weight, bias
    if not isinstance(bn, nn.modules.batchnorm._BatchNorm):
        raise ValueError(
            f"The 'bn' parameter of fold_bn must be a torch.nn.BatchNorm2d or None. "
            f"Got {type(bn).__name__} instead."
        )
    if bn.num_features != conv.out_channels:
        raise ValueError(
            f"The 'bn' parameter of fold_bn must have conv.out_channels = {conv.out_channels} "
            f"features. Got {bn.num_features} instead."
        )
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(
            "The 'bn' parameter of fold_bn must track running statistics "
            "(track_running_stats=True): without them eval mode uses batch statistics, "
            "which no fixed affine map reproduces."
        )

    def arr(t: torch.Tensor | None, default: float) -> np.ndarray:
        if t is None:
            return np.full(conv.out_channels, default)
        return t.detach().to("cpu", torch.float64).numpy()

    scale = arr(bn.weight, 1.0) / np.sqrt(arr(bn.running_var, 1.0) + bn.eps)
    shift = arr(bn.bias, 0.0) + scale * (bias - arr(bn.running_mean, 0.0))
    return weight * scale[:, None], shift
