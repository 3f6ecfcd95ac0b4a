"""The :func:`capture` context manager: hooks, sinks and the live :class:`Capture`."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from threadpoolctl import threadpool_limits
from torch import nn

from probes.blocks import CapturePoint, capture_points
from probes.capture.accumulate import _Full, _ReservoirRows, _Sampled, _Scratch, _Workspace
from probes.capture.hooks import _DERIVABLE, _example_pass, _register, _Slot
from probes.capture.memory import _MemoryGuard
from probes.capture.points import PointSpec, _check_choice, _check_int, _check_positive, select_points
from probes.capture.result import SINKS, PointStats, ProbeResult
from probes.capture.sampling import _Batch, _frame_step, _Group, rate_key
from probes.points import PRE, point_name
from probes.sinks import ACTIVITY_KINDS

__all__ = [
    "DEFAULT_ACTIVITY_POSITIONS",
    "DEFAULT_MOMENT_POSITIONS",
    "DEFAULT_RESERVOIR_SIZE",
    "MOMENT_MODES",
    "SAMPLE_UNITS",
    "Capture",
    "capture",
]

SAMPLE_UNITS: tuple[str, ...] = ("position", "image")
MOMENT_MODES: tuple[str, ...] = ("sampled", "exact")
#: Reservoir capacity K (points per capture point).
DEFAULT_RESERVOIR_SIZE = 1024
#: Expected number of positions per image that enter the moments in ``moments="sampled"``.
DEFAULT_MOMENT_POSITIONS = 1
#: Expected number of positions per image that enter the activity counts in ``moments="sampled"``.
DEFAULT_ACTIVITY_POSITIONS = 2


def _input_dtype(model: nn.Module) -> torch.dtype | None:
    """The floating dtype of the model's parameters (inputs are cast to it), or None."""
    for t in model.parameters():
        if t.is_floating_point():
            return t.dtype
    return None


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
        Any of ``"moments"``, ``"activity"``, ``"reservoir"``, ``"extent"`` (all by default).
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
            if q.pre or q.act not in _DERIVABLE or q.stage not in ("expand", "depthwise", "project"):
                continue
            pre = by_name.get(point_name(q.block, q.stage + PRE))
            if pre is not None and pre.alias_of is None:
                derive[q.name] = pre
    for q in targets:
        if q.hook == "derived" and q.name not in derive:
            raise ValueError(
                f"Capture point {q.name} is the output of a functional {q.act} that no module reads; "
                "it is derived from the .pre rows, which needs sample_unit='position' (the mean of "
                f"{q.act}(x) is not {q.act} of the mean). Got sample_unit={sample_unit!r}.")
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
        post = point_sinks.get(point_name(p.block, p.stage))
        if (p.pre and ps.activity_kind is not None and post is not None and post is not ps
                and post.activity_kind == ps.activity_kind and post.channels == ps.channels):
            ps.activity_from = post

    syrk = torch.get_num_threads() == 1
    workspace = _Workspace()   # scratch memory of every accumulator's reductions, reused
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
                                       pre=ps.point.pre, syrk=syrk, hist=want_e,
                                       exact=moments == "exact", workspace=workspace,
                                       gram_threads=torch.get_num_threads() if moments == "exact" else None)
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
        # dsyrk (one torch thread; exact mode: one per torch thread, in threads of its own) runs in
        # numpy's BLAS; keep that BLAS off the other cores too.
        with (threadpool_limits(limits=1, user_api="blas") if syrk or moments == "exact"
              else contextlib.nullcontext()):
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
