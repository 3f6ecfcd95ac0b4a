"""Cost of probing against a bare forward pass, and peak memory for 1x and 4x the images.

    python benchmarks/capture.py                  # all rows below
    python benchmarks/capture.py --model digits --repeats 5 --threads 1
    python benchmarks/capture.py --model mobilenet_v2 --threads 1 2 --images 64
    python benchmarks/capture.py --model mobilenet_v2 --rows exact   # bare forward and exact only

Models: ``digits`` (digits-linear-s0 over the 1,797 digits, 32 px), ``mobilenet_v2``
(torchvision's, random weights, ``--images`` random images at 224 px in batches of
``--mobilenet-batch``, once per ``--threads`` count) and ``cuda`` (the mobilenet_v2 rows on
the GPU; printed as "skipped: no CUDA" where there is none).

Rows (same model, same batches of ``--batch-size`` images):

- ``bare forward``: ``model(batch)`` for every batch under ``torch.no_grad()``;
- ``probe default``: :func:`probes.capture.probe` with its default settings, all capture
  points of all blocks (sampled moments and activity, reservoirs);
- ``probe exact``: the same with ``moments="exact"`` (every position into the moments and the
  activity counts);
- ``probe no extent``: the default without the ``extent`` sink (the per-channel min, max and
  active counts over every position), to show what that sink costs;
- ``probe no sinks``: the same with ``sinks=()``: discovery, the example pass and the hooks
  (checking each tensor) with nothing accumulated, the fixed cost under the other two rows;
- ``probe moments only``, ``activity only``, ``reservoir only``, ``extent only`` (only with
  ``--rows``): the default with that one sink (the extent's |x| histogram takes sampled rows,
  so its row gathers them too), what each costs on top of the ``no sinks`` row.

"faults k": the median number of minor page faults of a run, in thousands: on the CPU a
forward pass of mobilenet_v2 at 224 px spends about half its time faulting in its activations
(glibc hands their memory back after each pass), so a ratio means little unless both rows
paid for about as many; see the README's Speed section.

Times include everything ``probe`` does (discovery of the blocks, the hooks, reading out the
sinks). Wall time and process CPU time are printed, each the fastest of ``--repeats`` runs
(rows interleaved), and the median over the repeats of each row's ratio to the bare forward of
the same repeat, which is the steadier figure on a machine whose speed drifts (a shared one).
Targets (issue 14): probe default <= 1.3x the bare forward on mobilenet_v2 at 224 px and <=
1.8x on the digits network; exact <= 4x at 224 px; peak RSS growth from 1x to 4x images < 10 %.

Peak RSS is measured in fresh subprocesses (one per row), so runs do not contaminate each
other: the dataset is repeated 4x for the second column and fed as an ``ImageDataset`` that
``probe`` prepares batch by batch. "before" is the peak RSS after loading model and data,
before probing.

If ``checkpoints/digits-linear-s0.safetensors`` is missing, the same architecture with random
weights is used and the printout says so.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

RECIPE = "digits-linear-s0"


def _load() -> tuple[torch.nn.Module, object, object, str]:
    """(model, dataset, input spec, description of the weights)."""
    from probes.datasets import load_dataset
    from probes.preprocess import InputSpec
    from probes.train import RECIPES
    from probes.zoo import build_model

    recipe = RECIPES[RECIPE]
    model = build_model(recipe.zoo_config()).eval()
    weights = ROOT / "checkpoints" / f"{RECIPE}.safetensors"
    if weights.exists():
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(weights)))
        what = f"checkpoint {weights.relative_to(ROOT)}"
    else:
        what = f"RANDOM WEIGHTS ({weights.relative_to(ROOT)} not found; same architecture)"
    data = load_dataset("digits", split="all")
    spec = InputSpec.from_dict(recipe.input_spec(), source=f"recipe {RECIPE}")
    return model, data, spec, what


def _time(funcs: dict[str, Callable[[], object]], repeats: int) -> dict[str, tuple[float, float, float, float]]:
    """Per row: fastest wall time, fastest CPU time, the median over the repeats of the row's
    wall time over the bare forward's of the same repeat (rows run interleaved, so a machine
    that speeds up or slows down between repeats moves both sides of each ratio), and the
    median number of minor page faults of a run (``ru_minflt``: pages the process touched for
    the first time since the allocator took them from the system)."""
    walls: dict[str, list[float]] = {k: [] for k in funcs}
    cpus: dict[str, list[float]] = {k: [] for k in funcs}
    faults: dict[str, list[int]] = {k: [] for k in funcs}
    for _ in range(repeats):
        for name, func in funcs.items():
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            w, c = time.perf_counter(), time.process_time()
            func()
            walls[name].append(time.perf_counter() - w)
            cpus[name].append(time.process_time() - c)
            faults[name].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    base = walls[next(iter(funcs))]
    return {k: (min(walls[k]), min(cpus[k]), statistics.median(w / b for w, b in zip(walls[k], base)),
                statistics.median(faults[k]))
            for k in funcs}


def _peak_rss_kb() -> int:
    """Peak resident set size of this process in KiB (VmHWM; ru_maxrss where /proc is missing).

    ``ru_maxrss`` is not used on Linux: it keeps the parent's peak across fork + exec, so a
    child started by a large parent would report the parent's memory.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _rss_child(mode: str, repeat: int, batch_size: int, threads: int | None) -> None:
    """Run one probe in this (fresh) process and print its peak RSS as JSON."""
    from probes.capture import probe

    if threads:
        torch.set_num_threads(threads)
    model, data, spec, _ = _load()
    if repeat > 1:
        data = data.subset(np.tile(np.arange(len(data)), repeat))
    before = _peak_rss_kb()
    kwargs = {"moments": "exact"} if mode == "exact" else {}
    probe(model, data, input_spec=spec, batch_size=batch_size, device="cpu", progress=False, **kwargs)
    after = _peak_rss_kb()
    print(json.dumps({"before_kb": before, "peak_kb": after, "n_images": len(data)}))


