"""The result of a probe run: per-point sinks that merge across shards and save to one file."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from probes._io import atomic_path
from probes.blocks import CapturePoint
from probes.sinks import Activity, Extent, Moments, Reservoir

__all__ = ["SINKS", "PointStats", "ProbeResult"]

SINKS: tuple[str, ...] = ("moments", "activity", "reservoir", "extent")

_FORMAT = "bottleneck-probe/probe-result"
_FORMAT_VERSION = 1
#: Settings that must agree for two results to merge.
_MERGE_KEYS = ("sample_unit", "moments", "moment_positions", "activity_positions", "reservoir_size",
               "seed", "sinks")


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
