"""Find the inverted-residual blocks of any network and name their capture points.

Discovery works on structure and data flow, never on class names (docs/design.md "Capture
points"). One forward pass (eval mode, ``torch.no_grad``) records every module call in
execution order with the shapes of its first input and its output and a *fingerprint* of
their values: four fixed random linear functionals of the tensor, computed in float64 inside
the hooks, so in-place activations (``ReLU6(inplace=True)``) cannot overwrite what was seen
and no activation tensor is kept. Equal fingerprints mean "the same tensor flows from this
module into that one"; because the functionals are linear, a residual add shows up exactly
as ``fp(output) = fp(projection) + fp(block input)``.

The matcher then anchors on every depthwise conv (``groups == in_channels == out_channels``,
kernel larger than 1x1), in execution order:

- **expansion**: follow the depthwise conv's input back through activations, norms and
  identity-like modules (data flow, not adjacency) to its producer. A 1x1 conv producing
  exactly the depthwise width is the expansion; anything else (a stem conv, a pooling, a
  functional op such as ``chunk``/``cat``) means t = 1: the block has no expansion points.
- **depthwise / projection stages**: the BN and activation modules that consume the conv's
  output (before the next conv) are attached; ``nn.Identity``, eval-mode dropout and drop-path
  pass through.
- **projection**: the next 1x1 conv that reads the depthwise width on the full feature map.
  Squeeze-excitation convs in between (1x1 convs on a spatially pooled 1x1 tensor, with their
  gate activation) are skipped and reported as ``se``.
- **residual**: detected from values (block output == projection + block input).
- **block module**: the largest called module whose input is the block input, whose output is
  the block output and whose convs are only this block's (single-child ``nn.Sequential``
  wrappers are looked through). Blocks whose layers sit flat in a larger ``Sequential`` (the
  depthwise-separable stem of MNASNet) have none (``module_path=None``); their input and output
  points hook the first conv and the projection instead.

Activation kinds are identified by behaviour: a parameter-free module is fed a ramp over
[-8, 8] and compared with reference functions (relu6, relu, hswish, silu, gelu, leaky_relu,
sigmoid, hsigmoid, tanh, elu, mish, softplus; "linear" for identity-like modules), so timm's
own activation classes and user-defined ones work without a name table.

Known limits: an activation applied functionally (``F.relu`` inside ``forward``) is invisible
to module hooks and reads as "linear"; a depthwise conv must be a ``nn.Conv2d``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BlockInfo",
    "CapturePoint",
    "POINT_SUFFIXES",
    "activation_kind",
    "capture_points",
    "find_blocks",
    "fold_bn",
]

#: Capture-point suffixes of one block, in data-flow order (docs/design.md).
POINT_SUFFIXES: tuple[str, ...] = (
    "input", "expand.pre", "expand", "depthwise.pre", "depthwise", "project.pre", "project",
    "output",
)

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
        ``"blocks.{i}.{suffix}"`` with a suffix from :data:`POINT_SUFFIXES`.
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
        pre-hook, the value is the module's first positional input.
    channels : int
        Channels of the tensor at this point.
    stride : int
        Stride of the block (of its depthwise conv).
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
        Depthwise stage (``dw_conv`` always set).
    project_conv, project_bn, project_act : str or None
        Projection stage (``project_conv`` always set).
    se : str or None
        Module holding the squeeze-excitation convs, when they have one of their own.
    se_convs : tuple of str
        Paths of the squeeze-excitation convs (empty without SE).
    points : tuple of CapturePoint
        The block's capture points in data-flow order.
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
    dw_conv: str
    dw_bn: str | None
    dw_act: str | None
    project_conv: str
    project_bn: str | None
    project_act: str | None
    se: str | None
    se_convs: tuple[str, ...]
    points: tuple[CapturePoint, ...]

    def point(self, suffix: str) -> CapturePoint:
        """The point ``blocks.{index}.{suffix}``; KeyError if the block lacks it."""
        name = f"blocks.{self.index}.{suffix}"
        for p in self.points:
            if p.name == name:
                return p
        raise KeyError(f"Block {self.index} has no capture point {name!r}.")


# -- activation kinds ------------------------------------------------------------------------

def _leaky(x: torch.Tensor, y: torch.Tensor) -> bool:
    pos, neg = x > 0.5, x < -0.5
    if not torch.allclose(y[pos], x[pos], atol=1e-4, rtol=1e-4):
        return False
    slopes = y[neg] / x[neg]
    return bool(0 < slopes.mean() < 1 and (slopes - slopes.mean()).abs().max() < 1e-4)


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


def activation_kind(module: nn.Module, shape: tuple[int, ...] = (1, 8, 4, 4)) -> str | None:
    """Identify an elementwise activation module by its behaviour.

    The module (eval mode, called through ``forward`` so no hooks fire) is fed a ramp over
    [-8, 8] of ``shape`` and compared with reference functions to 1e-4.

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
        One of "linear" (identity, eval-mode dropout, drop-path), "relu", "relu6", "hswish",
        "silu", "gelu", "leaky_relu", "sigmoid", "hsigmoid", "tanh", "elu", "mish",
        "softplus", "prelu"; the lower-cased class name for another elementwise function;
        None when the module is not elementwise (pooling, softmax, convs, norms, ...).

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
    n = int(np.prod(shape))
    if n < 16:
        shape, n = (1, 16), 16
    x = torch.linspace(-8.0, 8.0, n, dtype=torch.float32).reshape(shape)
    try:
        with torch.no_grad():
            y = module.forward(x.clone())
            if not isinstance(y, torch.Tensor) or y.shape != x.shape:
                return None
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
            y_perm = module.forward(x.reshape(-1)[perm].reshape(shape).clone())
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
    return type(module).__name__.lower()


