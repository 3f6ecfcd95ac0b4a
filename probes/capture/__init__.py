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

Sample unit (docs/design.md "Sample unit and sampling guarantees")
------------------------------------------------------------------
``sample_unit="position"`` (default): every spatial position of a [B, C, H, W] tensor is a
sample, its channel vector the point ([B, C, H, W] -> [B*H*W, C]); ids are (image, y, x).
``sample_unit="image"``: one point per image, the global average over positions; ids are
(image, 0, 0). The image index is global: the first image of a run is ``image_offset``.

Modules
-------
- :mod:`probes.capture.points`: which points (:func:`select_points`), argument checks;
- :mod:`probes.capture.sampling`: the counter-based hash in torch, per-pass sample plans and the
  bottom-K reservoir bookkeeping of each block frame;
- :mod:`probes.capture.accumulate`: the device accumulators (moments, activity, extent, reservoir rows);
- :mod:`probes.capture.hooks`: one hook and one gather per distinct tensor (``Capture.n_hooks``
  says how many), the example pass;
- :mod:`probes.capture.session`: :func:`capture` and :class:`Capture`;
- :mod:`probes.capture.result`: :class:`PointStats`, :class:`ProbeResult` (merge, save, load);
- :mod:`probes.capture.memory`: the heap trim that keeps resident memory flat;
- :mod:`probes.capture.run`: :func:`probe`.

All bookkeeping runs in vectorised torch on the activations' device: the sampling hash of every
position, the choice of rows, one gather per hooked tensor per batch and every accumulator. No
host work grows with H * W, and nothing leaves the device until :meth:`Capture.stats`.

What each point accumulates:

- **Moments** (float64). ``moments="exact"`` puts every sample into the moments.
  ``moments="sampled"`` (default) keeps each position independently with probability
  ``rate = min(1, moment_positions / (H * W))`` (``moment_positions`` per image on average),
  decided by a hash of (seed, image, y, x) that does not depend on the batch split
  (:mod:`probes.capture.sampling`: the splitmix64 hash of :func:`probes.sinks.position_hash`,
  computed in torch, bit for bit the same values). Every
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
- **Extent** (:class:`~probes.sinks.Extent`): over *every* position in every mode, the
  per-channel min and max (true int8 calibration ranges, :attr:`PointStats.ch_min` /
  :attr:`PointStats.ch_max`) and, at points with a flat region, the per-channel active and
  saturated counts (so a dead unit is one never active anywhere, not in a sample); plus a
  fixed-bin histogram of ``|x|`` over the sampled rows (all rows in exact mode) for
  percentile-clipped ranges. A post-activation point read off its ``.pre`` tensor applies the
  (monotone) activation to the ``.pre`` min and max. These are per-batch reductions on the
  device (a comparison into a reused float buffer and a sum along the contiguous axis).
"""

from probes.capture.points import PointSpec, select_points
from probes.capture.result import SINKS, PointStats, ProbeResult
from probes.capture.run import probe
from probes.capture.session import (
    DEFAULT_ACTIVITY_POSITIONS,
    DEFAULT_MOMENT_POSITIONS,
    DEFAULT_RESERVOIR_SIZE,
    MOMENT_MODES,
    SAMPLE_UNITS,
    Capture,
    capture,
)

__all__ = [
    "DEFAULT_ACTIVITY_POSITIONS",
    "DEFAULT_MOMENT_POSITIONS",
    "DEFAULT_RESERVOIR_SIZE",
    "MOMENT_MODES",
    "SAMPLE_UNITS",
    "SINKS",
    "Capture",
    "PointSpec",
    "PointStats",
    "ProbeResult",
    "capture",
    "probe",
    "select_points",
]
