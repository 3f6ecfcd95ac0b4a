"""Command line entry point ``bnprobe``.

Every subcommand has ``--help``; bad input exits with status 2 and a one-line reason on stderr
(``bnprobe probe: error: ...``), never a traceback. Outputs (``--out``, ``--figure``) are checked
with :func:`_check_out` before any work; a write that still fails at the end goes through
:func:`_save`, which keeps the result beside the requested path and exits with status 1
naming where it went.

::

    bnprobe checkpoints                           # shipped checkpoints: design, dataset, accuracy
    bnprobe train RECIPE [--out DIR] [--epochs N] # reproduce a shipped checkpoint from its recipe
    bnprobe probe CHECKPOINT [--arch ARCH] [--dataset NAME|PATH] [--points GLOB] [--families FAMILY ...] [--out FILE]
    bnprobe blocks CHECKPOINT [--arch ARCH]       # only discover the blocks: one line per block
    bnprobe spiral [--dims 2 3 5 15 30] [--activation relu] [--out FILE]
    bnprobe surgery CHECKPOINT [--act identity|relu6] [--blocks I ...] [--out FILE] [--figure FILE]
    bnprobe report CONFIG.toml --out DIR [--scheduler ADDRESS]
    bnprobe compare --dataset digits --designs linear relu6 [--bands] [--out FILE]
    bnprobe predict CHECKPOINT [--arch ARCH] IMAGE...
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

# the schema module is light (no torch): the options of `bnprobe probe` are built from it
from analysis.settings import STUDY_FIELDS, StudyConfig, StudyFieldError

__all__ = ["main"]


class _UserError(Exception):
    """An error caused by the user's input: printed as one line, exit status 2."""


class _Rescued(Exception):
    """A finished result was saved elsewhere because its write failed: one line, exit status 1."""


def _save(write: Callable[[Path], object], out: str) -> None:
    """Write a finished result through ``write``; on a late failure keep it elsewhere and say where."""
    from probes._io import OutputRescued, save_or_rescue

    try:
        save_or_rescue(write, out)
    except OutputRescued as exc:
        raise _Rescued(str(exc)) from None
    print(f"wrote {out}", file=sys.stderr)


def _write_table(df: "object", out: str) -> None:
    from analysis.study import write_table

    _save(lambda path: write_table(df, path), out)


def _check_out(out: str | None, *, kind: str = "file", suffixes: Sequence[str] | None = (".parquet", ".csv"),
               name: str = "--out") -> None:
    """Fail before any work when ``out`` cannot be written (wrong kind or suffix, not writable).

    Every subcommand with an output calls this first, so that no computation is thrown away.
    """
    if out is None:
        return
    from probes._io import check_output

    try:
        check_output(out, kind=kind, suffixes=suffixes, name=name)  # type: ignore[arg-type]
    except ValueError as exc:
        raise _UserError(str(exc)) from None


