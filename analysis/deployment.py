"""Deployment claims of the notes, measured: BN folding, operator fusion, activation memory.

The notes (shared/background, section 9) claim that ``Conv1x1 + BN + Linear`` fuse into one
kernel and that the expansion tensor "can be allocated temporarily and freed". This module
measures both on any ``nn.Module``:

- :func:`fold_batchnorm` folds every eval-mode BatchNorm into the conv that feeds it (with
  :func:`probes.blocks.fold_bn`: ``W' = W * s``, ``b' = beta + s (b - mu)``,
  ``s = gamma / sqrt(var + eps)``) and :func:`fold_error` measures how exact that is.
- :func:`fusion_patterns` lists the conv -> BN -> activation patterns of a network and asks
  PyTorch's own eager-mode fuser (``torch.ao.quantization.fuse_modules``) which of them it
  fuses into one module.
- :func:`block_memory` gives each block's tensor sizes (input, expansion, depthwise, output)
  and :func:`peak_activation_bytes` the peak of live activation memory of one inference,
  measured from the CPU allocator's records in ``torch.profiler`` (``profile_memory=True``:
  every allocation and free with its size, in time order).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

__all__ = [
    "BLOCK_MEMORY_COLUMNS",
    "FUSION_COLUMNS",
    "block_memory",
    "fold_batchnorm",
    "fold_error",
    "fusion_patterns",
    "peak_activation_bytes",
]

#: Columns of :func:`fusion_patterns`.
FUSION_COLUMNS = ("pattern", "count", "torch_fuses", "fused_into")
#: Columns of :func:`block_memory`.
BLOCK_MEMORY_COLUMNS = ("block", "input_bytes", "expand_bytes", "depthwise_bytes", "output_bytes",
                        "hidden_over_io")


def _is_plain_bn(m: nn.Module) -> bool:
    # Subclasses such as timm's BatchNormAct2d apply an activation inside: folding them into the
    # conv and dropping the module would drop that activation too.
    return type(m) in (nn.BatchNorm2d, nn.SyncBatchNorm)


def _leaf_calls(model: nn.Module, x: torch.Tensor) -> list[tuple[str, nn.Module, Any, Any]]:
    """(path, module, input tensor, output tensor) of every leaf module call, in execution order."""
    calls: list[tuple[str, nn.Module, Any, Any]] = []
    handles = []
    for path, m in model.named_modules():
        if next(m.children(), None) is not None:
            continue
        handles.append(m.register_forward_hook(
            lambda mod, args, out, p=path: calls.append((p, mod, args[0] if args else None, out))))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return calls


def _conv_bn_pairs(model: nn.Module, x: torch.Tensor) -> list[tuple[str, str, int]]:
    """(conv path, bn path, index of the BN call) where a plain BN reads exactly the conv's output."""
    calls = _leaf_calls(model, x)
    pairs = []
    for i in range(1, len(calls)):
        path, mod, inp, _ = calls[i]
        prev_path, prev, _, prev_out = calls[i - 1]
        if _is_plain_bn(mod) and isinstance(prev, nn.Conv2d) and inp is prev_out:
            pairs.append((prev_path, path, i))
    return pairs


def fold_batchnorm(model: nn.Module, example_input: torch.Tensor) -> tuple[nn.Module, list[tuple[str, str]]]:
    """A copy of ``model`` with every BatchNorm folded into the conv that feeds it.

    A BN is folded when it is a plain ``nn.BatchNorm2d`` whose input, in one eval-mode forward
    pass of ``example_input``, is the very tensor produced by the conv called just before it.
    The conv gets ``W' = W * s[:, None]`` and bias ``b' = beta + s * (b - running_mean)``
    (:func:`probes.blocks.fold_bn`, computed in float64, stored in the conv's dtype) and the BN
    becomes ``nn.Identity``. ``model`` itself is not changed.

    Parameters
    ----------
    model : nn.Module
        In eval mode (running statistics are what gets folded).
    example_input : Tensor of shape (batch, channels, height, width)

    Returns
    -------
    folded : nn.Module
        The copy, in eval mode.
    pairs : list of (conv path, bn path)
        What was folded.

    Raises
    ------
    ValueError
        ``model`` is in training mode (batch statistics cannot be folded).
    """
    from probes.blocks import fold_bn

    if model.training:
        raise ValueError("The 'model' parameter of fold_batchnorm must be in eval mode (call "
                         ".eval()): in training mode BatchNorm uses batch statistics, which no "
                         "fixed affine map reproduces.")
    pairs = _conv_bn_pairs(model, example_input)
    folded = copy.deepcopy(model).eval()
    modules = dict(folded.named_modules())
    for conv_path, bn_path, _ in pairs:
        conv, bn = modules[conv_path], modules[bn_path]
        w, b = fold_bn(conv, bn)
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy(w.reshape(conv.weight.shape)).to(conv.weight.dtype))
            conv.bias = nn.Parameter(torch.from_numpy(b).to(conv.weight.dtype))
        parent_path, _, name = bn_path.rpartition(".")
        setattr(modules[parent_path] if parent_path else folded, name, nn.Identity())
    return folded, [(c, b) for c, b, _ in pairs]


