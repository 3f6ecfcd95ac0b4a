"""Capture activations at the capture points of a network into streaming sinks.

Two entry points:

- :func:`capture`, a context manager that registers forward hooks on the selected
  :class:`~probes.blocks.CapturePoint` s and removes them in ``finally`` (also after an
  exception). Every forward pass of the model inside the ``with`` feeds the sinks::

      with capture(model, "blocks.*.project*", example_input=x[:1]) as cap:
          model(x)
      stats = cap.stats()           # {name: PointStats}

- :func:`probe`, which runs a whole dataset through the model (eval mode, ``torch.no_grad()``,
  on ``cuda`` when available, with a progress bar) and returns a :class:`ProbeResult` that
  merges with other shards and saves to one ``.npz`` file.

Sample unit (DESIGN.md "Sample unit")
-------------------------------------
``sample_unit="position"`` (default): every spatial position of a [B, C, H, W] tensor is a
sample, its channel vector the point ([B, C, H, W] -> [B*H*W, C]); ids are (image, y, x).
``sample_unit="image"``: one point per image, the global average over positions; ids are
(image, 0, 0). The image index is global: the first image of a run is ``image_offset``.

Hooks (one per distinct tensor)
-------------------------------
A hook is registered per distinct *tensor*, not per point, and gathers that tensor's rows once
per forward pass for every point that reads it: aliases (a linear ``project`` is its
``project.pre``), block i's ``output`` that is block i+1's ``input`` (the same tensor at the
same in-place version in the example pass), and a post-activation point whose activation is an
exact clamp (ReLU, ReLU6): its rows are the activation applied to the rows gathered from the
``.pre`` tensor, bit for bit, which is checked on the example input (otherwise the activation
gets its own hook). ``Capture.n_hooks`` says how many hooks a capture uses. The rows are taken
inside the hook, before an in-place activation can overwrite the tensor, and are always copies
(a channels-last tensor would otherwise reshape to a view of the live tensor); statistics stay
on the tensor's device until :meth:`Capture.stats`.

What each point accumulates:

- **Moments** (float64). ``moments="exact"`` puts every sample into the moments.
  ``moments="sampled"`` (default) keeps each position independently with probability
  ``rate = min(1, moment_positions / (H * W))`` (``moment_positions`` per image on average),
  decided by a hash of (seed, image, y, x) that does not depend on the batch split. Every
  position has the same inclusion probability, so the sampled mean and covariance are unbiased
  estimates of those over all positions (the covariance of an i.i.d. sample, ddof=1); the
  rate of each point is recorded in ``config["moment_rates"]``. The centred Gram matrix of each
  buffer of rows is computed in float64 (float32 would put a noise floor near 1e-7 of the
  largest eigenvalue, close to the default rank tolerance of 1e-6): on the CPU as a BLAS
  symmetric rank-k update (dsyrk, half the multiply-adds of a matrix product) when torch runs
  single-threaded, otherwise as torch's matrix product in torch's thread pool. One sampled
  position costs C^2 / 2 multiply-adds per point; summed over the points of the digits networks
  that is about a fifth of a whole forward pass per sampled position per image, which is why exact mode costs many
  forward passes (``benchmarks/capture.py``).
- **Activity** (points whose activation is relu / relu6 / hswish): counted on the rows drawn
  for the point's tensor, which are a hash sample of at least ``activity_positions`` positions
  per image (the moments take the nested subset below their own rate; the activity all rows
  drawn, at the rate recorded in ``config["activity_rates"]``), or every position in exact
  mode. The ``.pre`` point of a stage shares the counts of its post-activation point (the same
  units are in the flat region).
- **Reservoir**: bottom-K sample by hash priority (:class:`~probes.sinks.Reservoir`). All
  points of a block draw positions in the block's *output* frame (image, y_out, x_out) with
  the same hash; points before the block's stride (input, expand.pre, expand: their spatial
  size is s times the output's) read the position (s*y_out, s*x_out). So the reservoirs of all
  points of a block hold the same samples in the same order and can be paired row by row
  (e.g. for a decoder from a point back to ``input``). Ids are stored in each point's own frame;
  ``Reservoir.stride`` is the step to the block frame and ``Reservoir.block_ids()`` gives the
  shared ids (see :meth:`ProbeResult.paired`). Blocks whose outputs have the same size keep the
  same ids, so their bookkeeping is shared.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.linalg import blas
from threadpoolctl import threadpool_limits
from torch import nn

from probes._io import atomic_path
from probes.blocks import CapturePoint, capture_points
from probes.datasets import ImageDataset
from probes.preprocess import InputSpec, prepare
from probes.sampling import from_keys, grid_keys, rate_key
from probes.sinks import (
    ABS_HIST_BINS,
    ACTIVITY_KINDS,
    Activity,
    Extent,
    Moments,
    Reservoir,
    abs_hist_bins,
    active_mask,
    chan_update,
)

__all__ = [
    "DEFAULT_ACTIVITY_POSITIONS",
    "DEFAULT_MOMENT_POSITIONS",
    "DEFAULT_RESERVOIR_SIZE",
    "MOMENT_MODES",
    "SAMPLE_UNITS",
    "SINKS",
    "Capture",
    "PointStats",
    "ProbeResult",
    "capture",
    "probe",
    "select_points",
]

SAMPLE_UNITS: tuple[str, ...] = ("position", "image")
MOMENT_MODES: tuple[str, ...] = ("sampled", "exact")
SINKS: tuple[str, ...] = ("moments", "activity", "reservoir", "extent")
#: Reservoir capacity K (points per capture point).
DEFAULT_RESERVOIR_SIZE = 1024
#: Expected number of positions per image that enter the moments in ``moments="sampled"``.
DEFAULT_MOMENT_POSITIONS = 1
#: Expected number of positions per image that enter the activity counts in ``moments="sampled"``.
DEFAULT_ACTIVITY_POSITIONS = 2

_MOMENT_SALT = 0x40E7
_FORMAT = "bottleneck-probe/probe-result"
_FORMAT_VERSION = 1
#: Settings that must agree for two results to merge.
_MERGE_KEYS = ("sample_unit", "moments", "moment_positions", "activity_positions", "reservoir_size",
               "seed", "sinks")
PointSpec = str | Sequence[str] | Callable[[CapturePoint], bool] | None


@dataclasses.dataclass
class PointStats:
    """The sinks of one capture point; a sink that was not requested (or, for ``activity``,
    is not defined at a linear/leaky point) is None.

    ``extent`` (:class:`~probes.sinks.Extent`) is taken over every captured value, also when
    the moments and activity are sampled: :attr:`ch_min` / :attr:`ch_max` are the true ranges
    and ``extent.active`` the activity counts at every position.
    """

    moments: Moments | None
    activity: Activity | None
    reservoir: Reservoir | None
    extent: Extent | None = None

    @property
    def ch_min(self) -> np.ndarray | None:
        """Per-channel minimum over every captured value, float64 of shape (C,)."""
        return None if self.extent is None else self.extent.ch_min

    @property
    def ch_max(self) -> np.ndarray | None:
        """Per-channel maximum over every captured value, float64 of shape (C,)."""
        return None if self.extent is None else self.extent.ch_max

    def merge(self, other: "PointStats") -> "PointStats":
        def m(a: Any, b: Any, field: str) -> Any:
            if (a is None) != (b is None):
                raise ValueError(f"Cannot merge point stats where only one side has '{field}'.")
            return None if a is None else a.merge(b)

        return PointStats(**{s: m(getattr(self, s), getattr(other, s), s) for s in SINKS})


def _check_choice(value: Any, name: str, func: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(
            f"The '{name}' parameter of {func} must be one of {list(choices)}. Got {value!r} instead."
        )


def select_points(points: Sequence[CapturePoint], spec: PointSpec = None) -> list[CapturePoint]:
    """The points of ``points`` (in their order) that ``spec`` selects.

    Parameters
    ----------
    points : sequence of CapturePoint
    spec : None, str, sequence of str or callable
        None: all points. A string: an exact name or a glob (``"blocks.*.project*"``,
        ``fnmatch`` rules, case-sensitive). A sequence: the union of its names/globs. A callable:
        ``spec(point) -> bool``.

    Raises ValueError when a name or glob matches nothing, or when nothing is selected.
    """
    if spec is None:
        chosen = list(points)
    elif callable(spec):
        chosen = [p for p in points if spec(p)]
    else:
        patterns = [spec] if isinstance(spec, str) else list(spec)
        if not patterns or not all(isinstance(s, str) for s in patterns):
            raise ValueError(
                "The 'points' parameter must be None, a name or glob, a list of those, or a "
                f"predicate. Got {spec!r} instead."
            )
        names = [p.name for p in points]
        for pat in patterns:
            if not fnmatch.filter(names, pat):
                raise ValueError(
                    f"The 'points' pattern {pat!r} matches no capture point. Available points "
                    f"look like {names[:4] + (['...'] if len(names) > 4 else [])} ({len(names)} in all)."
                )
        chosen = [p for p in points if any(fnmatch.fnmatchcase(p.name, pat) for pat in patterns)]
    if not chosen:
        raise ValueError(f"The 'points' parameter {spec!r} selects no capture point.")
    return chosen


class _Batch:
    """Per-forward-pass state shared by the hooks: image offset, batch size, cached plans."""

    def __init__(self, offset: int, scratch: "_Scratch") -> None:
        self.offset, self.scratch = offset, scratch
        self.size: int | None = None
        self.cache: dict[Any, Any] = {}
        self.calls: dict[int, int] = {}

    def cached(self, key: Any, make: Callable[[], Any]) -> Any:
        if key not in self.cache:
            self.cache[key] = make()
        return self.cache[key]

    def keys(self, seed: int, hw: tuple[int, int], salt: int, device: torch.device) -> torch.Tensor:
        """Hash keys of every position of this batch in frame ``hw`` (see :mod:`probes.sampling`)."""
        return self.cached(("keys", hw, salt, device),
                           lambda: grid_keys(seed, self.offset, self.size, hw, salt, device))


class _Group:
    """Reservoir bookkeeping shared by the points of one block frame (one frame of sample ids).

    Priorities and the choice of candidates depend only on ids, so they are computed once per
    batch for the whole frame, on the activations' device; every member point gathers the same
    positions from its own tensor, so all members hold rows aligned with ``ids``. Rows arrive in
    increasing id order, so a stable sort by priority orders ties (hash collisions) by id, as
    :meth:`probes.sinks.Reservoir.offer` does.
    """

    def __init__(self, k: int, seed: int, out_hw: tuple[int, int], cap: int | None = None) -> None:
        self.k, self.seed, self.out_hw, self.cap = k, seed, out_hw, cap
        self.ids: torch.Tensor | None = None        # (n, 3) block-frame ids of the rows held
        self.priority: torch.Tensor | None = None   # (n,) int64 keys
        self.held = 0
        self.n_seen = 0
        self.members: list[_ReservoirRows] = []

    def threshold(self) -> torch.Tensor | int | None:
        """Keys at or above it cannot enter: the running k-th smallest, or the cap."""
        if self.held < self.k:
            return self.cap
        kth = torch.kthvalue(self.priority, self.k).values
        return kth if self.cap is None else kth.clamp(max=self.cap)

    def compact(self) -> None:
        """Keep only the k smallest priorities, in order, in the group and in every member."""
        if self.priority is None:
            return
        order = torch.sort(self.priority, stable=True).indices[: self.k]
        for m in self.members:
            m.compact_rows(order, expected=self.held)
        self.ids, self.priority = self.ids[order], self.priority[order]
        self.held = int(order.shape[0])

    def candidates(self, batch: _Batch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(b, y_out * W_out + x_out) of this batch's candidates (computed once per batch):
        the positions whose priority is below :meth:`threshold`, at most k of them."""
        return batch.cached(("group", id(self)), lambda: self._candidates(batch, device))

    def _candidates(self, batch: _Batch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if self.held > 2 * self.k:
            self.compact()
        prio = batch.keys(self.seed, self.out_hw, Reservoir.SALT, device)
        self.n_seen += prio.shape[0]
        thr = self.threshold()
        if thr is None:
            sel = torch.arange(prio.shape[0], device=device)
        else:
            sel = torch.nonzero(prio < thr).squeeze(1)
        if sel.shape[0] > self.k:
            sel = sel[torch.sort(prio[sel], stable=True).indices[: self.k]]
        n_out = self.out_hw[0] * self.out_hw[1]
        b, pos = sel // n_out, sel % n_out
        ids = torch.stack([b + batch.offset, pos // self.out_hw[1], pos % self.out_hw[1]], dim=1)
        if self.ids is None:
            self.ids, self.priority = ids, prio[sel]
        else:
            self.ids = torch.cat([self.ids, ids])
            self.priority = torch.cat([self.priority, prio[sel]])
        self.held += int(sel.shape[0])
        return b, pos


#: Gathered rows are buffered per value and reduced once ``max(_FLUSH_ROWS, _FLUSH_ELEMENTS / C)``
#: rows are held, so the fixed cost of the reduction ops is paid every few batches instead of at
#: every hook call, and the float64 rank-k updates are long enough to run near BLAS speed.
_FLUSH_ELEMENTS = 1 << 16
_FLUSH_ROWS = 512

#: Activations whose output needs no hook of its own: applied to the rows gathered from the
#: ``.pre`` tensor they give the rows of the post-activation tensor bit for bit (they are
#: clamps, no rounding). Checked on the example input before it is relied on.
_DERIVABLE: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"relu": F.relu, "relu6": F.relu6}


def _syrk(r: np.ndarray, m2: np.ndarray) -> None:
    """``m2 += r^T r`` on the upper triangle of the Fortran-ordered ``m2`` (BLAS dsyrk: half the
    multiply-adds of a general matrix product)."""
    blas.dsyrk(1.0, r.T, beta=1.0, c=m2, trans=0, lower=0, overwrite_c=1)


class _Sampled:
    """Moments, activity counts and the |x| histogram of one tensor value, from its sampled
    rows, on its device.

    With ``syrk`` (set when torch runs on one CPU thread), the centred Gram matrix of a buffer
    of CPU rows is a BLAS dsyrk update, half the multiply-adds of a matrix product,
    single-threaded; otherwise torch's matrix product, in torch's own thread pool (a second
    BLAS thread pool beside torch's OpenMP threads makes both spin against each other: over 10x
    a forward pass instead of 3x on two cores). Either way the buffer's (count, mean, Gram) is
    folded in with :func:`probes.sinks.chan_update`.
    """

    def __init__(self, channels: int, *, moments: bool, activity_kind: str | None, pre: bool,
                 syrk: bool, hist: bool) -> None:
        self.channels, self.want_moments, self.syrk, self.want_hist = channels, moments, syrk, hist
        self.activity_kind, self.pre = activity_kind, pre
        self.chunks: list[torch.Tensor] = []
        self.masks: list[torch.Tensor] = []
        self.held = 0
        self.flush_rows = max(_FLUSH_ROWS, _FLUSH_ELEMENTS // channels)
        self.count = 0
        self.mean: Any = None
        self.m2: Any = None
        self.upper = False
        self.n_points = 0
        self.active: torch.Tensor | None = None
        self.saturated: torch.Tensor | None = None
        self.hist: torch.Tensor | None = None
        self.abs_hist: torch.Tensor | None = None
        self.hist_points = 0

    def push(self, rows: torch.Tensor, mask: torch.Tensor | None) -> None:
        """Buffer ``rows`` and their moment mask."""
        self.chunks.append(rows)
        if mask is not None:
            self.masks.append(mask)
        self.held += rows.shape[0]
        if self.held >= self.flush_rows:
            self.flush()

    def flush(self) -> None:
        """Reduce the buffered rows into the moments, activity counts and histogram."""
        if not self.chunks:
            return
        sample = self.chunks[0] if len(self.chunks) == 1 else torch.cat(self.chunks)
        if self.want_moments:
            if self.masks:
                sample_m = sample[self.masks[0] if len(self.masks) == 1 else torch.cat(self.masks)]
            else:
                sample_m = sample
            self._add_moments(sample_m)
        if self.activity_kind is not None:
            self._add_activity(sample)
        if self.want_hist:
            h = torch.bincount(abs_hist_bins(sample).reshape(-1), minlength=ABS_HIST_BINS)
            self.abs_hist = h if self.abs_hist is None else self.abs_hist.add_(h)
            self.hist_points += sample.shape[0]
        self.chunks, self.masks, self.held = [], [], 0

    def _add_moments(self, rows: torch.Tensor) -> None:
        nb = rows.shape[0]
        if nb == 0:
            return
        if self.syrk and rows.device.type == "cpu":
            # A copy (the rows may be shared with another point's buffer), in float64.
            r = rows.to(torch.float64, copy=True).numpy()
            mb = r.mean(0)
            r -= mb
            m2b = np.zeros((self.channels, self.channels), order="F")
            _syrk(r, m2b)
            # Only the upper triangle is filled: the lower one is rebuilt once, in moments().
            self.upper = True
        else:
            r = rows.to(torch.float64)
            mb = r.mean(0)
            r = r - mb
            m2b = r.T @ r
        self.count, self.mean, self.m2 = chan_update(self.count, self.mean, self.m2, nb, mb, m2b)

    def _add_activity(self, rows: torch.Tensor) -> None:
        act = active_mask(rows, self.activity_kind, pre=self.pre)
        per_channel = act.sum(0)
        hist = torch.bincount(act.sum(1), minlength=self.channels + 1)
        if self.active is None:
            self.active, self.hist = per_channel, hist
            self.saturated = torch.zeros_like(per_channel)
        else:
            self.active += per_channel
            self.hist += hist
        if self.activity_kind == "relu6":
            self.saturated += (rows >= 6).sum(0)
        self.n_points += rows.shape[0]

    def moments(self) -> Moments:
        out = Moments(self.channels)
        if self.count:
            m2 = _host(self.m2)
            if self.upper:
                m2 = np.triu(m2)
                m2 += np.triu(m2, 1).T
            # Arrays of this accumulator's own: handed over without a copy.
            out.count, out.mean, out.m2 = self.count, np.asarray(_host(self.mean), np.float64), m2
        return out

    def activity(self, kind: str, pre: bool) -> Activity:
        out = Activity(self.channels, kind, pre=pre)
        if self.n_points:
            out.add_counts(self.n_points, _host(self.active), _host(self.saturated), _host(self.hist))
        return out


def _host(a: Any) -> np.ndarray:
    """A device tensor (or a numpy array already on the host) as a numpy array."""
    return a.cpu().numpy() if isinstance(a, torch.Tensor) else a


class _Full:
    """Per-channel min, max and active counts of one tensor value over every position.

    Fed per forward pass with the reductions of the whole tensor (:meth:`_Slot.take`), kept on
    the tensor's device. A post-activation point read off its ``.pre`` tensor applies the
    activation (monotone) to the ``.pre`` minimum and maximum, and its active counts are those
    of the ``.pre`` values (for relu and relu6 the active region is the same on both sides).
    """

    def __init__(self, channels: int, kind: str | None, pre: bool,
                 fn: Callable[[torch.Tensor], torch.Tensor] | None) -> None:
        self.channels, self.kind, self.pre, self.fn = channels, kind, pre, fn
        self.n_points = 0
        self.ch_min: torch.Tensor | None = None
        self.ch_max: torch.Tensor | None = None
        self.active: torch.Tensor | None = None
        self.saturated: torch.Tensor | None = None

    def add(self, n: int, ch_min: torch.Tensor, ch_max: torch.Tensor,
            counts: tuple[torch.Tensor, torch.Tensor] | None) -> None:
        if self.fn is not None:
            ch_min, ch_max = self.fn(ch_min), self.fn(ch_max)
        if self.ch_min is None:
            self.ch_min, self.ch_max = ch_min.double(), ch_max.double()
            if counts is not None:
                self.active, self.saturated = counts[0].clone(), counts[1].clone()
        else:
            torch.minimum(self.ch_min, ch_min, out=self.ch_min)
            torch.maximum(self.ch_max, ch_max, out=self.ch_max)
            if counts is not None:
                self.active += counts[0]
                self.saturated += counts[1]
        self.n_points += n

    def extent(self, sampled: _Sampled | None) -> Extent:
        out = Extent(self.channels, self.kind, pre=self.pre)
        if self.n_points:
            out.add_counts(self.n_points, _host(self.ch_min), _host(self.ch_max),
                           None if self.active is None else _host(self.active),
                           None if self.saturated is None else _host(self.saturated))
        if sampled is not None and sampled.abs_hist is not None:
            out.add_hist(_host(sampled.abs_hist), sampled.hist_points)
        return out


class _ReservoirRows:
    """Reservoir rows of one capture point, aligned row by row with its block group's ids."""

    def __init__(self, name: str, group: _Group, step: int) -> None:
        self.name, self.group, self.step = name, group, step
        self.pending: list[torch.Tensor] = []
        group.members.append(self)

    def compact_rows(self, order: torch.Tensor, *, expected: int) -> None:
        """Keep the reservoir rows at ``order``, after checking they match the group's ids."""
        n = sum(r.shape[0] for r in self.pending)
        if n != expected:
            raise RuntimeError(
                f"Capture point {self.name} missed a forward pass of its block; its reservoir "
                "can no longer be paired with the other points of the block."
            )
        if n:
            rows = self.pending[0] if len(self.pending) == 1 else torch.cat(self.pending)
            self.pending = [rows[order.to(rows.device)]]

    def reservoir(self, channels: int) -> Reservoir:
        g = self.group
        res = Reservoir(channels, g.k, seed=g.seed, stride=self.step)
        res.n_seen = g.n_seen
        if g.held:
            ids = g.ids.cpu().numpy().astype(np.int64)
            ids[:, 1:] *= self.step
            res.values = self.pending[0].cpu().numpy().astype(np.float32, copy=False)
            res.ids, res.priority = ids, from_keys(g.priority)
        return res


@dataclasses.dataclass
class _Feed:
    """What one slot feeds through one transform (None: the tensor itself)."""

    fn: Callable[[torch.Tensor], torch.Tensor] | None
    sampled: list[_Sampled] = dataclasses.field(default_factory=list)
    full: list[_Full] = dataclasses.field(default_factory=list)
    reservoirs: list[tuple[_ReservoirRows, int]] = dataclasses.field(default_factory=list)


class _Scratch:
    """One float32 buffer per device, reused by every hook, for the 0/1 masks of the activity
    counts: a fresh mask per tensor would be a new allocation the size of the tensor, whose
    page faults cost more than the comparison itself."""

    def __init__(self) -> None:
        self.buffers: dict[torch.device, torch.Tensor] = {}

    def get(self, shape: torch.Size, device: torch.device) -> torch.Tensor:
        n = shape.numel()
        buf = self.buffers.get(device)
        if buf is None or buf.numel() < n:
            del buf   # freed before the larger one is allocated
            self.buffers.pop(device, None)
            buf = self.buffers[device] = torch.empty(n, dtype=torch.float32, device=device)
        return buf[:n].view(shape)


def _count(flat: torch.Tensor, op: Callable[..., torch.Tensor], value: float, scratch: _Scratch
           ) -> torch.Tensor:
    """Per-channel number of entries of ``flat`` (B, C, L) with ``op(x, value)``, int64 (C,).

    The comparison writes 0/1 into a float32 scratch buffer and the float sums run along the
    contiguous last axis (exact: fewer than 2^24 ones per row), then over the batch in int64.
    """
    buf = op(flat, value, out=scratch.get(flat.shape, flat.device))
    return buf.sum(dim=2).to(torch.int64).sum(0)


def _active_counts(flat: torch.Tensor, kind: str, pre: bool, scratch: _Scratch
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(active, saturated) per-channel counts over every entry of ``flat`` (B, C, L).

    The rule of :func:`probes.sinks.active_mask`, as counts of comparisons: relu ``x > 0``;
    relu6 ``0 < x < 6`` = #(x > 0) - #(x >= 6), saturated #(x >= 6); hswish before the
    activation ``x > -3``, after it ``y != 0`` = #(y > 0) + #(y < 0).
    """
    if kind == "relu6":
        sat = _count(flat, torch.ge, 6.0, scratch)
        return _count(flat, torch.gt, 0.0, scratch) - sat, sat
    if kind == "relu":
        act = _count(flat, torch.gt, 0.0, scratch)
    elif pre:
        act = _count(flat, torch.gt, -3.0, scratch)
    else:
        act = _count(flat, torch.gt, 0.0, scratch) + _count(flat, torch.lt, 0.0, scratch)
    return act, torch.zeros_like(act)


class _Slot:
    """One hooked tensor: one hook and one gather per forward pass, for every point that reads it.

    The points fed are those whose tensor is this very tensor (the output of block i is the
    input of block i+1) and, through an exact activation (:data:`_DERIVABLE`), the
    post-activation point of a ``.pre`` tensor. Each forward pass gathers, in one indexing op,
    the rows of this batch's *plan*: first the sampled positions (moments and activity), then
    the reservoir candidates of each block frame that a fed point belongs to. Plans depend only
    on the frame, the rates and the groups, so slots that agree on those share them.
    """

    def __init__(self, point: CapturePoint, *, channels: int, in_hw: tuple[int, int],
                 hw: tuple[int, int], seed: int, image: bool) -> None:
        self.point, self.channels, self.in_hw, self.hw = point, channels, in_hw, hw
        self.seed, self.image = seed, image
        self.calls = 1   # calls of the hooked module per forward pass
        self.sample_rate = self.moment_rate = 0.0
        self.feeds: dict[str | None, _Feed] = {}
        self.frames: list[tuple[_Group, int]] = []   # (group, step) of each reservoir span
        self._key: tuple[Any, ...] | None = None

    def feed(self, kind: str | None) -> _Feed:
        if kind not in self.feeds:
            self.feeds[kind] = _Feed(None if kind is None else _DERIVABLE[kind])
        return self.feeds[kind]

    def frame(self, group: _Group, step: int) -> int:
        """Index of the reservoir span for ``group`` seen with ``step``."""
        key = (group, step)
        if key not in self.frames:
            self.frames.append(key)
        return self.frames.index(key)

    def _plan(self, batch: _Batch, device: torch.device) -> tuple[Any, ...]:
        """(index, n_sample, spans, moment_mask) of this batch, shared by slots that agree.

        ``index`` selects the rows: ``(b, y*W + x)`` tensors for the gather of sampled mode, or
        a tensor of row numbers into all positions (``b*H*W + y*W + x``) when every position is
        sampled (rate 1; then ``n_sample`` is None). Position (image, y, x) is sampled when
        ``u < sample_rate`` with ``u = hash / 2^64``; the moment rows are those with
        ``u < moment_rate`` among them (mask None: all of them). ``spans`` are the [start, stop)
        rows of each reservoir frame, after the sampled rows.
        """
        if self._key is None:   # the rates and frames are fixed once the capture starts
            self._key = ("plan", self.hw, self.sample_rate, self.moment_rate,
                         tuple((id(g), s) for g, s in self.frames))
        plan = batch.cache.get(self._key)
        if plan is None:
            plan = batch.cache[self._key] = self._make_plan(batch, device)
        return plan

    def _make_plan(self, batch: _Batch, device: torch.device) -> tuple[Any, ...]:
        n_pix = self.hw[0] * self.hw[1]
        every = self.sample_rate >= 1.0
        b_parts: list[torch.Tensor] = []
        p_parts: list[torch.Tensor] = []
        n_sample: int | None = 0
        mask = None
        if self.sample_rate > 0.0:
            b, pos, mask = batch.cached(("sample", self.hw, self.sample_rate, self.moment_rate, device),
                                        lambda: self._sample(batch, device))
            if every:
                n_sample = None
            else:
                b_parts.append(b)
                p_parts.append(pos)
                n_sample = int(b.shape[0])
        spans = []
        start = n_sample or 0
        for group, step in self.frames:
            b, pos = group.candidates(batch, device)
            w_out = group.out_hw[1]
            b_parts.append(b)
            p_parts.append((pos // w_out) * (step * self.hw[1]) + (pos % w_out) * step)
            spans.append((start, start + int(b.shape[0])))
            start += int(b.shape[0])
        if every:
            index: Any = (torch.cat(b_parts) * n_pix + torch.cat(p_parts) if b_parts
                          else torch.zeros(0, dtype=torch.int64, device=device))
        elif b_parts:
            index = (torch.cat(b_parts), torch.cat(p_parts))
        else:
            index = None
        return index, n_sample, spans, mask

    def _sample(self, batch: _Batch, device: torch.device) -> tuple[Any, Any, Any]:
        """(b, y*W + x, moment_mask) of the sampled positions (all of them at rate 1)."""
        every = self.sample_rate >= 1.0
        u = None
        if not every or self.moment_rate < self.sample_rate:
            u = batch.keys(self.seed, self.hw, _MOMENT_SALT, device)
        b = pos = None
        drawn = u
        if not every:
            keep = torch.nonzero(u < rate_key(self.sample_rate)).squeeze(1)
            n_pix = self.hw[0] * self.hw[1]
            b, pos = keep // n_pix, keep % n_pix
            drawn = u[keep]
        mask = None
        if 0.0 < self.moment_rate < self.sample_rate:
            mask = drawn < rate_key(self.moment_rate)
        return b, pos, mask

    def _reduce_full(self, flat: torch.Tensor, scratch: "_Scratch") -> None:
        """Feed every :class:`_Full` the per-channel min, max and active counts of ``flat``
        (B, C, H*W), each reduction computed once for all the points that need it."""
        if not any(feed.full for feed in self.feeds.values()):
            return
        # Innermost dimension first: contiguous reductions are the vectorised ones.
        ch_min, ch_max = flat.amin(dim=2).amin(0), flat.amax(dim=2).amax(0)
        n = flat.shape[0] * flat.shape[2]
        counts: dict[tuple[str, bool], tuple[torch.Tensor, torch.Tensor]] = {}
        for feed in self.feeds.values():
            for full in feed.full:
                c = None
                if full.kind is not None:
                    # relu / relu6: the same units are active before and after the activation.
                    key = (full.kind, full.pre and full.kind == "hswish")
                    if key not in counts:
                        counts[key] = _active_counts(flat, full.kind, key[1], scratch)
                    c = counts[key]
                full.add(n, ch_min, ch_max, c)

    def take(self, value: Any, batch: _Batch) -> None:
        """Reduce one hooked tensor into every point this slot feeds."""
        if not isinstance(value, torch.Tensor):
            raise ValueError(
                f"Capture point {self.point.name} expected a tensor from {self.point.module_path!r} "
                f"({self.point.hook}). Got {type(value).__name__} instead."
            )
        t = value.detach()
        if t.ndim == 2:
            t = t[:, :, None, None]
        shape = t.shape
        if t.ndim != 4 or shape[1] != self.channels or (tuple(shape[2:]) != self.in_hw and not self.image):
            raise ValueError(
                f"Capture point {self.point.name} expected a tensor of shape (B, {self.channels}, "
                f"{self.in_hw[0]}, {self.in_hw[1]}) as in example_input. Got shape {tuple(shape)} "
                "instead; run inputs of the example's size."
            )
        if batch.size is None:
            batch.size = int(shape[0])
        elif shape[0] != batch.size:
            raise ValueError(
                f"Capture point {self.point.name} saw a batch of {shape[0]} images in a forward "
                f"pass of {batch.size}."
            )
        if self.image:
            t = t.mean((2, 3), keepdim=True, dtype=torch.float64)
        flat = t.reshape(shape[0], self.channels, -1)
        self._reduce_full(flat, batch.scratch)
        index, n_sample, spans, mask = self._plan(batch, t.device)
        if n_sample is None:   # every position: all rows, the reservoir rows picked from them
            rows = flat.transpose(1, 2).reshape(-1, self.channels)
            if rows.untyped_storage().data_ptr() == t.untyped_storage().data_ptr():
                # A channels-last tensor reshapes to a view, which an in-place activation after
                # this hook would overwrite while the rows wait in the buffer.
                rows = rows.clone()
        elif index is None:
            return
        else:
            rows = flat[index[0], :, index[1]]
        n_rows = rows.shape[0] if n_sample is None else n_sample
        for feed in self.feeds.values():
            vr = rows if feed.fn is None else feed.fn(rows)
            if n_rows and feed.sampled:
                sample = vr if n_sample is None else vr[:n_rows]
                for acc in feed.sampled:
                    acc.push(sample, mask)
            if not feed.reservoirs:
                continue
            res = vr[index] if n_sample is None else vr
            for rr, k in feed.reservoirs:
                a, b = spans[k]
                if b > a:
                    piece = res[a:b]
                    if piece.dtype != torch.float32:
                        piece = piece.float()
                    elif piece.shape[0] != res.shape[0]:
                        # A slice would keep the whole gather alive while the reservoir holds it.
                        piece = piece.clone()
                    rr.pending.append(piece)


@dataclasses.dataclass
class _PointSinks:
    """Where the sinks of one canonical capture point accumulate."""

    point: CapturePoint
    channels: int
    activity_kind: str | None
    want_moments: bool
    slot: _Slot
    feed: str | None
    sampled: _Sampled | None = None
    activity_from: "_PointSinks | None" = None
    reservoir: _ReservoirRows | None = None
    full: _Full | None = None

    @property
    def counts_activity(self) -> bool:
        return self.activity_kind is not None and self.activity_from is None

    def to_stats(self) -> PointStats:
        mom = self.sampled.moments() if self.want_moments else None
        act = None
        if self.activity_kind is not None:
            src = (self.activity_from or self).sampled
            act = src.activity(self.activity_kind, self.point.pre)
        res = self.reservoir.reservoir(self.channels) if self.reservoir is not None else None
        ext = self.full.extent(self.sampled) if self.full is not None else None
        return PointStats(mom, act, res, ext)


class Capture:
    """Live capture session yielded by :func:`capture`.

    Attributes
    ----------
    points : dict of str to CapturePoint
        The selected points, in execution order.
    image_offset : int
        Global index of the first image of the next forward pass (advanced after each pass).
    config : dict
        The settings (sample unit, moment mode and per-point rates, reservoir size, seed, sinks).
    n_hooks : int
        Forward hooks that feed the sinks: one per distinct tensor, fewer than the points where
        points share a tensor or are derived from one (see :class:`_Slot`).
    """

    def __init__(self, points: list[CapturePoint], sinks: dict[str, _PointSinks],
                 canonical: dict[str, str], groups: list[_Group], *, n_hooks: int, image_offset: int,
                 config: dict[str, Any]) -> None:
        self.points = {p.name: p for p in points}
        self._sinks, self._canonical, self._groups = sinks, canonical, groups
        self.n_hooks = n_hooks
        self.image_offset = image_offset
        self.first_image = image_offset
        self.config = config
        self._batch: _Batch | None = None

    @property
    def n_images(self) -> int:
        """Images seen so far."""
        return self.image_offset - self.first_image

    def stats(self) -> dict[str, PointStats]:
        """Snapshot of every selected point's sinks as float64 numpy sinks on the CPU.

        Aliases (a point that is the same tensor as another, e.g. a linear ``project`` and its
        ``project.pre``) share one :class:`PointStats` object.
        """
        for ps in self._sinks.values():
            if ps.sampled is not None:
                ps.sampled.flush()
        for g in self._groups:
            g.compact()
        done = {key: ps.to_stats() for key, ps in self._sinks.items()}
        return {name: done[self._canonical[name]] for name in self.points}

    def result(self) -> "ProbeResult":
        """The current state as a :class:`ProbeResult`."""
        config = dict(self.config)
        config["image_ranges"] = [[self.first_image, self.image_offset]] if self.n_images else []
        return ProbeResult(dict(self.points), self.stats(), self.n_images, config)


@dataclasses.dataclass
class _Seen:
    """What the example pass saw at one capture point."""

    shape: tuple[int, ...]
    tensor: torch.Tensor   # held for the pass only: identity (with version) tells shared tensors
    version: int
    calls: int = 1
    derivable: bool = False


def _example_pass(model: nn.Module, points: Sequence[CapturePoint], example_input: Any,
                  derive: dict[str, CapturePoint]) -> dict[str, _Seen]:
    """One forward pass of ``example_input`` with temporary hooks on ``points``.

    Records the shape of each point's tensor, the tensor itself and its in-place version
    counter (two points with the same tensor at the same version hold the same values), how
    often the hooked module runs per pass, and, for each post-activation point in ``derive``
    (name -> its ``.pre`` point), whether the activation applied to the ``.pre`` tensor gives
    the post tensor bit for bit.
    """
    seen: dict[str, _Seen] = {}
    copies: dict[str, torch.Tensor] = {}
    pre_of = {pre.name for pre in derive.values()}
    calls: dict[int, int] = {}
    handles = []

    def record(p: CapturePoint) -> Callable[[Any], None]:
        def fn(v: Any) -> None:
            if not isinstance(v, torch.Tensor):
                return
            seen[p.name] = _Seen(tuple(v.shape), v, v._version)
            if p.name in pre_of:
                copies[p.name] = v.detach().clone()
            if p.name in derive:
                pre = copies.pop(derive[p.name].name, None)
                seen[p.name].derivable = pre is not None and torch.equal(_DERIVABLE[p.act](pre), v)
        return fn

    try:
        for p in points:
            handles.append(_register(model, p, record(p), lambda: calls))
        with torch.no_grad():
            model(example_input)
    finally:
        for h in handles:
            h.remove()
    for p in points:
        if p.name in seen:
            seen[p.name].calls = calls.get(id(p), 1)
    return seen


def _register(model: nn.Module, point: CapturePoint, fn: Callable[[Any], None],
              calls: Callable[[], dict[int, int] | None], *, counted: bool = True
              ) -> torch.utils.hooks.RemovableHandle:
    """Hook ``point`` so that ``fn(value)`` runs at the ``point.call_index``-th call of its module
    in each forward pass; ``calls()`` returns the per-pass call counter. ``counted=False``: the
    module runs once per pass, so every call is the one (no counting)."""
    try:
        module = model.get_submodule(point.module_path) if point.module_path else model
    except AttributeError as e:
        raise ValueError(
            f"Capture point {point.name} names module {point.module_path!r}, which the model "
            "does not have."
        ) from e
    want = getattr(point, "call_index", 0)
    key = id(point)

    if counted or want:
        def on_value(value: Any) -> None:
            counter = calls()
            if counter is not None:
                n = counter.get(key, 0)
                counter[key] = n + 1
                if n != want:
                    return
            fn(value)
    else:
        on_value = fn

    if point.hook == "input":
        return module.register_forward_pre_hook(lambda _m, args: on_value(args[0] if args else None))
    if point.hook == "output":
        return module.register_forward_hook(lambda _m, _args, out: on_value(out))
    raise ValueError(
        f"The 'hook' of capture point {point.name} must be 'input' or 'output'. Got {point.hook!r} instead."
    )


def _frame_step(point: CapturePoint, hw: tuple[int, int], out_hw: tuple[int, int]) -> int:
    """Step from the block's output frame to this point's frame (1, or the block stride)."""
    if hw == out_hw:
        return 1
    s = point.stride
    if s > 1 and all(s * (o - 1) < i <= s * o for i, o in zip(hw, out_hw)):
        return s
    raise ValueError(
        f"Capture point {point.name} has spatial size {hw}, which does not map onto its block's "
        f"output size {out_hw} with stride {s}; its samples cannot be paired with the block."
    )


def _check_positive(value: Any, name: str, func: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not value > 0:
        raise ValueError(
            f"The '{name}' parameter of {func} must be a number > 0. Got {value!r} instead."
        )
    return float(value)


def _check_int(value: Any, name: str, func: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(
            f"The '{name}' parameter of {func} must be an int >= {low}. Got {value!r} instead."
        )
    return int(value)


@contextlib.contextmanager
def capture(
    model: nn.Module,
    points: PointSpec = None,
    *,
    example_input: torch.Tensor,
    sinks: Iterable[str] = SINKS,
    sample_unit: str = "position",
    moments: str = "sampled",
    moment_positions: float = DEFAULT_MOMENT_POSITIONS,
    activity_positions: float = DEFAULT_ACTIVITY_POSITIONS,
    reservoir_size: int = DEFAULT_RESERVOIR_SIZE,
    seed: int = 0,
    image_offset: int = 0,
    expected_images: int | None = None,
) -> Iterator[Capture]:
    """Hook the selected capture points of ``model`` and stream every forward pass into sinks.

    Parameters
    ----------
    model : nn.Module
    points : None, str, sequence of str or callable
        Which points (see :func:`select_points`); None means all.
    example_input : Tensor of shape (n, C, H, W)
        One small batch shaped like the real inputs, used to discover the capture points and
        their spatial sizes (one forward pass, no statistics).
    sinks : iterable of str
        Any of ``"moments"``, ``"activity"``, ``"reservoir"``.
    sample_unit : {"position", "image"}
        Every spatial position is a sample, or one globally pooled vector per image.
    moments : {"sampled", "exact"}
        ``"exact"``: every position enters the moments and the activity counts.
        ``"sampled"``: a hash-selected uniform sample of positions (see the module docstring).
    moment_positions : float
        Expected positions per image entering the moments when ``moments="sampled"``.
    activity_positions : float
        Expected positions per image entering the activity counts when ``moments="sampled"``.
    reservoir_size : int
        K, the most points a reservoir keeps (0 disables the reservoir).
    seed : int
        Seed of the reservoir priorities and of the moment sampling.
    image_offset : int
        Global index of the first image (so that shards over different images merge).
    expected_images : int, optional
        How many images will pass (a hint; :func:`probe` sets it). It lets the reservoirs
        ignore from the start the positions whose priority is so high that they could only
        enter if far fewer positions came than announced: with ``N`` positions per block frame,
        candidates need ``u < (K + 10 sqrt(K) + 20) / N``. The reservoir stays the exact
        bottom-K sample unless fewer than K of the positions fall below that cap (about ten
        standard deviations below its mean), in which case it holds all that did.

    Yields
    ------
    Capture
        Each call ``model(batch)`` inside the ``with`` feeds the sinks; the images of a batch get
        the next ``len(batch)`` global indices. ``Capture.stats()`` / ``Capture.result()`` read
        them out. Every hook is removed on exit, also after an exception. When torch runs on
        one thread, the BLAS libraries of numpy and scipy do too inside the ``with``, so that
        the moments take no more cores than the forward pass.
    """
    sinks = tuple(sinks)
    for s in sinks:
        _check_choice(s, "sinks", "capture", SINKS)
    _check_choice(sample_unit, "sample_unit", "capture", SAMPLE_UNITS)
    _check_choice(moments, "moments", "capture", MOMENT_MODES)
    moment_positions = _check_positive(moment_positions, "moment_positions", "capture")
    activity_positions = _check_positive(activity_positions, "activity_positions", "capture")
    if expected_images is not None:
        expected_images = _check_int(expected_images, "expected_images", "capture", 1)
    reservoir_size = _check_int(reservoir_size, "reservoir_size", "capture", 0)
    seed = _check_int(seed, "seed", "capture", 0)
    image_offset = _check_int(image_offset, "image_offset", "capture", 0)

    dtype = _input_dtype(model)
    if dtype is not None and example_input.is_floating_point() and example_input.dtype != dtype:
        example_input = example_input.to(dtype)
    all_points = list(capture_points(model, example_input))
    chosen = select_points(all_points, points)
    by_name = {p.name: p for p in all_points}
    canonical = {p.name: p.alias_of or p.name for p in chosen}
    targets = [by_name[k] for k in dict.fromkeys(canonical.values())]
    image = sample_unit == "image"
    # A post-activation point with an exact activation is read off its .pre tensor (one hook
    # for both), unless pooling comes first: the mean of relu6(x) is not relu6 of the mean.
    derive = {}
    if not image:
        for q in targets:
            pre = by_name.get(f"blocks.{q.block}.{q.stage}.pre")
            if (not q.pre and q.act in _DERIVABLE and pre is not None and pre.alias_of is None
                    and q.stage in ("expand", "depthwise", "project")):
                derive[q.name] = pre
    seen = _example_pass(model, [p for p in all_points if p.alias_of is None], example_input, derive)

    want_m, want_a, want_e = "moments" in sinks, "activity" in sinks, "extent" in sinks
    want_reservoir = "reservoir" in sinks and reservoir_size > 0
    groups: dict[Any, _Group] = {}
    slots: dict[tuple[int, int], _Slot] = {}
    derived: dict[tuple[int, int], tuple[tuple[int, int], str]] = {}   # tensor -> (slot, activation)
    point_sinks: dict[str, _PointSinks] = {}
    for q in targets:
        if q.name not in seen:
            raise ValueError(f"Capture point {q.name} was not reached by a forward pass of example_input.")
        shape = seen[q.name].shape
        if len(shape) not in (2, 4):
            raise ValueError(
                f"Capture point {q.name} holds a tensor of shape {shape}; expected (B, C, H, W) or (B, C)."
            )
        hw = tuple(shape[2:]) if len(shape) == 4 else (1, 1)
        # The same tensor at the same in-place version holds the same values: one slot.
        ident = (id(seen[q.name].tensor), seen[q.name].version)
        if ident in derived:        # e.g. block i+1's input, when it is block i's derived output
            skey, kind = derived[ident]
        elif seen[q.name].derivable:
            pre = seen[derive[q.name].name]
            skey, kind = (id(pre.tensor), pre.version), q.act
            derived[ident] = (skey, kind)
        else:
            skey, kind = ident, None
        if skey not in slots:
            src = derive[q.name] if kind is not None else q
            slots[skey] = _Slot(src, channels=int(shape[1]), in_hw=hw, hw=(1, 1) if image else hw,
                                seed=seed, image=image)
            slots[skey].calls = seen[src.name].calls
        slot = slots[skey]
        ps = point_sinks[q.name] = _PointSinks(
            q, int(shape[1]), q.act if (want_a and q.act in ACTIVITY_KINDS) else None, want_m, slot, kind)
        if want_reservoir:
            if image:
                gkey, out_hw, step = "image", (1, 1), 1
            else:
                post = [seen[p.name].shape for p in all_points
                        if p.block == q.block and p.stage in ("depthwise", "project", "output")
                        and p.name in seen]
                out_hw = tuple(post[-1][2:]) if post and len(post[-1]) == 4 else hw
                # One group per output frame, not per block: blocks whose outputs have the same
                # size see the same positions with the same priorities, so they would keep the
                # same ids anyway; sharing the group computes them once per batch.
                gkey, step = out_hw, _frame_step(q, hw, out_hw)
            if gkey not in groups:
                cap_ = None
                if expected_images is not None:
                    rate = (reservoir_size + 10 * reservoir_size**0.5 + 20) / (expected_images * out_hw[0] * out_hw[1])
                    cap_ = rate_key(rate) if rate < 1 else None
                groups[gkey] = _Group(reservoir_size, seed, out_hw, cap_)
            ps.reservoir = _ReservoirRows(q.name, groups[gkey], step)
            slot.feed(kind).reservoirs.append((ps.reservoir, slot.frame(groups[gkey], step)))
    del seen  # the example's tensors

    for ps in point_sinks.values():
        # A stage's .pre and post points have the same activity counts (the activation is
        # monotone and flat on the same inputs): count them once, at the post point.
        p = ps.point
        post = point_sinks.get(f"blocks.{p.block}.{p.stage}")
        if (p.pre and ps.activity_kind is not None and post is not None and post is not ps
                and post.activity_kind == ps.activity_kind and post.channels == ps.channels):
            ps.activity_from = post

    syrk = torch.get_num_threads() == 1
    shared: dict[tuple[int, str | None, str | None, bool], _Sampled] = {}
    full: dict[tuple[int, str | None, str | None, bool], _Full] = {}
    for ps in point_sinks.values():
        slot = ps.slot
        n_pix = slot.in_hw[0] * slot.in_hw[1]
        if moments == "exact" or image:
            mrate = arate = 1.0
        else:
            mrate, arate = min(1.0, moment_positions / n_pix), min(1.0, activity_positions / n_pix)
        count_kind = ps.activity_kind if ps.counts_activity else None
        if want_m:
            slot.moment_rate = mrate
            slot.sample_rate = max(slot.sample_rate, mrate)
        if count_kind is not None:
            slot.sample_rate = max(slot.sample_rate, arate)
        if want_e:
            # The |x| histogram takes the sampled rows: at least those of the moments.
            slot.sample_rate = max(slot.sample_rate, mrate)
        # Points on one tensor (block i's output is block i+1's input) share the sums.
        key = (id(slot), ps.feed, count_kind, ps.point.pre)
        if want_m or want_e or count_kind is not None:
            if key not in shared:
                shared[key] = _Sampled(ps.channels, moments=want_m, activity_kind=count_kind,
                                       pre=ps.point.pre, syrk=syrk, hist=want_e)
                slot.feed(ps.feed).sampled.append(shared[key])
            ps.sampled = shared[key]
        if want_e:
            kind = ps.point.act if ps.point.act in ACTIVITY_KINDS else None
            fkey = (id(slot), ps.feed, kind, ps.point.pre)
            if fkey not in full:
                full[fkey] = _Full(ps.channels, kind, ps.point.pre, slot.feed(ps.feed).fn)
                slot.feed(ps.feed).full.append(full[fkey])
            ps.full = full[fkey]
    # The activity rows are all rows drawn: at the slot's sampling rate, at least ``arate``.
    activity_rate = {name: (ps.activity_from or ps).slot.sample_rate for name, ps in point_sinks.items()}

    config = {
        "sample_unit": sample_unit,
        "moments": moments,
        "moment_positions": moment_positions,
        "activity_positions": activity_positions,
        "moment_rates": {n: point_sinks[canonical[n]].slot.moment_rate for n in canonical} if want_m else {},
        "activity_rates": ({n: activity_rate[canonical[n]] for n in canonical
                            if point_sinks[canonical[n]].activity_kind} if want_a else {}),
        "reservoir_size": reservoir_size,
        "seed": seed,
        "sinks": list(sinks),
    }
    # Every slot is hooked, also one that feeds nothing (no sinks): the hooks count the images.
    hooked = list(slots.values())
    memory = _MemoryGuard()
    scratch = _Scratch()
    cap = Capture(chosen, point_sinks, canonical, list(groups.values()), n_hooks=len(hooked),
                  image_offset=image_offset, config=config)

    def start(_m: nn.Module, _args: Any) -> None:
        cap._batch = _Batch(cap.image_offset, scratch)

    def finish(_m: nn.Module, _args: Any, _out: Any) -> None:
        if cap._batch is not None and cap._batch.size is not None:
            cap.image_offset += cap._batch.size
        cap._batch = None
        memory.check()

    def make_hook(slot: _Slot) -> Callable[[Any], None]:
        def hook(value: Any) -> None:
            batch = cap._batch
            if batch is None:
                raise RuntimeError(
                    f"Capture point {slot.point.name} ran outside a forward pass of the captured "
                    "model; call the model itself inside the capture."
                )
            slot.take(value, batch)
        return hook

    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        # dsyrk (one torch thread) runs in numpy's BLAS; keep that BLAS off the other cores too.
        with threadpool_limits(limits=1, user_api="blas") if syrk else contextlib.nullcontext():
            handles.append(model.register_forward_pre_hook(start))
            for slot in hooked:
                handles.append(_register(model, slot.point, make_hook(slot),
                                         lambda: None if cap._batch is None else cap._batch.calls,
                                         counted=slot.calls > 1))
            handles.append(model.register_forward_hook(finish))
            yield cap
    finally:
        for h in handles:
            h.remove()
        cap._batch = None


@dataclasses.dataclass
class ProbeResult:
    """Sink states of a probe run.

    Attributes
    ----------
    points : dict of str to CapturePoint
        Probed points in execution order.
    stats : dict of str to PointStats
        Aliased points share one object.
    n_images : int
    config : dict
        Settings of the run; ``image_ranges`` lists the global [start, stop) image ranges.
    """

    points: dict[str, CapturePoint]
    stats: dict[str, PointStats]
    n_images: int
    config: dict[str, Any]

    def merge(self, other: "ProbeResult") -> "ProbeResult":
        """The result of one run over the images of both (which must not overlap)."""
        for key in _MERGE_KEYS:
            if self.config.get(key) != other.config.get(key):
                raise ValueError(
                    f"Cannot merge probe results with different '{key}': "
                    f"{self.config.get(key)!r} and {other.config.get(key)!r}."
                )
        if list(self.points) != list(other.points):
            raise ValueError(
                "Cannot merge probe results over different capture points: "
                f"{sorted(set(self.points) ^ set(other.points))[:6]} differ."
            )
        ranges = sorted(self.config.get("image_ranges", []) + other.config.get("image_ranges", []))
        for (a0, a1), (b0, b1) in zip(ranges, ranges[1:]):
            if b0 < a1:
                raise ValueError(
                    f"Cannot merge probe results over overlapping images: [{a0}, {a1}) and [{b0}, {b1})."
                )
        merged: dict[int, PointStats] = {}
        stats = {}
        for name, st in self.stats.items():
            if id(st) not in merged:
                merged[id(st)] = st.merge(other.stats[name])
            stats[name] = merged[id(st)]
        config = dict(self.config)
        config["image_ranges"] = _join_ranges(ranges)
        return ProbeResult(dict(self.points), stats, self.n_images + other.n_images, config)

    def paired(self, a: str, b: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Reservoir rows of points ``a`` and ``b`` of one block, paired sample by sample.

        Returns
        -------
        xa : ndarray of shape (n, C_a)
        xb : ndarray of shape (n, C_b)
        ids : ndarray of shape (n, 3)
            (image, y, x) in the block's output frame.
        """
        ra, rb = (self.stats[n].reservoir for n in (a, b))
        if ra is None or rb is None:
            raise ValueError("paired() needs reservoirs; this result was probed without them.")
        ia, ib = ra.block_ids(), rb.block_ids()
        if ia.shape != ib.shape or not np.array_equal(ia, ib):
            raise ValueError(
                f"Points {a} and {b} do not hold the same samples (different blocks or seeds)."
            )
        return ra.values, rb.values, ia

    def save(self, path: str | Path) -> None:
        """Write one ``.npz`` (arrays plus JSON metadata under ``__meta__``), atomically."""
        arrays: dict[str, np.ndarray] = {}
        keys: dict[str, str] = {}
        seen: dict[int, str] = {}
        for name, st in self.stats.items():
            if id(st) in seen:
                keys[name] = seen[id(st)]
                continue
            seen[id(st)] = keys[name] = name
            for sink in SINKS:
                obj = getattr(st, sink)
                if obj is None:
                    continue
                for field, value in obj.state_dict().items():
                    arrays[f"{name}/{sink}/{field}"] = np.asarray(value)
        meta = {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "n_images": self.n_images,
            "config": self.config,
            "points": [dataclasses.asdict(p) for p in self.points.values()],
            "stats_key": keys,
        }
        arrays["__meta__"] = np.asarray(json.dumps(meta, sort_keys=True))
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> "ProbeResult":
        """Read a file written by :meth:`save` (no pickles are loaded)."""
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise ValueError(f"{path} is not a probe result (.npz written by ProbeResult.save): {e}") from e
        if "__meta__" not in data:
            raise ValueError(f"{path} is not a probe result: it has no '__meta__' entry.")
        meta = json.loads(str(data.pop("__meta__")))
        if meta.get("format") != _FORMAT or meta.get("version") != _FORMAT_VERSION:
            raise ValueError(
                f"{path} is not a probe result of format {_FORMAT} v{_FORMAT_VERSION}. "
                f"Got {meta.get('format')!r} v{meta.get('version')!r} instead."
            )
        fields = {f.name for f in dataclasses.fields(CapturePoint)}
        points = {}
        for d in meta["points"]:
            points[d["name"]] = CapturePoint(**{k: v for k, v in d.items() if k in fields})
        loaders = {"moments": Moments, "activity": Activity, "reservoir": Reservoir, "extent": Extent}
        by_key: dict[str, PointStats] = {}
        stats = {}
        for name, key in meta["stats_key"].items():
            if key not in by_key:
                parts: dict[str, Any] = {}
                for sink, cls_ in loaders.items():
                    prefix = f"{key}/{sink}/"
                    state = {k[len(prefix):]: v for k, v in data.items() if k.startswith(prefix)}
                    parts[sink] = cls_.from_state_dict(state) if state else None
                by_key[key] = PointStats(**parts)
            stats[name] = by_key[key]
        return cls(points, stats, int(meta["n_images"]), meta["config"])


def _join_ranges(ranges: list[list[int]]) -> list[list[int]]:
    out: list[list[int]] = []
    for a, b in ranges:
        if out and out[-1][1] == a:
            out[-1][1] = b
        else:
            out.append([a, b])
    return out


def _load_malloc_trim() -> Callable[[int], int] | None:
    try:
        import ctypes
        import ctypes.util

        name = ctypes.util.find_library("c")
        return None if name is None else ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


_MALLOC_TRIM = _load_malloc_trim() if sys.platform.startswith("linux") else None
#: Resident-memory growth since the last trim that triggers the next one: both the fraction
#: and the bytes must be exceeded.
_TRIM_GROWTH = 0.05
_TRIM_MIN_BYTES = 16 << 20


def _resident_bytes() -> int | None:
    """Resident set size of this process (from /proc; None where it cannot be read)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return None


_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class _MemoryGuard:
    """Hands freed heap memory back to the OS when resident memory creeps up (glibc only).

    glibc raises its mmap threshold after the first large free, so the forward pass's
    activations then live on the heap between the sinks' small long-lived buffers, and the
    process's resident memory can creep up with the number of batches although the live data
    stays bounded. ``malloc_trim`` undoes that, but it is not free: the next forward passes
    fault the released pages in again (tens of ms a trim on the digits networks). So the
    resident size is read after every forward pass (a few microseconds) and a trim runs only
    when it has grown by more than ``_TRIM_GROWTH`` and ``_TRIM_MIN_BYTES`` since the last one.
    """

    def __init__(self) -> None:
        self.base: int | None = None

    def check(self) -> None:
        if _MALLOC_TRIM is None:
            return
        rss = _resident_bytes()
        if rss is None:
            return
        if self.base is None:
            self.base = rss
        elif rss > self.base * (1 + _TRIM_GROWTH) and rss - self.base > _TRIM_MIN_BYTES:
            _MALLOC_TRIM(0)
            self.base = _resident_bytes() or rss


def _input_dtype(model: nn.Module) -> torch.dtype | None:
    """The floating dtype of the model's parameters (inputs are cast to it), or None."""
    for t in model.parameters():
        if t.is_floating_point():
            return t.dtype
    return None


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def probe(
    model: nn.Module,
    data: ImageDataset | torch.Tensor | np.ndarray,
    *,
    input_spec: InputSpec | None = None,
    points: PointSpec = None,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    sample_unit: str = "position",
    reservoir_size: int = DEFAULT_RESERVOIR_SIZE,
    seed: int = 0,
    moments: str = "sampled",
    moment_positions: float = DEFAULT_MOMENT_POSITIONS,
    activity_positions: float = DEFAULT_ACTIVITY_POSITIONS,
    sinks: Iterable[str] = SINKS,
    image_offset: int = 0,
    progress: bool = True,
) -> ProbeResult:
    """Run ``data`` through ``model`` and collect the sinks of the selected capture points.

    The model runs in eval mode under ``torch.no_grad()`` on ``device`` (default ``cuda`` when
    available, else ``cpu``); the training flags of its modules and its device are restored
    afterwards. Inputs are cast to the dtype of the model's parameters (float16 and bfloat16
    models run as they are), while every statistic accumulates in float64 (float32 for the
    reservoir rows) on the device until the end, and is stored as numpy sinks on the CPU.

    Parameters
    ----------
    model : nn.Module
    data : ImageDataset, or Tensor / ndarray of shape (n_images, C, H, W)
        An ImageDataset is prepared batch by batch with :func:`probes.preprocess.prepare` and
        ``input_spec`` (default: the data's own size and channels, mean 0, std 1, i.e. no
        change). A tensor or array is taken as already prepared.
    input_spec : InputSpec, optional
    points, sinks, sample_unit, moments, moment_positions, activity_positions, reservoir_size, seed,
    image_offset
        As in :func:`capture`.
    batch_size : int
    device : str or torch.device, optional
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    ProbeResult

    Examples
    --------
    >>> res = probe(model, load_dataset("digits", split="test"), input_spec=spec)  # doctest: +SKIP
    >>> res.stats["blocks.3.expand"].activity.positive_mean  # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    batch_size = _check_int(batch_size, "batch_size", "probe", 1)
    if isinstance(data, ImageDataset):
        if input_spec is None:
            c, h, _ = data.shape
            input_spec = InputSpec(size=h, channels=c, mean=(0.0,) * c, std=(1.0,) * c,
                                   source="identity (probe default)")
        name = data.name

        def get(i: int, j: int) -> torch.Tensor:
            return prepare(data.x[i:j], input_spec, name=name)

        n = len(data)
    elif isinstance(data, (torch.Tensor, np.ndarray)):
        if data.ndim != 4:
            raise ValueError(
                f"The 'data' parameter of probe must have shape (n_images, C, H, W). "
                f"Got shape {tuple(data.shape)} instead."
            )
        tensor = torch.as_tensor(data, dtype=torch.float32)

        def get(i: int, j: int) -> torch.Tensor:
            return tensor[i:j]

        n = int(tensor.shape[0])
    else:
        raise ValueError(
            "The 'data' parameter of probe must be an ImageDataset, a Tensor or an ndarray. "
            f"Got {type(data).__name__} instead."
        )
    if n == 0:
        raise ValueError("The 'data' parameter of probe holds no images.")
    dev = torch.device(device) if device is not None else _default_device()
    param = next(iter(model.parameters()), None)
    old_device = param.device if param is not None else None
    flags = {m: m.training for m in model.modules()}
    try:
        model.eval().to(dev)
        dtype = _input_dtype(model)
        with torch.no_grad(), capture(
            model, points, example_input=get(0, 1).to(dev, dtype), sinks=sinks, sample_unit=sample_unit,
            moments=moments, moment_positions=moment_positions,
            activity_positions=activity_positions, reservoir_size=reservoir_size,
            seed=seed, image_offset=image_offset, expected_images=n,
        ) as cap:
            for i in tqdm(range(0, n, batch_size), disable=not progress, desc="probe", unit="batch"):
                model(get(i, min(i + batch_size, n)).to(dev, dtype, non_blocking=True))
            result = cap.result()
    finally:
        for m, flag in flags.items():
            m.training = flag
        if old_device is not None:
            model.to(old_device)
    result.config.update({
        "batch_size": batch_size,
        "device": str(dev),
        "input_spec": input_spec.to_dict() if input_spec is not None else None,
    })
    return result
