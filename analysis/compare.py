"""Paired comparison of two designs over training seeds: ``bnprobe compare``.

The same seed gives both designs the same initial weights and the same batch order
(``probes.train``), so a seed is a *pair*: for a value ``v`` measured on checkpoint
``(design, seed)`` the paired differences are

    d_s = v_{a,s} - v_{b,s},   s in the seeds trained for both designs (n pairs),

and every statement about "a vs b" is a statement about the mean of ``d``:

- interval: Student-t, ``mean(d) +- t_{(1 + level)/2, n-1} * sd(d) / sqrt(n)`` (``sd`` with
  ddof = 1; zero width when all differences are equal);
- p-value: exact sign-flip permutation test, two-sided: under H0 (no difference) every sign
  pattern of ``d`` is equally likely, so ``p = #{eps in {-1, +1}^n : |sum eps_i d_i| >= |sum d_i|} / 2^n``
  over all ``2^n`` patterns (the smallest possible p is ``2 / 2^n``: 0.25 for 3 pairs,
  0.002 for 10);
- verdict: ``"<a> higher"`` or ``"<b> higher"`` only when the interval excludes 0 *and*
  ``p <= 1 - level``; otherwise ``"no significant difference"`` (the ``reason`` says which of
  the two tests did not agree); ``"n/a"`` when fewer than two pairs have a finite value.

This module is THE seed aggregation of the project: :func:`compare_designs` (one row per
metric x block x point) and :func:`compare_bands` (per seed the mean over the blocks of a depth
band, then paired) feed ``bnprobe compare``, the report's tables (:mod:`analysis.report`), the
dashboard overview and ``scripts/findings.py``; :func:`band_values` is the per-seed band mean
that they all share.

Output columns
--------------
:data:`COMPARE_COLUMNS` (per block) and :data:`BAND_COLUMNS` (per band). Per-seed values are kept
as ``;``-joined strings in seed order: ``seeds`` (``"0;1;2"``), ``values_a`` and ``values_b``
(``nan`` where a seed has no finite value there; such a seed is not a pair), so a researcher can
redo any row by hand. ``mean_a`` and ``mean_b`` are means over the pairs only, hence
``mean_diff = mean_a - mean_b``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "BAND_COLUMNS",
    "COMPARE_COLUMNS",
    "DEFAULT_LEVEL",
    "EXACT_MAX_PAIRS",
    "STAT_COLUMNS",
    "band_values",
    "compare_bands",
    "compare_designs",
    "depth_bands",
    "load_design_metrics",
    "NO_DIFFERENCE",
    "paired_stats",
    "seed_interval",
    "sign_flip_p_value",
    "values_mean",
]

#: Confidence level of the intervals (and 1 - level is the significance threshold of p).
DEFAULT_LEVEL = 0.95

#: Up to this many pairs the sign-flip test enumerates all 2^n patterns; above, 2^20 seeded draws.
EXACT_MAX_PAIRS = 20

#: Columns that :func:`paired_stats` fills, in order.
STAT_COLUMNS: tuple[str, ...] = (
    "n_pairs", "seeds", "values_a", "values_b", "mean_a", "mean_b", "mean_diff", "sd_diff",
    "ci_low", "ci_high", "p_value", "verdict", "reason",
)

#: Columns of :func:`compare_designs` (one row per metric x block x point).
COMPARE_COLUMNS: tuple[str, ...] = (
    "dataset", "metric", "block", "point", "stage", "pre", "design_a", "design_b", *STAT_COLUMNS,
)

#: Columns of :func:`compare_bands` (one row per metric x stage x band).
BAND_COLUMNS: tuple[str, ...] = (
    "dataset", "metric", "stage", "pre", "band", "blocks", "design_a", "design_b", *STAT_COLUMNS,
)

#: Verdict when the interval of the paired difference covers 0 (or p is above 1 - level).
NO_DIFFERENCE = "no significant difference"
_NO_DIFF = NO_DIFFERENCE


def _check_level(level: Any, func: str) -> float:
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
        raise ValueError(f"The 'level' parameter of {func} must be a float in (0, 1). Got {level!r} instead.")
    return float(level)


@lru_cache(maxsize=None)
def _sign_patterns(n: int) -> np.ndarray:
    """All 2^n sign vectors, shape (2^n, n), rows in binary order (the first is all +1)."""
    bits = (np.arange(2 ** n)[:, None] >> np.arange(n)[None, :]) & 1
    return 1.0 - 2.0 * bits


def sign_flip_p_value(diffs: Sequence[float] | np.ndarray, *, seed: int = 0) -> float:
    """Two-sided sign-flip permutation p-value of the paired differences ``diffs``.

    ``p = #{eps : |sum_i eps_i d_i| >= |sum_i d_i|} / 2^n`` over all sign patterns
    ``eps in {-1, +1}^n`` (exact for ``n <=`` :data:`EXACT_MAX_PAIRS`; above, the fraction over
    2^20 patterns drawn with ``seed``, counting the observed one). Ties are counted with a
    relative tolerance of 1e-12 so that float rounding cannot hide an equal statistic.

    Parameters
    ----------
    diffs : array-like of shape (n_pairs,)
        Finite paired differences ``a - b``.
    seed : int, default=0
        Seeds the draws when ``n > EXACT_MAX_PAIRS``.

    Returns
    -------
    p : float
        In ``[2 / 2^n, 1]``; 1 when every difference is 0.

    Examples
    --------
    >>> sign_flip_p_value([1.0, 2.0, 3.0])  # only all-plus and all-minus reach |sum| = 6
    0.25
    """
    d = np.asarray(diffs, dtype=np.float64).ravel()
    if d.size == 0 or not np.all(np.isfinite(d)):
        raise ValueError(f"The 'diffs' parameter of sign_flip_p_value must be a non-empty array of finite "
                         f"numbers. Got {d.tolist()!r} instead.")
    observed = abs(d.sum())
    tol = 1e-12 * max(float(np.abs(d).sum()), 1e-300)
    if d.size <= EXACT_MAX_PAIRS:
        stats = np.abs(_sign_patterns(d.size) @ d)
        return float(np.count_nonzero(stats >= observed - tol) / stats.size)
    rng = np.random.default_rng(seed)
    draws = 2 ** 20
    hits = 1  # the observed pattern
    for _ in range(draws // 4096):
        eps = rng.choice((-1.0, 1.0), size=(4096, d.size))
        hits += int(np.count_nonzero(np.abs(eps @ d) >= observed - tol))
    return hits / (draws + 1)


def _join(values: Sequence[Any]) -> str:
    return ";".join("nan" if isinstance(v, float) and not math.isfinite(v) else
                    (format(v, ".10g") if isinstance(v, float) else str(v)) for v in values)


@lru_cache(maxsize=256)
def _t_quantile(level: float, dof: int) -> float:
    """``t_{(1 + level)/2, dof}``, the two-sided Student-t quantile (cached: one per n)."""
    from scipy import stats

    return float(stats.t.ppf(0.5 + level / 2, dof))


def values_mean(joined: str) -> float:
    """Mean of the finite values in a ``;``-joined per-seed string (``values_a`` / ``values_b``).

    Shows one design's level where no seed pairs (a metric undefined for the other design);
    NaN when no value is finite.
    """
    v = np.array([float(x) for x in str(joined).split(";") if x.strip()], dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else math.nan


def paired_stats(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, *,
                 seeds: Sequence[Any] | None = None, level: float = DEFAULT_LEVEL,
                 names: tuple[str, str] = ("a", "b")) -> dict[str, Any]:
    """Paired statistics of ``a - b`` over seeds (see the module docstring for the formulas).

    Parameters
    ----------
    a, b : array-like of shape (n_seeds,)
        Values of design a and design b, position ``s`` = seed ``seeds[s]``. Seeds where either
        value is not finite are not pairs (named in ``reason``).
    seeds : sequence, optional
        Seed labels (default ``0 .. n_seeds - 1``).
    level : float, default=0.95
        Confidence level of the t-interval; ``1 - level`` is the significance threshold of p.
    names : (str, str), default=("a", "b")
        Design names used in the verdict (``"a higher"``, ``"b higher"``).

    Returns
    -------
    dict
        The :data:`STAT_COLUMNS`: ``n_pairs``, ``seeds``/``values_a``/``values_b`` (``;``-joined,
        every seed given), ``mean_a``, ``mean_b``, ``mean_diff``, ``sd_diff``, ``ci_low``,
        ``ci_high``, ``p_value`` (NaN with a ``reason`` when ``n_pairs < 2``), ``verdict``.

    Examples
    --------
    >>> r = paired_stats([1.0, 2.0, 3.0], [0.0, 0.5, 1.0])
    >>> r["mean_diff"], r["p_value"], r["verdict"]
    (1.5, 0.25, 'no significant difference')
    """
    level = _check_level(level, "paired_stats")
    va = np.asarray(a, dtype=np.float64).ravel()
    vb = np.asarray(b, dtype=np.float64).ravel()
    if va.shape != vb.shape:
        raise ValueError(f"The 'a' and 'b' parameters of paired_stats must have one value per seed each. "
                         f"Got {va.size} and {vb.size} values instead.")
    labels = list(range(va.size)) if seeds is None else list(seeds)
    if len(labels) != va.size:
        raise ValueError(f"The 'seeds' parameter of paired_stats must name one seed per value ({va.size}). "
                         f"Got {len(labels)} instead.")
    ok = np.isfinite(va) & np.isfinite(vb)
    n = int(ok.sum())
    out: dict[str, Any] = {
        "n_pairs": n, "seeds": _join(labels), "values_a": _join(list(va)), "values_b": _join(list(vb)),
        "mean_a": math.nan, "mean_b": math.nan, "mean_diff": math.nan, "sd_diff": math.nan,
        "ci_low": math.nan, "ci_high": math.nan, "p_value": math.nan, "verdict": "n/a", "reason": "",
    }
    unpaired = [str(s) for s, k in zip(labels, ok) if not k]
    missing = (f"no finite value for both designs at seed(s) {', '.join(unpaired)}" if unpaired else "")
    if n > 0:
        out["mean_a"] = float(va[ok].mean())
        out["mean_b"] = float(vb[ok].mean())
        out["mean_diff"] = float((va[ok] - vb[ok]).mean())
    if n < 2:
        out["reason"] = "; ".join(filter(None, [f"{n} pair(s): an interval needs at least 2 seeds with "
                                                f"finite values for both designs", missing]))
        return out
    d = va[ok] - vb[ok]
    mean = float(d.mean())
    sd = float(d.std(ddof=1))
    half = _t_quantile(level, n - 1) * sd / math.sqrt(n)
    p = sign_flip_p_value(d)
    out.update(sd_diff=sd, ci_low=mean - half, ci_high=mean + half, p_value=p)
    excludes = out["ci_low"] > 0 or out["ci_high"] < 0
    alpha = 1 - level
    notes = [missing]
    if excludes and p <= alpha:
        out["verdict"] = f"{names[0]} higher" if mean > 0 else f"{names[1]} higher"
    else:
        out["verdict"] = _NO_DIFF
        if excludes:
            floor = 2.0 / 2 ** n if n <= EXACT_MAX_PAIRS else 0.0
            notes.append(f"the {100 * level:g} % interval excludes 0 but the sign-flip p = {p:.3g} > "
                         f"{alpha:.3g}" + (f" ({n} pairs cannot reach p below {floor:.3g})" if floor > alpha else ""))
    out["reason"] = "; ".join(filter(None, notes))
    return out


def seed_interval(values: Sequence[float] | np.ndarray, *, level: float = DEFAULT_LEVEL) -> tuple[float, float, float, int]:
    """Mean of one design's per-seed values and its Student-t interval (not paired).

    ``mean +- t_{(1 + level)/2, n-1} * sd / sqrt(n)`` over the ``n`` finite values; the interval is
    NaN for fewer than two values. Use it to describe one design; compare designs with
    :func:`paired_stats`.

    Returns
    -------
    mean, ci_low, ci_high : float
    n : int
        Number of finite values.
    """
    level = _check_level(level, "seed_interval")
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(v.mean())
    if v.size < 2:
        return mean, math.nan, math.nan, 1
    half = _t_quantile(level, v.size - 1) * float(v.std(ddof=1)) / math.sqrt(v.size)
    return mean, mean - half, mean + half, int(v.size)


# --------------------------------------------------------------------------------- pairing


def _pair_checkpoints(df: pd.DataFrame, design_a: str, design_b: str, func: str) -> pd.DataFrame:
    """Rows of the two designs whose seed was trained for both; warns about the others."""
    for col in ("checkpoint", "design", "seed", "metric", "value"):
        if col not in df.columns:
            raise ValueError(f"The 'df' parameter of {func} must be a tidy results table with a {col!r} "
                             f"column. Got columns {list(df.columns)} instead.")
    if design_a == design_b:
        raise ValueError(f"The 'design_b' parameter of {func} must differ from design_a. "
                         f"Got {design_b!r} for both instead.")
    present = sorted(pd.unique(df["design"].astype(str)))
    for name, design in (("design_a", design_a), ("design_b", design_b)):
        if design not in present:
            raise ValueError(f"The '{name}' parameter of {func} must be a design in the results, one of "
                             f"{present}. Got {design!r} instead.")
    sel = df[df["design"].astype(str).isin([design_a, design_b])]
    if sel["seed"].isna().any():
        bad = sorted(pd.unique(sel.loc[sel["seed"].isna(), "checkpoint"].astype(str)))
        raise ValueError(f"Checkpoints {bad} have no seed; a paired comparison needs the training seed of "
                         "every checkpoint (zoo cards carry it).")
    ckpts = sel[["design", "seed", "checkpoint"]].drop_duplicates()
    ckpts = ckpts.assign(design=ckpts["design"].astype(str), seed=ckpts["seed"].astype(int))
    dup = ckpts[ckpts.duplicated(["design", "seed"], keep=False)]
    if not dup.empty:
        d, s = dup.iloc[0][["design", "seed"]]
        names = sorted(dup[(dup["design"] == d) & (dup["seed"] == s)]["checkpoint"].astype(str))
        raise ValueError(f"Design {d!r} has {len(names)} checkpoints for seed {s} ({', '.join(names)}); "
                         "pass results with one checkpoint per design and seed.")
    seeds = {d: set(ckpts.loc[ckpts["design"] == d, "seed"]) for d in (design_a, design_b)}
    common = seeds[design_a] & seeds[design_b]
    only = ckpts[~ckpts["seed"].isin(common)].sort_values(["design", "seed"])
    if not only.empty:
        listed = ", ".join(f"{c} (seed {s}, only {d})" for d, s, c in
                           zip(only["design"], only["seed"], only["checkpoint"]))
        warnings.warn(f"{func}: dropping checkpoints whose seed was not trained for both {design_a} and "
                      f"{design_b}: {listed}.", UserWarning, stacklevel=3)
    out = sel.assign(design=sel["design"].astype(str), seed=sel["seed"].astype(int))
    return out[out["seed"].isin(common)]


def _select(df: pd.DataFrame, dataset: str | None, metrics: Sequence[str] | None, func: str) -> pd.DataFrame:
    if dataset is not None:
        if "dataset" not in df.columns or dataset not in set(df["dataset"].astype(str)):
            found = sorted(pd.unique(df["dataset"].astype(str))) if "dataset" in df.columns else []
            raise ValueError(f"The 'dataset' parameter of {func} must be a dataset in the results, one of "
                             f"{found}. Got {dataset!r} instead.")
        df = df[df["dataset"].astype(str) == dataset]
    elif "dataset" in df.columns and df["dataset"].nunique() > 1:
        raise ValueError(f"The 'dataset' parameter of {func} must name one dataset when the results hold "
                         f"several ({sorted(pd.unique(df['dataset'].astype(str)))}). Got None instead.")
    if metrics is None:
        # within-run bootstrap bounds are uncertainty of one run, not quantities to compare
        keep = ~df["metric"].astype(str).str.endswith(("_ci_low", "_ci_high"))
    else:
        keep = df["metric"].isin(list(metrics))
        if not keep.any():
            raise ValueError(f"The 'metrics' parameter of {func} must name metrics in the results. Got "
                             f"{list(metrics)} instead; the results hold {sorted(pd.unique(df['metric'].astype(str)))}.")
    return df[keep]


def _reasons(part: pd.DataFrame) -> str:
    if "reason" not in part.columns:
        return ""
    found = sorted({str(r) for r, v in zip(part["reason"], part["value"])
                    if not np.isfinite(v) and isinstance(r, str) and r.strip()})
    return "; ".join(found)


def _wide(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """``value`` with one row per ``keys`` present and one column per ``(design, seed)``."""
    return df.set_index([*keys, "design", "seed"])["value"].unstack(["design", "seed"])


def _paired_rows(wide: pd.DataFrame, keys: list[str], design_a: str, design_b: str, level: float,
                 reasons: Mapping[tuple[Any, ...], str],
                 notes: Mapping[tuple[Any, ...], str] | None = None) -> list[dict[str, Any]]:
    """One :func:`paired_stats` row per index row of ``wide`` (columns ``(design, seed)``).

    ``reasons`` (the results' reasons for non-finite values) are added where a seed is not a
    pair; ``notes`` are added to every row they name.
    """
    seeds = sorted(set(wide.columns.get_level_values("seed")))
    cols_a = [(design_a, s) for s in seeds]
    cols_b = [(design_b, s) for s in seeds]
    wide = wide.reindex(columns=pd.MultiIndex.from_tuples(cols_a + cols_b, names=["design", "seed"]))
    va = wide[cols_a].to_numpy(dtype=np.float64)
    vb = wide[cols_b].to_numpy(dtype=np.float64)
    rows = []
    for i, key in enumerate(wide.index):
        key = key if isinstance(key, tuple) else (key,)
        r = paired_stats(va[i], vb[i], seeds=seeds, level=level, names=(design_a, design_b))
        why = reasons.get(key, "")
        extra = (notes or {}).get(key, "")
        if (why and r["n_pairs"] < len(seeds)) or extra:
            r["reason"] = "; ".join(filter(None, [r["reason"], why if r["n_pairs"] < len(seeds) else "", extra]))
        rows.append({**dict(zip(keys, key)), "design_a": design_a, "design_b": design_b, **r})
    return rows


def compare_designs(df: pd.DataFrame, design_a: str, design_b: str, *, dataset: str | None = None,
                    metrics: Sequence[str] | None = None, level: float = DEFAULT_LEVEL) -> pd.DataFrame:
    """Paired comparison of two designs at every metric x block x point.

    Parameters
    ----------
    df : DataFrame
        Tidy results (``analysis.study`` schema) holding checkpoints of both designs on one
        dataset (or pass ``dataset``). Each checkpoint is identified by ``(design, seed)``; seeds
        trained for only one design are dropped with a UserWarning that names them.
    design_a, design_b : str
        The designs; differences are ``a - b``.
    dataset : str, optional
        Keep only this dataset (required when ``df`` holds several).
    metrics : sequence of str, optional
        Metrics to compare (default: all, except within-run ``*_ci_low`` / ``*_ci_high`` bounds).
    level : float, default=0.95

    Returns
    -------
    DataFrame
        :data:`COMPARE_COLUMNS`, one row per (metric, block, point) present for either design,
        ordered by metric, block, point. ``reason`` gathers the results' own reasons for
        non-finite values (e.g. "not applicable: no activation after the projection").

    Raises
    ------
    ValueError
        A design not in ``df``, equal designs, a checkpoint without seed, two checkpoints of one
        design with the same seed, several datasets without ``dataset``.
    """
    level = _check_level(level, "compare_designs")
    df = _pair_checkpoints(_select(df, dataset, metrics, "compare_designs"), design_a, design_b,
                           "compare_designs")
    if df.empty:
        return pd.DataFrame(columns=list(COMPARE_COLUMNS))
    keys = ["dataset", "metric", "block", "point", "stage", "pre"]
    df = df.assign(value=df["value"].astype(float), block=df["block"].astype(int), pre=df["pre"].astype(bool))
    wide = _wide(df, keys)
    undefined = df[~np.isfinite(df["value"])]
    reasons = {k if isinstance(k, tuple) else (k,): _reasons(g) for k, g in undefined.groupby(keys, sort=False)}
    out = pd.DataFrame(_paired_rows(wide, keys, design_a, design_b, level, reasons), columns=list(COMPARE_COLUMNS))
    return out.sort_values(["metric", "block", "point"], kind="stable").reset_index(drop=True)


# ----------------------------------------------------------------------------------- bands


def depth_bands(blocks: Sequence[int] | np.ndarray, *, parts: int = 3) -> dict[str, tuple[int, ...]]:
    """Early / middle / late thirds of the blocks (consecutive, as equal as possible) and ``all``.

    Parameters
    ----------
    blocks : sequence of int
        Block indices present (duplicates ignored).
    parts : int, default=3

    Returns
    -------
    dict
        ``"<first>-<last>"`` -> block indices of each band, then ``"all"``; for the 17 blocks of
        MobileNetV2: ``0-5``, ``6-11``, ``12-16``, ``all``.

    Examples
    --------
    >>> list(depth_bands(range(17)))
    ['0-5', '6-11', '12-16', 'all']
    """
    ordered = sorted({int(b) for b in blocks})
    if isinstance(parts, bool) or not isinstance(parts, int) or parts < 1:
        raise ValueError(f"The 'parts' parameter of depth_bands must be an int >= 1. Got {parts!r} instead.")
    if not ordered:
        raise ValueError("The 'blocks' parameter of depth_bands must hold at least one block index. Got none.")
    out: dict[str, tuple[int, ...]] = {}
    for chunk in np.array_split(np.asarray(ordered), min(parts, len(ordered))):
        c = tuple(int(b) for b in chunk)
        out[f"{c[0]}-{c[-1]}" if len(c) > 1 else str(c[0])] = c
    out["all"] = tuple(ordered)
    return out


def band_values(df: pd.DataFrame, *, bands: Mapping[str, Sequence[int]] | None = None,
                stages: Sequence[str] | None = None, pre: bool | None = False) -> pd.DataFrame:
    """Per checkpoint, the mean of each metric over the blocks of each depth band.

    ``v_{c,band} = (1 / |B'|) sum_{b in B'} value_{c,b}``, where ``B'`` are the blocks of the
    band where checkpoint ``c`` has a finite value at the stage (one point per block and stage:
    the post-activation point when ``pre=False``). This is the one per-seed summary that the
    report's tables, the overview and the README findings share.

    Parameters
    ----------
    df : DataFrame
        Tidy results.
    bands : mapping, optional
        Band name -> block indices (default :func:`depth_bands` of the blocks in ``df``).
    stages : sequence of str, optional
        Keep only these stages (default: all).
    pre : bool or None, default=False
        Keep the ``.pre`` points (True), the post-activation points (False) or both (None).

    Returns
    -------
    DataFrame
        ``dataset, design, seed, checkpoint, metric, stage, pre, band, blocks, value, n_blocks,
        reason``; ``value`` is NaN with the results' reason when no block of the band is finite.
    """
    cols = ["dataset", "design", "seed", "checkpoint", "metric", "stage", "pre", "band", "blocks", "value",
            "n_blocks", "reason"]
    sel = df
    if stages is not None:
        sel = sel[sel["stage"].isin(list(stages))]
    if pre is not None:
        sel = sel[sel["pre"].astype(bool) == bool(pre)]
    if sel.empty:
        return pd.DataFrame(columns=cols)
    sel = sel.assign(value=sel["value"].astype(float), block=sel["block"].astype(int), pre=sel["pre"].astype(bool))
    if "reason" not in sel.columns:
        sel = sel.assign(reason="")
    bands = dict(bands) if bands is not None else depth_bands(sel["block"])
    keys = ["dataset", "design", "seed", "checkpoint", "metric", "stage", "pre"]
    frames = []
    for band, blocks in bands.items():
        part = sel[sel["block"].isin(list(blocks))]
        if part.empty:
            continue
        finite = part["value"].where(np.isfinite(part["value"]))
        g = part.assign(value=finite, ok=finite.notna()).groupby(keys, sort=True, dropna=False)
        agg = g.agg(value=("value", "mean"), n_blocks=("ok", "sum")).reset_index()
        why = g.apply(_reasons, include_groups=False).rename("reason").reset_index()
        agg = agg.merge(why, on=keys, how="left")
        agg["reason"] = agg["reason"].where(agg["n_blocks"] == 0, "")
        span = sorted(int(b) for b in blocks)
        frames.append(agg.assign(band=band, blocks=f"{span[0]}-{span[-1]}" if len(span) > 1 else str(span[0])))
    if not frames:
        return pd.DataFrame(columns=cols)
    out = pd.concat(frames, ignore_index=True)
    return out.astype({"n_blocks": int})[cols]


def compare_bands(df: pd.DataFrame, design_a: str, design_b: str, *, dataset: str | None = None,
                  metrics: Sequence[str] | None = None, stages: Sequence[str] | None = None,
                  pre: bool | None = False, bands: Mapping[str, Sequence[int]] | None = None,
                  level: float = DEFAULT_LEVEL) -> pd.DataFrame:
    """Paired comparison of depth-band means: per seed :func:`band_values`, then :func:`paired_stats`.

    Parameters
    ----------
    df, design_a, design_b, dataset, metrics, level
        As for :func:`compare_designs`.
    stages : sequence of str, optional
        Stages to summarise (default: all).
    pre : bool or None, default=False
        Post-activation points (False), ``.pre`` points (True) or both (None).
    bands : mapping, optional
        Band name -> block indices (default :func:`depth_bands`: thirds of the blocks + ``all``).

    Returns
    -------
    DataFrame
        :data:`BAND_COLUMNS`, ordered by metric, stage, pre and band (in ``bands`` order).
        ``reason`` also says when the two designs of a pair average different numbers of blocks.
    """
    level = _check_level(level, "compare_bands")
    df = _pair_checkpoints(_select(df, dataset, metrics, "compare_bands"), design_a, design_b, "compare_bands")
    if bands is None:
        bands = depth_bands(df["block"]) if not df.empty else {}
    vals = band_values(df, bands=bands, stages=stages, pre=pre)
    if vals.empty:
        return pd.DataFrame(columns=list(BAND_COLUMNS))
    keys = ["dataset", "metric", "stage", "pre", "band", "blocks"]
    wide = _wide(vals, keys)
    reasons: dict[tuple[Any, ...], str] = {}
    notes: dict[tuple[Any, ...], str] = {}
    for key, g in vals.groupby(keys, sort=False):
        found = sorted({r for r in g["reason"] if r})
        if found:
            reasons[key] = "; ".join(found)
        counts = g[g["n_blocks"] > 0].groupby("design")["n_blocks"].agg(["min", "max"])
        if len(counts) == 2 and counts["min"].min() != counts["max"].max():
            notes[key] = ("the band averages different numbers of blocks per checkpoint: "
                          + ", ".join(f"{d} {int(r['min'])}-{int(r['max'])}" for d, r in counts.iterrows()))
    out = pd.DataFrame(_paired_rows(wide, keys, design_a, design_b, level, reasons, notes),
                       columns=list(BAND_COLUMNS))
    order = {b: i for i, b in enumerate(bands)}
    out = out.assign(_k=out["band"].map(order)).sort_values(["metric", "stage", "pre", "_k"], kind="stable")
    return out.drop(columns="_k").reset_index(drop=True)


# ----------------------------------------------------------------------------------- loading


def load_design_metrics(dataset: str, designs: Sequence[str], *, compute: bool = True,
                        progress: bool = True) -> pd.DataFrame:
    """Tidy results of every shipped checkpoint of ``designs`` trained on ``dataset``.

    Precomputed studies in ``checkpoints/results/`` are read (:func:`analysis.study.load_shipped`);
    a missing one is computed with the shipped settings and cached in the user cache folder
    (a tqdm bar counts the checkpoints; ``compute=False`` raises instead).

    Raises
    ------
    ValueError
        A design with no shipped checkpoint on ``dataset`` (the message lists those that exist).
    """
    from tqdm.auto import tqdm

    from analysis.study import load_shipped, shipped_result_path
    from probes.catalogue import list_checkpoints

    cards = [c for c in list_checkpoints() if (c.get("dataset") or {}).get("name") == dataset]
    have = sorted({str(c.get("design")) for c in cards})
    for d in designs:
        if d not in have:
            raise ValueError(f"The 'designs' parameter of load_design_metrics must name designs with shipped "
                             f"checkpoints on {dataset!r}, from {have}. Got {d!r} instead.")
    chosen = sorted((c for c in cards if str(c.get("design")) in designs),
                    key=lambda c: (list(designs).index(str(c["design"])), int(c.get("seed") or 0), c["name"]))
    frames = []
    bar = tqdm(chosen, desc="studies", unit="ckpt", disable=not progress)
    for card in bar:
        stem = shipped_result_path(card["name"], dataset)
        if not stem.with_suffix(".parquet").exists():
            bar.set_postfix_str(f"computing {card['name']}")
        frames.append(load_shipped(card["name"], dataset, compute=compute, progress=False).metrics)
    bar.close()
    return pd.concat(frames, ignore_index=True)
