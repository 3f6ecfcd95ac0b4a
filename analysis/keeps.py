"""What each design keeps of the input's detail: edge energy of the decoded network input.

The notes claim that "visualising feature maps shows that the linear bottleneck keeps more
detail (edges, textures)". A picture of feature maps is no measurement; this module turns the
claim into one. From a capture point, the network input is decoded with the design-independent
decoder of :mod:`analysis.information` (fitted on the train split, applied to the test split),
and the decoded test images are compared with the originals on their high-frequency part:

- ``edge_energy_ratio`` = sum over test images of ``||sobel(x_hat)||^2`` divided by the same
  sum for the originals ``x``, where ``||sobel(x)||^2 = sum_pixels (G_y^2 + G_x^2)`` with the
  3x3 Sobel derivatives of each image and channel (reflect borders). 1 = as much edge energy as
  the original; it does not check that the edges are in the right place.
- ``highpass_r2`` = ``1 - sum ||h(x_hat) - h(x)||^2 / sum ||h(x) - mean h(x)||^2`` with
  the high-pass band ``h(x) = x - gaussian_filter(x, sigma)`` (sigma = 1 px): the share of
  the input's detail that is recovered *in place*. 1 for a perfect decoder, 0 for one that
  predicts the mean detail, negative when worse. This is the number the verdict uses.

:func:`edge_scores` computes both for arrays; :func:`decoded_edge_scores` runs the decoder at
every block's output of one model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from probes.points import point_block

__all__ = ["EDGE_METRICS", "HIGHPASS_SIGMA", "capture_tensors", "channel_grid", "decoded_edge_scores", "decoded_inputs",
           "edge_scores",
           "highpass", "sobel_energy"]

#: Width (px) of the Gaussian whose complement is the high-pass band.
HIGHPASS_SIGMA = 1.0
#: The metrics :func:`edge_scores` returns.
EDGE_METRICS = ("edge_energy_ratio", "highpass_r2")


def _images(x: Any, name: str, func: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 4:
        raise ValueError(f"The '{name}' parameter of {func} must have shape (n_images, channels, height, width). "
                         f"Got shape {a.shape} instead.")
    return a


def sobel_energy(images: Any) -> np.ndarray:
    """Per-image Sobel gradient energy ``sum_pixels (G_y^2 + G_x^2)`` summed over channels.

    Parameters
    ----------
    images : array of shape (n_images, channels, height, width)

    Returns
    -------
    ndarray of shape (n_images,)
    """
    from scipy import ndimage

    x = _images(images, "images", "sobel_energy")
    # the 2-D Sobel pair built from 1-D passes: ndimage.sobel on a 4-D array would also smooth
    # across the image and channel axes, mixing images
    d, sm = [-1.0, 0.0, 1.0], [1.0, 2.0, 1.0]
    gy = ndimage.correlate1d(ndimage.correlate1d(x, d, axis=2, mode="reflect"), sm, axis=3, mode="reflect")
    gx = ndimage.correlate1d(ndimage.correlate1d(x, d, axis=3, mode="reflect"), sm, axis=2, mode="reflect")
    return (gy ** 2 + gx ** 2).sum(axis=(1, 2, 3))


def highpass(images: Any, sigma: float = HIGHPASS_SIGMA) -> np.ndarray:
    """``x - gaussian_filter(x, sigma)`` per image and channel (the detail band)."""
    from scipy import ndimage

    x = _images(images, "images", "highpass")
    return x - ndimage.gaussian_filter(x, sigma=(0, 0, sigma, sigma), mode="reflect")


def edge_scores(decoded: Any, original: Any, *, sigma: float = HIGHPASS_SIGMA) -> dict[str, float]:
    """How much of the originals' edge energy the decoded images recover (module docstring).

    Parameters
    ----------
    decoded, original : arrays of shape (n_images, channels, height, width)

    Returns
    -------
    dict
        ``edge_energy_ratio`` and ``highpass_r2``.

    Examples
    --------
    >>> x = np.random.default_rng(0).random((3, 1, 8, 8))
    >>> edge_scores(x, x)
    {'edge_energy_ratio': 1.0, 'highpass_r2': 1.0}
    """
    xh = _images(decoded, "decoded", "edge_scores")
    x = _images(original, "original", "edge_scores")
    if xh.shape != x.shape:
        raise ValueError(f"The 'decoded' parameter of edge_scores must have the shape of 'original' {x.shape}. "
                         f"Got {xh.shape} instead.")
    e0 = float(sobel_energy(x).sum())
    hx, hxh = highpass(x, sigma), highpass(xh, sigma)
    ss = float(((hx - hx.mean(axis=0, keepdims=True)) ** 2).sum())
    return {"edge_energy_ratio": float(sobel_energy(xh).sum()) / e0 if e0 > 0 else float("nan"),
            "highpass_r2": 1.0 - float(((hxh - hx) ** 2).sum()) / ss if ss > 0 else float("nan")}


def decoded_edge_scores(model: Any, train: Any, test: Any, *, input_spec: Any,
                        points: Sequence[str] = ("blocks.*.output",), decoder: str = "linear",
                        keep_images: int = 0) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Decode the test inputs from each capture point and score their edges.

    The decoder is :func:`analysis.information.decode_input` on the globally pooled features
    of :func:`analysis.information.extract_features` (fitted on ``train``, applied to
    ``test``); both are the information family's, so the numbers here and its
    ``input_decode_r2`` describe the same decoded images.

    Parameters
    ----------
    model : nn.Module
    train, test : probes.datasets.ImageDataset
    input_spec : probes.preprocess.InputSpec
    points : sequence of str
        Capture points (names or fnmatch patterns).
    decoder : {"linear", "knn"}
    keep_images : int
        Return the first ``keep_images`` decoded test images of each point (for display).

    Returns
    -------
    scores : DataFrame with columns point, block, input_decode_r2, edge_energy_ratio, highpass_r2
    images : dict of point -> ndarray of shape (keep_images, C, H, W)
    """
    from analysis.information import decode_input, extract_features

    f_train = extract_features(model, train, input_spec=input_spec, points=list(points))
    f_test = extract_features(model, test, input_spec=input_spec, points=list(points))
    rows, kept = [], {}
    for name in f_test:
        res = decode_input(f_train[name], train.x, f_test[name], test.x, decoder=decoder, n_boot=1)
        rows.append({"point": name, "block": point_block(name), "input_decode_r2": float(res.score),
                     **edge_scores(res.predicted, test.x)})
        if keep_images:
            kept[name] = np.asarray(res.predicted[:keep_images], dtype=np.float32)
    return pd.DataFrame(rows).sort_values("block", ignore_index=True), kept


