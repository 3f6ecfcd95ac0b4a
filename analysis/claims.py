"""The claims scoreboard: every claim of the background notes next to its measurement.

One row per (claim, measurement): the claim in one sentence, what is measured, the numbers
(linear, relu6, paired difference with its 95 % interval over seeds) and a verdict, all
computed from the results (tidy study metrics, checkpoint cards, model measurements), never
written by hand, so the board follows the results when they change.

Verdicts
--------
- ``supported`` / ``contradicted``: the paired interval over seeds (linear minus relu6,
  :func:`analysis.compare.paired_stats`) excludes 0 and its exact sign-flip p-value is at most
  1 - level, in the direction the claim predicts /
  the other direction; for a claim about one design (no pairing) the measured value passes /
  fails the stated threshold;
- ``no significant difference``: the interval covers 0 (or p is above 1 - level);
- ``not measurable here``: the toolkit has nothing that can test the claim (e.g. ImageNet,
  a dynamic bottleneck), or fewer than 2 paired seeds; the row says why.

Inputs
------
:func:`model_measurements` runs the measurements that need the networks themselves (BN
folding and fusion, activation memory, per-image rank, decoded-input edges) and caches them
per checkpoint sha256; :func:`scoreboard` combines them with the tidy metrics and the cards.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.compare import NO_DIFFERENCE, paired_stats

__all__ = [
    "CLAIMS",
    "SCOREBOARD_COLUMNS",
    "Claim",
    "ClaimsReport",
    "ModelMeasurements",
    "claims_report",
    "edges_markdown",
    "fusion_markdown",
    "memory_markdown",
    "model_measurements",
    "per_image_markdown",
    "scoreboard",
    "scoreboard_markdown",
]

#: Columns of :func:`scoreboard`.
SCOREBOARD_COLUMNS = ("claim_id", "claim", "measurement", "linear", "relu6", "difference", "n_seeds",
                      "verdict", "detail")

SUPPORTED, CONTRADICTED, NOT_MEASURABLE = "supported", "contradicted", "not measurable here"
#: Bump when a measurement of :func:`model_measurements` changes (invalidates the cache).
_MEASURE_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Claim:
    """One claim of the notes (``shared/background/000_*.txt``, section in ``where``)."""

    claim_id: str
    text: str
    where: str


#: The claims of the notes, in the order of the notes.
CLAIMS: tuple[Claim, ...] = (
    Claim("relu-low-dim", "A ReLU in the low-dimensional bottleneck destroys information; the linear "
          "bottleneck keeps it.", "sections 1, 3, 6"),
    Claim("relu-high-dim", "A ReLU in the high-dimensional expansion is safe: it keeps the information.",
          "section 3"),
    Claim("accuracy", "The linear bottleneck is more accurate than a ReLU bottleneck.", "section 5"),
    Claim("imagenet", "MobileNetV2 beats MobileNetV1 on ImageNet by 1.4 points (72.0 vs 70.6 %) with "
          "20 % fewer parameters.", "section 5"),
    Claim("edges", "The linear bottleneck keeps more detail (edges, textures) of the input.", "section 5"),
    Claim("topology", "A linear map keeps the manifold's topology; a ReLU in low dimensions tears it.",
          "section 6"),
    Claim("gradients", "The linear bottleneck lets gradients flow more stably in back-propagation.", "section 6"),
    Claim("int8", "The linear output is friendlier to int8 quantisation.", "section 9.1"),
    Claim("fusion", "Conv1x1 + BN + linear fuse into one kernel.", "section 9.2"),
    Claim("memory", "The expansion tensor can be allocated temporarily and freed right after use.",
          "section 9.3"),
    Claim("dynamic", "A dynamic linear bottleneck adapts its compression rate to the input.", "section 10"),
)
_CLAIM = {c.claim_id: c for c in CLAIMS}


# ------------------------------------------------------------------------------- measurements


@dataclasses.dataclass
class ModelMeasurements:
    """Measurements that need the networks, one table each (see :func:`model_measurements`).

    Attributes
    ----------
    fold : DataFrame
        checkpoint, design, seed, n_folded, max_abs_error, relative_error, n_images.
    fusion : DataFrame
        checkpoint, design, pattern, count, torch_fuses, fused_into.
    memory : DataFrame
        checkpoint, design, batch, peak_bytes, allocated_bytes (:func:`analysis.deployment.
        peak_activation_bytes`), largest_block_bytes (max over blocks of input + expand +
        depthwise + output) and all_block_tensors_bytes (sum over blocks of expand + depthwise +
        output: what inference would hold if nothing were freed).
    block_memory : DataFrame
        :func:`analysis.deployment.block_memory` of each checkpoint.
    per_image : DataFrame
        checkpoint, design, seed and the columns of :func:`analysis.per_image.rank_loss_summary`.
    edges : DataFrame
        checkpoint, design, seed, point, block, input_decode_r2, edge_energy_ratio, highpass_r2.
    """

    fold: pd.DataFrame
    fusion: pd.DataFrame
    memory: pd.DataFrame
    block_memory: pd.DataFrame
    per_image: pd.DataFrame
    edges: pd.DataFrame

    _NAMES = ("fold", "fusion", "memory", "block_memory", "per_image", "edges")

    @classmethod
    def concat(cls, parts: Sequence["ModelMeasurements"]) -> "ModelMeasurements":
        return cls(**{n: pd.concat([getattr(p, n) for p in parts], ignore_index=True) if parts
                      else pd.DataFrame() for n in cls._NAMES})


def _measure_one(card: Mapping[str, Any], *, edges: bool, batch: int) -> ModelMeasurements:
    import torch

    from analysis.deployment import block_memory, fold_batchnorm, fold_error, fusion_patterns, peak_activation_bytes
    from analysis.keeps import decoded_edge_scores
    from analysis.per_image import per_image_study, rank_loss_summary
    from analysis.study import load_inputs
    from probes.loading import load_checkpoint
    from probes.preprocess import prepare

    lm = load_checkpoint(card["name"])
    model, spec = lm.model, lm.input_spec
    dataset = card["dataset"]["name"]
    test = load_inputs(dataset, split="test")
    x = prepare(test.x, spec)
    tag = {"checkpoint": card["name"], "design": card.get("design"), "seed": card.get("seed"), "dataset": dataset}
    folded, pairs = fold_batchnorm(model, x[:2])
    with torch.no_grad():
        err = fold_error(model, folded, torch.split(x, 128))
    fold = pd.DataFrame([{**tag, "n_folded": len(pairs), **err}])
    fusion = fusion_patterns(model, x[:2]).assign(**tag)
    blocks = block_memory(model, x[:batch]).assign(**tag, batch=batch)
    peak = peak_activation_bytes(model, x[:batch])
    largest = int((blocks[["input_bytes", "expand_bytes", "depthwise_bytes", "output_bytes"]].sum(axis=1)).max())
    memory = pd.DataFrame([{**tag, "batch": batch, **peak, "largest_block_bytes": largest,
                            "all_block_tensors_bytes": int(blocks[["expand_bytes", "depthwise_bytes",
                                                                   "output_bytes"]].to_numpy().sum())}])
    per_image = rank_loss_summary(per_image_study(model, x, test.y)).assign(**tag)
    if edges:
        train = load_inputs(dataset, split="train")
        scores, _ = decoded_edge_scores(model, train, test, input_spec=spec)
        edge = scores.assign(**tag)
    else:
        edge = pd.DataFrame()
    return ModelMeasurements(fold, fusion, memory, blocks, per_image, edge)


def _cache_file(cache_dir: Path, card: Mapping[str, Any], edges: bool, batch: int) -> Path:
    return cache_dir / f"claims-v{_MEASURE_VERSION}-{card['name']}-{str(card.get('sha256', ''))[:16]}-" \
                       f"{'e' if edges else 'n'}{batch}.json"


def _save(m: ModelMeasurements, path: Path) -> None:
    from probes._io import atomic_write_text

    atomic_write_text(path, json.dumps({n: json.loads(getattr(m, n).to_json(orient="split", index=False))
                                        for n in ModelMeasurements._NAMES}))


def _load(path: Path) -> ModelMeasurements:
    raw = json.loads(path.read_text(encoding="utf-8"))
    return ModelMeasurements(**{n: pd.DataFrame(raw[n]["data"], columns=raw[n]["columns"])
                                for n in ModelMeasurements._NAMES})


def model_measurements(cards: Iterable[Mapping[str, Any]], *, edges: bool = True, batch: int = 1,
                       cache_dir: str | Path | None = None, compute: bool = True, progress: bool = False,
                       on_step: Callable[[int, int, str], None] | None = None) -> ModelMeasurements:
    """BN folding, fusion, memory, per-image rank and edge recovery of each zoo checkpoint.

    Each checkpoint (a zoo card) runs on its own dataset's test split (edges: decoder fitted
    on the train split). Results are cached as JSON in ``cache_dir`` (default: the user cache
    folder) per checkpoint name, weights sha256 and settings.

    Parameters
    ----------
    cards : iterable of dict
        Zoo cards (``probes.catalogue.list_checkpoints()``).
    edges : bool
        Also decode the input from every block output (the slowest part).
    batch : int
        Batch size of the memory measurements.
    compute : bool
        Measure checkpoints that have no cached result; False: return only the cached ones.
    on_step : callable, optional
        ``on_step(i, n, name)`` before each checkpoint (progress in the dashboard).
    """
    from tqdm.auto import tqdm

    from analysis.study import user_cache_dir

    cards = list(cards)
    folder = Path(cache_dir) if cache_dir is not None else user_cache_dir() / "claims"
    parts = []
    for i, card in enumerate(tqdm(cards, desc="claims", disable=not progress)):
        if on_step is not None:
            on_step(i, len(cards), card["name"])
        path = _cache_file(folder, card, edges, batch)
        if path.is_file():
            parts.append(_load(path))
            continue
        if not compute:
            continue
        m = _measure_one(card, edges=edges, batch=batch)
        _save(m, path)
        parts.append(m)
    return ModelMeasurements.concat(parts)


# -------------------------------------------------------------------------------- scoreboard


def _fmt(x: float, digits: int = 3) -> str:
    if x is None or not math.isfinite(float(x)):
        return "n/a"
    x = float(x)
    return f"{x:.{digits}g}" if abs(x) < 1e4 else f"{x:,.0f}"


def _per_seed(values: pd.DataFrame, value: str, a: str, b: str) -> tuple[np.ndarray, np.ndarray, list[Any]]:
    """Per-seed values of designs a and b (seeds that both have)."""
    wide = values.pivot_table(index="seed", columns="design", values=value, aggfunc="mean")
    if a not in wide or b not in wide:
        return np.array([]), np.array([]), []
    wide = wide[[a, b]].dropna()
    return wide[a].to_numpy(), wide[b].to_numpy(), list(wide.index)


def _paired_row(claim_id: str, measurement: str, per_seed: pd.DataFrame, value: str, direction: int,
                a: str, b: str, detail: str = "") -> dict[str, Any]:
    """Row from per-seed values; ``direction`` +1: the claim predicts a > b; -1: a < b."""
    va, vb, seeds = _per_seed(per_seed, value, a, b)
    r = paired_stats(va, vb, names=(a, b)) if len(seeds) else {"n_pairs": 0, "verdict": "n/a"}
    if r["verdict"] == "n/a":
        verdict = NOT_MEASURABLE
        detail = "; ".join(filter(None, [detail, f"{r['n_pairs']} paired seed(s): a paired interval needs 2"]))
        diff = "n/a"
    else:
        diff = f"{_fmt(r['mean_diff'])} [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]"
        if r["verdict"] == NO_DIFFERENCE:
            verdict = NO_DIFFERENCE
        else:
            a_higher = r["verdict"] == f"{a} higher"
            verdict = SUPPORTED if a_higher == (direction > 0) else CONTRADICTED
        detail = "; ".join(filter(None, [detail, f"p = {_fmt(r['p_value'], 2)}"]))
    return {"claim_id": claim_id, "claim": _CLAIM[claim_id].text, "measurement": measurement,
            "linear": _fmt(r.get("mean_a", float("nan"))), "relu6": _fmt(r.get("mean_b", float("nan"))),
            "difference": diff, "n_seeds": int(r["n_pairs"]), "verdict": verdict, "detail": detail}


def _plain_row(claim_id: str, measurement: str, linear: str, relu6: str, verdict: str, detail: str,
               n_seeds: int = 0, difference: str = "") -> dict[str, Any]:
    return {"claim_id": claim_id, "claim": _CLAIM[claim_id].text, "measurement": measurement, "linear": linear,
            "relu6": relu6, "difference": difference, "n_seeds": n_seeds, "verdict": verdict, "detail": detail}


def _metric_per_seed(metrics: pd.DataFrame, metric: str, stage: str, *, pre: bool = False,
                     reducer: str = "mean") -> pd.DataFrame:
    rows = metrics[(metrics["metric"] == metric) & (metrics["stage"] == stage) & (metrics["pre"] == pre)]
    rows = rows[np.isfinite(rows["value"].astype(float))]
    per_ck = rows.groupby(["checkpoint", "design", "seed"], as_index=False)["value"].agg(reducer)
    return per_ck


def scoreboard(metrics: pd.DataFrame, cards: Sequence[Mapping[str, Any]],
               measured: ModelMeasurements | None = None, *, dataset: str = "digits",
               a: str = "linear", b: str = "relu6") -> pd.DataFrame:
    """One row per (claim, measurement) with numbers and a verdict (module docstring).

    Parameters
    ----------
    metrics : DataFrame
        Tidy study results (``analysis.study`` schema) of checkpoints of designs ``a`` and ``b``.
    cards : sequence of dict
        Zoo cards (accuracy, gradient norms).
    measured : ModelMeasurements, optional
        From :func:`model_measurements`; without it the rows that need the networks say so.
    dataset : str
        The dataset whose checkpoints are compared (paired by seed).

    Returns
    -------
    DataFrame with columns :data:`SCOREBOARD_COLUMNS`
        ``linear``/``relu6``: mean over seeds; ``difference``: mean of linear minus relu6 over
        seeds with its 95 % t-interval.
    """
    from analysis.gradients import gradient_summary, gradient_table

    m = metrics[(metrics["dataset"].astype(str) == dataset) & metrics["design"].isin([a, b])]
    ds_cards = [c for c in cards if c.get("dataset", {}).get("name") == dataset and c.get("design") in (a, b)]
    rows: list[dict[str, Any]] = []
    band = "mean over blocks per checkpoint, paired over seeds"

    # relu-low-dim
    for metric, stage, what in (("rank_frac", "project", "numerical rank / C at the projection"),
                                ("effective_rank_frac", "project", "effective rank / C at the projection"),
                                ("twonn_id", "project", "TwoNN intrinsic dimension at the projection"),
                                ("input_decode_r2", "project", "R^2 of the network input decoded from the "
                                                               "projection (information family)")):
        per_seed = _metric_per_seed(m, metric, stage)
        if per_seed.empty:
            rows.append(_plain_row("relu-low-dim", what, "n/a", "n/a", NOT_MEASURABLE,
                                   f"no '{metric}' values in the results (run the study with its family)"))
            continue
        rows.append(_paired_row("relu-low-dim", what, per_seed, "value", +1, a, b, band))
    dead = _metric_per_seed(m, "dead_fraction", "project")
    relu_dead = dead[dead["design"] == b]["value"]
    if not relu_dead.empty:
        rows.append(_plain_row("relu-low-dim", "dead fraction of projection channels (relu6; undefined for "
                               "linear)", "n/a", _fmt(relu_dead.mean()),
                               SUPPORTED if relu_dead.mean() > 0 else CONTRADICTED,
                               f"{b}: max over checkpoints {_fmt(relu_dead.max())}; supported when channels die "
                               "(> 0) in the ReLU bottleneck", n_seeds=int(len(relu_dead))))

    # relu-high-dim
    inv = _metric_per_seed(m, "lemma2_invertible_fraction", "expand", reducer="min")
    if inv.empty:
        rows.append(_plain_row("relu-high-dim", "Lemma-2 invertible fraction after the expansion", "n/a", "n/a",
                               NOT_MEASURABLE, "no 'lemma2_invertible_fraction' values in the results"))
    else:
        lo = inv.groupby("design")["value"].min()
        ok = bool((inv["value"] >= 0.99).all())
        rows.append(_plain_row("relu-high-dim", "Lemma-2 invertible fraction of points after the expansion "
                               "(min over blocks and checkpoints)", _fmt(lo.get(a, np.nan)), _fmt(lo.get(b, np.nan)),
                               SUPPORTED if ok else CONTRADICTED,
                               "supported when >= 0.99 at every block of every checkpoint",
                               n_seeds=int(inv["checkpoint"].nunique())))

    # accuracy
    acc = pd.DataFrame([{"design": c["design"], "seed": c["seed"], "value": c.get("test_accuracy", np.nan)}
                        for c in ds_cards])
    if acc.empty:
        rows.append(_plain_row("accuracy", "test accuracy", "n/a", "n/a", NOT_MEASURABLE, "no cards"))
    else:
        n_test = next((c["dataset"].get("test_images") for c in ds_cards), None)
        rows.append(_paired_row("accuracy", f"test accuracy ({dataset}, {n_test} test images)", acc, "value", +1,
                                a, b, "checkpoint cards"))
    rows.append(_plain_row("imagenet", "ImageNet top-1 of MobileNetV2 vs V1", "n/a", "n/a", NOT_MEASURABLE,
                           "nothing is downloaded: no ImageNet and no pretrained weights in this toolkit"))

    # edges
    if measured is not None and not measured.edges.empty and "highpass_r2" in measured.edges:
        e = measured.edges[measured.edges["dataset"] == dataset]
        per_seed = e.groupby(["checkpoint", "design", "seed"], as_index=False)["highpass_r2"].mean()
        rows.append(_paired_row("edges", "high-pass R^2 of the input decoded from each block output (share "
                                "of edge detail recovered in place)", per_seed, "highpass_r2", +1, a, b, band))
        per_seed = e.groupby(["checkpoint", "design", "seed"], as_index=False)["edge_energy_ratio"].mean()
        rows.append(_paired_row("edges", "Sobel edge energy of the decoded input / of the original", per_seed,
                                "edge_energy_ratio", +1, a, b, band))
    else:
        rows.append(_plain_row("edges", "edge detail of the decoded input", "n/a", "n/a", NOT_MEASURABLE,
                               "model measurements with edges=True were not run"))

    # topology
    per_seed = _metric_per_seed(m, "wasserstein_to_input_h1", "project")
    if per_seed.empty:
        rows.append(_plain_row("topology", "H1 Wasserstein distance projection -> block input", "n/a", "n/a",
                               NOT_MEASURABLE, "no topology values in the results"))
    else:
        rows.append(_paired_row("topology", "H1 Wasserstein distance between the projection's and the block "
                                "input's persistence diagrams (lower = topology kept)", per_seed, "value", -1, a,
                                b, band))

    # gradients
    what = "across-batch coefficient of variation of the per-block gradient norm (lower = steadier)"
    grads = gradient_summary(gradient_table(ds_cards))
    if grads.empty:
        rows.append(_plain_row("gradients", what, "n/a", "n/a", NOT_MEASURABLE,
                               "the cards have no 'gradient_norms' (trained before the logging)"))
    else:
        per_seed = grads.groupby(["checkpoint", "design", "seed"], as_index=False)["cv"].mean()
        rows.append(_paired_row("gradients", what, per_seed, "cv", -1, a, b,
                                "mean over epochs and blocks per checkpoint"))

    # int8
    per_seed = _metric_per_seed(m, "int8_sqnr_db", "project")
    if per_seed.empty:
        rows.append(_plain_row("int8", "int8 SQNR (dB) at the projection", "n/a", "n/a", NOT_MEASURABLE,
                               "no 'int8_sqnr_db' values in the results"))
    else:
        rows.append(_paired_row("int8", "int8 fake-quantisation SQNR (dB, per-tensor affine) at the projection",
                                per_seed, "value", +1, a, b, band))

    # fusion, memory, dynamic
    if measured is not None and not measured.fold.empty:
        f = measured.fold[measured.fold["dataset"] == dataset]
        fu = measured.fusion[measured.fusion["dataset"] == dataset]
        worst = f.groupby("design")["relative_error"].max()
        lin = fu[fu["pattern"] == "Conv2d(1x1)+BN+linear"]
        relu = fu[fu["pattern"] == "Conv2d(1x1)+BN+ReLU6"]
        exact = bool((f["relative_error"] < 1e-5).all())
        fuses = bool(len(lin)) and bool(lin["torch_fuses"].all())
        rows.append(_plain_row("fusion", "BN folded into every conv: max |error| / max |output| over the test "
                               "set", _fmt(worst.get(a, np.nan)), _fmt(worst.get(b, np.nan)),
                               SUPPORTED if exact else CONTRADICTED,
                               "exact for both designs when < 1e-5 (float32 rounding)",
                               n_seeds=int(f["checkpoint"].nunique())))
        rows.append(_plain_row("fusion", "torch.ao eager fuser on the projection: conv+BN+linear / "
                               "conv+BN+ReLU6 become one module",
                               "yes" if fuses else "no",
                               "n/a" if relu.empty else ("yes" if relu["torch_fuses"].all() else
                                                         "no (ReLU6 stays a separate op)"),
                               SUPPORTED if fuses else CONTRADICTED,
                               "PyTorch's eager fuser knows conv+BN and conv+BN+ReLU, not ReLU6; any "
                               "kernel can still fuse an elementwise ReLU6 epilogue"))
        mem = measured.memory[measured.memory["dataset"] == dataset]
        ratio = (mem["peak_bytes"] / mem["all_block_tensors_bytes"]).groupby(mem["design"]).mean()
        freed = bool((mem["peak_bytes"] < mem["all_block_tensors_bytes"]).all())
        rows.append(_plain_row("memory", f"peak live activation memory of one inference (torch.profiler "
                               f"allocator records, batch {int(mem['batch'].iloc[0])}) / sum of all block "
                               "tensors", _fmt(ratio.get(a, np.nan)), _fmt(ratio.get(b, np.nan)),
                               SUPPORTED if freed else CONTRADICTED,
                               "supported when the peak is below the sum (the expansion tensors are freed "
                               f"and their memory reused); peak {_fmt(mem['peak_bytes'].mean() / 1024)} KiB vs "
                               f"largest block {_fmt(mem['largest_block_bytes'].mean() / 1024)} KiB",
                               n_seeds=int(mem["checkpoint"].nunique())))
        pi = measured.per_image[measured.per_image["dataset"] == dataset]
        per_seed = pi.groupby(["checkpoint", "design", "seed"], as_index=False).agg(
            iqr=("erank_iqr_frac", "mean"), rho=("spearman_loss", "mean"))
        rows.append(_plain_row("dynamic", "spread of the per-image effective rank of the projection (IQR / "
                               "rank cap) and its Spearman correlation with the per-image loss",
                               "IQR " + _fmt(per_seed.loc[per_seed["design"] == a, "iqr"].mean()) + ", rho "
                               + _fmt(per_seed.loc[per_seed["design"] == a, "rho"].mean()),
                               "IQR " + _fmt(per_seed.loc[per_seed["design"] == b, "iqr"].mean()) + ", rho "
                               + _fmt(per_seed.loc[per_seed["design"] == b, "rho"].mean()),
                               NOT_MEASURABLE, "the zoo has no dynamic bottleneck; this is how much a fixed "
                               "bottleneck's occupied dimension varies between images (mean over blocks)",
                               n_seeds=int(per_seed["checkpoint"].nunique())))
    else:
        for cid in ("fusion", "memory", "dynamic"):
            rows.append(_plain_row(cid, "needs the networks", "n/a", "n/a", NOT_MEASURABLE,
                                   "model measurements were not run"))
    order = {c.claim_id: i for i, c in enumerate(CLAIMS)}
    out = pd.DataFrame(rows, columns=list(SCOREBOARD_COLUMNS))
    return out.sort_values("claim_id", key=lambda s: s.map(order), kind="stable", ignore_index=True)


def scoreboard_markdown(board: pd.DataFrame) -> str:
    """The scoreboard as a markdown table (claim text only on its first row)."""
    lines = ["| claim | measurement | linear | relu6 | linear - relu6 [95 % CI] | seeds | verdict |",
             "|---|---|---|---|---|---|---|"]
    last = None
    for r in board.itertuples():
        claim = "" if r.claim == last else r.claim
        last = r.claim
        cell = lambda s: str(s).replace("|", "\\|")  # noqa: E731
        lines.append(f"| {cell(claim)} | {cell(r.measurement)} | {cell(r.linear)} | {cell(r.relu6)} | "
                     f"{cell(r.difference) or '-'} | {r.n_seeds or '-'} | **{r.verdict}** |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------ report


@dataclasses.dataclass
class ClaimsReport:
    """What the batch report shows of the claims: boards, tables and figures per dataset.

    Attributes
    ----------
    boards : dict of dataset -> DataFrame
        :func:`scoreboard` per dataset that has checkpoints of both designs.
    tables : list of (name, caption, markdown)
    charts : list of (file stem, caption, Altair chart)
    measured : ModelMeasurements
    """

    boards: dict[str, pd.DataFrame]
    tables: list[tuple[str, str, str]]
    charts: list[tuple[str, str, Any]]
    measured: ModelMeasurements


def _kib(x: float) -> str:
    return f"{x / 1024:.1f}"


def memory_markdown(measured: ModelMeasurements, checkpoint: str) -> str:
    """Per-block tensor sizes (KiB) of one checkpoint, then the measured peak."""
    bm = measured.block_memory[measured.block_memory["checkpoint"] == checkpoint]
    mem = measured.memory[measured.memory["checkpoint"] == checkpoint].iloc[0]
    lines = ["| block | input KiB | expansion KiB | depthwise KiB | output KiB | (expansion + depthwise) / (input + output) |",
             "|---|---|---|---|---|---|"]
    for r in bm.itertuples():
        lines.append(f"| {r.block} | {_kib(r.input_bytes)} | {_kib(r.expand_bytes)} | {_kib(r.depthwise_bytes)} | "
                     f"{_kib(r.output_bytes)} | {r.hidden_over_io:.2f} |")
    lines.append(f"| **whole network** | peak live {_kib(mem['peak_bytes'])} | all block tensors "
                 f"{_kib(mem['all_block_tensors_bytes'])} | allocated in total {_kib(mem['allocated_bytes'])} | "
                 f"largest block {_kib(mem['largest_block_bytes'])} | |")
    return "\n".join(lines) + "\n"


def per_image_markdown(measured: ModelMeasurements, dataset: str, a: str = "linear", b: str = "relu6") -> str:
    """Per block: median per-image effective rank / rank cap, IQR / cap, Spearman with the loss."""
    pi = measured.per_image[measured.per_image["dataset"] == dataset]
    if pi.empty:
        return ""
    pi = pi.assign(median_frac=pi["erank_median"] / pi["rank_cap"])
    g = pi.groupby(["block", "design"]).agg(cap=("rank_cap", "first"), med=("median_frac", "mean"),
                                            iqr=("erank_iqr_frac", "mean"), rho=("spearman_loss", "mean"),
                                            seeds=("checkpoint", "nunique"))
    lines = [f"| block | rank cap | median erank / cap ({a}) | ({b}) | IQR / cap ({a}) | ({b}) | "
             f"Spearman(erank, loss) ({a}) | ({b}) |", "|---|---|---|---|---|---|---|---|"]
    for blk in sorted(pi["block"].unique()):
        def v(design: str, col: str) -> str:
            return _fmt(g.loc[(blk, design), col]) if (blk, design) in g.index else "n/a"
        cap = int(g.loc[blk]["cap"].iloc[0])
        lines.append(f"| {blk} | {cap} | {v(a, 'med')} | {v(b, 'med')} | {v(a, 'iqr')} | {v(b, 'iqr')} | "
                     f"{v(a, 'rho')} | {v(b, 'rho')} |")
    return "\n".join(lines) + "\n"


def edges_markdown(measured: ModelMeasurements, dataset: str, a: str = "linear", b: str = "relu6") -> str:
    """Per block: high-pass R^2 of the decoded input, paired linear - relu6 over seeds."""
    e = measured.edges
    if e.empty or "highpass_r2" not in e:
        return ""
    e = e[e["dataset"] == dataset]
    lines = [f"| block | high-pass R^2 ({a}) | ({b}) | {a} - {b} [95 % CI] | verdict | input R^2 ({a}) | ({b}) |",
             "|---|---|---|---|---|---|---|"]
    for blk, g in e.groupby("block"):
        va, vb, seeds = _per_seed(g, "highpass_r2", a, b)
        ra, rb, _ = _per_seed(g, "input_decode_r2", a, b)
        if not seeds:
            continue
        r = paired_stats(va, vb, names=(a, b))
        ci = f"{_fmt(r['mean_diff'])} [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]"
        lines.append(f"| {blk} | {_fmt(va.mean())} | {_fmt(vb.mean())} | {ci} | {r['verdict']} | "
                     f"{_fmt(ra.mean())} | {_fmt(rb.mean())} |")
    return "\n".join(lines) + "\n"


def fusion_markdown(measured: ModelMeasurements) -> str:
    """Patterns found in each design and whether torch's eager fuser fuses them."""
    fu = measured.fusion
    if fu.empty:
        return ""
    g = fu.groupby(["design", "pattern"], as_index=False).agg(count=("count", "first"),
                                                             torch_fuses=("torch_fuses", "all"),
                                                             fused_into=("fused_into", "first"))
    lines = ["| design | pattern | count per network | torch.ao fuses | fused into |", "|---|---|---|---|---|"]
    for r in g.itertuples():
        lines.append(f"| {r.design} | {r.pattern} | {r.count} | {'yes' if r.torch_fuses else 'no'} | {r.fused_into} |")
    f = measured.fold.groupby("design").agg(err=("max_abs_error", "max"), rel=("relative_error", "max"),
                                            n=("n_images", "first"), k=("n_folded", "first"))
    lines += ["", "| design | BNs folded | max abs error (all test images) | relative to max abs output |",
              "|---|---|---|---|"]
    for d, r in f.iterrows():
        lines.append(f"| {d} | {int(r['k'])} | {r['err']:.2e} | {r['rel']:.2e} |")
    return "\n".join(lines) + "\n"


