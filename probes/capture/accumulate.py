"""Device accumulators of a capture: everything a hook reduces its rows into.

- :class:`_Sampled`: float64 moments, activity counts and the ``|x|`` histogram of one tensor
  value's sampled rows (buffered, reduced every few batches);
- :class:`_Full`: per-channel min, max and active counts over every position;
- :class:`_ReservoirRows`: the reservoir rows of one point, aligned with its frame's ids.

All state stays on the activations' device until it is read out as numpy sinks
(:mod:`probes.sinks`).
"""

from __future__ import annotations

import math
import mmap
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from scipy.linalg import blas

from probes.capture.sampling import _Group, from_keys
from probes.sinks import (
    ABS_HIST_BINS,
    Activity,
    Extent,
    Moments,
    Reservoir,
    active_terms,
    chan_update,
)

#: Gathered rows are buffered per value and reduced once ``max(_FLUSH_ROWS, _FLUSH_ELEMENTS / C)``
#: rows are held, so the fixed cost of the reduction ops is paid every few batches instead of at
#: every hook call, and the float64 rank-k updates are long enough to run near BLAS speed.
_FLUSH_ELEMENTS = 1 << 16
_FLUSH_ROWS = 512


def _syrk(r: np.ndarray, m2: np.ndarray) -> None:
    """``m2 += r^T r`` on the upper triangle of the Fortran-ordered ``m2`` (BLAS dsyrk: half the
    multiply-adds of a general matrix product)."""
    blas.dsyrk(1.0, r.T, beta=1.0, c=m2, trans=0, lower=0, overwrite_c=1)


#: Rows and columns per block of :func:`_mirror_upper`.
_MIRROR_BLOCK = 128


def _mirror_upper(m: np.ndarray) -> None:
    """Copy the upper triangle of the square ``m`` onto its lower triangle, in place.

    Block by block, so each copy is a plain strided transpose (no triangle masks, no new
    ``C x C`` arrays): ``np.triu`` twice and a sum cost about twice as much on a 960-channel
    Gram matrix. The upper triangle and diagonal are left bit for bit as they are.
    """
    n = m.shape[0]
    for i in range(0, n, _MIRROR_BLOCK):
        j = min(i + _MIRROR_BLOCK, n)
        m[j:, i:j] = m[i:j, j:].T
        d = m[i:j, i:j]
        lower = np.tril_indices(j - i, -1)
        d[lower] = d.T[lower]


#: Entries (rows x (C + 1)) of one float64 chunk of the exact-mode Gram update: 32 MB, enough
#: rows per rank-k update for BLAS to run near its peak on every channel count of a network.
_GRAM_ENTRIES = 1 << 22
#: Rows whose mean is the shift of an exact-mode Gram matrix (:class:`_Gram`).
_SHIFT_ROWS = 4096
#: Entries per chunk of the activity counts and the |x| histogram (4 MB of float32 per buffer).
_ACT_ENTRIES = 1 << 20
#: Refold bound of the running Gram matrix: it is folded into the moments before any channel's
#: ``S_ii`` (sum of (x - shift)^2) would exceed this many times its centred ``M2_ii``.
_REFOLD = 16.0