@torch.no_grad()
def fold_error(model: nn.Module, folded: nn.Module, batches: Iterable[torch.Tensor]) -> dict[str, float]:
    """Largest difference between the outputs of ``model`` and its BN-folded copy.

    Parameters
    ----------
    model, folded : nn.Module
        Both in eval mode (see :func:`fold_batchnorm`).
    batches : iterable of Tensor of shape (batch, channels, height, width)
        E.g. the whole test set in batches, already normalised.

    Returns
    -------
    dict
        ``max_abs_error`` = max |f(x) - f_folded(x)| over every output entry of every image;
        ``max_abs_output`` = max |f(x)| (the scale the error is relative to);
        ``relative_error`` = their ratio; ``n_images``.
    """
    err, scale, n = 0.0, 0.0, 0
    for x in batches:
        a, b = model(x), folded(x)
        err = max(err, float((a - b).abs().max()))
        scale = max(scale, float(a.abs().max()))
        n += int(x.shape[0])
    if n == 0:
        raise ValueError("The 'batches' parameter of fold_error must yield at least one batch. Got none.")
    return {"max_abs_error": err, "max_abs_output": scale,
            "relative_error": err / scale if scale > 0 else float("nan"), "n_images": n}


def _act_name(m: nn.Module) -> str:
    return "linear" if isinstance(m, nn.Identity) else type(m).__name__


def _torch_fuses(conv: nn.Conv2d, bn: nn.Module, act: nn.Module | None) -> tuple[bool, str]:
    """Ask torch.ao's eager fuser to fuse conv, bn (and act) of fresh copies; what did it produce?"""
    from torch.ao.quantization import fuse_modules

    parts = [copy.deepcopy(conv), copy.deepcopy(bn)] + ([copy.deepcopy(act)] if act is not None else [])
    seq = nn.Sequential(*parts).eval()
    names = [str(i) for i in range(len(parts))]
    try:
        fused = fuse_modules(seq, names)
    except (AssertionError, NotImplementedError, KeyError, RuntimeError):
        fused = fuse_modules(nn.Sequential(*parts).eval(), names[:2])
        return False, f"{type(fused[0]).__name__} + {type(fused[2]).__name__} (activation not fused)"
    return True, type(fused[0]).__name__


def fusion_patterns(model: nn.Module, example_input: torch.Tensor) -> pd.DataFrame:
    """Conv -> BN -> activation patterns of ``model`` and whether PyTorch fuses each one.

    Each conv+BN pair found as in :func:`fold_batchnorm` is extended by the leaf module called
    right after the BN when that module reads the BN's output and is an activation (no
    parameters); otherwise the pattern is ``conv+BN`` followed by nothing (a linear output).
    For each distinct pattern, fresh copies of its modules are passed to
    ``torch.ao.quantization.fuse_modules`` (PyTorch's eager-mode fuser, the one used before
    quantisation); ``torch_fuses`` says whether the whole pattern became one module.

    Returns
    -------
    DataFrame with columns :data:`FUSION_COLUMNS`
        ``pattern`` such as ``"Conv2d(1x1)+BN+ReLU6"``, ``"Conv2d(1x1)+BN+linear"``; ``count``
        in the network; ``fused_into`` the module type(s) the fuser produced.
    """
    calls = _leaf_calls(model, example_input)
    found: dict[str, list[Any]] = {}
    for _, _, i in _conv_bn_pairs(model, example_input):
        conv, bn, bn_out = calls[i - 1][1], calls[i][1], calls[i][3]
        act = None
        if i + 1 < len(calls):
            _, nxt, nxt_in, _ = calls[i + 1]
            if nxt_in is bn_out and not any(True for _ in nxt.parameters()):
                act = nxt
        k = conv.kernel_size
        kind = "dw " if conv.groups == conv.in_channels and conv.groups > 1 else ""
        key = f"Conv2d({kind}{k[0]}x{k[1]})+BN+{_act_name(act) if act is not None else 'linear'}"
        if key in found:
            found[key][1] += 1
        else:
            found[key] = [(conv, bn, None if act is None or isinstance(act, nn.Identity) else act), 1]
    rows = []
    for key, ((conv, bn, act), count) in found.items():
        ok, into = _torch_fuses(conv, bn, act)
        rows.append({"pattern": key, "count": count, "torch_fuses": ok, "fused_into": into})
    return pd.DataFrame(rows, columns=list(FUSION_COLUMNS))


