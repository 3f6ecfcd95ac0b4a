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

import numpy as np
import torch

from probes.sinks import _splitmix64 as _mix_np

__all__ = ["from_keys", "grid_keys", "rate_key", "to_keys"]

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


def grid_keys(seed: int, first_image: int, n_images: int, hw: tuple[int, int], salt: int,
              device: torch.device | str) -> torch.Tensor:
    """Keys of every position (image, y, x) of ``n_images`` images from ``first_image``.

    Returns
    -------
    Tensor of int64, shape (n_images * H * W,), flat in (image, y, x) order, on ``device``:
    ``position_hash(seed, image, y, x, salt=salt) ^ 2^63`` read as int64 (see the module
    docstring).
    """
    h, w = hw
    # The chain up to the image only depends on (salt, seed): computed once on the host.
    with np.errstate(over="ignore"):
        head = _mix_np(np.asarray(salt & _M64, dtype=np.uint64))
        head = int(_mix_np(head ^ np.uint64(seed & _M64)))
    img = torch.arange(first_image, first_image + n_images, dtype=torch.int64, device=device)
    hi = _splitmix64(img ^ _signed(head))
    y = torch.arange(h, dtype=torch.int64, device=device)
    x = torch.arange(w, dtype=torch.int64, device=device)
    yx = ((y << 32)[:, None] ^ (x & 0xFFFFFFFF)[None, :]).reshape(-1)
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