def claims_report(metrics: pd.DataFrame, cards: Sequence[Mapping[str, Any]], *, cache_dir: str | Path | None = None,
                  edges: bool = True, progress: bool = False, a: str = "linear", b: str = "relu6") -> ClaimsReport:
    """Scoreboards, tables and figures of the claims for the zoo checkpoints in ``cards``.

    Only checkpoints of designs ``a`` and ``b`` enter; a dataset enters when it has both.
    """
    from analysis.gradients import gradient_figure, gradient_table

    cards = [c for c in cards if c.get("design") in (a, b)]
    datasets = sorted({c["dataset"]["name"] for c in cards if c.get("design") == a}
                      & {c["dataset"]["name"] for c in cards if c.get("design") == b})
    chosen = [c for c in cards if c["dataset"]["name"] in datasets]
    measured = model_measurements(chosen, edges=edges, cache_dir=cache_dir, progress=progress)
    boards = {ds: scoreboard(metrics, chosen, measured, dataset=ds, a=a, b=b) for ds in datasets}
    tables: list[tuple[str, str, str]] = []
    charts: list[tuple[str, str, Any]] = []
    for ds in datasets:
        n = {d: sum(1 for c in chosen if c["dataset"]["name"] == ds and c["design"] == d) for d in (a, b)}
        cap = f"{ds}: {n[a]} {a} and {n[b]} {b} checkpoints"
        edge_md = edges_markdown(measured, ds, a, b)
        if edge_md:
            tables.append((f"claims-edges-{ds}", f"{cap}. Input decoded from each block output (information "
                           "family's ridge decoder on pooled features, fitted on train, scored on test); high-pass "
                           "R^2 = share of the input's detail band (x - Gaussian(x, 1 px)) recovered in place.",
                           edge_md))
        tables.append((f"claims-per-image-{ds}", f"{cap}. Per-image effective rank at each projection "
                       "(covariance over one image's positions; cap = min(C, positions - 1)), mean over seeds.",
                       per_image_markdown(measured, ds, a, b)))
        grads = gradient_table([c for c in chosen if c["dataset"]["name"] == ds])
        if not grads.empty:
            charts.append((f"claims-gradients-{ds}", f"{cap}. Gradient L2 norm of each block's parameters per "
                           "epoch (mean over the epoch's steps; checkpoint cards).", gradient_figure(grads)))
    if not measured.memory.empty:
        first = measured.memory.sort_values("checkpoint").iloc[0]
        tables.append(("claims-memory", f"Tensor sizes per block of {first['checkpoint']} at batch "
                       f"{int(first['batch'])} (float32; the same architecture for both designs), and the peak of "
                       "live activation memory of one inference from torch.profiler's allocator records.",
                       memory_markdown(measured, str(first["checkpoint"]))))
    fusion_md = fusion_markdown(measured)
    if fusion_md:
        tables.append(("claims-fusion", "Conv -> BN -> activation patterns and PyTorch's eager fuser "
                       "(torch.ao.quantization.fuse_modules); BN folding error over the whole test set.", fusion_md))
    return ClaimsReport(boards, tables, charts, measured)