def _cmd_checkpoints(args: argparse.Namespace) -> int:
    import pandas as pd

    from probes.catalogue import accuracy_summary, checkpoint_table, list_checkpoints

    if args.command == "zoo":
        print("bnprobe zoo is deprecated; use bnprobe checkpoints (the zoo is the architecture).",
              file=sys.stderr)
    cards = list_checkpoints()
    if not cards:
        raise _UserError("no shipped checkpoints found in the checkpoints/ folder")
    if args.markdown:
        from probes.train import catalogue_markdown

        print(catalogue_markdown(cards), end="")
        return 0
    per = checkpoint_table(cards)
    with pd.option_context("display.max_rows", None, "display.width", 200):
        cols = ["checkpoint", "dataset", "design", "bottleneck_act", "shortcut", "seed", "n_params",
                "test_accuracy"]
        print(per[cols].to_string(index=False))
        print()
        print(accuracy_summary(per).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from probes.train import RECIPES, recipe_names, train

    _check_out(args.out, kind="folder", suffixes=None)
    names = recipe_names() if args.recipe == "all" else [args.recipe]
    for name in names:
        if name not in RECIPES:
            raise _UserError(f"unknown recipe {name!r}; available recipes: {', '.join(recipe_names())}, all")
    for name in names:
        card = train(name, out_dir=args.out, epochs=args.epochs)
        print(f"{name}: train accuracy {card['train_accuracy']:.4f}, test accuracy "
              f"{card['test_accuracy']:.4f}, {card['train_seconds']:.0f} s -> "
              f"{Path(args.out) / card['weights_file']}")
    return 0


def _study_config(args: argparse.Namespace) -> StudyConfig:
    """The :class:`analysis.settings.StudyConfig` of ``bnprobe probe``'s options; a bad value is one
    line naming the option (the schema's own check, :func:`analysis.settings.check_study_field`)."""
    if args.metrics_deprecated is not None:
        if args.families is not None:
            raise _UserError("--metrics is the deprecated name of --families; give only --families")
        print("bnprobe probe: warning: --metrics is deprecated and will be removed; use --families "
              "(it takes metric family names)", file=sys.stderr)
        args.families = args.metrics_deprecated
    given = {name: getattr(args, name) for name, spec in STUDY_FIELDS.items()
             if spec.cli is not None and getattr(args, name) is not None}
    try:
        return StudyConfig(**given)
    except StudyFieldError as exc:
        raise _UserError(f"argument {STUDY_FIELDS[exc.name].cli}: must be {exc.expected}. "
                         f"Got {exc.got!r} instead.") from None


def _cmd_probe(args: argparse.Namespace) -> int:
    _check_out(args.out)
    for flag in ("workers", "loader_workers"):
        value = getattr(args, flag)
        low = 1 if flag == "workers" else 0
        if value is not None and value < low:
            raise _UserError(f"--{flag.replace('_', '-')} must be an int >= {low}; got {value}")
    config = _study_config(args)
    from analysis.study import run_study
    from probes.loading import load_checkpoint

    loaded = load_checkpoint(args.checkpoint, arch=args.arch, mean=args.mean, std=args.std,
                             size=args.size, allow_nonfinite=args.allow_nonfinite)
    report, _, _ = _discovery_report(loaded)
    print(report, file=sys.stderr)  # its warnings come once, from the study's discovery
    result = run_study(loaded, config, progress=not args.quiet, scheduler=args.scheduler,
                       workers=args.workers, loader_workers=args.loader_workers)
    df = result.metrics
    if args.out:
        _write_table(df, args.out)
    else:
        print(df.to_csv(index=False), end="")
    return 0


def _discovery_report(loaded: "object") -> tuple[str, tuple[str, ...], int]:
    """The block report of a loaded model, from one seeded random input of its input size."""
    import torch

    from probes.blocks import discover, format_report

    spec = loaded.input_spec
    param = next(loaded.model.parameters(), None)
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    x = torch.randn(1, spec.channels, spec.size, spec.size, generator=torch.Generator().manual_seed(0))
    found = discover(loaded.model, x.to(dtype=dtype, device=param.device if param is not None else "cpu"))
    return format_report(found), found.warnings, len(found.blocks)


def _cmd_blocks(args: argparse.Namespace) -> int:
    from probes.loading import load_checkpoint

    loaded = load_checkpoint(args.checkpoint, arch=args.arch, mean=args.mean, std=args.std,
                             size=args.size, allow_nonfinite=args.allow_nonfinite)
    report, warns, n_blocks = _discovery_report(loaded)
    print(report)
    for w in warns:
        print(f"bnprobe blocks: warning: {w}", file=sys.stderr)
    return 0 if n_blocks else 1  # no block found: the warning says why


def _cmd_spiral(args: argparse.Namespace) -> int:
    from analysis.figures import spiral_figure
    from analysis.spiral import run_spiral

    _check_out(args.out)
    _check_out(args.figure, suffixes=(".png", ".svg", ".pdf"), name="--figure")

    table, recon = run_spiral(tuple(args.dims), activation=args.activation, seeds=tuple(args.seeds))
    if args.out:
        _write_table(table, args.out)
    else:
        print(table.to_csv(index=False), end="")
    if args.figure:
        from analysis.figures import save_chart

        chart = spiral_figure(recon)
        _save(lambda path: save_chart(chart, path), args.figure)
    return 0


def _cmd_surgery(args: argparse.Namespace) -> int:
    from analysis.surgery import run_surgery, surgery_figure

    _check_out(args.out)
    if args.figure and Path(args.figure).suffix.lower() not in (".png", ".svg", ".pdf"):
        raise _UserError(f"figure file {args.figure!r} must end in .png, .svg or .pdf")
    table = run_surgery(args.checkpoint, dataset=args.dataset, act=args.act, blocks=args.blocks, seed=args.seed,
                        progress=not args.quiet)
    if args.out:
        _write_table(table, args.out)
    else:
        print(table.to_csv(index=False), end="")
    if args.figure:
        from analysis.figures import save_chart

        save_chart(surgery_figure(table), args.figure)
        print(f"wrote {args.figure}", file=sys.stderr)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from analysis.report import run_report

    _check_out(args.out, kind="folder", suffixes=None)
    return run_report(args.config, args.out, scheduler=args.scheduler, workers=args.workers)


def _cmd_compare(args: argparse.Namespace) -> int:
    _check_out(args.out)
    import warnings

    from analysis.compare import compare_bands, compare_designs, load_design_metrics
    from analysis.study import read_table

    if len(args.designs) != 2:
        raise _UserError(f"--designs takes exactly two designs (a b); got {len(args.designs)}: "
                         f"{' '.join(args.designs)}")
    a, b = args.designs
    if args.results:
        df = read_table(args.results)
    else:
        df = load_design_metrics(args.dataset, args.designs, compute=not args.no_compute, progress=not args.quiet)
    metrics = args.metrics or None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        if args.bands:
            table = compare_bands(df, a, b, dataset=args.dataset, metrics=metrics, pre=None, level=args.level)
        else:
            table = compare_designs(df, a, b, dataset=args.dataset, metrics=metrics, level=args.level)
    for w in caught:
        print(f"bnprobe compare: warning: {w.message}", file=sys.stderr)
    if args.out:
        _write_table(table, args.out)
    else:
        print(table.to_csv(index=False), end="")
    counts = table["verdict"].value_counts()
    print(f"bnprobe compare: {len(table)} rows, {a} - {b} paired over seeds at {100 * args.level:g} %: "
          + ", ".join(f"{int(n)} {v}" for v, n in counts.items()), file=sys.stderr)
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from probes.loading import format_predictions, load_checkpoint, predict

    loaded = load_checkpoint(args.checkpoint, arch=args.arch, mean=args.mean, std=args.std,
                             size=args.size, allow_nonfinite=args.allow_nonfinite)
    preds = predict(loaded, args.images, topk=args.topk)
    print(format_predictions(loaded, args.images, preds))
    return 0


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="shipped checkpoint name (see `bnprobe checkpoints`) or a weights file (.safetensors, .pt, .pth)")
    p.add_argument("--arch", default=None,
                   help="architecture for a bare state dict: torchvision:NAME, timm:NAME, "
                        "package.module:factory or path/to/model.py:factory (a factory is imported "
                        "and run: name only your own, trusted code)")
    p.add_argument("--mean", type=float, nargs="+", default=None,
                   help="input mean per channel for a user factory (default: ImageNet 0.485 0.456 0.406)")
    p.add_argument("--std", type=float, nargs="+", default=None,
                   help="input std per channel for a user factory (default: ImageNet 0.229 0.224 0.225)")
    p.add_argument("--size", type=int, default=None, help="input side in pixels for a user factory (default 224)")
    p.add_argument("--allow-nonfinite", action="store_true",
                   help="probe weights holding NaN or Inf values (refused by default) with a warning")


