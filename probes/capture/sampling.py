"""Counter-based position sampling in torch, on the activations' device.

Every sampling decision of a capture is a function of the sample id (image, y, x) alone: the
64-bit hash :func:`probes.sinks.position_hash` (splitmix64 chained over salt, seed, image, y, x)
compared with a threshold. Here the same hash is computed in vectorised torch on the tensor's
device, bit for bit equal to the numpy reference, so a batch's plan needs no host round trip
and no host work that grows with H * W.

torch has no unsigned 64-bit arithmetic on every device, so the hash runs in int64: additions
and products wrap modulo 2^64 exactly as in uint64 (two's complement), and a logical right
shift is an arithmetic shift masked to its low bits. Hashes are then stored as *keys*, the hash
with its top bit flipped (``hash ^ 2^63`` read as int64): that map is monotone from uint64 to
int64, so ``key_a < key_b`` exactly when ``hash_a < hash_b``, and sorting keys sorts hashes.

Unbiasedness: a position is drawn when ``hash < rate * 2^64``; the hash of distinct ids is
(to the quality of splitmix64) independent and uniform on [0, 2^64), so every position has
inclusion probability ``rate`` independently of the others and of how the images were split
into batches or shards. The sampled mean and covariance are then unbiased estimates of those
over all positions, and bottom-K on the same hash (another salt) is a uniform sample without
replacement.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from probes.blocks import CapturePoint
from probes.sinks import Reservoir
from probes.sinks import _splitmix64 as _mix_np

if TYPE_CHECKING:
    from probes.capture.accumulate import _ReservoirRows

__all__ = ["from_keys", "grid_keys", "image_keys", "position_bits", "rate_key", "to_keys"]

#: Salt of the moment / activity sampling hash (the reservoir uses ``Reservoir.SALT``).
_MOMENT_SALT = 0x40E7
_M64 = (1 << 64) - 1
_TOP = 1 << 63


def _signed(v: int) -> int:
    """The int64 with the bits of the uint64 ``v``."""
    v &= _M64
    return v - (1 << 64) if v >= _TOP else v


_GOLDEN = _signed(0x9E3779B97F4A7C15)
_MUL1 = _signed(0xBF58476D1CE4E5B9)
_MUL2 = _signed(0x94D049BB133111EB)


def _lsr(z: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 bits by ``k`` (torch's ``>>`` is arithmetic)."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def _splitmix64(z: torch.Tensor) -> torch.Tensor:
    """splitmix64's finaliser on int64 bits (wrapping arithmetic, same bits as on uint64)."""
    z = z + _GOLDEN
    z = (z ^ _lsr(z, 30)) * _MUL1
    z = (z ^ _lsr(z, 27)) * _MUL2
    return z ^ _lsr(z, 31)


@functools.lru_cache(maxsize=64)
def _head(seed: int, salt: int) -> int:
    """The hash chain up to the image, which depends on (salt, seed) only (int64 bits)."""
    with np.errstate(over="ignore"):
        head = _mix_np(np.asarray(salt & _M64, dtype=np.uint64))
        return _signed(int(_mix_np(head ^ np.uint64(seed & _M64))))


def image_keys(seed: int, first_image: int, n_images: int, salt: int, device: torch.device | str
               ) -> torch.Tensor:
    """The hash chain up to (salt, seed, image) of ``n_images`` images from ``first_image``
    (int64 bits, shape (n_images,)): the part of :func:`grid_keys` shared by every frame."""
    img = torch.arange(first_image, first_image + n_images, dtype=torch.int64, device=device)
    return _splitmix64(img ^ _head(seed, salt))


def position_bits(hw: tuple[int, int], device: torch.device | str) -> torch.Tensor:
    """``(y << 32) ^ x`` of every position (y, x) of an ``hw`` frame, flat (int64, (H*W,)):
    what the hash chain mixes in after the image."""
    h, w = hw
    y = torch.arange(h, dtype=torch.int64, device=device)
    x = torch.arange(w, dtype=torch.int64, device=device)
    return ((y << 32)[:, None] ^ (x & 0xFFFFFFFF)[None, :]).reshape(-1)


