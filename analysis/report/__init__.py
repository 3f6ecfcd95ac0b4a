"""Batch analysis reports for papers: ``bnprobe report CONFIG.toml --out DIR``.

One TOML config describes a whole study (checkpoints, datasets, capture points, metric families,
sample sizes, seeds, topology and decoder settings, figures and tables; see
``analysis/configs/paper.toml`` for a documented example). :func:`run_report` validates it
completely *before* any work starts, runs one job per (checkpoint, dataset) through
:func:`analysis.study.run_study` on a pluggable executor, and writes::

    OUT/
      metrics.parquet  metrics.csv      tidy results (docs/design.md schema), deterministic row order
      spiral.csv                        the paper's Figure 1 experiment (analysis.spiral)
      surgery.csv                       bottleneck activation removed / inserted at inference (analysis.surgery)
      figures/*.svg|png|pdf             analysis.figures builders (vl-convert, no browser)
      tables/*.tex                      booktabs tables, mean +- std over seeds, best in bold;
                                        comparison-*.tex: paired a - b over seeds, 95 % CI, p, verdict
      comparison-*.csv                  analysis.compare.compare_designs rows (per block and point)
      report.md  report.html            the report; the HTML embeds every figure (offline)
      provenance.json                   config, versions, git commit, sha256, seeds, timings
      jobs/<job-id>.parquet|npz         one finished job each (the resume cache)

Executors
---------
Local processes by default (``concurrent.futures.ProcessPoolExecutor`` with the ``spawn``
context, one torch thread per job), in this process when ``workers == 1``, and a Dask
distributed cluster when ``scheduler`` is given (``dask.distributed.Client(address)``). Workers
only compute and *return* results; this process alone writes files, so a Dask cluster needs no
shared file system (only the same Python environment and access to the checkpoints and
datasets). Every job sets torch to one thread while it runs, so the numbers do not depend on
the executor: a serial, a process-pool and a Dask run give identical metrics files.

Resume and safety
-----------------
A finished job is written to ``OUT/jobs/<job-id>.{parquet,npz}`` (atomic renames through
:func:`probes._io.atomic_path`); the job id hashes the checkpoint's sha256, its loading options
and the study settings, so a changed config never reuses stale results. A run that is killed
and started again loads finished jobs instead of recomputing them (``provenance.json`` counts
``computed`` and ``cached`` jobs). Every output file appears only when complete.

Modules
-------
:mod:`~analysis.report.config` (TOML -> :class:`ReportConfig`), :mod:`~analysis.report.jobs`
(jobs and executors), :mod:`~analysis.report.tables` (summary DataFrames),
:mod:`~analysis.report.charts` (figures), :mod:`~analysis.report.document` (Markdown, LaTeX,
HTML), :mod:`~analysis.report.run` (:func:`run_report`), :mod:`~analysis.report.vocabulary`
(the report's copies of the capture-point names and the card -> table step, one place to swap
for the shared modules).

Failures
--------
A job that fails (unreadable checkpoint, wrong architecture ...) is listed in the summary on
stderr and in ``report.md`` while the other jobs complete; :func:`run_report` then returns 1.
A bad config raises ValueError (the CLI prints one line and exits with status 2).
"""

from analysis.report.charts import report_figures
from analysis.report.config import (
    DEFAULT_CONFIG,
    FIGURE_FORMATS,
    CheckpointSpec,
    ReportConfig,
    load_config,
    metric_family,
)
from analysis.report.document import (
    comparison_to_latex,
    comparison_to_markdown,
    table_to_latex,
    table_to_markdown,
)
from analysis.report.jobs import Job, plan_jobs
from analysis.report.run import run_report
from analysis.report.tables import HIGHER_IS_BETTER, accuracy_table, comparison_table, metrics_table

__all__ = [
    "CheckpointSpec",
    "DEFAULT_CONFIG",
    "FIGURE_FORMATS",
    "HIGHER_IS_BETTER",
    "Job",
    "ReportConfig",
    "accuracy_table",
    "comparison_table",
    "comparison_to_latex",
    "comparison_to_markdown",
    "load_config",
    "metric_family",
    "metrics_table",
    "plan_jobs",
    "report_figures",
    "run_report",
    "table_to_latex",
    "table_to_markdown",
]