def _size_hook(sizes: dict[str, int], key: str, call_index: int, is_input: bool) -> Any:
    calls = [0]

    def hook(mod: nn.Module, args: Any, out: Any = None) -> None:
        # a module reused within one pass (call_index > 0) holds the point at that call only
        if calls[0] == call_index:
            t = args[0] if is_input else out
            sizes[key] = t.numel() * t.element_size()
        calls[0] += 1
    return hook


@torch.no_grad()
def block_memory(model: nn.Module, example_input: torch.Tensor) -> pd.DataFrame:
    """Bytes of each inverted-residual block's tensors for one forward pass of ``example_input``.

    Sizes are ``numel * element_size`` of the tensors at the capture points ``blocks.i.input``,
    ``.expand`` (0 without expansion), ``.depthwise`` and ``.output`` (blocks found by
    :func:`probes.blocks.find_blocks`), so they scale with the batch and input size of
    ``example_input``. ``hidden_over_io = (expand + depthwise) / (input + output)``.

    Returns
    -------
    DataFrame with columns :data:`BLOCK_MEMORY_COLUMNS`, one row per block.
    """
    from probes.blocks import find_blocks
    from probes.points import point_name

    blocks = find_blocks(model, example_input)
    modules = dict(model.named_modules())
    sizes: dict[str, int] = {}
    handles = []
    for b in blocks:
        for suffix in ("input", "expand", "depthwise", "output"):
            try:
                p = b.point(suffix)
            except KeyError:
                continue
            src = next(q for q in b.points if q.name == p.alias_of) if p.alias_of else p
            m = modules[src.module_path]
            if src.hook == "input":
                handles.append(m.register_forward_pre_hook(_size_hook(sizes, p.name, src.call_index, True)))
            else:
                handles.append(m.register_forward_hook(_size_hook(sizes, p.name, src.call_index, False)))
    try:
        model(example_input)
    finally:
        for h in handles:
            h.remove()
    rows = []
    for b in blocks:
        get = lambda s: int(sizes.get(point_name(b.index, s), 0))  # noqa: E731
        io = get("input") + get("output")
        rows.append({"block": b.index, "input_bytes": get("input"), "expand_bytes": get("expand"),
                     "depthwise_bytes": get("depthwise"), "output_bytes": get("output"),
                     "hidden_over_io": (get("expand") + get("depthwise")) / io if io else float("nan")})
    return pd.DataFrame(rows, columns=list(BLOCK_MEMORY_COLUMNS))


@torch.no_grad()
def peak_activation_bytes(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    """Peak of live activation memory during one CPU inference, from the allocator's records.

    Runs ``model(x)`` under ``torch.profiler.profile(profile_memory=True)``, which records
    every CPU allocation (+bytes) and free (-bytes) with a timestamp. Sorted by time, the
    running sum is the memory allocated by this forward pass that is still live; its maximum is
    the peak. Parameters and ``x`` exist before the pass and are not counted; temporaries of the
    kernels (e.g. im2col buffers) are, as they take real memory.

    Returns
    -------
    dict
        ``peak_bytes``; ``allocated_bytes`` = sum of all allocations (the memory an inference
        would need if nothing were ever freed); ``n_allocations``.
    """
    from torch.profiler import ProfilerActivity, profile

    if x.device.type != "cpu":
        raise ValueError(f"The 'x' parameter of peak_activation_bytes must be on the CPU. Got {x.device} instead.")
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = model(x)
        del out
    events = [(e.start_ns(), int(e.nbytes())) for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU]
    if not events:
        raise RuntimeError("torch.profiler recorded no CPU memory events; cannot measure the peak.")
    deltas = np.array([d for _, d in sorted(events)], dtype=np.int64)
    live = np.cumsum(deltas)
    return {"peak_bytes": int(max(live.max(), 0)), "allocated_bytes": int(deltas[deltas > 0].sum()),
            "n_allocations": int((deltas > 0).sum())}
