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

What each hook computes (inside the hook, before an in-place activation can overwrite the
tensor; statistics stay on the tensor's device until :meth:`Capture.stats`):

- **Moments** (float64). ``moments="exact"`` puts every sample into the moments.
  ``moments="sampled"`` (default) keeps each position independently with probability
  ``rate = min(1, moment_positions / (H * W))`` (``moment_positions`` per image on average),
  decided by a hash of (seed, image, y, x) that does not depend on the batch split. Every
  position has the same inclusion probability, so the sampled mean and covariance are unbiased
  estimates of those over all positions (the covariance of an i.i.d. sample, ddof=1); the
  rate of each point is recorded in ``config["moment_rates"]``. The per-batch centred Gram
  matrix is computed in float64: float32 would put a noise floor near 1e-7 of the largest
  eigenvalue, above the default rank tolerance. One sampled position costs C^2 multiply-adds
  per point, about a quarter of a whole forward pass of the digits networks summed over all
  points, which is why exact mode costs many forward passes (``benchmarks/capture.py``).
- **Activity** (points whose activation is relu / relu6 / hswish): counted on a hash sample of
  ``activity_positions`` positions per image (same hash; the moments take the nested subset
  below their own rate, and the activity all rows drawn), or at every position in exact mode;
  ``config["activity_rates"]``. The ``.pre`` point of a stage
  shares the counts of its post-activation point (the same units are in the flat region).
- **Reservoir**: bottom-K sample by hash priority (:class:`~probes.sinks.Reservoir`). All
  points of one block draw positions in the block's *output* frame (image, y_out, x_out) with
  the same hash; points before the block's stride (input, expand.pre, expand: their spatial
  size is s times the output's) read the position (s*y_out, s*x_out). So the reservoirs of all
  points of a block hold the same samples in the same order and can be paired row by row
  (e.g. for a decoder from a point back to ``input``). Ids are stored in each point's own frame;
  ``Reservoir.stride`` is the step to the block frame and ``Reservoir.block_ids()`` gives the
  shared ids (see :meth:`ProbeResult.paired`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import json
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from probes._io import atomic_path
from probes.blocks import CapturePoint, capture_points
from probes.datasets import ImageDataset
from probes.preprocess import InputSpec, prepare
from probes.sinks import ACTIVITY_KINDS, Activity, Moments, Reservoir, position_hash

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
SINKS: tuple[str, ...] = ("moments", "activity", "reservoir")
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
    is not defined at a linear/leaky point) is None."""

    moments: Moments | None
    activity: Activity | None
    reservoir: Reservoir | None

    def merge(self, other: "PointStats") -> "PointStats":
        def m(a: Any, b: Any, field: str) -> Any:
            if (a is None) != (b is None):
                raise ValueError(f"Cannot merge point stats where only one side has '{field}'.")
            return None if a is None else a.merge(b)

        return PointStats(m(self.moments, other.moments, "moments"),
                          m(self.activity, other.activity, "activity"),
                          m(self.reservoir, other.reservoir, "reservoir"))


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

    def __init__(self, offset: int) -> None:
        self.offset = offset
        self.size: int | None = None
        self.cache: dict[Any, Any] = {}
        self.calls: dict[str, int] = {}

    def cached(self, key: Any, make: Callable[[], Any]) -> Any:
        if key not in self.cache:
            self.cache[key] = make()
        return self.cache[key]


def _hash_grid(batch: _Batch, seed: int, hw: tuple[int, int], salt: int) -> np.ndarray:
    """Hashes of every position (image, y, x) of the batch, flat in (b, y, x) order."""
    h, w = hw
    img = batch.offset + np.arange(batch.size)
    return position_hash(seed, img[:, None, None], np.arange(h)[:, None], np.arange(w), salt=salt).ravel()


def _below(u: np.ndarray, rate: float) -> np.ndarray:
    """Indices where the hash, read as u = hash / 2^64 in [0, 1), is below ``rate``."""
    return np.arange(u.size) if rate >= 1.0 else np.flatnonzero(u < np.uint64(rate * 2.0**64))


class _Group:
    """Reservoir bookkeeping shared by the points of one block (one frame of sample ids).

    Priorities and the choice of candidates depend only on ids, so they are computed once per
    batch for the whole block; every member point gathers the same positions from its own
    tensor, so all members hold rows aligned with ``ids``.
    """

    def __init__(self, k: int, seed: int, out_hw: tuple[int, int], cap: np.uint64 | None = None) -> None:
        self.k, self.seed, self.out_hw, self.cap = k, seed, out_hw, cap
        self.ids = np.zeros((0, 3), dtype=np.int64)     # block-frame ids of the rows held
        self.priority = np.zeros(0, dtype=np.uint64)
        self.n_seen = 0
        self.members: list[_PointState] = []

    def threshold(self) -> np.uint64 | None:
        """Priorities at or above it cannot enter: the running k-th smallest, or the cap."""
        if len(self.priority) < self.k:
            return self.cap
        kth = np.partition(self.priority, self.k - 1)[self.k - 1]
        return kth if self.cap is None else min(kth, self.cap)

    def compact(self) -> None:
        """Keep only the k smallest priorities, in order, in the group and in every member."""
        order = np.lexsort((self.ids[:, 2], self.ids[:, 1], self.ids[:, 0], self.priority))[: self.k]
        for m in self.members:
            m.compact_rows(order, expected=len(self.priority))
        self.ids, self.priority = self.ids[order], self.priority[order]

    def candidates(self, batch: _Batch) -> tuple[np.ndarray, np.ndarray]:
        """(b, y_out * W_out + x_out) of this batch's candidates (computed once per batch):
        the positions whose priority is below :meth:`threshold`, at most k of them."""
        return batch.cached(("group", id(self)), lambda: self._candidates(batch))

    def _candidates(self, batch: _Batch) -> tuple[np.ndarray, np.ndarray]:
        if len(self.priority) > 2 * self.k:
            self.compact()
        prio = batch.cached(("priority", self.out_hw),
                            lambda: _hash_grid(batch, self.seed, self.out_hw, Reservoir.SALT))
        self.n_seen += prio.size
        thr = self.threshold()
        sel = np.arange(prio.size) if thr is None else np.flatnonzero(prio < thr)
        if len(sel) > self.k:
            sel = sel[np.argsort(prio[sel], kind="stable")[: self.k]]
        b, pos = np.divmod(sel, self.out_hw[0] * self.out_hw[1])
        y, x = np.divmod(pos, self.out_hw[1])
        self.ids = np.concatenate([self.ids, np.stack([batch.offset + b, y, x], axis=1)])
        self.priority = np.concatenate([self.priority, prio[sel]])
        return b, pos


#: Gathered rows are buffered per point and reduced once this many values have accumulated, so
#: the fixed cost of the reduction ops is paid every few batches instead of at every hook call.
_FLUSH_ELEMENTS = 1 << 16


class _PointState:
    """Accumulators of one hooked tensor (one canonical capture point), on the tensor's device.

    Each hook call gathers, in one indexing op, the rows of this batch's *plan*: first the
    sampled positions (moments and activity), then the reservoir candidates of the block. Plans
    depend only on the frame, so points with the same spatial size and block share them.
    """

    def __init__(self, point: CapturePoint, *, channels: int, in_hw: tuple[int, int],
                 hw: tuple[int, int], step: int, group: _Group | None, want_moments: bool,
                 activity_kind: str | None, sample_rate: float, moment_rate: float, seed: int) -> None:
        self.point, self.channels, self.step, self.group = point, channels, step, group
        self.in_hw, self.hw = in_hw, hw   # spatial size of the hooked tensor / of the sampled frame
        self.want_moments, self.activity_kind = want_moments, activity_kind
        self.sample_rate, self.moment_rate, self.seed = sample_rate, moment_rate, seed
        # Set when the same stage's other side (.pre / post) counts the activity for both.
        self.activity_from: _PointState | None = None
        self.count = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None
        self.n_points = 0
        self.active: torch.Tensor | None = None
        self.saturated: torch.Tensor | None = None
        self.hist: torch.Tensor | None = None
        self.chunks: list[torch.Tensor] = []
        self.masks: list[torch.Tensor] = []
        self.buffered = 0
        self.pending: list[torch.Tensor] = []   # reservoir rows aligned with group.ids
        if group is not None:
            group.members.append(self)

    @property
    def counts_activity(self) -> bool:
        return self.activity_kind is not None and self.activity_from is None

    def _sample_plan(self, batch: _Batch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """(b, y*W + x, moment_mask) of this batch's sampled positions, shared by equal frames.

        Position (image, y, x) is sampled when ``u < sample_rate`` with ``u = hash / 2^64``; the
        moment rows are those with ``u < moment_rate`` among them (mask None: all of them).
        """
        def make() -> tuple[torch.Tensor, torch.Tensor, Any]:
            u = batch.cached(("hash", self.hw), lambda: _hash_grid(batch, self.seed, self.hw, _MOMENT_SALT))
            keep = _below(u, self.sample_rate)
            b, pos = np.divmod(keep, self.hw[0] * self.hw[1])
            mask = None
            if self.want_moments and self.moment_rate < self.sample_rate:
                mask = torch.as_tensor(u[keep] < np.uint64(self.moment_rate * 2.0**64), device=device)
            return torch.as_tensor(b, device=device), torch.as_tensor(pos, device=device), mask

        return batch.cached(("sample", self.hw, self.sample_rate, self.moment_rate), make)

    def _reservoir_plan(self, batch: _Batch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(b, y*W + x) in this point's frame of the block's candidates; None when there are none."""
        def make() -> tuple[torch.Tensor, torch.Tensor] | None:
            b, pos = self.group.candidates(batch)
            if len(b) == 0:
                return None
            y, x = np.divmod(pos, self.group.out_hw[1])
            p = (y * self.step) * self.hw[1] + x * self.step
            return torch.as_tensor(b, device=device), torch.as_tensor(p, device=device)

        return batch.cached(("reservoir", id(self.group), self.step), make)

    def reduce(self, value: Any, batch: _Batch, sample_unit: str) -> None:
        if not isinstance(value, torch.Tensor):
            raise ValueError(
                f"Capture point {self.point.name} expected a tensor from {self.point.module_path!r} "
                f"({self.point.hook}). Got {type(value).__name__} instead."
            )
        t = value.detach()
        if t.ndim == 2:
            t = t[:, :, None, None]
        shape = t.shape
        if t.ndim != 4 or shape[1] != self.channels or (tuple(shape[2:]) != self.in_hw and sample_unit != "image"):
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
        if sample_unit == "image":
            t = t.mean((2, 3), keepdim=True, dtype=torch.float64)
        flat = t.reshape(shape[0], self.channels, -1)
        if self.sample_rate >= 1.0 and self.moment_rate >= 1.0:
            self._push(flat.transpose(1, 2).reshape(-1, self.channels), None)
        elif self.sample_rate > 0.0:
            b, pos, mask = self._sample_plan(batch, t.device)
            self._push(flat[b, :, pos], mask)
        if self.group is not None:
            plan = self._reservoir_plan(batch, t.device)
            if plan is not None:
                self.pending.append(flat[plan[0], :, plan[1]].float())

    def _push(self, rows: torch.Tensor, mask: torch.Tensor | None) -> None:
        self.chunks.append(rows)
        if mask is not None:
            self.masks.append(mask)
        self.buffered += rows.numel()
        if self.buffered >= _FLUSH_ELEMENTS:
            self.flush()

    def flush(self) -> None:
        """Reduce the buffered rows into the moments and activity counts."""
        if self.chunks:
            sample = self.chunks[0] if len(self.chunks) == 1 else torch.cat(self.chunks)
            if self.want_moments:
                mask = None if not self.masks else self.masks[0] if len(self.masks) == 1 else torch.cat(self.masks)
                self._add_moments(sample if mask is None else sample[mask])
            if self.counts_activity:
                self._add_activity(sample)
            self.chunks, self.masks, self.buffered = [], [], 0

    def _add_moments(self, rows: torch.Tensor) -> None:
        nb = rows.shape[0]
        if nb == 0:
            return
        r = rows.to(torch.float64)
        mb = r.mean(0)
        r = r - mb
        if self.count == 0:
            self.mean, self.m2, self.count = mb, r.T @ r, nb
            return
        n = self.count + nb
        delta = mb - self.mean
        self.m2.addmm_(r.T, r).addr_(delta, delta, alpha=self.count * nb / n)
        self.mean.add_(delta, alpha=nb / n)
        self.count = n

    def _add_activity(self, rows: torch.Tensor) -> None:
        kind = self.activity_kind
        sat = None
        if kind == "relu":
            act = rows > 0
        elif kind == "relu6":
            sat = rows >= 6
            act = (rows > 0) ^ sat
        else:
            act = rows > -3 if self.point.pre else rows != 0
        per_channel = act.sum(0)
        hist = torch.bincount(act.sum(1), minlength=self.channels + 1)
        if self.active is None:
            self.active, self.hist = per_channel, hist
            self.saturated = torch.zeros_like(per_channel)
        else:
            self.active += per_channel
            self.hist += hist
        if sat is not None:
            self.saturated += sat.sum(0)
        self.n_points += rows.shape[0]

    def compact_rows(self, order: np.ndarray, *, expected: int) -> None:
        """Keep the reservoir rows at ``order``, after checking they match the group's ids."""
        n = sum(r.shape[0] for r in self.pending)
        if n != expected:
            raise RuntimeError(
                f"Capture point {self.point.name} missed a forward pass of its block; its reservoir "
                "can no longer be paired with the other points of the block."
            )
        if n:
            rows = self.pending[0] if len(self.pending) == 1 else torch.cat(self.pending)
            self.pending = [rows[torch.as_tensor(order, device=rows.device)]]

    def to_stats(self) -> PointStats:
        mom = act = res = None
        if self.want_moments:
            mom = Moments(self.channels)
            if self.count:
                mom.add_stats(self.count, self.mean.cpu().numpy(), self.m2.cpu().numpy())
        if self.activity_kind is not None:
            src = self.activity_from or self
            act = Activity(self.channels, self.activity_kind, pre=self.point.pre)
            if src.n_points:
                act.add_counts(src.n_points, src.active.cpu().numpy(), src.saturated.cpu().numpy(),
                               src.hist.cpu().numpy())
        if self.group is not None:
            g = self.group
            res = Reservoir(self.channels, g.k, seed=g.seed, stride=self.step)
            res.n_seen = g.n_seen
            if len(g.priority):
                rows = self.pending[0]
                ids = g.ids.copy()
                ids[:, 1:] *= self.step
                res.values = rows.cpu().numpy().astype(np.float32, copy=False)
                res.ids, res.priority = ids, g.priority.copy()
        return PointStats(mom, act, res)


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
    """

    def __init__(self, points: list[CapturePoint], states: dict[str, _PointState],
                 canonical: dict[str, str], groups: list[_Group], *, image_offset: int,
                 config: dict[str, Any]) -> None:
        self.points = {p.name: p for p in points}
        self._states, self._canonical, self._groups = states, canonical, groups
        self.image_offset = image_offset
        self.first_image = image_offset
        self.config = config
        self._batch: _Batch | None = None
        self._n_forward = 0

    @property
    def n_images(self) -> int:
        """Images seen so far."""
        return self.image_offset - self.first_image

    def stats(self) -> dict[str, PointStats]:
        """Snapshot of every selected point's sinks as float64 numpy sinks on the CPU.

        Aliases (a point that is the same tensor as another, e.g. a linear ``project`` and its
        ``project.pre``) share one :class:`PointStats` object.
        """
        for st in self._states.values():
            st.flush()
        for g in self._groups:
            g.compact()
        done = {key: st.to_stats() for key, st in self._states.items()}
        return {name: done[self._canonical[name]] for name in self.points}

    def result(self) -> "ProbeResult":
        """The current state as a :class:`ProbeResult`."""
        config = dict(self.config)
        config["image_ranges"] = [[self.first_image, self.image_offset]] if self.n_images else []
        return ProbeResult(dict(self.points), self.stats(), self.n_images, config)


def _record_shapes(model: nn.Module, points: Sequence[CapturePoint], example_input: Any
                   ) -> dict[str, tuple[int, ...]]:
    """Shape of the tensor at every point for ``example_input`` (temporary hooks)."""
    shapes: dict[str, tuple[int, ...]] = {}
    calls: dict[str, int] = {}
    handles = []

    def record(p: CapturePoint) -> Callable[[Any], None]:
        def fn(v: Any) -> None:
            if isinstance(v, torch.Tensor):
                shapes[p.name] = tuple(v.shape)
        return fn

    try:
        for p in points:
            if p.alias_of is None:
                handles.append(_register(model, p, record(p), lambda: calls))
        with torch.no_grad():
            model(example_input)
    finally:
        for h in handles:
            h.remove()
    return shapes


def _register(model: nn.Module, point: CapturePoint, fn: Callable[[Any], None],
              calls: Callable[[], dict[str, int] | None]) -> torch.utils.hooks.RemovableHandle:
    """Hook ``point`` so that ``fn(value)`` runs at the ``point.call_index``-th call of its module
    in each forward pass; ``calls()`` returns the per-pass call counter."""
    try:
        module = model.get_submodule(point.module_path) if point.module_path else model
    except AttributeError as e:
        raise ValueError(
            f"Capture point {point.name} names module {point.module_path!r}, which the model "
            "does not have."
        ) from e
    want = getattr(point, "call_index", 0)

    def on_value(value: Any) -> None:
        counter = calls()
        if counter is not None:
            n = counter.get(point.name, 0)
            counter[point.name] = n + 1
            if n != want:
                return
        fn(value)

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
        them out. Every hook is removed on exit, also after an exception.
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

    all_points = list(capture_points(model, example_input))
    chosen = select_points(all_points, points)
    by_name = {p.name: p for p in all_points}
    shapes = _record_shapes(model, all_points, example_input)

    canonical = {p.name: p.alias_of or p.name for p in chosen}
    want_reservoir = "reservoir" in sinks and reservoir_size > 0
    groups: dict[Any, _Group] = {}
    states: dict[str, _PointState] = {}
    rates: dict[str, tuple[float, float]] = {}
    for p in chosen:
        key = canonical[p.name]
        if key in states:
            continue
        target = by_name[key]
        if key not in shapes:
            raise ValueError(f"Capture point {key} was not reached by a forward pass of example_input.")
        shape = shapes[key]
        if len(shape) not in (2, 4):
            raise ValueError(
                f"Capture point {key} holds a tensor of shape {shape}; expected (B, C, H, W) or (B, C)."
            )
        hw = tuple(shape[2:]) if len(shape) == 4 else (1, 1)
        channels = int(shape[1])
        if sample_unit == "image":
            gkey, out_hw, step = "image", (1, 1), 1
        else:
            post = [shapes[q.name] for q in all_points
                    if q.block == target.block and q.stage in ("depthwise", "project", "output")
                    and q.name in shapes]
            out_hw = tuple(post[-1][2:]) if post and len(post[-1]) == 4 else hw
            gkey, step = target.block, _frame_step(target, hw, out_hw)
        group = None
        if want_reservoir:
            if gkey not in groups:
                hw_g = (1, 1) if sample_unit == "image" else out_hw
                cap_ = None
                if expected_images is not None:
                    rate = (reservoir_size + 10 * reservoir_size**0.5 + 20) / (expected_images * hw_g[0] * hw_g[1])
                    cap_ = np.uint64(rate * 2.0**64) if rate < 1 else None
                groups[gkey] = _Group(reservoir_size, seed, hw_g, cap_)
            group = groups[gkey]
        n_pix = hw[0] * hw[1]
        if moments == "exact" or sample_unit == "image":
            mrate = arate = 1.0
        else:
            mrate, arate = min(1.0, moment_positions / n_pix), min(1.0, activity_positions / n_pix)
        want_m, want_a = "moments" in sinks, "activity" in sinks
        kind = target.act if (want_a and target.act in ACTIVITY_KINDS) else None
        srate = max(mrate if want_m else 0.0, arate if want_a else 0.0)
        rates[key] = (mrate, arate)
        states[key] = _PointState(
            target, channels=channels, in_hw=hw, hw=(1, 1) if sample_unit == "image" else hw, step=step,
            group=group, want_moments=want_m, activity_kind=kind, sample_rate=srate,
            moment_rate=mrate, seed=seed)

    for st in states.values():
        # A stage's .pre and post points have the same activity counts (the activation is
        # monotone and flat on the same inputs): count them once, at the post point.
        p = st.point
        post = states.get(f"blocks.{p.block}.{p.stage}")
        if (p.pre and st.activity_kind is not None and post is not None and post is not st
                and post.activity_kind == st.activity_kind and post.channels == st.channels):
            st.activity_from = post

    config = {
        "sample_unit": sample_unit,
        "moments": moments,
        "moment_positions": moment_positions,
        "activity_positions": activity_positions,
        "moment_rates": {n: rates[canonical[n]][0] for n in canonical} if "moments" in sinks else {},
        "activity_rates": ({n: rates[canonical[n]][1] for n in canonical
                            if states[canonical[n]].activity_kind} if "activity" in sinks else {}),
        "reservoir_size": reservoir_size,
        "seed": seed,
        "sinks": list(sinks),
    }
    cap = Capture(chosen, states, canonical, list(groups.values()), image_offset=image_offset,
                  config=config)

    def start(_m: nn.Module, _args: Any) -> None:
        cap._batch = _Batch(cap.image_offset)

    def finish(_m: nn.Module, _args: Any, _out: Any) -> None:
        if cap._batch is not None and cap._batch.size is not None:
            cap.image_offset += cap._batch.size
        cap._batch = None
        cap._n_forward += 1
        if cap._n_forward % _TRIM_EVERY == 0:
            _release_memory()

    def make_hook(state: _PointState) -> Callable[[Any], None]:
        def hook(value: Any) -> None:
            if cap._batch is None:
                raise RuntimeError(
                    f"Capture point {state.point.name} ran outside a forward pass of the captured "
                    "model; call the model itself inside the capture."
                )
            state.reduce(value, cap._batch, sample_unit)
        return hook

    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        handles.append(model.register_forward_pre_hook(start))
        for key, st in states.items():
            handles.append(_register(model, by_name[key], make_hook(st),
                                     lambda: None if cap._batch is None else cap._batch.calls))
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
        loaders = {"moments": Moments, "activity": Activity, "reservoir": Reservoir}
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
#: Forward passes between two :func:`_release_memory` calls (a trim costs a few ms).
_TRIM_EVERY = 8


def _release_memory() -> None:
    """Hand freed heap memory back to the OS (glibc ``malloc_trim``; a no-op elsewhere).

    glibc raises its mmap threshold after the first large free, so the forward pass's
    activations then live on the heap between the sinks' small long-lived buffers; without a
    trim every few batches the process's resident memory creeps up with the number of batches
    although the live data stays bounded.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


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
    afterwards. Statistics
    are reduced on the device and stored as float64 sinks on the CPU.

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
        with torch.no_grad(), capture(
            model, points, example_input=get(0, 1).to(dev), sinks=sinks, sample_unit=sample_unit,
            moments=moments, moment_positions=moment_positions,
            activity_positions=activity_positions, reservoir_size=reservoir_size,
            seed=seed, image_offset=image_offset, expected_images=n,
        ) as cap:
            for i in tqdm(range(0, n, batch_size), disable=not progress, desc="probe", unit="batch"):
                model(get(i, min(i + batch_size, n)).to(dev, non_blocking=True))
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