def grid_keys(seed: int, first_image: int, n_images: int, hw: tuple[int, int], salt: int,
              device: torch.device | str, *, images: torch.Tensor | None = None,
              positions: torch.Tensor | None = None) -> torch.Tensor:
    """Keys of every position (image, y, x) of ``n_images`` images from ``first_image``.

    ``images`` / ``positions``: :func:`image_keys` and :func:`position_bits` of the same
    arguments, if already computed (they are shared by frames and by batches).

    Returns
    -------
    Tensor of int64, shape (n_images * H * W,), flat in (image, y, x) order, on ``device``:
    ``position_hash(seed, image, y, x, salt=salt) ^ 2^63`` read as int64 (see the module
    docstring).
    """
    hi = image_keys(seed, first_image, n_images, salt, device) if images is None else images
    yx = position_bits(hw, device) if positions is None else positions
    return _splitmix64(hi[:, None] ^ yx[None, :]).reshape(-1) ^ (-_TOP)


def rate_key(rate: float) -> int:
    """The key below which a position is drawn with probability ``rate`` (< 1): the key of
    ``floor(rate * 2^64)``, the numpy rule ``hash < np.uint64(rate * 2.0**64)``."""
    return int(np.uint64(rate * 2.0**64)) - _TOP


def to_keys(hashes: np.ndarray) -> torch.Tensor:
    """uint64 hashes as int64 keys (CPU tensor)."""
    return torch.from_numpy((np.asarray(hashes, dtype=np.uint64) ^ np.uint64(_TOP)).view(np.int64).copy())


def from_keys(keys: torch.Tensor) -> np.ndarray:
    """int64 keys back to uint64 hashes (numpy, on the host)."""
    return (keys.cpu().numpy().astype(np.int64) ^ np.int64(-_TOP)).view(np.uint64)


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
        """Hash keys of every position of this batch in frame ``hw`` (see :mod:`probes.sampling`):
        the image part computed once per batch and salt, the position part once per capture."""
        key = ("keys", hw, salt, device)
        keys = self.cache.get(key)
        if keys is None:
            images = self.cached(("images", seed, salt, device),
                                 lambda: image_keys(seed, self.offset, self.size, salt, device))
            memo = self.scratch.memo
            positions = memo.get(("positions", hw, device))
            if positions is None:
                positions = memo["positions", hw, device] = position_bits(hw, device)
            keys = self.cache[key] = grid_keys(seed, self.offset, self.size, hw, salt, device,
                                               images=images, positions=positions)
        return keys


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
        #: Rows held at most: a batch adds at most k candidates, and the group compacts to the
        #: k smallest priorities before a batch's would pass it. Members size their buffers so.
        self.capacity = 2 * k
        self.ids: torch.Tensor | None = None        # (held, 3) block-frame ids of the rows held
        self.priority: torch.Tensor | None = None   # (held,) int64 keys
        self._ids: torch.Tensor | None = None       # (capacity, 3) and (capacity,) buffers of
        self._priority: torch.Tensor | None = None  # which ids and priority are the first rows
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
        n = int(order.shape[0])
        self._ids[:n] = self.ids[order]
        self._priority[:n] = self.priority[order]
        self._hold(n)

    def _hold(self, n: int) -> None:
        self.held = n
        self.ids, self.priority = self._ids[:n], self._priority[:n]

    def candidates(self, batch: _Batch, device: torch.device
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(b, y_out * W_out + x_out, b * H_out * W_out + y_out * W_out + x_out) of this batch's
        candidates (computed once per batch): the positions whose priority is below
        :meth:`threshold`, at most k of them."""
        return batch.cached(("group", id(self)), lambda: self._candidates(batch, device))

    def _candidates(self, batch: _Batch, device: torch.device
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        prio = batch.keys(self.seed, self.out_hw, Reservoir.SALT, device)
        self.n_seen += prio.shape[0]
        thr = self.threshold()
        if thr is None:
            sel = torch.arange(prio.shape[0], device=device)
        else:
            sel = torch.nonzero(prio < thr).squeeze(1)
        if sel.shape[0] > self.k:
            sel = sel[torch.sort(prio[sel], stable=True).indices[: self.k]]
        m = int(sel.shape[0])
        if self.held + m > self.capacity:
            # Compacting does not change the threshold (the k-th smallest stays), nor the
            # order of ties: rows are kept in (priority, arrival) order.
            self.compact()
        n_out = self.out_hw[0] * self.out_hw[1]
        b, pos = sel // n_out, sel % n_out
        if self._ids is None:
            self._ids = torch.empty(self.capacity, 3, dtype=torch.int64, device=device)
            self._priority = torch.empty(self.capacity, dtype=torch.int64, device=device)
        h = self.held
        self._ids[h:h + m] = torch.stack([b + batch.offset, pos // self.out_hw[1], pos % self.out_hw[1]], dim=1)
        self._priority[h:h + m] = prio[sel]
        self._hold(h + m)
        return b, pos, sel


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