def _rss(mode: str, repeat: int, batch_size: int, threads: int | None) -> dict[str, int]:
    cmd = [sys.executable, __file__, "--rss-child", mode, str(repeat), "--batch-size", str(batch_size)]
    if threads:
        cmd += ["--threads", str(threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


ROWS = ("default", "exact", "no extent", "no sinks")
#: One sink each, on request (``--rows``).
SINK_ROWS = ("moments only", "activity only", "reservoir only", "extent only")


def _rows(model: torch.nn.Module, x: torch.Tensor, bs: int, device: str, repeats: int,
          only: tuple[str, ...] = ROWS) -> dict[str, tuple[float, float, float]]:
    """Timed rows (bare forward, probe default / exact / no sinks) of ``model`` on ``x``; ``only``:
    the probe rows to run (the bare forward always runs)."""
    from probes.capture import probe

    model = model.to(device).eval()
    xd = x.to(device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def bare() -> None:
        with torch.no_grad():
            for i in range(0, len(xd), bs):
                model(xd[i:i + bs])
        sync()

    def run(**kw: object) -> Callable[[], object]:
        return lambda: probe(model, xd, batch_size=bs, device=device, progress=False, **kw)

    rows = {"probe default": run(), "probe exact": run(moments="exact"),
            "probe no extent": run(sinks=("moments", "activity", "reservoir")),
            "probe no sinks": run(sinks=()),
            **{f"probe {row}": run(sinks=(row.split()[0],)) for row in SINK_ROWS}}
    bare()
    run(**({} if "default" in only else {"moments": "exact"}))()  # warm-up: first-touch allocations and kernels
    return _time({"bare forward": bare, **{k: v for k, v in rows.items() if k[len("probe "):] in only}},
                 repeats)


def _table(times: dict[str, tuple[float, float, float, float]], rss: dict | None = None) -> None:
    bare_w, bare_c, _, _ = times["bare forward"]
    width = max(16, *(len(name) + 1 for name in times))
    head = f"{'row':<{width}}{'wall s':>9}{'x bare':>8}{'cpu s':>9}{'x bare':>8}{'median x':>10}{'faults k':>10}"
    if rss:
        head += f"{'RSS 1x MB':>11}{'RSS 4x MB':>11}{'growth':>8}"
    print(head)
    for name, (w, c, med, flt) in times.items():
        line = f"{name:<{width}}{w:>9.3f}{w / bare_w:>8.2f}{c:>9.3f}{c / bare_c:>8.2f}{med:>10.2f}{flt / 1000:>10.0f}"
        mode = name.split()[-1]
        if rss and (mode, 1) in rss:
            one, four = rss[mode, 1]["peak_kb"] / 1024, rss[mode, 4]["peak_kb"] / 1024
            line += f"{one:>11.1f}{four:>11.1f}{(four / one - 1) * 100:>7.1f}%"
        print(line)
    print()


def _digits(args: argparse.Namespace) -> None:
    from probes.capture import capture, probe
    from probes.preprocess import prepare

    if args.threads:
        torch.set_num_threads(args.threads[0])
    model, data, spec, what = _load()
    x = prepare(data.x, spec, name=data.name)  # prepared once: every row sees the same batches
    bs = args.batch_size
    res = probe(model, x[:bs], batch_size=bs, device="cpu", progress=False)
    with capture(model, example_input=x[:1]) as cap:
        n_hooks = cap.n_hooks
    cfg = res.config
    print(f"== {RECIPE} ({what}) ==")
    print(f"data: digits split='all', {len(x)} images 1x32x32, batches of {bs}; "
          f"{len(res.points)} capture points on {n_hooks} hooks; torch threads {torch.get_num_threads()}; "
          f"fastest of {args.repeats} runs")
    print(f"probe default: moments sampled ({cfg['moment_positions']:g} positions/image), activity "
          f"{cfg['activity_positions']:g} positions/image, reservoir K={cfg['reservoir_size']}, "
          "extent over every position")
    times = _rows(model, x, bs, "cpu", args.repeats, tuple(args.rows))
    rss = {}
    if not args.no_rss:
        for mode in ("default", "exact"):
            for rep in (1, 4):
                rss[mode, rep] = _rss(mode, rep, bs, args.threads[0] if args.threads else None)
    _table(times, rss)
    if rss:
        base1, base4 = rss["default", 1]["before_kb"] / 1024, rss["default", 4]["before_kb"] / 1024
        print(f"peak RSS before probing (model + data loaded): {base1:.1f} MB (1x), {base4:.1f} MB (4x, "
              f"{rss['default', 4]['n_images']} images)\n")


def _mobilenet(args: argparse.Namespace, device: str) -> None:
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(weights=None).eval()
    x = torch.randn(args.images, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    threads = args.threads or [1, 2]
    for n in threads if device == "cpu" else [torch.get_num_threads()]:
        torch.set_num_threads(n)
        print(f"== torchvision mobilenet_v2 (random weights) on {device}: {args.images} images 3x224x224, "
              f"batches of {args.mobilenet_batch}; torch threads {n}; fastest of {args.repeats} runs ==")
        _table(_rows(model, x, args.mobilenet_batch, device, args.repeats, tuple(args.rows)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["all", "digits", "mobilenet_v2", "cuda"], default="all",
                        help="which rows (default all)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per row, fastest shown (default 3)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per batch, digits (default 64)")
    parser.add_argument("--images", type=int, default=64, help="images, mobilenet_v2 (default 64)")
    parser.add_argument("--mobilenet-batch", type=int, default=32, help="images per batch, mobilenet_v2 (default 32)")
    parser.add_argument("--threads", type=int, nargs="+", default=None,
                        help="torch threads: digits uses the first, mobilenet_v2 each (default: torch's "
                             "choice for digits, 1 and 2 for mobilenet_v2)")
    parser.add_argument("--rows", nargs="+", choices=ROWS + SINK_ROWS, default=list(ROWS),
                        help="probe rows to time beside the bare forward (default: "
                             f"{', '.join(ROWS)}; also {', '.join(SINK_ROWS)})")
    parser.add_argument("--no-rss", action="store_true", help="skip the peak-RSS subprocesses")
    parser.add_argument("--rss-child", nargs=2, metavar=("MODE", "REPEAT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_child:
        _rss_child(args.rss_child[0], int(args.rss_child[1]), args.batch_size,
                   args.threads[0] if args.threads else None)
        return 0
    if args.model in ("all", "digits"):
        _digits(args)
    if args.model in ("all", "mobilenet_v2"):
        _mobilenet(args, "cpu")
    if args.model in ("all", "cuda"):
        if torch.cuda.is_available():
            _mobilenet(args, "cuda")
        else:
            print("== torchvision mobilenet_v2 on cuda: skipped: no CUDA ==")
    print("'x bare': fastest over fastest; 'median x': median over the repeats of the ratio to the "
          "same repeat's bare forward; 'faults k': median minor page faults of a run, thousands.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
