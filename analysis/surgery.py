"""Within-network surgery: the bottleneck activation removed or inserted at inference.

The controlled test of the paper's claim. Comparing a linear and a ReLU6 network compares two
trainings; here one trained network is kept and only the activation after its projection is
changed, without retraining: removed (a ReLU6 network's ``project`` activation -> Identity) or
inserted (a linear network's projection -> ReLU6), one block at a time and in all blocks at
once. For every variant the table gives the test accuracy and the information metrics
(:mod:`analysis.information`: ``input_decode_r2``, ``label_decode_acc`` and their k-NN columns,
with bootstrap intervals) at the changed block's ``project`` and ``output`` points (every
block's for the unmodified network and for "all blocks"), each beside the unmodified network's
value and the difference.

Where the new activation goes: the module at the block's ``project_act`` path is replaced; a
projection without an activation module (a third-party linear bottleneck) gets the activation
appended after its BN (or conv) in an ``nn.Sequential``. The model is deep-copied, never
changed in place.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import altair as alt
import numpy as np
import pandas as pd
import torch
from threadpoolctl import threadpool_limits
from torch import nn

from analysis.information import (
    DECODERS,
    N_BOOT,
    bootstrap_counts,
    extract_features,
    information_metrics,
    target_basis,
)

from probes.points import point_block, point_name

__all__ = [
    "REPLACEMENTS",
    "accuracy",
    "SURGERY_COLUMNS",
    "SURGERY_METRICS",
    "replace_bottleneck",
    "run_surgery",
    "surgery_figure",
    "surgery_table",
]

#: Activations that can be put after a projection.
REPLACEMENTS: dict[str, type[nn.Module]] = {"identity": nn.Identity, "relu6": nn.ReLU6, "relu": nn.ReLU}
#: Information metrics reported per variant (each also with ``_ci_low`` / ``_ci_high``).
SURGERY_METRICS: tuple[str, ...] = ("input_decode_r2", "input_decode_r2_knn", "label_decode_acc",
                                    "label_decode_acc_knn")
#: Columns of :func:`surgery_table`.
SURGERY_COLUMNS: tuple[str, ...] = (
    "variant", "changed_blocks", "act_from", "act_to", "block", "point", "metric", "value", "ci_low",
    "ci_high", "baseline", "delta", "reason",
)


def _set_module(model: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, child = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, child, module)


def replace_bottleneck(model: nn.Module, blocks: Sequence[Any], indices: Sequence[int], act: str) -> nn.Module:
    """A deep copy of ``model`` with the projection activation of blocks ``indices`` replaced.

    Parameters
    ----------
    model : nn.Module
    blocks : sequence of probes.blocks.BlockInfo
        From :func:`probes.blocks.find_blocks` on ``model``.
    indices : sequence of int
        Block indices to change.
    act : {"identity", "relu6", "relu"}
        The new activation (a fresh module, not in-place).

    Returns
    -------
    nn.Module
    """
    if act not in REPLACEMENTS:
        raise ValueError(
            f"The 'act' parameter of replace_bottleneck must be one of {list(REPLACEMENTS)}. Got {act!r} instead."
        )
    by_index = {b.index: b for b in blocks}
    bad = [i for i in indices if i not in by_index]
    if bad:
        raise ValueError(
            f"The 'indices' parameter of replace_bottleneck must name blocks 0..{len(blocks) - 1}. Got {bad} instead."
        )
    new = copy.deepcopy(model)
    for i in indices:
        b = by_index[i]
        if b.project_act is not None:
            _set_module(new, b.project_act, REPLACEMENTS[act]())
        elif act != "identity":
            last = b.project_bn or b.project_conv
            _set_module(new, last, nn.Sequential(new.get_submodule(last), REPLACEMENTS[act]()))
    return new


def accuracy(model: nn.Module, data: Any, *, input_spec: Any = None, batch_size: int = 256,
                  device: str | None = None) -> float:
    """Fraction of ``data`` (an ImageDataset with labels) whose arg-max logit is the label."""
    from probes.preprocess import prepare

    if data.y is None:
        raise ValueError(f"The 'data' parameter of accuracy must have labels; {data.name!r} has none.")
    dev = torch.device(device or "cpu")
    param = next(iter(model.parameters()), None)
    old = param.device if param is not None else None
    flags = {m: m.training for m in model.modules()}
    correct = 0
    try:
        model.eval().to(dev)
        with torch.no_grad():
            for i in range(0, len(data), batch_size):
                x = prepare(data.x[i:i + batch_size], input_spec, name=data.name) if input_spec is not None else \
                    torch.as_tensor(data.x[i:i + batch_size])
                pred = model(x.to(dev)).argmax(dim=1).cpu().numpy()
                correct += int(np.sum(pred == np.asarray(data.y[i:i + batch_size])))
    finally:
        for m, flag in flags.items():
            m.training = flag
        if old is not None:
            model.to(old)
    return correct / len(data)


def _info(model: nn.Module, train: Any, test: Any, points: list[str], *, input_spec: Any, counts: np.ndarray,
          bases: dict[str, np.ndarray], decoders: Sequence[str], device: str | None) -> dict[str, dict[str, Any]]:
    ftr = extract_features(model, train, input_spec=input_spec, points=points, device=device)
    fte = extract_features(model, test, input_spec=input_spec, points=points, device=device)
    return {p: information_metrics(ftr[p], fte[p], train, test, decoders=decoders, counts=counts, bases=bases,
                                   point=p) for p in fte}


def surgery_table(
    model: nn.Module,
    train: Any,
    test: Any,
    *,
    input_spec: Any = None,
    act: str | None = None,
    blocks: Sequence[int] | None = None,
    decoders: Sequence[str] = DECODERS,
    n_boot: int = N_BOOT,
    seed: int = 0,
    device: str | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Accuracy and information of ``model`` with its bottleneck activation swapped.

    Parameters
    ----------
    model : nn.Module
    train, test : probes.datasets.ImageDataset
        Decoders are fitted on ``train`` and scored on ``test``; accuracy is on ``test``.
    input_spec : probes.preprocess.InputSpec, optional
    act : {"identity", "relu6", "relu"}, optional
        The replacement; default: ``identity`` where the projections have an activation
        (remove it), ``relu6`` where they are linear (insert it).
    blocks : sequence of int, optional
        Blocks changed one at a time (default: all); "all blocks" changes every block.
    decoders, n_boot, seed
        See :func:`analysis.information.decode`.
    device : str, optional
    progress : bool

    Returns
    -------
    DataFrame
        :data:`SURGERY_COLUMNS`; ``variant`` is ``"none"``, ``"block <i>"`` or ``"all blocks"``;
        ``metric`` is ``test_accuracy`` (``block`` -1, ``point`` empty) or one of
        :data:`SURGERY_METRICS`; ``baseline`` is the unmodified network's value at the same
        point and ``delta = value - baseline``.
    """
    from tqdm.auto import tqdm

    from probes.blocks import find_blocks
    from probes.preprocess import prepare

    example = prepare(test.x[:1], input_spec, name=test.name) if input_spec is not None else torch.as_tensor(test.x[:1])
    found = find_blocks(model, example)
    acts = sorted({b.bottleneck_act for b in found})
    if act is None:
        act = "relu6" if acts == ["linear"] else "identity"
    chosen = [b.index for b in found] if blocks is None else list(blocks)
    counts = bootstrap_counts(len(test), n_boot=n_boot, seed=seed)
    with threadpool_limits(1):
        bases = {"input": target_basis(train.x.reshape(len(train), -1))}
    all_points = [point_name(b.index, s) for b in found for s in ("project", "output")]
    variants: list[tuple[str, list[int]]] = [("none", [])] + [(f"block {i}", [i]) for i in chosen] + [
        ("all blocks", [b.index for b in found])]
    rows: list[dict[str, Any]] = []
    base: dict[tuple[str, str], float] = {}
    for name, idx in tqdm(variants, desc="surgery", disable=not progress, leave=False):
        net = replace_bottleneck(model, found, idx, act) if idx else model
        points = all_points if len(idx) != 1 else [point_name(idx[0], "project"), point_name(idx[0], "output")]
        acc = accuracy(net, test, input_spec=input_spec, device=device)
        info = _info(net, train, test, points, input_spec=input_spec, counts=counts, bases=bases, decoders=decoders,
                     device=device)
        changed = ",".join(str(i) for i in idx)
        act_from = "/".join(sorted({b.bottleneck_act for b in found if b.index in idx})) if idx else ""
        common = {"variant": name, "changed_blocks": changed, "act_from": act_from, "act_to": act if idx else ""}
        if name == "none":
            base[("", "test_accuracy")] = acc
        rows.append({**common, "block": -1, "point": "", "metric": "test_accuracy", "value": acc,
                     "ci_low": np.nan, "ci_high": np.nan, "reason": ""})
        for point, mets in info.items():
            for metric in SURGERY_METRICS:
                if metric not in mets:
                    continue
                mv = mets[metric]
                if name == "none":
                    base[(point, metric)] = mv.value
                rows.append({**common, "block": point_block(point), "point": point, "metric": metric,
                             "value": mv.value, "ci_low": mets[f"{metric}_ci_low"].value,
                             "ci_high": mets[f"{metric}_ci_high"].value, "reason": mv.reason or ""})
    df = pd.DataFrame(rows)
    df["baseline"] = [base.get((p, m), np.nan) for p, m in zip(df["point"], df["metric"])]
    df["delta"] = df["value"] - df["baseline"]
    return df[list(SURGERY_COLUMNS)]


