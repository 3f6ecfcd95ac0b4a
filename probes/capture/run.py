"""The :func:`probe` entry point: a whole dataset through a model into a :class:`ProbeResult`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import numpy as np
import torch
from torch import nn

from probes.capture.points import PointSpec, _check_int
from probes.capture.result import SINKS, ProbeResult
from probes.capture.session import (
    DEFAULT_ACTIVITY_POSITIONS,
    DEFAULT_MOMENT_POSITIONS,
    DEFAULT_RESERVOIR_SIZE,
    _input_dtype,
    capture,
)
from probes.datasets import ImageDataset
from probes.preprocess import InputSpec, prepare

__all__ = ["evaluating_on", "probe"]


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextlib.contextmanager
def evaluating_on(model: nn.Module, device: str | torch.device | None) -> Iterator[tuple[torch.device, torch.dtype]]:
    """Run ``model`` in eval mode on ``device`` (default: CUDA when available) for the block, then
    give back every module's training flag and the model's original device, also on error.

    Yields ``(device, dtype)``: the device used and the parameter dtype the inputs must be cast to.
    """
    dev = torch.device(device) if device is not None else _default_device()
    param = next(iter(model.parameters()), None)
    old_device = param.device if param is not None else None
    flags = {m: m.training for m in model.modules()}
    try:
        model.eval().to(dev)
        yield dev, _input_dtype(model)
    finally:
        for m, flag in flags.items():
            m.training = flag
        if old_device is not None:
            model.to(old_device)


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
    with evaluating_on(model, device) as (dev, dtype), torch.no_grad(), capture(
        model, points, example_input=get(0, 1).to(dev, dtype), sinks=sinks, sample_unit=sample_unit,
        moments=moments, moment_positions=moment_positions,
        activity_positions=activity_positions, reservoir_size=reservoir_size,
        seed=seed, image_offset=image_offset, expected_images=n,
    ) as cap:
        for i in tqdm(range(0, n, batch_size), disable=not progress, desc="probe", unit="batch"):
            model(get(i, min(i + batch_size, n)).to(dev, dtype, non_blocking=True))
        result = cap.result()
    result.config.update({
        "batch_size": batch_size,
        "device": str(dev),
        "input_spec": input_spec.to_dict() if input_spec is not None else None,
    })
    return result
