"""Orchestration: :func:`run_report` validates, runs the jobs, assembles and writes the folder."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.report.charts import _message_of, _save_figure, report_figures
from analysis.report.config import ReportConfig, load_config
from analysis.report.document import (
    _build_doc,
    _claims_doc,
    comparison_to_latex,
    comparison_to_markdown,
    table_to_latex,
    table_to_markdown,
)
from analysis.report.jobs import (
    Job,
    _connect,
    _execute,
    _exit_on_sigterm,
    _job_done,
    _locked,
    _remove_stale_temporaries,
    _safe,
    plan_jobs,
)
from analysis.report.tables import accuracy_table, comparison_table, metrics_table
from analysis.report.vocabulary import _cards_frame
from probes._io import atomic_write_json, atomic_write_text, check_output, sha256_file

__all__ = ["run_report"]


_VERSIONED_PACKAGES: tuple[str, ...] = (
    "bottleneck-probe", "torch", "torchvision", "timm", "numpy", "scipy", "pandas", "pyarrow",
    "scikit-learn", "ripser", "persim", "umap-learn", "altair", "vl-convert-python", "dask",
    "distributed", "safetensors", "tqdm",
)


def _git_commit() -> dict[str, Any]:
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return {"commit": None, "dirty": None}
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                capture_output=True, text=True, timeout=10)
        return {"commit": head.stdout.strip(),
                "dirty": bool(status.stdout.strip()) if status.returncode == 0 else None}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in _VERSIONED_PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def run_report(config_path: str | Path, out_dir: str | Path, *, scheduler: str | None = None,
               workers: int | None = None, progress: bool = True) -> int:
    """Run the study of a config and write the report folder; return the exit status.

    Parameters
    ----------
    config_path : str or Path
        TOML config (see :func:`load_config` and ``analysis/configs/paper.toml``).
    out_dir : str or Path
        Output folder (created; finished jobs found in ``out_dir/jobs`` are reused).
    scheduler : str, optional
        Address of a Dask distributed scheduler (``tcp://host:8786``); default: local processes.
    workers : int, optional
        Local worker processes (default: the CPU count; 1 = run in this process).
    progress : bool, default=True
        Show a progress bar over jobs (stderr).

    Returns
    -------
    int
        0 when every job and every report part succeeded, 1 otherwise (the failures are listed
        on stderr and in ``report.md``).

    Raises
    ------
    ValueError
        Bad config or arguments, before any work starts.
    """
    t_start = time.perf_counter()
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"The 'workers' parameter of run_report must be an int >= 1. Got {workers!r} instead.")
    if scheduler is not None and not (isinstance(scheduler, str) and scheduler.strip()):
        raise ValueError(f"The 'scheduler' parameter of run_report must be a Dask scheduler address "
                         f"such as 'tcp://127.0.0.1:8786'. Got {scheduler!r} instead.")
    config = load_config(config_path)
    jobs, plan_notes = plan_jobs(config)
    if not jobs:
        raise ValueError(f"Config {config.source.name}: no (checkpoint, dataset) pair to run: "
                         + "; ".join(plan_notes))
    out = check_output(out_dir, kind="folder")
    with _exit_on_sigterm(), _locked(out):
        client = _connect(scheduler) if scheduler is not None else None
        try:
            return _report(config, jobs, plan_notes, out, client=client, scheduler=scheduler,
                           workers=workers, progress=progress, t_start=t_start)
        finally:
            if client is not None:
                client.close()


def _report(config: ReportConfig, jobs: list[Job], plan_notes: list[str], out: Path, *, client: Any,
            scheduler: str | None, workers: int | None, progress: bool, t_start: float) -> int:
    from tqdm.auto import tqdm

    from analysis.study import SCHEMA_COLUMNS, StudyResult, write_table

    jobs_dir = out / "jobs"
    jobs_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(out)

    # ---------------------------------------------------------------- jobs
    cached = [j for j in jobs if _job_done(jobs_dir / j.job_id)]
    pending = [j for j in jobs if j not in cached]
    status: dict[str, dict[str, Any]] = {
        j.job_id: {"job": j.job_id, "checkpoint": j.checkpoint.name, "dataset": j.dataset,
                   "status": "cached", "seconds": None} for j in cached}
    t_jobs = time.perf_counter()
    bar = tqdm(total=len(jobs), initial=len(cached), desc="jobs", unit="job", disable=not progress,
               file=sys.stderr)
    # closed in finally: the workers stop as soon as an exception (Ctrl-C, SIGTERM) leaves the
    # loop, not when the traceback holding the generator is freed
    outcomes = _execute(pending, client=client, workers=workers)
    try:
        for job, outcome in outcomes:
            entry = {"job": job.job_id, "checkpoint": job.checkpoint.name, "dataset": job.dataset,
                     "status": outcome["status"], "seconds": round(float(outcome.get("seconds", 0.0)), 2)}
            if outcome["status"] == "ok":
                StudyResult(metrics=outcome["metrics"], details=outcome["details"],
                            meta=outcome["meta"]).save(jobs_dir / job.job_id)
            else:
                entry["error"] = outcome["error"]
                bar.write(f"job {job.label()} FAILED: {outcome['error']}", file=sys.stderr)
            status[job.job_id] = entry
            bar.update(1)
    finally:
        outcomes.close()
        bar.close()
    t_jobs = time.perf_counter() - t_jobs

    # ---------------------------------------------------------------- assemble
    frames, details, metas = [], {}, {}
    for job in jobs:
        if status[job.job_id]["status"] == "failed":
            continue
        res = StudyResult.load(jobs_dir / job.job_id)
        frames.append(res.metrics)
        details[job.job_id] = res.details
        metas[job.job_id] = res.meta
        if status[job.job_id]["seconds"] is None:
            status[job.job_id]["seconds"] = res.meta.get("seconds")
    metrics = (pd.concat(frames, ignore_index=True) if frames
               else pd.DataFrame(columns=list(SCHEMA_COLUMNS)))
    write_table(metrics, out / "metrics.parquet")
    write_table(metrics, out / "metrics.csv")
    failed = [s for s in status.values() if s["status"] == "failed"]
    part_failures: list[str] = []

    # ---------------------------------------------------------------- spiral
    t_spiral = time.perf_counter()
    spiral_chart = None
    if config.spiral is not None:
        try:
            from analysis.figures import spiral_figure
            from analysis.spiral import run_spiral

            table, recon = run_spiral(config.spiral["dims"], activation=config.spiral["activation"],
                                      seeds=config.spiral["seeds"])
            write_table(table, out / "spiral.csv")
            spiral_chart = spiral_figure(recon)
        except Exception as exc:  # noqa: BLE001 - one part fails, the report goes on
            part_failures.append(f"spiral: {type(exc).__name__}: {exc}")
    t_spiral = time.perf_counter() - t_spiral

    # ---------------------------------------------------------------- surgery
    surgery_charts = []
    if config.surgery is not None:
        from analysis.surgery import run_surgery, surgery_figure

        frames_s = []
        for name in config.surgery["checkpoints"]:
            try:
                table = run_surgery(name, blocks=config.surgery["blocks"], seed=config.study.seed, progress=False)
                frames_s.append(table)
                surgery_charts.append((f"surgery-{_safe(name)}", f"{name}: bottleneck activation changed at "
                                       "inference, one block at a time and in all blocks; change of test accuracy "
                                       "and of the input image's decodability (ridge R\u00b2) at the changed "
                                       "block's projection, with 95 % bootstrap intervals over test images.",
                                       surgery_figure(table)))
            except Exception as exc:  # noqa: BLE001 - one part fails, the report goes on
                part_failures.append(f"surgery {name}: {type(exc).__name__}: {exc}")
        if frames_s:
            write_table(pd.concat(frames_s, ignore_index=True), out / "surgery.csv")

    # ---------------------------------------------------------------- figures
    t_fig = time.perf_counter()
    cards = _cards_frame(config)
    tagged = (pd.concat([f.assign(_job=jid) for jid, f in zip(details, frames)], ignore_index=True)
              if frames else metrics)
    try:
        charts, fig_notes = report_figures(tagged, details, cards, config)
    except Exception as exc:  # noqa: BLE001
        charts, fig_notes = [], []
        part_failures.append(f"figures: {type(exc).__name__}: {exc}")
    if spiral_chart is not None:
        charts.append(("spiral", "A 2-D spiral embedded in n dimensions by a random matrix T, passed "
                       "through ReLU and mapped back (paper Fig. 1).", spiral_chart))
    charts.extend(surgery_charts)
    fig_dir = out / "figures"
    written: dict[str, tuple[dict[str, Path], str]] = {}
    for stem, caption, chart in charts:
        message = _message_of(chart)
        if message is not None:
            fig_notes.append(f"figure {stem} not drawn: {message}")
            continue
        try:
            files = _save_figure(chart, fig_dir / stem, config.formats)
            written[stem] = ({p.suffix[1:]: p for p in files}, caption)
        except Exception as exc:  # noqa: BLE001
            part_failures.append(f"figure {stem}: {type(exc).__name__}: {exc}")
    t_fig = time.perf_counter() - t_fig

    # ---------------------------------------------------------------- tables
    tab_dir = out / "tables"
    tables: list[tuple[str, str, str]] = []
    for ds in sorted(pd.unique(metrics["dataset"].astype(str))) if not metrics.empty else []:
        summary = metrics_table(metrics[metrics["dataset"].astype(str) == ds], metrics=config.table_metrics,
                                stages=config.table_stages, designs=config.table_designs)
        n_seeds = sorted(set(summary["n"].astype(int))) if not summary.empty else []
        caption = (f"{ds}: per checkpoint the mean over blocks, then mean +- sample std over seeds "
                   f"(n = {', '.join(map(str, n_seeds)) or '-'}). Bold: best value per row.")
        name = f"metrics-{_safe(ds)}"
        atomic_write_text(tab_dir / f"{name}.tex", table_to_latex(summary, caption=caption))
        tables.append((name, caption, table_to_markdown(summary)))
    try:
        comparisons, cmp_notes = _comparison_tables(metrics, cards, config, out)
        tables.extend(comparisons)
        fig_notes.extend(cmp_notes)
    except Exception as exc:  # noqa: BLE001 - one part fails, the report goes on
        part_failures.append(f"paired comparison: {type(exc).__name__}: {exc}")
    if not cards.empty:
        acc = accuracy_table(cards)
        caption = "Test accuracy (%) per dataset and design, mean +- sample std over seeds (checkpoint cards)."
        atomic_write_text(tab_dir / "accuracy.tex", table_to_latex(acc, row_title="Dataset", caption=caption))
        tables.insert(0, ("accuracy", caption, table_to_markdown(acc, row_title="Dataset")))

    # ---------------------------------------------------------------- claims of the notes
    claims_part = _claims_part(config, metrics, out, progress, written, part_failures)

    # ---------------------------------------------------------------- provenance
    computed = [s for s in status.values() if s["status"] == "ok"]
    seeds = sorted({int(c.card["seed"]) for c in config.checkpoints
                    if c.card and isinstance(c.card.get("seed"), int)})
    provenance = {
        "config_file": str(config.source),
        "config_sha256": sha256_file(config.source),
        "config": config.raw,
        "study": config.study.to_dict(),
        "versions": _versions(),
        "git": _git_commit(),
        "command": {"scheduler": scheduler, "workers": workers},
        "checkpoints": [{"name": c.name, "source": c.spec, "arch": c.arch or "zoo", "sha256": c.sha256,
                         "design": (c.card or {}).get("design"), "seed": (c.card or {}).get("seed")}
                        for c in config.checkpoints],
        "seeds": {"study": config.study.seed, "checkpoints": seeds,
                  "spiral": list(config.spiral["seeds"]) if config.spiral else []},
        "jobs": {"total": len(jobs), "computed": len(computed), "cached": len(cached),
                 "failed": len(failed),
                 "list": [status[j.job_id] for j in jobs]},
        "timings": {"jobs_s": round(t_jobs, 2), "spiral_s": round(t_spiral, 2), "figures_s": round(t_fig, 2),
                    "total_s": round(time.perf_counter() - t_start, 2)},
        "failures": [f"{s['checkpoint']} on {s['dataset']}: {s['error']}" for s in failed] + part_failures,
        "notes": list(config.notes) + plan_notes + fig_notes,
    }
    atomic_write_json(out / "provenance.json", provenance)

    # ---------------------------------------------------------------- report.md / report.html
    doc = _build_doc(out, config, jobs, status, failed, part_failures, written, tables, provenance, metrics)
    if claims_part is not None:
        _claims_doc(doc, claims_part, written)
    atomic_write_text(out / "report.md", doc.markdown())
    atomic_write_text(out / "report.html", doc.html(config.title))

    total = time.perf_counter() - t_start
    print(f"bnprobe report: {len(jobs)} jobs ({len(computed)} computed, {len(cached)} cached, "
          f"{len(failed)} failed), {len(written)} figures, {len(tables)} tables in {total:.0f} s "
          f"-> {out / 'report.html'}", file=sys.stderr)
    for s in failed:
        print(f"  FAILED {s['checkpoint']} on {s['dataset']}: {s['error']}", file=sys.stderr)
    for f in part_failures:
        print(f"  FAILED {f}", file=sys.stderr)
    return 1 if failed or part_failures else 0


def _claims_part(config: ReportConfig, metrics: pd.DataFrame, out: Path, progress: bool,
                 written: dict[str, tuple[dict[str, Path], str]], part_failures: list[str]) -> Any:
    """Scoreboard, tables and figures of the notes' claims (analysis.claims); None if not run."""
    cards = [c.card for c in config.checkpoints if c.card]
    if config.claims is None or not cards:
        return None
    try:
        from analysis.claims import claims_report, scoreboard_markdown

        part = claims_report(metrics, cards, cache_dir=out / "claims", edges=config.claims["edges"],
                             progress=progress)
        for ds, board in part.boards.items():
            atomic_write_text(out / "tables" / f"claims-{_safe(ds)}.md", scoreboard_markdown(board))
            atomic_write_text(out / "tables" / f"claims-{_safe(ds)}.csv", board.to_csv(index=False))
        for stem, caption, chart in part.charts:
            files = _save_figure(chart, out / "figures" / stem, config.formats)
            written[stem] = ({p.suffix[1:]: p for p in files}, caption)
        return part
    except Exception as exc:  # noqa: BLE001 - one part fails, the report goes on
        part_failures.append(f"claims: {type(exc).__name__}: {exc}")
        return None


def _comparison_tables(metrics: pd.DataFrame, cards: pd.DataFrame, config: ReportConfig,
                       out: Path) -> tuple[list[tuple[str, str, str]], list[str]]:
    """Per dataset: the paired comparison table (LaTeX file, Markdown for the report) and the
    per-block comparison rows (``comparison-<dataset>.csv``); notes on datasets skipped."""
    import warnings

    from analysis.compare import COMPARE_COLUMNS, compare_designs
    from analysis.study import write_table

    a, b = config.compare_designs
    tables: list[tuple[str, str, str]] = []
    notes: list[str] = []
    for ds in sorted(pd.unique(metrics["dataset"].astype(str))) if not metrics.empty else []:
        part = metrics[metrics["dataset"].astype(str) == ds]
        missing = [d for d in (a, b) if d not in set(part["design"].astype(str))]
        if missing:
            notes.append(f"paired comparison on {ds}: no checkpoint of {', '.join(missing)} (compare.designs)")
            continue
        ds_cards = cards[cards["dataset"].astype(str) == ds] if not cards.empty else cards
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            table = comparison_table(part, a, b, metrics=config.table_metrics, stages=config.table_stages,
                                     cards=ds_cards, level=config.compare_level)
            wanted = sorted((set(config.table_metrics) | set(config.depth_metrics)) & set(part["metric"].astype(str)))
            per_block = (compare_designs(part, a, b, level=config.compare_level, metrics=wanted) if wanted
                         else pd.DataFrame(columns=list(COMPARE_COLUMNS)))
        notes.extend(dict.fromkeys(f"{ds}: {w.message}".replace("compare_bands: ", "").replace(
            "compare_designs: ", "") for w in caught))
        n = sorted(set(table["n_pairs"].astype(int)) - {0}) if not table.empty else []
        caption = (f"{ds}: {a} vs {b} paired over seeds (n = {', '.join(map(str, n)) or '-'} pairs); per seed "
                   f"the mean over blocks, {100 * config.compare_level:g} % Student-t interval of the mean paired "
                   "difference, exact sign-flip p-value.")
        name = f"comparison-{_safe(ds)}"
        atomic_write_text(out / "tables" / f"{name}.tex",
                          comparison_to_latex(table, caption=caption, level=config.compare_level))
        tables.append((name, caption, comparison_to_markdown(table, level=config.compare_level)))
        write_table(per_block, out / f"{name}.csv")
    return tables, notes