def capture_tensors(model: Any, x: Any, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The tensors at capture points ``names`` for one forward pass of ``x`` (eval, no grad).

    Parameters
    ----------
    model : nn.Module
    x : Tensor of shape (batch, channels, height, width)
        Normalised model input.
    names : sequence of str
        Capture-point names (``"blocks.3.expand"``); aliases are read from the point they alias.

    Returns
    -------
    dict of name -> ndarray of shape (batch, C, H, W), float32
        Copied before any in-place activation can overwrite them.

    Raises
    ------
    ValueError
        A name that is not a capture point of ``model`` (the message lists some that are).
    """
    import torch

    from probes.blocks import find_blocks

    points = {p.name: p for b in find_blocks(model, x[:1]) for p in b.points}
    unknown = [n for n in names if n not in points]
    if unknown:
        raise ValueError(f"The 'names' parameter of capture_tensors must name capture points of the model, "
                         f"e.g. {list(points)[:4]}. Got {unknown} instead.")
    modules = dict(model.named_modules())
    got: dict[str, np.ndarray] = {}
    handles = []
    for name in names:
        p = points[name]
        src = points[p.alias_of] if p.alias_of else p

        def hook(mod: Any, args: Any, out: Any = None, *, key: str = name, is_input: bool = src.hook == "input",
                 counter: list[int] = [0], at: int = src.call_index) -> None:  # noqa: B006 - per-hook call count
            if counter[0] == at and key not in got:
                got[key] = (args[0] if is_input else out).detach().to("cpu", torch.float32).numpy().copy()
            counter[0] += 1

        m = modules[src.module_path]
        handles.append(m.register_forward_pre_hook(hook) if src.hook == "input" else m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return got


def channel_grid(acts: Any, *, columns: int | None = None, gap: int = 1) -> np.ndarray:
    """Tile the channel maps of one tensor into one grey image for display.

    Each channel is scaled to [0, 1] by its own min and max (a constant channel is 0), so the
    grid shows where each channel responds, not how strongly channels compare.

    Parameters
    ----------
    acts : array of shape (channels, height, width)
    columns : int, optional
        Tiles per row (default: ceil(sqrt(channels))).
    gap : int
        Pixels between tiles (filled with 1, white).

    Returns
    -------
    ndarray of shape (rows * (height + gap) - gap, columns * (width + gap) - gap), float32 in [0, 1]
    """
    a = np.asarray(acts, dtype=np.float32)
    if a.ndim != 3:
        raise ValueError(f"The 'acts' parameter of channel_grid must have shape (channels, height, width). "
                         f"Got shape {a.shape} instead.")
    c, h, w = a.shape
    cols = columns or int(np.ceil(np.sqrt(c)))
    rows = -(-c // cols)
    lo = a.min(axis=(1, 2), keepdims=True)
    span = a.max(axis=(1, 2), keepdims=True) - lo
    norm = np.where(span > 0, (a - lo) / np.where(span > 0, span, 1), 0.0)
    out = np.ones((rows * (h + gap) - gap, cols * (w + gap) - gap), dtype=np.float32)
    for i in range(c):
        r, q = divmod(i, cols)
        out[r * (h + gap):r * (h + gap) + h, q * (w + gap):q * (w + gap) + w] = norm[i]
    return out


def decoded_inputs(checkpoint: str, *, cache_dir: str | Path | None = None,
                   points: Sequence[str] = ("blocks.*.output",)) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """:func:`decoded_edge_scores` of a zoo checkpoint on its dataset, every decoded test image kept.

    Cached as ``<cache_dir>/decoded-<checkpoint>-<sha256[:16]>.npz`` (default: the user cache
    folder; float16 images, which is finer than the 8-bit display).

    Returns
    -------
    scores : DataFrame (see :func:`decoded_edge_scores`)
    images : dict of point -> ndarray of shape (n_test, C, H, W)
    """
    from analysis.study import load_inputs, user_cache_dir
    from probes._io import atomic_path
    from probes.loading import load_checkpoint

    lm = load_checkpoint(checkpoint)
    if lm.card is None:
        raise ValueError(f"The 'checkpoint' parameter of decoded_inputs must be a zoo checkpoint with a card. "
                         f"Got {checkpoint!r} instead.")
    folder = Path(cache_dir) if cache_dir is not None else user_cache_dir() / "decoded"
    path = folder / f"decoded-{checkpoint}-{str(lm.sha256 or '')[:16]}-{'_'.join(points).replace('*', 'x')}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            scores = pd.DataFrame({k[2:]: z[k] for k in z.files if k.startswith("s:")})
            images = {k[2:]: z[k].astype(np.float32) for k in z.files if k.startswith("i:")}
        return scores, images
    dataset = lm.card["dataset"]["name"]
    train, test = load_inputs(dataset, split="train"), load_inputs(dataset, split="test")
    scores, images = decoded_edge_scores(lm.model, train, test, input_spec=lm.input_spec, points=points,
                                         keep_images=len(test))
    folder.mkdir(parents=True, exist_ok=True)
    # strings as fixed-width unicode: an object array would need pickle to load
    arrays = {f"s:{c}": (scores[c].to_numpy() if pd.api.types.is_numeric_dtype(scores[c])
                         else np.array(scores[c].astype(str).tolist())) for c in scores.columns}
    arrays.update({f"i:{k}": v.astype(np.float16) for k, v in images.items()})
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    return scores, images
