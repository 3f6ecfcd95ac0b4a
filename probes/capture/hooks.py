"""Forward hooks of a capture: one per distinct tensor, one gather of its rows per pass and set.

A hook is registered per distinct *tensor*, not per point, and gathers that tensor's rows once
per forward pass for every point that reads it: aliases (a linear ``project`` is its
``project.pre``), block i's ``output`` that is block i+1's ``input`` (the same tensor at the
same in-place version in the example pass), and a post-activation point whose activation is an
exact clamp (ReLU, ReLU6): its rows are the activation applied to the rows gathered from the
``.pre`` tensor, bit for bit, which is checked on the example input (otherwise the activation
gets its own hook). The rows are taken inside the hook, before an in-place activation can
overwrite the tensor, and are always copies (a channels-last tensor would otherwise reshape to
a view of the live tensor).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from probes.blocks import CapturePoint
from probes.capture.accumulate import (
    _SHIFT_ROWS,
    _channel_view,
    _clamped_hist,
    _extent_pieces,
    _fold_sign,
    _Full,
    _partial_extrema,
    _ReservoirRows,
    _Sampled,
    _Scratch,
    _term_counts,
    _use_pieces,
    _wide_rows,
)
from probes.capture.sampling import _MOMENT_SALT, _Batch, _Group, rate_key

#: Activations whose output needs no hook of its own: applied to the rows gathered from the
#: ``.pre`` tensor they give the rows of the post-activation tensor bit for bit (they are
#: clamps, no rounding). Checked on the example input before it is relied on.
_DERIVABLE: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"relu": F.relu, "relu6": F.relu6}


#: Entries per run of images of a derived value in exact mode (:meth:`_Slot._take_positions`).
_DERIVE_ENTRIES = 1 << 20


@dataclasses.dataclass
class _Feed:
    """What one slot feeds through one transform (None: the tensor itself)."""

    fn: Callable[[torch.Tensor], torch.Tensor] | None
    sampled: list[_Sampled] = dataclasses.field(default_factory=list)
    full: list[_Full] = dataclasses.field(default_factory=list)
    reservoirs: list[tuple[_ReservoirRows, int]] = dataclasses.field(default_factory=list)


class _Slot:
    """One hooked tensor: one hook and one gather per forward pass, for every point that reads it.

    The points fed are those whose tensor is this very tensor (the output of block i is the
    input of block i+1) and, through an exact activation (:data:`_DERIVABLE`), the
    post-activation point of a ``.pre`` tensor. Each forward pass reduces the whole tensor once
    for the extent of every fed point, and gathers the rows of this batch's *plan*
    (:class:`_Plan`): the sampled positions (moments and activity) in one indexing op, and the
    reservoir candidates of each block frame that a fed point belongs to in one each. Plans
    depend only on the frame, the rates and the groups, so slots that agree on those share them.
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
        self._fulls: list[_Full] | None = None
        self._terms: tuple[Any, ...] = ()
        self._gathers = False

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

    def _plan(self, batch: _Batch, device: torch.device) -> "_Plan":
        """This batch's :class:`_Plan`, shared by the slots that agree on frame, rates and groups."""
        if self._key is None:   # the rates and frames are fixed once the capture starts
            self._key = ("plan", self.hw, self.sample_rate, self.moment_rate,
                         tuple((id(g), s) for g, s in self.frames))
        plan = batch.cache.get(self._key)
        if plan is None:
            plan = batch.cache[self._key] = self._make_plan(batch, device)
        return plan

    def _make_plan(self, batch: _Batch, device: torch.device) -> "_Plan":
        plan = _Plan(self.hw[0] * self.hw[1])
        if self.sample_rate > 0.0:
            rows, plan.mask = batch.cached(("sample", self.hw, self.sample_rate, self.moment_rate, device),
                                           lambda: self._sample(batch, device))
            if self.sample_rate >= 1.0:
                plan.every = True
            else:
                plan.sample, plan.n_sample = rows, int(rows.shape[0])
        for group, step in self.frames:
            b, pos, rows = group.candidates(batch, device)
            if step > 1:   # (y_out, x_out) -> (step * y_out, step * x_out) in this frame
                w_out = group.out_hw[1]
                rows = b * plan.n_pix + (pos // w_out) * (step * self.hw[1]) + (pos % w_out) * step
            plan.frames.append(rows)   # step 1: this frame is the block's output frame
        return plan

    def _sample(self, batch: _Batch, device: torch.device) -> tuple[Any, Any]:
        """(row numbers ``b*H*W + y*W + x`` of the sampled positions (None: all of them, at
        rate 1), moment mask among them)."""
        every = self.sample_rate >= 1.0
        u = None
        if not every or self.moment_rate < self.sample_rate:
            u = batch.keys(self.seed, self.hw, _MOMENT_SALT, device)
        keep = None
        drawn = u
        if not every:
            keep = torch.nonzero(u < rate_key(self.sample_rate)).squeeze(1)
            drawn = u[keep]
        mask = None
        if 0.0 < self.moment_rate < self.sample_rate:
            mask = drawn < rate_key(self.moment_rate)
        return keep, mask

    def _reduce_full(self, t: torch.Tensor, flat: torch.Tensor, scratch: _Scratch) -> None:
        """Feed every :class:`_Full` the per-channel min, max and comparison counts of ``t``
        (B, C, H, W; ``flat`` its :func:`_channel_view`), each reduction computed once for all
        the points that need it and left partial (:func:`_partial_extrema`): the fulls fold it
        with their other held passes."""
        n = t.shape[0] * t.shape[2] * t.shape[3]
        counts: dict[Any, Any] | None = None
        if _use_pieces(flat):   # a large map on one thread: one pass over memory for all of it
            lo, hi, sums = _extent_pieces(flat, self._terms, scratch)
            fold = None
            counts = {term: (v, None) for term, v in sums.items()}
        else:
            wide = _wide_rows(flat) if flat.ndim == 2 else None
            lo, hi, fold = _partial_extrema(flat, wide)
            if self._terms:
                counts = _term_counts(flat, self._terms, scratch, (lo, hi, fold), wide)
        for full in self._fulls:
            full.add(n, lo, hi, counts, fold)

    def _start(self) -> None:
        """What every pass needs of the feeds, fixed once the capture starts."""
        self._fulls = [full for feed in self.feeds.values() for full in feed.full]
        # relu / relu6: the same units are active before and after the activation, so a .pre
        # point and its post point read the same comparisons.
        self._terms = tuple(sorted({term for full in self._fulls for term in full.terms}))
        self._gathers = any(feed.sampled or feed.reservoirs for feed in self.feeds.values())

    def take(self, value: Any, batch: _Batch) -> None:
        """Reduce one hooked tensor into every point this slot feeds."""
        if not isinstance(value, torch.Tensor):
            raise ValueError(
                f"Capture point {self.point.name} expected a tensor from {self.point.module_path!r} "
                f"({self.point.hook}). Got {type(value).__name__} instead."
            )
        t = value.detach() if value.requires_grad else value
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
        if self._fulls is None:
            self._start()
        if not (self._fulls or self._gathers):
            return
        hooked = t
        if self.image:
            t = t.mean((2, 3), keepdim=True, dtype=torch.float64)
        flat = _channel_view(t)
        if self._fulls:
            self._reduce_full(t, flat, batch.scratch)
        if not self._gathers:
            return
        plan = self._plan(batch, t.device)
        exact = [acc.exact for feed in self.feeds.values() for acc in feed.sampled]
        if plan.every and exact and all(exact):
            threads = torch.get_num_threads()
            if threads > 1:
                torch.set_num_threads(1)
            try:
                self._take_positions(t.reshape(shape[0], self.channels, -1), plan.frames)
            finally:
                if threads > 1:
                    torch.set_num_threads(threads)
            return
        sample: torch.Tensor | None
        if plan.every:   # every position: all rows, the reservoir rows picked from them
            sample = t.reshape(shape[0], self.channels, -1).transpose(1, 2).reshape(-1, self.channels)
            if sample.untyped_storage().data_ptr() == hooked.untyped_storage().data_ptr():
                # A channels-last tensor reshapes to a view, which an in-place activation after
                # this hook would overwrite while the rows wait in the buffer.
                sample = sample.clone()
            frames = [sample.index_select(0, rows) for rows in plan.frames]
        elif flat.ndim == 2:
            # Channels-last (B*H*W, C): each position's C values are one contiguous row, gathered
            # whole by row number (an element-wise gather across (B, C, H*W) is several times
            # slower). One gather for the sampled rows and one per reservoir frame, each a
            # tensor of its own, so that no buffer keeps another's rows alive.
            sample = flat.index_select(0, plan.sample) if plan.n_sample else None
            frames = [flat.index_select(0, rows) for rows in plan.frames]
        else:
            sample = None
            if plan.n_sample:
                b, pos = plan.pairs(-1)
                sample = flat[b, :, pos]
            frames = []
            for i in range(len(plan.frames)):
                b, pos = plan.pairs(i)
                frames.append(flat[b, :, pos])
        for feed in self.feeds.values():
            fn = feed.fn
            if sample is not None and feed.sampled:
                vs = sample if fn is None else fn(sample)
                for acc in feed.sampled:
                    acc.push(vs, plan.mask)
            self._hold_reservoirs(feed, frames)

    def _take_positions(self, flat: torch.Tensor, frames: list[torch.Tensor]) -> None:
        """Every position of ``flat`` (B, C, H*W) into exact-mode accumulators, which reduce the
        channel-major view as it is (:meth:`_Sampled.push_positions`, before this hook returns:
        no rows are built or kept), and the reservoir rows (row numbers ``frames``, one tensor
        per block frame) gathered from it: the same values as the rows path gives."""
        b, c, hw = flat.shape
        raw: list[torch.Tensor] | None = None
        # The signed |x| histogram of the hooked values, from the first accumulator that bins
        # them: the others on the same values (folded) and those on a clamp of them
        # (:func:`_clamped_hist`) take theirs from it instead of binning every value again.
        signed: torch.Tensor | None = None
        for kind, feed in sorted(self.feeds.items(), key=lambda item: item[0] is not None):
            given: list[torch.Tensor | None] = []
            if feed.sampled and (feed.fn is None or not flat.is_contiguous()):
                vx = flat if feed.fn is None else feed.fn(flat)
                for acc in feed.sampled:
                    given.append(_given_hist(acc, kind, signed))
                    made = acc.push_positions(vx, hist=given[-1] is None)
                    if feed.fn is None and signed is None:
                        signed = made
            elif feed.sampled:
                given = [_given_hist(acc, kind, signed) for acc in feed.sampled]
                # A derived value (relu, relu6) made run by run of whole images, in place in a
                # workspace buffer, and reduced while it is in the cache: the same values as
                # ``fn(flat)``, without a new tensor of its size per call. A run holds at least
                # the rows that fix a Gram matrix's shift (so it is the same as from all rows).
                per = max(-(-_DERIVE_ENTRIES // (c * hw)), -(-_SHIFT_ROWS // hw))
                ws = feed.sampled[0].workspace
                for i in range(0, b, per):
                    part = flat[i:i + per]
                    buf = ws.values(part.numel(), part.dtype, part.device).view(part.shape)
                    vx = feed.fn(buf.copy_(part), inplace=True)
                    for acc, h in zip(feed.sampled, given):
                        acc.push_positions(vx, hist=h is None)
            for acc, h in zip(feed.sampled, given):
                if h is not None:
                    acc.add_abs_hist(h, b * hw)
            if feed.reservoirs:
                if raw is None:
                    raw = [flat[rows // hw, :, rows % hw] for rows in frames]
                self._hold_reservoirs(feed, raw)

    @staticmethod
    def _hold_reservoirs(feed: _Feed, frames: list[torch.Tensor]) -> None:
        """Hand each reservoir of ``feed`` the rows of its block frame (``frames[k]``), after
        the feed's activation; the reservoir copies them into its buffer."""
        for rr, k in feed.reservoirs:
            piece = frames[k]
            if piece.shape[0]:
                rr.add(piece if feed.fn is None else feed.fn(piece))


def _given_hist(acc: _Sampled, kind: str | None, signed: torch.Tensor | None) -> torch.Tensor | None:
    """The |x| histogram of ``acc``'s values made from ``signed``, the signed histogram of the
    hooked values (:func:`_signed_hist`): folded for the values themselves (``kind`` None),
    through the clamp for a derived relu / relu6 value. None when ``acc`` bins no |x|, when
    there is no ``signed`` yet, or when the clamp cannot be read off it (inf or NaN values)."""
    if signed is None or not acc.want_hist:
        return None
    return _fold_sign(signed) if kind is None else _clamped_hist(signed, kind)


class _Plan:
    """The rows one batch gathers from a tensor of ``n_pix`` positions per image, shared by the
    slots that agree on frame, rates and groups, as row numbers ``b*H*W + y*W + x``.

    ``sample``: the sampled positions (moments and activity; ``n_sample`` of them), or
    ``every``: all positions (rate 1). Position (image, y, x) is sampled when
    ``u < sample_rate`` with ``u = hash / 2^64``; the moment rows are those with
    ``u < moment_rate`` among them (``mask``; None: all of them). ``frames``: the reservoir
    candidates of each block frame, in this tensor's frame. :meth:`pairs` gives them as
    ``(b, y*W + x)`` for the gather of a contiguous (B, C, H*W) view, once per batch.
    """

    def __init__(self, n_pix: int) -> None:
        self.n_pix = n_pix
        self.every = False
        self.sample: torch.Tensor | None = None
        self.n_sample = 0
        self.mask: torch.Tensor | None = None
        self.frames: list[torch.Tensor] = []
        self._pairs: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def pairs(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(b, y*W + x)`` of frame ``i`` (-1: the sampled rows)."""
        if i not in self._pairs:
            rows = self.sample if i < 0 else self.frames[i]
            self._pairs[i] = (rows // self.n_pix, rows % self.n_pix)
        return self._pairs[i]


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
            if p.hook != "derived":
                handles.append(_register(model, p, record(p), lambda: calls))
        with torch.no_grad():
            model(example_input)
    finally:
        for h in handles:
            h.remove()
    for p in points:
        if p.name in seen:
            seen[p.name].calls = calls.get(id(p), 1)
        elif p.hook == "derived" and p.name in derive and derive[p.name].name in seen:
            # a functional activation's output that no module reads: only ever derived
            pre = seen[derive[p.name].name]
            seen[p.name] = _Seen(pre.shape, torch.empty(0), 0, pre.calls, derivable=True)
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