# -- the traced forward pass -----------------------------------------------------------------

@dataclass
class _Call:
    """One module call: first input and output as shapes and value fingerprints."""

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


def _is_norm(m: nn.Module) -> bool:
    return isinstance(m, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm))


def _is_depthwise(m: nn.Module) -> bool:
    return (
        isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels == m.out_channels
        and tuple(m.kernel_size) != (1, 1)
    )


def _is_pointwise(m: nn.Module) -> bool:
    return (
        isinstance(m, nn.Conv2d) and tuple(m.kernel_size) == (1, 1)
        and (m.groups == 1 or m.groups < m.in_channels)
    )


class _Fingerprint:
    """Fixed random linear functionals of a tensor, in float64 (see module docstring)."""

    def __init__(self) -> None:
        gen = torch.Generator().manual_seed(20180113)
        self._w = torch.randn(_FOLD, _N_FUNCTIONALS, generator=gen, dtype=torch.float64)
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
        flat = t.detach().reshape(-1).to(torch.float64)
        n = flat.numel()
        if n <= _FOLD:
            return shape, (flat @ w[:n]).cpu().numpy()
        rows = -(-n // _FOLD)
        folded = F.pad(flat, (0, rows * _FOLD - n)).reshape(rows, _FOLD).sum(0)
        return shape, (folded @ w).cpu().numpy()


def _trace(model: nn.Module, x: torch.Tensor) -> list[_Call]:
    names = {id(m): n for n, m in model.named_modules()}
    fingerprint = _Fingerprint()
    calls: list[_Call] = []
    stack: list[int] = []
    counts: dict[int, int] = {}

    def pre(module: nn.Module, args: tuple[Any, ...]) -> None:
        parent = calls[stack[-1]] if stack else None
        inside = parent is not None and (parent.atomic or parent.inside)
        leaf = next(module.children(), None) is None
        atomic = not inside and (isinstance(module, nn.Conv2d) or _is_norm(module) or leaf)
        k = counts.get(id(module), 0)
        counts[id(module)] = k + 1
        shape, fp = fingerprint(args[0] if args else None)
        calls.append(_Call(len(calls), names[id(module)], module, stack[-1] if stack else None,
                           atomic, inside, k, shape, fp))
        stack.append(len(calls) - 1)

    def post(module: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        call = calls[stack.pop()]
        call.end = len(calls)
        call.out_shape, call.out_fp = fingerprint(out)

    handles = []
    try:
        for m in model.modules():
            handles.append(m.register_forward_pre_hook(pre))
            handles.append(m.register_forward_hook(post))
        model(x)
    finally:
        for h in handles:
            h.remove()
    return calls


# -- matching --------------------------------------------------------------------------------

@dataclass
class _Stage:
    conv: _Call
    norm: _Call | None
    act: _Call | None
    act_inside_norm: bool
    kind: str
    last: _Call  # the call whose output is the stage's final value

    def paths(self) -> tuple[str, str | None, str | None]:
        return (self.conv.path, self.norm.path if self.norm else None,
                self.act.path if self.act else None)

    def pre_hook(self) -> tuple[str, str, int]:
        if self.act is not None and self.act_inside_norm:
            return self.act.path, "input", self.act.call_index
        src = self.norm or self.conv
        return src.path, "output", src.call_index

    def post_hook(self) -> tuple[str, str, int]:
        assert self.act is not None
        return self.act.path, "output", self.act.call_index


def _same(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None or not np.any(b):
        return False  # an all-zero tensor says nothing about where it came from
    return bool(np.allclose(a, b, rtol=1e-9, atol=1e-12 * (np.abs(b).max() + 1e-300)))


class _Matcher:
    def __init__(self, calls: list[_Call], tol: float) -> None:
        self.calls = calls
        self.atomic = [c for c in calls if c.atomic]
        self.pos = {c.idx: i for i, c in enumerate(self.atomic)}
        self.convs = [c for c in self.atomic if isinstance(c.module, nn.Conv2d)]
        self.tol = tol
        self.used: set[int] = set()
        self.n_calls: dict[int, int] = {}
        for c in calls:
            self.n_calls[id(c.module)] = self.n_calls.get(id(c.module), 0) + 1
        self._kinds: dict[int, str | None] = {}

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
        if isinstance(c.module, nn.Conv2d) or _is_norm(c.module):
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
            if isinstance(c.module, nn.Conv2d):
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
        kind = self.kind(act) if act is not None else "linear"
        return _Stage(conv, norm, act, inside, kind or "linear", cur)

    def producer(self, call: _Call) -> _Call | None:
        """The latest atomic call before ``call`` whose output ``call`` reads."""
        for c in reversed(self.atomic[:self.pos.get(call.idx, len(self.atomic))]):
            if self.flows(c, call):
                return c
        return None

    def source(self, call: _Call) -> _Call | None:
        """Walk back from ``call``'s input through norms and elementwise modules to a conv."""
        p = self.producer(call)
        while p is not None and not isinstance(p.module, nn.Conv2d):
            if not (_is_norm(p.module) or self.kind(p) is not None):
                return None
            p = self.producer(p)
        return p

    def input_kind(self, first: _Call) -> str:
        p = self.producer(first)
        while p is not None:
            if _is_norm(p.module):
                inner = self.inner_act(p)
                return self.kind(inner) if inner is not None else "linear"
            k = self.kind(p)
            if k is None:
                return "linear"
            if k != "linear":
                return k
            p = self.producer(p)
        return "linear"

    def expansion(self, dw: _Call) -> _Stage | None:
        src = self.source(dw)
        if (src is None or src.idx in self.used or not _is_pointwise(src.module)
                or src.module.out_channels != dw.module.in_channels):
            return None
        st = self.stage(src)
        return st if self.flows(st.last, dw) else None

    def projection(self, dw_stage: _Stage, hidden: int) -> tuple[_Call | None, list[_Call]]:
        v = dw_stage.last
        v_hw = v.out_shape[2:] if v.out_shape else None
        v_pooled = v_hw is not None and all(s == 1 for s in v_hw)
        after = [c for c in self.convs if c.idx > v.idx][: _MAX_SE_CONVS + 2]
        se: list[_Call] = []
        i = 0
        while i < len(after):
            c = after[i]
            hw = c.in_shape[2:] if c.in_shape else None
            pooled = hw is not None and all(s == 1 for s in hw)
            if c.idx in self.used or _is_depthwise(c.module) or len(se) > _MAX_SE_CONVS:
                break
            if _is_pointwise(c.module) and c.module.in_channels == hidden and hw == v_hw:
                if v_pooled and self._se_pair(after[i:i + 3], hidden):
                    se += after[i:i + 2]
                    i += 2
                    continue
                return c, se
            if pooled and not v_pooled and (se or c.module.in_channels == hidden):
                se.append(c)
                i += 1
                continue
            break
        return None, []

    @staticmethod
    def _se_pair(cs: list[_Call], hidden: int) -> bool:
        """On a 1x1 map: reduce (hidden -> r), expand (r -> hidden), then a 1x1 conv on hidden."""
        if len(cs) < 3 or not all(_is_pointwise(c.module) for c in cs):
            return False
        red, exp, nxt = (c.module for c in cs)
        return exp.in_channels == red.out_channels and exp.out_channels == hidden == nxt.in_channels

    def ancestors(self, call: _Call) -> list[_Call]:
        out = []
        p = call.parent
        while p is not None:
            out.append(self.calls[p])
            p = self.calls[p].parent
        return out

    def block_module(self, first: _Call, last: _Call, out_fp: np.ndarray,
                     convs: set[int]) -> _Call | None:
        """The outermost valid block module (see module docstring), or None."""
        valid = []
        for a in self.ancestors(first):
            if a.end <= last.idx:
                continue  # does not enclose the whole block
            inner_convs = {c.idx for c in self.convs if a.idx < c.idx < a.end}
            if (self.n_calls[id(a.module)] == 1 and inner_convs <= convs
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

    def residual(self, first: _Call, last: _Call
                 ) -> tuple[bool, np.ndarray | None, tuple[str, str, int] | None]:
        """Whether the block adds its input, the output's fingerprint, and where it is seen."""
        w, x = last.out_fp, first.in_fp
        if w is None or x is None or last.out_shape != first.in_shape:
            return False, w, None
        for a in self.ancestors(last):
            if a.out_shape == last.out_shape and self.is_sum(a.out_fp, w, x):
                return True, a.out_fp, (a.path, "output", a.call_index)
        after = self.atomic[self.pos[last.idx] + 1:]
        nxt = after[0] if after else None  # the add may happen in a parent's forward
        if nxt is not None and nxt.in_shape == last.out_shape and self.is_sum(nxt.in_fp, w, x):
            return True, nxt.in_fp, (nxt.path, "input", nxt.call_index)
        return False, w, None

    def blocks(self) -> list[BlockInfo]:
        found: list[BlockInfo] = []
        for dw in self.convs:
            if not _is_depthwise(dw.module) or dw.idx in self.used:
                continue
            hidden = dw.module.in_channels
            expand = self.expansion(dw)
            dw_stage = self.stage(dw)
            proj, se = self.projection(dw_stage, hidden)
            if proj is None:
                continue
            proj_stage = self.stage(proj)
            self.used |= {c.idx for c in [dw, proj, *se]} | ({expand.conv.idx} if expand else set())
            found.append(self._describe(len(found), expand, dw_stage, proj_stage, se))
        return found

    def _describe(self, index: int, expand: _Stage | None, dw: _Stage, proj: _Stage,
                  se: list[_Call]) -> BlockInfo:
        first = expand.conv if expand else dw.conv
        last = proj.last
        hidden = dw.conv.module.in_channels
        c_in = first.module.in_channels
        c_out = proj.conv.module.out_channels
        residual, out_fp, out_hook = self.residual(first, last)
        convs = {first.idx, dw.conv.idx, proj.conv.idx, *(c.idx for c in se)}
        block = self.block_module(first, last, out_fp, convs)
        stride = int(dw.conv.module.stride[0])
        common = dict(block=index, stride=stride, block_in=c_in, block_hidden=hidden,
                      block_out=c_out, has_residual=residual)
        prefix = f"blocks.{index}."
        points: list[CapturePoint] = []

        def add(suffix: str, hook: tuple[str, str, int], channels: int, act: str,
                alias: str | None = None) -> None:
            stage = suffix.split(".")[0]
            points.append(CapturePoint(
                name=prefix + suffix, stage=stage, pre=suffix.endswith(".pre"),
                module_path=hook[0], hook=hook[1], call_index=hook[2], channels=channels,
                act=act, alias_of=alias, **common))

        in_hook = (block.path, "input", 0) if block else (first.path, "input", first.call_index)
        add("input", in_hook, c_in, self.input_kind(first))
        for name, st, ch in (("expand", expand, hidden), ("depthwise", dw, hidden),
                             ("project", proj, c_out)):
            if st is None:
                continue
            add(f"{name}.pre", st.pre_hook(), ch, st.kind)
            if st.act is not None:
                add(name, st.post_hook(), ch, st.kind)
            else:
                add(name, st.pre_hook(), ch, "linear", alias=prefix + f"{name}.pre")
        project = points[-1]
        if block is not None:
            out_hook = (block.path, "output", 0)
        elif not residual:
            out_hook = (project.module_path, project.hook, project.call_index)
        if residual:
            add("output", out_hook, c_out, "linear")
        else:
            add("output", out_hook, c_out, proj.kind, alias=project.alias_of or project.name)

        se_module = self._se_module(se, convs - {c.idx for c in se})
        e_paths = expand.paths() if expand else (None, None, None)
        return BlockInfo(
            index=index, module_path=block.path if block else None,
            in_channels=c_in, hidden_channels=hidden, out_channels=c_out, stride=stride,
            kernel_size=int(dw.conv.module.kernel_size[0]), expand_ratio=hidden / c_in,
            has_residual=residual, bottleneck_act=proj.kind,
            expand_conv=e_paths[0], expand_bn=e_paths[1], expand_act=e_paths[2],
            dw_conv=dw.paths()[0], dw_bn=dw.paths()[1], dw_act=dw.paths()[2],
            project_conv=proj.paths()[0], project_bn=proj.paths()[1],
            project_act=proj.paths()[2],
            se=se_module, se_convs=tuple(c.path for c in se), points=tuple(points),
        )

    def _se_module(self, se: list[_Call], others: set[int]) -> str | None:
        """Innermost called module that holds all SE convs and none of the block's others."""
        if not se:
            return None
        for a in self.ancestors(se[0]):
            inner = {c.idx for c in self.convs if a.idx < c.idx < a.end}
            if inner & others:
                return None
            if {c.idx for c in se} <= inner:
                return a.path
        return None


# -- public API ------------------------------------------------------------------------------

def _first_conv(model: nn.Module) -> nn.Conv2d | None:
    return next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)


def _run(model: nn.Module, example_input: torch.Tensor | None) -> list[_Call]:
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
        In execution order, with their capture points.

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
            dtype = next((c.module.weight.dtype for c in calls
                          if isinstance(c.module, nn.Conv2d)), torch.float32)
            tol = min(200 * float(torch.finfo(dtype).eps), 0.05)
            blocks = _Matcher(calls, tol).blocks()
    finally:
        for m, flag in flags.items():
            m.training = flag
    if not blocks:
        n_conv = sum(isinstance(c.module, nn.Conv2d) for c in calls)
        n_dw = sum(_is_depthwise(c.module) for c in calls)
        raise ValueError(
            f"No inverted-residual block found in {type(model).__name__}: its forward pass ran "
            f"{n_conv} Conv2d calls, {n_dw} of them depthwise, and no depthwise conv was followed "
            "by a 1x1 projection conv."
        )
    return blocks


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