def _add_study_args(p: argparse.ArgumentParser) -> None:
    """One option per :class:`analysis.settings.StudyConfig` field with a ``FieldSpec.cli`` name.

    Help text, choices and defaults come from the schema (``--families`` parses to None when not
    given, so that the deprecated ``--metrics`` can stand in for it); every value is checked
    once, by the schema, when the config is built (:func:`_study_config`).
    """
    defaults = StudyConfig()
    for name, spec in STUDY_FIELDS.items():
        if spec.cli is None:
            continue
        default = getattr(defaults, name)
        if spec.kind == "bool":
            p.add_argument(spec.cli, dest=name, action="store_true", default=default, help=spec.help)
            continue
        shown = " ".join(map(str, default)) if isinstance(default, tuple) else default
        kw: dict[str, object] = {"dest": name, "default": None if spec.kind == "names" else default,
                                 "metavar": spec.metavar,
                                 "help": f"{spec.help} (default: {shown})" if default is not None else spec.help}
        if spec.kind in ("choice", "names"):
            kw["choices"] = list(spec.choices or ())
            kw["metavar"] = spec.metavar if spec.kind == "names" else None
            kw["type"] = type((spec.choices or ("",))[0])
        elif spec.kind in ("int", "float"):
            kw["type"] = int if spec.kind == "int" else float
        if spec.kind == "names":
            kw["nargs"] = "+"
        p.add_argument(spec.cli, **kw)  # type: ignore[arg-type]
    # researchers' scripts still say --metrics (it always took family names): kept, with a warning
    p.add_argument("--metrics", dest="metrics_deprecated", nargs="+", default=None, choices=list(defaults.families),
                   metavar="FAMILY", help="deprecated name of --families")