class _Workspace:
    """Scratch memory of one capture, allocated once and reused by every accumulator: the
    float64 chunk of the exact-mode Gram update (up to :data:`_GRAM_ENTRIES` entries, 32 MB),
    the chunk's own Gram matrix, and two float32 buffers of :data:`_ACT_ENTRIES` for the
    activity counts and the |x| histogram (about 48 MB in all on mobilenet_v2). New temporaries
    of a batch's size at every hook call would cost more in page faults than the arithmetic."""

    def __init__(self) -> None:
        self.buffers: dict[tuple[str, torch.device], torch.Tensor] = {}
        self._workers: dict[int, _Workspace] = {}

    def worker(self, k: int) -> "_Workspace":
        """The workspace of the ``k``-th thread of a split update (0: this one)."""
        if k == 0:
            return self
        if k not in self._workers:
            self._workers[k] = _Workspace()
        return self._workers[k]

    def _get(self, name: str, n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        key = (name, torch.device(device))
        buf = self.buffers.get(key)
        if buf is None or buf.numel() < n:
            self.buffers.pop(key, None)
            del buf   # freed before the larger one is allocated
            buf = self.buffers[key] = torch.empty(n, dtype=dtype, device=device)
        return buf[:n]

    def f64(self, n: int, device: torch.device) -> torch.Tensor:
        """``n`` float64 entries (the chunk of rows of a Gram update)."""
        return self._get("f64", n, torch.float64, device)

    def gram(self, n: int, device: torch.device, k: int = 0) -> torch.Tensor:
        """``n`` float64 entries (a chunk's own Gram matrix; ``k``: that of the ``k``-th thread
        of a split update)."""
        return self._get("gram" if k == 0 else f"gram.{k}", n, torch.float64, device)

    def f32(self, k: int, n: int, device: torch.device) -> torch.Tensor:
        """``n`` float32 entries of buffer ``k`` (0 or 1)."""
        return self._get(f"f32.{k}", n, torch.float32, device)

    def values(self, n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """``n`` entries of ``dtype`` (exact mode: a run of images of a post-activation value
        derived from its ``.pre`` tensor, reduced before the next run is made)."""
        return self._get(f"values.{dtype}", n, dtype, device)

    def ones(self, n: int, device: torch.device) -> torch.Tensor:
        """A float32 vector of ``n`` ones (kept between calls)."""
        key = ("ones", torch.device(device))
        v = self.buffers.get(key)
        if v is None or v.shape[0] < n:
            v = self.buffers[key] = torch.ones(max(n, 1024), dtype=torch.float32, device=device)
        return v[:n]


class _Gram:
    """Exact-mode moments of one tensor value: a running float64 Gram matrix ``G`` of the
    augmented rows ``z = [x - shift, 1]`` over every position, (C + 1) x (C + 1).

    One rank-k update per chunk gives everything: ``G[C, C]`` is the count, ``G[:C, C]`` the
    sums ``S = sum(x - shift)`` and ``G[:C, :C]`` the cross products; the moments follow as
    ``mean = shift + S / n`` and ``M2 = G[:C, :C] - S S^T / n``. ``shift`` (per channel,
    rounded to float32 so that ``x - shift`` of float32 values is exact in float64 unless their
    magnitudes differ by over 2^29) is the mean of the first :data:`_SHIFT_ROWS` rows, so ``S``
    stays small and ``M2 = G - S S^T / n`` loses few digits.

    Float64 bound (:data:`_REFOLD`): the rounding error of ``M2_ii`` is about
    ``eps * G_ii`` (eps = 2^-53 times the accumulation's growth), i.e. ``eps * G_ii / M2_ii``
    relative, and that of ``M2_ij`` at most ``eps * sqrt(G_ii G_jj)``. Before a chunk's Gram
    matrix ``g`` is added, the ratio ``G_ii / M2_ii`` of the sum is checked on every channel;
    if it would pass :data:`_REFOLD`, ``G`` is first folded into the (count, mean, M2) state
    (Chan's update, as :class:`probes.sinks.Moments` does) and restarted from ``g``; if the
    chunk alone passes it (its mean far from ``shift``), it is recomputed about its own mean,
    which becomes the new shift. So every Gram matrix read out has ``G_ii <= 16 M2_ii``:
    relative errors of order 16 eps (about 1e-14) on the diagonal, and off the diagonal at most
    16 eps times ``sqrt(M2_ii M2_jj)``. (A ratio of sums is at most the larger ratio of its
    parts, so checking the sum is enough.)

    ``syrk``: CPU rows are reduced by BLAS dsyrk (upper triangle only, half the multiply-adds);
    otherwise by torch's matrix product on the rows' device. ``workers``: threads a large
    channel-major chunk is split between, over its positions, each block reduced by numpy's
    syrk in a thread of its own (:meth:`_chunk_positions`; a capture passes torch's thread
    count, and holds BLAS itself to one thread). A capture in exact mode uses dsyrk on the
    CPU at every thread count (torch's product took 2-3x as long on two threads).
    """

    def __init__(self, channels: int, syrk: bool, workers: int = 1) -> None:
        self.channels, self.syrk, self.workers = channels, syrk, max(1, workers)
        self.shift: torch.Tensor | None = None
        self.g: Any = None          # the running Gram matrix, numpy (syrk) or a tensor
        self.n = 0                  # rows in ``g``
        self.upper = False          # only the upper triangle of the moments is filled
        # The state that ``g`` is folded into (as in :class:`probes.sinks.Moments`).
        self.count, self.mean, self.m2 = 0, None, None

    def add(self, rows: torch.Tensor, workspace: _Workspace) -> None:
        """Fold every row of ``rows`` (n, C) into the Gram matrix, chunk by chunk."""
        n, c = rows.shape
        if n == 0:
            return
        step = max(1, _GRAM_ENTRIES // (c + 1))
        self._add_parts((rows[start:start + step] for start in range(0, n, step)), workspace, rows)

    def add_positions(self, x: torch.Tensor, workspace: _Workspace) -> None:
        """Fold every position of ``x`` (B, C, P), channel-major (a (B, C, H*W) view of a
        contiguous activation), into the Gram matrix: the same sums as :meth:`add` of its rows
        ``x.transpose(1, 2).reshape(-1, C)``, without that transposed copy.

        Chunks are runs of whole images (or of positions of one image, when an image alone has
        over :data:`_GRAM_ENTRIES` entries); each is copied into the workspace as ``z^T``,
        (C + 1) x (positions), and ``z^T z`` is one dsyrk with ``trans=1`` on it (or a torch
        product), as fast as the row-major update without the transpose.
        """
        b, c, p = x.shape
        if b * p == 0:
            return
        step = max(1, _GRAM_ENTRIES // (c + 1))
        if p >= step:
            parts = (x[i:i + 1, :, start:start + step] for i in range(b) for start in range(0, p, step))
        else:
            per = step // p
            parts = (x[i:i + per] for i in range(0, b, per))
        # The shift: the mean of the first rows in row order, as :meth:`add` takes it.
        first = x[:-(-_SHIFT_ROWS // p)].transpose(1, 2).reshape(-1, c) if self.shift is None else x
        self._add_parts(parts, workspace, first)

    def _add_parts(self, parts: Any, workspace: _Workspace, first: torch.Tensor) -> None:
        """Fold each chunk of ``parts`` ((m, C) rows or (b, C, P) positions) into the Gram matrix;
        ``first``: (n, C) rows whose first :data:`_SHIFT_ROWS` give the shift if there is none
        yet (otherwise any tensor on the rows' device)."""
        c = self.channels
        device = first.device
        syrk = self.syrk and device.type == "cpu"
        if self.shift is None:
            # The mean of the first rows (a few thousand: a float64 column mean is slow in torch).
            self.shift = first[:_SHIFT_ROWS].double().mean(0).float().double()
        if self.g is None:
            self.g = (np.zeros((c + 1, c + 1), order="F") if syrk
                      else torch.zeros(c + 1, c + 1, dtype=torch.float64, device=device))
            # dsyrk fills the upper triangle only, and a torch product of the channel-major chunk
            # (``zt zt^T``) need not be symmetric bit for bit: the upper one is mirrored at readout.
            self.upper = True
        for part in parts:
            g = self._chunk(part, workspace, syrk)
            m = part.shape[0] if part.ndim == 2 else part.shape[0] * part.shape[2]
            if self.n and _passes(g, m, self.g, self.n):
                self.fold()
            if not self.n and _passes(g, m):
                # The chunk is far from the shift: recomputed about its own mean, the new shift.
                offset = torch.as_tensor(g[:c, c] / m, device=device)
                self.shift = (self.shift + offset).float().double()
                g = self._chunk(part, workspace, syrk)
            self.g += g
            self.n += m

    def _chunk(self, part: torch.Tensor, workspace: _Workspace, syrk: bool) -> Any:
        """The Gram matrix of ``[part - shift, 1]`` (a view of workspace memory); ``part``: (m, C)
        rows, or (b, C, P) positions (:meth:`add_positions`)."""
        if part.ndim == 3:
            return self._chunk_positions(part, workspace, syrk)
        m, c = part.shape
        z = workspace.f64(m * (c + 1), part.device).view(m, c + 1)
        # A cast copy, then a same-dtype subtraction: 1.3-3x faster than one mixed-dtype
        # torch.sub into the strided columns.
        z[:, :c].copy_(part)
        z[:, :c].sub_(self.shift)
        z[:, c] = 1.0
        g = workspace.gram((c + 1) * (c + 1), part.device)
        if syrk:
            gn = g.numpy().reshape((c + 1, c + 1), order="F")
            gn.fill(0.0)
            # z^T z, upper triangle: z (m, C+1) row-major is z^T in column-major order.
            return blas.dsyrk(1.0, z.numpy().T, beta=0.0, c=gn, trans=0, lower=0, overwrite_c=1)
        return torch.mm(z.T, z, out=g.view(c + 1, c + 1))

    def _chunk_positions(self, part: torch.Tensor, workspace: _Workspace, syrk: bool) -> Any:
        """:meth:`_chunk` of (b, C, P) positions: ``zt = z^T`` (C + 1, b * P) row-major, filled
        image by image (runs of P contiguous values), and ``zt zt^T``.

        Split between ``workers`` threads (a large chunk on the CPU): thread k fills a block of
        the workspace of its own, contiguous, with its run of positions of every image, and
        reduces it by numpy's product ``zt_k zt_k^T`` (a syrk in numpy's BLAS, which releases
        the GIL, so the blocks run in parallel) into a Gram matrix of its own; they are summed
        here. (scipy's dsyrk holds the GIL, and copies a column slice of a shared ``zt`` before
        the call: an earlier split of that kind ran the threads one after the other, and each
        copy cost as much as its product.)"""
        b, c, p = part.shape
        m = b * p
        g = workspace.gram((c + 1) * (c + 1), part.device)
        w = min(self.workers, m * (c + 1) * (c + 1) // _SPLIT_MADDS + 1, p) if syrk else 1
        if w == 1:
            zt = workspace.f64((c + 1) * m, part.device).view(c + 1, m)
            _fill_zt(zt, part, self.shift)
            if not syrk:
                return torch.mm(zt, zt.T, out=g.view(c + 1, c + 1))
            # zt (C+1, m) row-major is z (m, C+1) in column-major order: z^T z is dsyrk trans=1.
            return _syrk_t(zt.numpy(), g.numpy().reshape((c + 1, c + 1), order="F"))
        buf = workspace.f64((c + 1) * m, part.device)
        edges = [p * k // w for k in range(w + 1)]
        jobs = []
        for k in range(w):
            lo, hi = edges[k], edges[k + 1]
            start = (c + 1) * b * lo   # blocks of (C + 1) x b*(hi - lo) values, one after another
            zt = buf[start:start + (c + 1) * b * (hi - lo)].view(c + 1, b * (hi - lo))
            out = (g if k == 0 else workspace.gram((c + 1) * (c + 1), part.device, k)).numpy()
            jobs.append((part[:, :, lo:hi], zt, out.reshape(c + 1, c + 1)))
        futures = [_pool(w - 1).submit(_gram_block, *job, self.shift, True) for job in jobs[1:]]
        gn = _gram_block(*jobs[0], self.shift)
        for f, (_, _, o) in zip(futures, jobs[1:]):
            f.result()
            gn += o
        return gn

    def fold(self) -> None:
        """Fold the Gram matrix into (count, mean, M2) with Chan's update, and restart it."""
        c, n = self.channels, self.n
        if not n:
            return
        g = self.g
        if isinstance(g, np.ndarray):
            s = g[:c, c].copy()
            # M2 = G[:C, :C] - S S^T / n: one copy and an in-place rank-1 update (BLAS dger), no
            # C x C temporaries (their page faults cost more than the arithmetic).
            m2 = blas.dger(-1.0 / n, s, s, a=np.array(g[:c, :c], order="F"), overwrite_a=1)
            shift = self.shift.numpy()
        else:
            s = g[:c, c].clone()
            m2 = g[:c, :c] - torch.outer(s, s) / n   # s_i s_j / n: symmetric bit for bit
            shift = self.shift
        self.count, self.mean, self.m2 = chan_update(self.count, self.mean, self.m2, n, shift + s / n, m2)
        if isinstance(g, np.ndarray):
            g.fill(0.0)
        else:
            g.zero_()
        self.n = 0


def _fill_zt(zt: torch.Tensor, part: torch.Tensor, shift: torch.Tensor) -> None:
    """``zt`` (C + 1, b * P) = ``[part - shift, 1]^T`` of the (b, C, P) positions ``part``,
    image by image (runs of P contiguous values)."""
    b, c, p = part.shape
    body = zt[:c].view(c, b, p)
    body.copy_(part.transpose(0, 1))
    body.sub_(shift.view(c, 1, 1))
    zt[c] = 1.0


def _gram_block(part: torch.Tensor, zt: torch.Tensor, out: np.ndarray, shift: torch.Tensor,
                pooled: bool = False) -> np.ndarray:
    """``out = zt zt^T`` (numpy's syrk, GIL released) of ``zt`` filled from ``part``
    (:func:`_fill_zt`): one block of a split Gram chunk. ``pooled``: run in a pool thread, whose
    torch is then held to one thread (a setting of that thread only)."""
    if pooled and torch.get_num_threads() != 1:
        torch.set_num_threads(1)
    _fill_zt(zt, part, shift)
    ztn = zt.numpy()
    return np.matmul(ztn, ztn.T, out=out)


def _syrk_t(zt: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``g = zt zt^T`` (upper triangle) of the row-major ``zt``, by dsyrk ``trans=1``."""
    g.fill(0.0)
    return blas.dsyrk(1.0, zt.T, beta=0.0, c=g, trans=1, lower=0, overwrite_c=1)


#: Multiply-adds from which a Gram chunk is split between threads (:attr:`_Gram.workers`).
_SPLIT_MADDS = 1 << 24
_POOL: tuple[int, ThreadPoolExecutor] | None = None


def _pool(n: int) -> ThreadPoolExecutor:
    """A pool of at least ``n`` threads for the split exact-mode updates, shared by every capture."""
    global _POOL
    if _POOL is None or _POOL[0] < n:
        _POOL = (n, ThreadPoolExecutor(max_workers=n, thread_name_prefix="bnprobe-gram"))
    return _POOL[1]


def _passes(g: Any, n: int, other: Any = None, n_other: int = 0) -> bool:
    """Whether some channel of the augmented Gram matrix ``g`` of ``n`` rows (plus ``other`` of
    ``n_other`` rows, if given) has ``G_ii > _REFOLD * M2_ii`` (NaN compares false)."""
    c = g.shape[0] - 1
    s, d = g[:c, c], g.diagonal()[:c]
    if other is not None:
        s, d, n = s + other[:c, c], d + other.diagonal()[:c], n + n_other
    return bool((d > _REFOLD * (d - s * s / n)).any())


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
                 syrk: bool, hist: bool, exact: bool = False,
                 workspace: "_Workspace | None" = None, gram_threads: int | None = None) -> None:
        self.channels, self.want_moments, self.syrk, self.want_hist = channels, moments, syrk, hist
        self.activity_kind, self.pre = activity_kind, pre
        self.workspace = workspace if workspace is not None else _Workspace()
        # Exact mode: the moments are a running Gram matrix of [x - shift, 1] (see _Gram).
        self.gram = None
        if exact and moments:
            self.gram = (_Gram(channels, syrk) if gram_threads is None
                         else _Gram(channels, True, workers=gram_threads))
        self.exact = exact
        self.workers = max(1, gram_threads or 1)   # exact mode: threads a large update is split between
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
        mask = None
        if self.masks:
            mask = self.masks[0] if len(self.masks) == 1 else torch.cat(self.masks)
        self.chunks, self.masks, self.held = [], [], 0
        self._reduce(sample, mask)

    def _reduce(self, sample: torch.Tensor, mask: torch.Tensor | None, hist: bool = True) -> None:
        """Reduce the rows ``sample`` (the moments: those of ``mask``, if given; ``hist=False``:
        not into the |x| histogram)."""
        if self.want_moments:
            sample_m = sample if mask is None else sample[mask]
            if self.gram is not None:
                self.gram.add(sample_m, self.workspace)
            else:
                self._add_moments(sample_m)
        if self.activity_kind is not None:
            self._add_activity(sample)
        if self.want_hist and hist:
            self._add_hist(sample)

    def push_positions(self, x: torch.Tensor, hist: bool = True) -> torch.Tensor | None:
        """Reduce every position of ``x`` (B, C, P), channel-major, at once (exact mode only):
        the same moments, activity counts and histogram as :meth:`push` of its rows
        ``x.transpose(1, 2).reshape(-1, C)``, without building them. ``x`` may be a view of a
        live tensor (it is reduced before this returns, nothing is kept). A view that is not
        contiguous (a channels-last tensor, whose rows are the contiguous view) is reduced as
        those rows.

        ``hist=False``: the |x| histogram is left to the caller (:meth:`add_abs_hist`, made
        from another accumulator's signed histogram of the same values, or of the values an
        exact clamp was applied to: :func:`_clamped_hist`). Returns the signed histogram of
        ``x`` (:func:`_signed_hist`) when it made the |x| histogram from one, else None."""
        if not self.exact:
            raise RuntimeError("push_positions is for exact-mode accumulators")
        b, c, p = x.shape
        if not x.is_contiguous():
            self._reduce(x.transpose(1, 2).reshape(-1, c), None, hist)
            return None
        if self.want_moments:
            self.gram.add_positions(x, self.workspace)
        want_hist = self.want_hist and hist
        counts = self.activity_kind is not None or want_hist
        w = min(self.workers, p, x.numel() // _SPLIT_COUNTS + 1) if counts else 1
        if w == 1:
            if self.activity_kind is not None:
                self._add_activity_positions(x)
            if not want_hist:
                return None
            signed = _signed_hist(x, self.workspace)
        else:
            # The counts split over the positions between w threads (torch releases the GIL),
            # each with a workspace of its own; integer counts, so the same numbers as in one piece.
            edges = [p * k // w for k in range(w + 1)]
            jobs = [(x[:, :, edges[k]:edges[k + 1]], self.workspace.worker(k), want_hist) for k in range(w)]
            futures = [_pool(w - 1).submit(self._position_counts, *job, True) for job in jobs[1:]]
            parts = [self._position_counts(*jobs[0])] + [f.result() for f in futures]
            if self.activity_kind is not None:
                self._add_counts(*(sum(part[i] for part in parts) for i in range(3)), b * p)
            if not want_hist:
                return None
            signed = sum(part[3] for part in parts)
        self.add_abs_hist(_fold_sign(signed), b * p)
        return signed

    def _position_counts(self, x: torch.Tensor, ws: "_Workspace", hist: bool,
                         pooled: bool = False) -> tuple[Any, ...]:
        """(active, saturated, active-channel histogram, signed |x| histogram) of the positions
        of ``x`` (B, C, P; any strides), in the buffers of ``ws`` (None where not wanted; the
        histogram only with ``hist``). ``pooled``: run in a pool thread, whose torch is then
        held to one thread."""
        if pooled and torch.get_num_threads() != 1:
            torch.set_num_threads(1)
        out: list[Any] = [None, None, None, None]
        if self.activity_kind is not None:
            out[:3] = _activity_counts(x, self.activity_kind, self.pre, ws)
        if hist:
            out[3] = _signed_hist(x, ws)
        return tuple(out)

    def _add_moments(self, rows: torch.Tensor) -> None:
        nb = rows.shape[0]
        if nb == 0:
            return
        c = self.channels
        if self.syrk and rows.device.type == "cpu":
            # A float64 copy (the rows may be shared with another point's buffer), in workspace
            # memory: a fresh array per flush costs page faults.
            r = self.workspace._get("rows64", nb * c, torch.float64, rows.device).view(nb, c)
            r.copy_(rows)
            r = r.numpy()
            mb = r.mean(0)
            r -= mb
            # A new C x C array per flush, not a spare kept from the last one: a spare doubled
            # the resident C x C state of a long stream from the second flush on (140 MB more
            # on mobilenet_v2 at 224 px), to save the page faults of a fresh array (about 35,000
            # per flush of every point, against about 7 million for the forward passes of the
            # 512 images between two flushes).
            m2b = np.zeros((c, c), order="F")
            _syrk(r, m2b)
            # Only the upper triangle is filled: the lower one is rebuilt once, in moments().
            self.upper = True
            outer = self.workspace._get("outer", c * c, torch.float64, rows.device).numpy().reshape(c, c)
        else:
            r = rows.to(torch.float64)
            mb = r.mean(0)
            r = r - mb
            m2b = r.T @ r
            outer = None
        self._chan_update(nb, mb, m2b, outer)

    def _chan_update(self, nb: int, mb: Any, m2b: Any, outer: Any) -> None:
        """Fold the statistics ``(nb, mb, m2b)`` of a buffer into the running ones: the update of
        :func:`probes.sinks.chan_update`, the same operations on the same operands (so the same
        bits), computed in place in ``m2b`` (this accumulator's own) with ``outer`` (numpy, or
        None: a new tensor) for ``delta delta^T``."""
        na = self.count
        if na == 0:
            self.count, self.mean, self.m2 = nb, mb, m2b
            return
        n = na + nb
        delta = mb - self.mean
        if outer is None:
            outer = delta[:, None] * delta[None, :]
        else:
            np.multiply(delta[:, None], delta[None, :], out=outer)
        outer *= na * nb / n
        # m2 = (m2_a + m2_b) + outer (m2_a + m2_b == m2_b + m2_a exactly).
        m2b += self.m2
        m2b += outer
        self.count, self.mean, self.m2 = n, self.mean + delta * (nb / n), m2b

    def _add_activity(self, rows: torch.Tensor) -> None:
        """Active counts per channel, saturated counts (relu6) and the histogram of active
        channels per row, chunk by chunk in the workspace's float32 buffers.

        Each term of :func:`probes.sinks.active_terms` writes 0/1 into a float32 buffer (the
        ``+1`` terms are disjoint and the ``-1`` terms lie inside them, so their signed sum is
        the active mask); column sums (torch's) and row sums (a matrix-vector product with
        ones) run in float32, exact because a chunk has fewer than 2^24 rows and channels.
        Integer counts: the same numbers as any other way of counting them.
        """
        n, c = rows.shape
        if n == 0:
            return
        ws = self.workspace
        step = max(1, _ACT_ENTRIES // c)
        terms = active_terms(self.activity_kind, pre=self.pre)
        ones_c = ws.ones(c, rows.device)
        for start in range(0, n, step):
            part = rows if n <= step else rows[start:start + step]
            m = part.shape[0]
            act = ws.f32(0, m * c, rows.device).view(m, c)
            saturated = None
            for i, (sign, op, value) in enumerate(terms):
                if i == 0:
                    _TORCH_OPS[op](part, value, out=act)
                    continue
                tmp = _TORCH_OPS[op](part, value, out=ws.f32(1, m * c, rows.device).view(m, c))
                if sign < 0:
                    act.sub_(tmp)
                    if self.activity_kind == "relu6":
                        saturated = tmp.sum(0).to(torch.int64)
                else:
                    act.add_(tmp)
            per_channel = act.sum(0).to(torch.int64)
            hist = torch.bincount((act @ ones_c).to(torch.int64), minlength=c + 1)
            if self.active is None:
                self.active, self.hist = per_channel, hist
                self.saturated = (saturated if saturated is not None
                                  else torch.zeros(c, dtype=torch.int64, device=rows.device))
            else:
                self.active += per_channel
                self.hist += hist
                if saturated is not None:
                    self.saturated += saturated
        self.n_points += n

    def _add_hist(self, rows: torch.Tensor) -> None:
        """The |x| histogram (:func:`probes.sinks.abs_hist_bins`) of ``rows``, chunk by chunk:
        ``|x|`` as float32 in a workspace buffer, its bits shifted in place, one bincount each."""
        n, c = rows.shape
        step = max(1, _ACT_ENTRIES // c)
        for start in range(0, n, step):
            part = rows if n <= step else rows[start:start + step]
            if part.dtype != torch.float32:
                part = part.float()
            buf = self.workspace.f32(0, part.numel(), rows.device).view(part.shape)
            torch.abs(part, out=buf)
            bits = buf.view(torch.int32).bitwise_right_shift_(20)
            h = torch.bincount(bits.view(-1), minlength=ABS_HIST_BINS)
            self.abs_hist = h if self.abs_hist is None else self.abs_hist.add_(h)
        self.hist_points += n

    def add_abs_hist(self, h: torch.Tensor, n: int) -> None:
        """Add the |x| histogram ``h`` of ``n`` positions."""
        self.abs_hist = h if self.abs_hist is None else self.abs_hist.add_(h)
        self.hist_points += n

    def _add_activity_positions(self, x: torch.Tensor) -> None:
        """:meth:`_add_activity` of the positions of ``x`` (B, C, P), channel-major
        (:func:`_activity_counts`)."""
        self._add_counts(*_activity_counts(x, self.activity_kind, self.pre, self.workspace),
                         x.shape[0] * x.shape[2])

    def _add_counts(self, per_channel: torch.Tensor, saturated: torch.Tensor, hist: torch.Tensor,
                    n: int) -> None:
        if self.active is None:
            self.active, self.hist, self.saturated = per_channel, hist, saturated
        else:
            self.active += per_channel
            self.hist += hist
            self.saturated += saturated
        self.n_points += n

    def moments(self) -> Moments:
        out = Moments(self.channels)
        if self.gram is not None:
            self.gram.fold()
            self.count, self.mean, self.m2 = self.gram.count, self.gram.mean, self.gram.m2
            # dsyrk fills the upper triangle only; mirroring is idempotent once it is whole.
            self.upper = self.gram.upper
        if self.count:
            m2 = _host(self.m2)
            if self.upper:
                _mirror_upper(m2)
                self.upper = False
            # Arrays of this accumulator's own: handed over without a copy.
            out.count, out.mean, out.m2 = self.count, np.asarray(_host(self.mean), np.float64), m2
        return out

    def activity(self, kind: str, pre: bool) -> Activity:
        out = Activity(self.channels, kind, pre=pre)
        if self.n_points:
            out.add_counts(self.n_points, _host(self.active), _host(self.saturated), _host(self.hist))
        return out


def _position_runs(x: torch.Tensor) -> Any:
    """``x`` (B, C, P) in chunks of at most :data:`_ACT_ENTRIES` entries (at least one
    position): runs of whole images, or of one image's positions."""
    b, c, p = x.shape
    if c * p <= _ACT_ENTRIES:
        per = _ACT_ENTRIES // (c * p)
        return (x[i:i + per] for i in range(0, b, per))
    step = max(1, _ACT_ENTRIES // c)
    return (x[i:i + 1, :, start:start + step] for i in range(b) for start in range(0, p, step))


def _activity_counts(x: torch.Tensor, kind: str, pre: bool, ws: "_Workspace"
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(active, saturated, histogram of active channels per position) of the positions of ``x``
    (B, C, P), channel-major: the 0/1 terms of :func:`probes.sinks.active_terms` in the float32
    buffers of ``ws`` in the chunk's own shape (runs of whole images, or of one image's
    positions), summed over the positions per channel and over the channels per position
    (float32 sums of 0/1, exact: fewer than 2^24 terms per chunk)."""
    c = x.shape[1]
    parts = _position_runs(x)
    per_channel = torch.zeros(c, dtype=torch.int64, device=x.device)
    saturated = torch.zeros(c, dtype=torch.int64, device=x.device)
    hist = torch.zeros(c + 1, dtype=torch.int64, device=x.device)
    for part in parts:
        act = ws.f32(0, part.numel(), x.device).view(part.shape)
        tmp = ws.f32(1, part.numel(), x.device).view(part.shape)
        first = True
        for sign, op, value in active_terms(kind, pre=pre):
            if first:
                _TORCH_OPS[op](part, value, out=act)
                first = False
                continue
            _TORCH_OPS[op](part, value, out=tmp)
            if sign < 0:
                act.sub_(tmp)
                if kind == "relu6":
                    saturated += tmp.sum(2).sum(0).to(torch.int64)
            else:
                act.add_(tmp)
        per_channel += act.sum(2).sum(0).to(torch.int64)
        hist += torch.bincount(act.sum(1).view(-1).to(torch.int64), minlength=c + 1)
    return per_channel, saturated, hist


#: Bins of a signed histogram (:func:`_signed_hist`): the |x| bins of the values whose sign bit
#: is clear, then those of the values whose sign bit is set.
_SIGNED_BINS = 2 * ABS_HIST_BINS
#: The first |x| bin of inf and NaN (:data:`probes.sinks.ABS_HIST_EDGES`): bin 2040 holds inf
#: and some NaNs alike.
_NONFINITE_BIN = 2040
#: The |x| bin of 6.0, relu6's top (:func:`_clamped_hist`).
_RELU6_BIN = int(np.array(6.0, dtype=np.float32).view(np.int32)) >> 20


def _signed_hist(x: torch.Tensor, ws: "_Workspace") -> torch.Tensor:
    """The |x| histogram (:func:`probes.sinks.abs_hist_bins`) of every value of ``x`` (B, C, P;
    any strides) kept apart by sign: bin ``k`` counts the values with the sign bit clear in
    |x| bin k, bin ``ABS_HIST_BINS + k`` those with it set (-0.0 and negative NaNs included).
    The float32 bits arithmetically shifted by 20 and masked to 12 bits are that bin number, in
    a buffer of ``ws``, one bincount per run of whole images or of one image's positions (the
    same three passes over the run as ``|x|``'s). :func:`_fold_sign` gives the |x| histogram,
    :func:`_clamped_hist` that of relu(x) or relu6(x), without reading those values."""
    parts = _position_runs(x)
    h = torch.zeros(_SIGNED_BINS, dtype=torch.int64, device=x.device)
    for part in parts:
        if part.dtype != torch.float32:
            part = part.float()
        buf = ws.f32(0, part.numel(), x.device).view(part.shape).view(torch.int32)
        torch.bitwise_right_shift(part.view(torch.int32), 20, out=buf)
        buf.bitwise_and_(_SIGNED_BINS - 1)
        h += torch.bincount(buf.view(-1), minlength=_SIGNED_BINS)
    return h


def _fold_sign(h: torch.Tensor) -> torch.Tensor:
    """The |x| histogram of a signed histogram (:func:`_signed_hist`)."""
    return h[:ABS_HIST_BINS] + h[ABS_HIST_BINS:]


def _clamped_hist(h: torch.Tensor, kind: str) -> torch.Tensor | None:
    """The |y| histogram of ``y = relu(x)`` or ``relu6(x)`` (``kind``) from the signed histogram
    ``h`` of ``x`` (:func:`_signed_hist`), exactly: every value with the sign bit set (-0.0,
    negatives, -inf) becomes 0 (bin 0); a positive one keeps its bin, except under relu6 every
    value of 6.0's bin or above becomes 6.0 (a value of that bin below 6.0 stays in it), so
    that bin takes all of them. None when ``h`` has values in the inf / NaN bins: NaN stays NaN
    under the clamp while inf does not, and bin 2040 holds both (the caller then bins ``y``)."""
    pos, neg = h[:ABS_HIST_BINS], h[ABS_HIST_BINS:]
    if bool(pos[_NONFINITE_BIN:].any()) or bool(neg[_NONFINITE_BIN:].any()):
        return None
    out = pos.clone()
    out[0] += neg.sum()
    if kind == "relu6":
        out[_RELU6_BIN] = pos[_RELU6_BIN:].sum()
        out[_RELU6_BIN + 1:] = 0
    elif kind != "relu":
        raise ValueError(f"_clamped_hist: kind must be 'relu' or 'relu6'. Got {kind!r} instead.")
    return out


#: Entries of an exact-mode value from which its counts are split between threads.
_SPLIT_COUNTS = 1 << 20


def _host(a: Any) -> np.ndarray:
    """A device tensor (or a numpy array already on the host) as a numpy array."""
    return a.cpu().numpy() if isinstance(a, torch.Tensor) else a


#: Forward passes whose per-channel reductions a :class:`_Full` holds before folding them into
#: its running min, max and counts (one stacked reduction instead of a few small ops per pass).
_FOLD_PASSES = 32


class _Full:
    """Per-channel min, max and active counts of one tensor value over every position.

    Fed per forward pass with the partial reductions of the whole tensor (:meth:`_Slot.take`:
    :func:`_partial_extrema` and the comparison counts of :func:`_term_counts`), kept on the
    tensor's device: each pass's results are held as they are and folded into the running
    float64 min / max and int64 counts every :data:`_FOLD_PASSES` passes and at readout, in one
    stacked reduction per quantity, which also does the last fold of the partial results to
    (C,) (min, max and integer sums are exact, so when and in which order they are folded does
    not matter). A post-activation point read off its ``.pre`` tensor applies the activation
    (monotone) to the ``.pre`` minimum and maximum, and its active counts are those of the
    ``.pre`` values (for relu and relu6 the active region is the same on both sides).
    """

    def __init__(self, channels: int, kind: str | None, pre: bool,
                 fn: Callable[[torch.Tensor], torch.Tensor] | None) -> None:
        self.channels, self.kind, self.pre, self.fn = channels, kind, pre, fn
        self.terms: tuple[Term, ...] = _terms(kind, pre) if kind is not None else ()
        self.n_points = 0
        self.ch_min: torch.Tensor | None = None
        self.ch_max: torch.Tensor | None = None
        self.active: torch.Tensor | None = None
        self.saturated: torch.Tensor | None = None
        self.pending: list[tuple[torch.Tensor, torch.Tensor, Any, dict[Term, Any] | None]] = []

    def add(self, n: int, lo: torch.Tensor, hi: torch.Tensor, counts: dict[Term, Any] | None,
            fold: Any = None) -> None:
        """Hold one pass's partial per-channel min and max (see :func:`_finish` for ``fold``)
        and comparison counts (:func:`_term_counts`, at least this point's :attr:`terms`) of
        ``n`` positions (the tensors are not modified later, so they are kept without a copy)."""
        self.pending.append((lo, hi, fold, counts))
        self.n_points += n
        if len(self.pending) >= _FOLD_PASSES:
            self.fold()

    def fold(self) -> None:
        """Fold the held passes into the running min, max and counts."""
        if not self.pending:
            return
        held, self.pending = self.pending, []
        ch_min = _stacked(held, 0, torch.amin)
        ch_max = _stacked(held, 1, torch.amax)
        counts = None
        if self.terms:
            totals = {term: _sum_counts([h[3][term] for h in held]) for term in self.terms}
            counts = _combine(self.kind, self.pre, totals, self.channels, ch_min.device)
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

    def extent(self, sampled: _Sampled | None) -> Extent:
        out = Extent(self.channels, self.kind, pre=self.pre)
        self.fold()
        if self.n_points:
            out.add_counts(self.n_points, _host(self.ch_min), _host(self.ch_max),
                           None if self.active is None else _host(self.active),
                           None if self.saturated is None else _host(self.saturated))
        if sampled is not None and sampled.abs_hist is not None:
            out.add_hist(_host(sampled.abs_hist), sampled.hist_points)
        return out


def _stacked(held: list[tuple[Any, ...]], i: int, op: Callable[..., torch.Tensor]) -> torch.Tensor:
    """Item ``i`` (a partial min or max, with its fold at ``[2]``) of several held passes reduced
    to (C,) with ``op``: one stacked reduction and one fold when the passes agree in layout."""
    first, fold = held[0][i], held[0][2]
    if len(held) == 1:
        return _finish(first, fold, op)
    if all(h[2] == fold and h[i].shape == first.shape for h in held):
        return _finish(op(torch.stack([h[i] for h in held]), 0), fold, op)
    return op(torch.stack([_finish(h[i], h[2], op) for h in held]), 0)


class _ReservoirRows:
    """Reservoir rows of one capture point, aligned row by row with its block group's ids.

    Each batch's candidate rows are copied into one buffer of the group's capacity
    (:attr:`probes.capture.sampling._Group.capacity`, 2k rows), which the group keeps from
    overflowing by compacting first; so the memory held does not grow with the number of
    batches. (Keeping one small tensor per batch instead left tens of thousands of small
    allocations spread over the heap in a long stream, each pinning resident pages between the
    forward passes' activations.) On the CPU the buffer is an anonymous memory map
    (:func:`_fresh_rows`): only the rows written become resident, and its pages go back to the
    system when it is dropped.
    """

    def __init__(self, name: str, group: _Group, step: int) -> None:
        self.name, self.group, self.step = name, group, step
        self.rows: torch.Tensor | None = None   # (capacity, C): the first ``n`` rows are held
        self.n = 0
        group.members.append(self)

    def add(self, piece: torch.Tensor) -> None:
        """Append ``piece`` (m, C), the rows of this batch's candidates (a copy, in float32)."""
        n, m = self.n, piece.shape[0]
        if self.rows is None or n + m > self.rows.shape[0]:
            buf = _fresh_rows(max(n + m, self.group.capacity), piece.shape[1], piece.device)
            if n:
                buf[:n].copy_(self.rows[:n])
            self.rows = buf
        self.rows[n:n + m].copy_(piece)
        self.n = n + m

    def compact_rows(self, order: torch.Tensor, *, expected: int) -> None:
        """Keep the reservoir rows at ``order``, after checking they match the group's ids.

        The kept rows become a tensor of their own and the buffer is dropped (the next
        :meth:`add` maps a fresh one): what a snapshot (:meth:`reservoir`) holds is never
        written again, and the rows past the kept ones stop being resident."""
        if self.n != expected:
            raise RuntimeError(
                f"Capture point {self.name} missed a forward pass of its block; its reservoir "
                "can no longer be paired with the other points of the block."
            )
        if self.n:
            self.rows = self.rows[:self.n].index_select(0, order.to(self.rows.device))
            self.n = int(self.rows.shape[0])

    def reservoir(self, channels: int) -> Reservoir:
        g = self.group
        res = Reservoir(channels, g.k, seed=g.seed, stride=self.step)
        res.n_seen = g.n_seen
        if g.held:
            ids = g.ids.cpu().numpy().astype(np.int64)
            ids[:, 1:] *= self.step
            res.values = self.rows[:self.n].cpu().numpy().astype(np.float32, copy=False)
            res.ids, res.priority = ids, from_keys(g.priority)
        return res


def _fresh_rows(n: int, channels: int, device: torch.device) -> torch.Tensor:
    """An uninitialised float32 (n, channels) tensor on ``device``; on the CPU backed by an
    anonymous memory map of its own, whatever its size. The heap could hand out memory that an
    earlier forward pass made resident, and keep it pinned while the buffer lives; fresh mapped
    pages are resident only once written, and are unmapped when the tensor is freed."""
    if torch.device(device).type != "cpu" or not hasattr(mmap, "MAP_ANONYMOUS"):
        return torch.empty(n, channels, dtype=torch.float32, device=device)
    buf = mmap.mmap(-1, max(1, n * channels) * 4, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return torch.frombuffer(buf, dtype=torch.float32, count=n * channels).view(n, channels)


class _Scratch:
    """One float32 buffer per device, reused by every hook, for the 0/1 masks of the activity
    counts: a fresh mask per tensor would be a new allocation the size of the tensor, whose
    page faults cost more than the comparison itself. Also the capture's small constants
    (:attr:`memo`), kept between passes."""

    def __init__(self) -> None:
        self.buffers: dict[torch.device, torch.Tensor] = {}
        # Views of the buffer by shape: the same few shapes come back at every pass.
        self.views: dict[tuple[torch.Size, torch.device], torch.Tensor] = {}
        # Small constants of the capture, computed once (e.g. the position part of the hash).
        self.memo: dict[Any, Any] = {}

    def get(self, shape: torch.Size, device: torch.device) -> torch.Tensor:
        view = self.views.get((shape, device))
        if view is not None:
            return view
        n = shape.numel()
        buf = self.buffers.get(device)
        if buf is None or buf.numel() < n:
            del buf   # freed before the larger one is allocated
            self.buffers.pop(device, None)
            self.views = {key: v for key, v in self.views.items() if key[1] != device}
            buf = self.buffers[device] = torch.empty(n, dtype=torch.float32, device=device)
        view = self.views[shape, device] = buf[:n].view(shape)
        return view


def _channel_view(t: torch.Tensor) -> torch.Tensor:
    """``t`` (B, C, H, W) as a view its memory order reduces fast over, per channel: (B, C, H*W)
    for a contiguous tensor, (B*H*W, C) for a channels-last one (a copy for anything else).

    Reductions run along the contiguous axis; reading a channels-last tensor as (B, C, H*W)
    would make every per-channel pass a strided gather (an order of magnitude slower).
    """
    if t.is_contiguous():
        return t.reshape(t.shape[0], t.shape[1], -1)
    if t.is_contiguous(memory_format=torch.channels_last):
        return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])
    return t.contiguous().reshape(t.shape[0], t.shape[1], -1)


#: Below this many positions per image, a (B, C, H*W) view is reduced over the images first:
#: torch reduces many short rows slowly (a 4x4 map: 7x slower than an elementwise pass over B).
_SHORT_ROWS = 128


#: Bytes per row of the wide view of :func:`_wide_rows`: torch's column reductions run an order
#: of magnitude faster on rows of a multiple of 128 bytes (32 float32) than on narrower or
#: ragged ones (a column min over rows of 8 float32: 100x slower than over rows of 32).
_ROW_BYTES = 128


def _wide_rows(x: torch.Tensor) -> tuple[torch.Tensor, int, torch.Tensor | None]:
    """A (R, C) contiguous view as (wide, k, rest): ``wide`` is the first ``R - R % k`` rows
    read as rows of ``k * C`` values (``k`` consecutive rows side by side, so column ``j`` holds
    channel ``j % C``), with ``k * C`` the smallest multiple of C that fills whole 128-byte
    lines; ``rest`` the leftover rows (None when there are none). ``k`` is 1 when C already does.
    """
    r, c = x.shape
    per_line = max(1, _ROW_BYTES // x.element_size())
    k = per_line // math.gcd(c, per_line)
    if k == 1 or r < k:
        return x, 1, None
    main = r - r % k
    if main == r:
        return x.view(main // k, k * c), k, None
    return x[:main].view(main // k, k * c), k, x[main:]


def _finish(v: torch.Tensor, fold: Any, op: Callable[..., torch.Tensor]) -> torch.Tensor:
    """A partial per-channel reduction ``v`` reduced to (C,) with ``op`` (amin, amax or sum).

    ``fold`` says how ``v`` holds the channels: None, it already is (C,); ``("cols", k)``, (k*C,)
    with channel ``j % C`` (the ``k`` rows side by side of :func:`_wide_rows`); ``("rows", m)``,
    (C, m) with channel ``j // m``.
    """
    if fold is None:
        return v
    how, m = fold
    return op(v.view(m, -1), 0) if how == "cols" else op(v.reshape(-1, m), 1)


def _partial_extrema(x: torch.Tensor, wide: Any = None) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """Per-channel (min, max) of a :func:`_channel_view` before their last fold: ``(lo, hi,
    fold)``, finished by :func:`_finish` (the fold is left to whoever stacks several passes, so
    it runs once for all of them).

    A channels-last (R, C) view is reduced as the wide rows of :func:`_wide_rows` ((k*C,)
    results; leftover rows are folded in at once, giving (C,)); a contiguous (B, C, H*W) view
    with fewer than :data:`_SHORT_ROWS` positions over the images first ((C, H*W) results);
    longer rows to (C,). Min and max are exact, so the order of the reduction does not change
    them. ``wide``: :func:`_wide_rows` of a channels-last ``x``, if already taken.
    """
    if x.ndim == 2:
        wide, k, rest = wide or _wide_rows(x)
        lo, hi = wide.amin(0), wide.amax(0)
        if rest is None:
            return lo, hi, (("cols", k) if k > 1 else None)
        lo = torch.minimum(_finish(lo, ("cols", k), torch.amin), rest.amin(0))
        hi = torch.maximum(_finish(hi, ("cols", k), torch.amax), rest.amax(0))
        return lo, hi, None
    if x.shape[2] < _SHORT_ROWS:
        return x.amin(0), x.amax(0), ("rows", x.shape[2])
    return x.amin(dim=2).amin(0), x.amax(dim=2).amax(0), None


def _channel_extrema(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (min, max) of a :func:`_channel_view`, each of shape (C,)
    (:func:`_partial_extrema`, finished)."""
    lo, hi, fold = _partial_extrema(x)
    return _finish(lo, fold, torch.amin), _finish(hi, fold, torch.amax)


def _partial_count(x: torch.Tensor, op: Callable[..., torch.Tensor], value: float, scratch: _Scratch,
                   wide: Any = None) -> tuple[torch.Tensor, Any]:
    """Per-channel number of entries of a :func:`_channel_view` with ``op(x, value)``, before
    the last fold: ``(n, fold)``, finished by ``_finish(n.to(torch.int64), fold, torch.sum)``.

    The comparison writes 0/1 into a float32 scratch buffer of the same layout; the sums run in
    float32, which is exact below 2^24 ones: down the wide rows (:func:`_wide_rows`) of a
    channels-last view (a column sum over rows of a multiple of 128 bytes: twice as fast as a
    BLAS matrix-vector product with ones), in slices of at most 2^23 rows ((k*C,), float32, or
    int64 over several slices); over the images of a contiguous view of fewer than
    :data:`_SHORT_ROWS` positions ((C, H*W), float32, when the whole count stays below 2^24);
    otherwise along each image's positions, then in int64 over the batch ((C,)). ``wide``:
    :func:`_wide_rows` of a channels-last ``x``, if already taken.
    """
    if x.ndim == 3:
        buf = op(x, value, out=scratch.get(x.shape, x.device))
        if x.shape[2] < _SHORT_ROWS and x.shape[0] * x.shape[2] < _EXACT_ROWS:
            return buf.sum(0), ("rows", x.shape[2])   # short rows: over the images first
        return buf.sum(dim=2).to(torch.int64).sum(0), None
    wide, k, rest = wide or _wide_rows(x)
    buf = op(wide, value, out=scratch.get(wide.shape, x.device))
    rows = buf.shape[0]
    if rows <= _EXACT_ROWS:
        n = buf.sum(0)
    else:
        n = None
        for start in range(0, rows, _EXACT_ROWS):
            s = buf[start:start + _EXACT_ROWS].sum(0).to(torch.int64)
            n = s if n is None else n + s
    fold = ("cols", k) if k > 1 else None
    if rest is None:
        return n, fold
    return _finish(n.to(torch.int64), fold, torch.sum) + op(rest, value).sum(0), None


def _count(x: torch.Tensor, op: Callable[..., torch.Tensor], value: float, scratch: _Scratch
           ) -> torch.Tensor:
    """Per-channel number of entries of a :func:`_channel_view` with ``op(x, value)``, int64 (C,)
    (:func:`_partial_count`, finished)."""
    n, fold = _partial_count(x, op, value, scratch)
    return _finish(n.to(torch.int64), fold, torch.sum)


#: Rows per float32 column sum: integers below 2^24 are exact in float32.
_EXACT_ROWS = 1 << 23

#: One comparison ``x op value`` of :func:`probes.sinks.active_terms`, as ``(op, value)``.
Term = tuple[str, float]


def _terms(kind: str, pre: bool) -> tuple[Term, ...]:
    """The comparisons that the active counts of ``kind`` (before or after it) are made of."""
    return tuple((op, value) for _, op, value in active_terms(kind, pre=pre))


def _term_counts(flat: torch.Tensor, terms: Any, scratch: _Scratch,
                 partial: tuple[torch.Tensor, torch.Tensor, Any] | None = None, wide: Any = None
                 ) -> dict[Term, Any]:
    """Per-channel counts of each comparison of ``terms`` over every entry of ``flat`` (a
    :func:`_channel_view`): an int where every channel counts that many (the tensor's range
    decides the comparison: all or none of its entries), else a partial count ``(n, fold)``
    (:func:`_partial_count`, or :func:`_count_mixed` with fold None).

    ``partial``: the :func:`_partial_extrema` of ``flat``. On the CPU they settle a comparison
    without looking at the values: when the range of the whole tensor lies on one side of the
    threshold (a relu6 tensor whose maximum is below 6 has no ``x >= 6``), every channel counts
    all or none of its entries (any size); otherwise, in tensors of at least
    :data:`_SETTLE_MIN` entries, wherever a channel lies wholly on one side, and only the other
    channels are compared (:func:`_count_mixed`). The counts are the same, exactly. ``wide``:
    :func:`_wide_rows` of a channels-last ``flat``, if already taken.
    """
    out: dict[Term, Any] = {}
    settle = partial is not None and flat.device.type == "cpu"
    bounds = extrema = None
    for op, value in terms:
        if settle:
            lo, hi, fold = partial
            if bounds is None:
                # Two host floats for the whole tensor (NaN decides nothing: every comparison fails).
                bounds = float(lo.min()), float(hi.max())
            every, none = _decided(op, value, *bounds)
            if every or none:
                out[op, value] = flat.numel() // flat.shape[1] if every else 0
                continue
            if flat.numel() >= _SETTLE_MIN:
                if extrema is None:
                    extrema = _finish(lo, fold, torch.amin), _finish(hi, fold, torch.amax)
                out[op, value] = (_count_mixed(flat, op, value, scratch, extrema), None)
                continue
        out[op, value] = _partial_count(flat, _TORCH_OPS[op], value, scratch, wide)
    return out


def _sum_counts(values: list[Any]) -> Any:
    """The total of several passes' counts of one comparison (ints and partial counts, see
    :func:`_term_counts`): an int64 (C,) tensor, or an int when every pass was settled."""
    total = sum(v for v in values if isinstance(v, int))
    parts = [v for v in values if not isinstance(v, int)]
    if not parts:
        return total
    first, fold = parts[0]
    if all(f == fold and n.shape == first.shape and n.dtype == first.dtype for n, f in parts):
        n = (first.to(torch.int64) if len(parts) == 1
             else torch.stack([n for n, _ in parts]).to(torch.int64).sum(0))
        n = _finish(n, fold, torch.sum)
    else:
        n = sum(_finish(n.to(torch.int64), f, torch.sum) for n, f in parts)
    return n + total if total else n


def _combine(kind: str, pre: bool, totals: dict[Term, Any], channels: int, device: torch.device
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """(active, saturated) int64 (C,) from the totals of each comparison: the signed sum of
    :func:`probes.sinks.active_terms`; saturated is #(x >= 6) for relu6 (the term it
    subtracts), else 0."""
    active: Any = None
    saturated: Any = 0
    for sign, op, value in active_terms(kind, pre=pre):
        n = totals[op, value]
        if active is None:
            active = n if sign > 0 else -n
        else:
            active = active + n if sign > 0 else active - n
        if kind == "relu6" and sign < 0:
            saturated = n

    def tensor(v: Any) -> torch.Tensor:
        return (torch.full((channels,), v, dtype=torch.int64, device=device) if isinstance(v, int)
                else v)

    return tensor(active), tensor(saturated)


def _active_counts(flat: torch.Tensor, kind: str, pre: bool, scratch: _Scratch,
                   extrema: tuple[torch.Tensor, torch.Tensor] | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(active, saturated) per-channel counts over every entry of ``flat`` (a
    :func:`_channel_view`): the signed comparison counts of :func:`probes.sinks.active_terms`;
    saturated is #(x >= 6) for relu6 (the term it subtracts), else 0.

    ``extrema``: the per-channel (min, max) of ``flat``, which settle comparisons on the CPU
    (see :func:`_term_counts`). The counts are the same, exactly.
    """
    partial = None if extrema is None else (extrema[0], extrema[1], None)
    counts = _term_counts(flat, _terms(kind, pre), scratch, partial)
    totals = {term: _sum_counts([v]) for term, v in counts.items()}
    return _combine(kind, pre, totals, flat.shape[1], flat.device)


def _decided(op: str, value: float, lo: Any, hi: Any) -> tuple[Any, Any]:
    """Whether every entry within [``lo``, ``hi``] passes ``op(x, value)``, and whether none does
    (floats or per-channel tensors; a NaN bound decides nothing)."""
    if op == "gt":
        return lo > value, hi <= value
    if op == "ge":
        return lo >= value, hi < value
    return hi < value, lo >= value   # "lt"


#: Entries of a tensor from which :func:`_count_mixed` pays for its few small ops.
_SETTLE_MIN = 1 << 20


def _count_mixed(flat: torch.Tensor, op: str, value: float, scratch: _Scratch,
                 extrema: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """:func:`_count` of ``op(flat, value)``, comparing only the channels whose (min, max) do not
    decide it: a channel with every value on the true side counts all its entries, one with
    every value on the false side none (NaN extrema decide nothing: those channels are compared).
    The undecided channels are compared in a copy of their own when they are under half of all."""
    lo, hi = extrema
    every, none = _decided(op, value, lo, hi)
    per_channel = flat.numel() // flat.shape[1]
    counts = every.to(torch.int64) * per_channel
    mixed = torch.nonzero(~(every | none)).squeeze(1)
    n_mixed = int(mixed.shape[0])
    if n_mixed == 0:
        return counts
    if 2 * n_mixed >= flat.shape[1]:
        return _count(flat, _TORCH_OPS[op], value, scratch)
    sub = flat.index_select(1, mixed)
    counts[mixed] = _count(sub, _TORCH_OPS[op], value, scratch)
    return counts


_TORCH_OPS = {"gt": torch.gt, "ge": torch.ge, "lt": torch.lt}

#: Bytes of one piece of :func:`_extent_pieces`: small enough to stay in the cache between the
#: min, the max and the comparisons that read it.
_PIECE_BYTES = 2 << 20


def _use_pieces(flat: torch.Tensor) -> bool:
    """Whether :func:`_extent_pieces` reduces ``flat`` (a :func:`_channel_view`): a contiguous
    (B, C, H*W) view on the CPU with torch on one thread, maps of at least :data:`_SHORT_ROWS`
    positions, and at least four pieces' worth of values (a large map, read from memory once
    instead of once per reduction). With more threads each whole-tensor op already runs in
    parallel, which pieces would serialise."""
    return (flat.ndim == 3 and flat.device.type == "cpu" and torch.get_num_threads() == 1
            and flat.shape[2] >= _SHORT_ROWS and flat.shape[2] < _EXACT_ROWS
            and flat.numel() * flat.element_size() >= 4 * _PIECE_BYTES)


def _extent_pieces(flat: torch.Tensor, terms: Any, scratch: _Scratch
                   ) -> tuple[torch.Tensor, torch.Tensor, dict[Term, torch.Tensor]]:
    """:func:`_channel_extrema` and the per-channel counts of each comparison of ``terms`` of a
    contiguous (B, C, H*W) view in one pass over memory: ``(min, max, {term: int64 (C,)})``.

    The view is read as B*C rows (one per image and channel) in pieces of about
    :data:`_PIECE_BYTES`; each piece's row minima, row maxima and comparison counts are taken
    while it is in the cache. A comparison that the piece's own range decides (all its entries
    pass, or none) is not computed (counts H*W or 0 per row). Row counts are float32 sums of
    0/1 (exact: fewer than 2^24 positions per row), then summed over the images in int64, as
    :func:`_count` does; min and max are exact. The results equal those of the whole-tensor
    functions, bit for bit.
    """
    b, c, hw = flat.shape
    rows = flat.reshape(b * c, hw)
    step = max(1, _PIECE_BYTES // (hw * flat.element_size()))
    lo_rows = torch.empty(b * c, dtype=flat.dtype, device=flat.device)
    hi_rows = torch.empty(b * c, dtype=flat.dtype, device=flat.device)
    terms = sorted(set(terms))
    sums = {term: torch.empty(b * c, dtype=torch.float32, device=flat.device) for term in terms}
    for start in range(0, b * c, step):
        stop = min(start + step, b * c)
        piece = rows[start:stop]
        lo_p, hi_p = lo_rows[start:stop], hi_rows[start:stop]
        torch.amin(piece, 1, out=lo_p)
        torch.amax(piece, 1, out=hi_p)
        if not terms:
            continue
        lo, hi = float(lo_p.min()), float(hi_p.max())
        for (op, value), out in sums.items():
            every, none = _decided(op, value, lo, hi)
            if every or none:
                out[start:stop].fill_(hw if every else 0)
            else:
                buf = _TORCH_OPS[op](piece, value, out=scratch.get(piece.shape, flat.device))
                torch.sum(buf, 1, out=out[start:stop])
    ch_min, ch_max = lo_rows.view(b, c).amin(0), hi_rows.view(b, c).amax(0)
    return ch_min, ch_max, {term: out.view(b, c).to(torch.int64).sum(0) for term, out in sums.items()}