def run_surgery(checkpoint: str, *, dataset: str | None = None, act: str | None = None,
                blocks: Sequence[int] | None = None, seed: int = 0, device: str | None = None,
                progress: bool = True) -> pd.DataFrame:
    """:func:`surgery_table` for a zoo checkpoint on its dataset (train / test split).

    Returns the table with a ``checkpoint`` and a ``dataset`` column in front.
    """
    from probes.datasets import load_dataset
    from probes.loading import load_checkpoint

    loaded = load_checkpoint(checkpoint)
    name = dataset or (loaded.card or {}).get("dataset", {}).get("name")
    if name not in ("digits", "shapes"):
        raise ValueError(
            f"The 'dataset' parameter of run_surgery must be 'digits' or 'shapes' (a train / test split). "
            f"Got {name!r} instead."
        )
    train = load_dataset(name, split="train")
    test = load_dataset(name, split="test")
    df = surgery_table(loaded.model, train, test, input_spec=loaded.input_spec, act=act, blocks=blocks, seed=seed,
                       device=device, progress=progress)
    df.insert(0, "dataset", name)
    df.insert(0, "checkpoint", loaded.name)
    return df


def surgery_figure(table: pd.DataFrame, *, metric: str = "input_decode_r2", point: str = "project",
                   width: float = 420, height: float = 200) -> alt.VConcatChart:
    """Effect of the surgery, per changed block: accuracy change and ``metric`` change.

    Top: test accuracy of each variant minus the unmodified network's. Bottom: ``metric`` at
    the changed block's ``point`` (``project`` or ``output``) minus its unmodified value, with
    the variant's bootstrap interval shifted by the same baseline (the interval of the modified
    network's value; the baseline's own interval is in the table). "all blocks" is shown per
    block as a second series.

    Parameters
    ----------
    table : DataFrame
        :func:`surgery_table` output (one checkpoint).
    metric : str
        One of :data:`SURGERY_METRICS`.
    point : {"project", "output"}
    """
    from analysis.figures import OKABE_ITO, metric_label, style_chart

    if metric not in SURGERY_METRICS:
        raise ValueError(f"The 'metric' parameter of surgery_figure must be one of {list(SURGERY_METRICS)}. "
                         f"Got {metric!r} instead.")
    if point not in ("project", "output"):
        raise ValueError(f"The 'point' parameter of surgery_figure must be 'project' or 'output'. Got {point!r} instead.")
    acc = table[(table["metric"] == "test_accuracy") & (table["variant"] != "none")].copy()
    acc["order"] = [-1 if v == "all blocks" else int(v.split()[1]) for v in acc["variant"]]
    change = "/".join(sorted(set(acc["act_from"]) - {""}))
    to = "/".join(sorted(set(acc["act_to"]) - {""}))
    top = alt.Chart(acc).mark_bar(color=OKABE_ITO["blue"]).encode(
        x=alt.X("variant:N", sort=alt.SortField("order"), title="Blocks changed"),
        y=alt.Y("delta:Q", title="Accuracy change"),
        tooltip=["variant", alt.Tooltip("value:Q", format=".3f", title="accuracy"),
                 alt.Tooltip("delta:Q", format="+.3f")],
    ).properties(width=width, height=height * 0.7)
    sel = table[(table["metric"] == metric) & table["point"].str.endswith(f".{point}")
                & (table["variant"] != "none")].copy()
    single = sel[sel["variant"] != "all blocks"]
    allb = sel[sel["variant"] == "all blocks"]
    sel = pd.concat([single.assign(series="this block only"), allb.assign(series="all blocks")], ignore_index=True)
    sel["lo"] = sel["ci_low"] - sel["baseline"]
    sel["hi"] = sel["ci_high"] - sel["baseline"]
    color = alt.Color("series:N", title="Changed", scale=alt.Scale(
        domain=["this block only", "all blocks"], range=[OKABE_ITO["vermillion"], OKABE_ITO["black"]]))
    base = alt.Chart(sel).encode(x=alt.X("block:O", title="Block"), xOffset=alt.XOffset("series:N"), color=color)
    bottom = (base.mark_rule().encode(y=alt.Y("lo:Q", title=f"Change of {metric_label(metric)}"), y2="hi:Q")
              + base.mark_point(filled=True, size=50).encode(
                  y="delta:Q", tooltip=["variant", "point", alt.Tooltip("value:Q", format=".3f"),
                                        alt.Tooltip("baseline:Q", format=".3f"),
                                        alt.Tooltip("delta:Q", format="+.3f")])
              + alt.Chart(pd.DataFrame({"y": [0.0]})).mark_rule(strokeDash=[4, 3], color="gray").encode(y="y:Q")
              ).properties(width=width, height=height)
    chart = alt.vconcat(top, bottom).properties(title=alt.TitleParams(
        f"Surgery: bottleneck activation {change or 'as trained'} -> {to} at inference",
        subtitle=[f"{metric} at each changed block's {point} point minus the unmodified network's; "
                  "bars: 95 % bootstrap interval over test images"]))
    return style_chart(chart)