def build_parser() -> argparse.ArgumentParser:
    """The ``bnprobe`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="bnprobe",
        description="Measure how much information the inverted-residual blocks of MobileNetV2-style "
                    "networks keep (linear vs ReLU bottlenecks).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("checkpoints", aliases=["zoo"],
                       help="list the shipped checkpoints with design, dataset and accuracy "
                            "('zoo' is a deprecated alias)")
    p.add_argument("--markdown", action="store_true", help="print checkpoints/README.md instead")
    p.set_defaults(func=_cmd_checkpoints)

    p = sub.add_parser("train", help="reproduce a shipped checkpoint from its recipe")
    p.add_argument("recipe", help="recipe name (same as the checkpoint name, see `bnprobe checkpoints`) or 'all'")
    p.add_argument("--out", default="checkpoints", help="output folder (default: checkpoints)")
    p.add_argument("--epochs", type=int, default=None, help="override the recipe's epoch count")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("probe", help="capture a checkpoint's activations and write the tidy metrics table")
    _add_model_args(p)
    _add_study_args(p)
    p.add_argument("--out", default=None, help="output .parquet or .csv (default: CSV on stdout)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--scheduler", default=None,
                   help="shard the images over the Dask scheduler at this address")
    p.add_argument("--workers", type=int, default=None,
                   help="shard the images over a local Dask cluster of N worker processes")
    p.add_argument("--loader-workers", type=int, default=None,
                   help="DataLoader processes decoding images (default: 2 for image files, else 0)")
    p.set_defaults(func=_cmd_probe)

    p = sub.add_parser("blocks", help="discover the inverted-residual blocks only: one line per block, "
                                      "what was skipped and why")
    _add_model_args(p)
    p.set_defaults(func=_cmd_blocks)

    p = sub.add_parser("spiral", help="the paper's Figure 1: a 2-D spiral through ReLU(Tx) and back")
    p.add_argument("--dims", type=int, nargs="+", default=[2, 3, 5, 15, 30])
    p.add_argument("--activation", default="relu")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", default=None, help="output table .csv or .parquet (default: CSV on stdout)")
    p.add_argument("--figure", default=None, help="also write the figure (.png, .svg or .pdf)")
    p.set_defaults(func=_cmd_spiral)

    p = sub.add_parser("surgery", help="remove / insert the bottleneck activation of a zoo checkpoint at "
                                       "inference: accuracy and information per changed block")
    p.add_argument("checkpoint", help="shipped checkpoint name (see `bnprobe checkpoints`)")
    p.add_argument("--dataset", default=None, choices=["digits", "shapes"],
                   help="dataset with a train / test split (default: the one it was trained on)")
    p.add_argument("--act", default=None, choices=["identity", "relu6", "relu"],
                   help="new activation (default: identity for a ReLU-type bottleneck, relu6 for a linear one)")
    p.add_argument("--blocks", type=int, nargs="+", default=None, help="blocks changed one at a time (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap over test images")
    p.add_argument("--out", default=None, help="output table .csv or .parquet (default: CSV on stdout)")
    p.add_argument("--figure", default=None, help="also write the figure (.png, .svg or .pdf)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_surgery)

    p = sub.add_parser("report", help="run a whole study from a TOML config into a report folder")
    p.add_argument("config", help="TOML config (see analysis/configs/paper.toml)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--scheduler", default=None, help="Dask scheduler address (default: local processes)")
    p.add_argument("--workers", type=int, default=None, help="local worker processes (default: CPU count)")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("compare", help="paired comparison of two designs over training seeds (CI, p-value)",
                       description="One row per metric x block x point (or x depth band with --bands): "
                                   "paired differences a - b over the seeds trained for both designs, "
                                   "Student-t interval, exact sign-flip p-value, verdict and the per-seed "
                                   "values (';'-joined). See analysis/compare.py.")
    p.add_argument("--dataset", default="digits", help="dataset the checkpoints were trained on (default digits)")
    p.add_argument("--designs", nargs="+", default=["linear", "relu6"], metavar="DESIGN",
                   help="the two designs a b (default: linear relu6)")
    p.add_argument("--results", default=None,
                   help="compare this tidy results table (.parquet/.csv, e.g. a report's metrics.parquet) "
                        "instead of the shipped studies")
    p.add_argument("--metrics", nargs="+", default=None, help="only these metrics (default: all)")
    p.add_argument("--bands", action="store_true",
                   help="per depth band (thirds of the blocks and all): per seed the mean over the band's blocks")
    p.add_argument("--level", type=float, default=0.95, help="confidence level of the intervals (default 0.95)")
    p.add_argument("--no-compute", action="store_true",
                   help="fail instead of computing a study that is not precomputed")
    p.add_argument("--out", default=None, help="output .parquet or .csv (default: CSV on stdout)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("predict", help="top-5 predictions for image files: check weights and preprocessing")
    _add_model_args(p)
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--topk", type=int, default=5)
    p.set_defaults(func=_cmd_predict)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``bnprobe``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except (_UserError, ValueError, FileNotFoundError, KeyError, PermissionError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"bnprobe {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except _Rescued as exc:
        print(f"bnprobe {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"bnprobe {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
