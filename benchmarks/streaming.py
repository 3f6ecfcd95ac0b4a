"""Streaming an image folder: peak memory and throughput against decode + bare forward.

    python benchmarks/streaming.py                      # 1,000 and 10,000 PNGs at 224 px
    python benchmarks/streaming.py --sizes 200 2000     # a quick look

Generates ``max(--sizes)`` random 224 x 224 PNG files into ``--root`` (default
/tmp/bnprobe-stream, kept for reruns), then for each size runs in a fresh process:

* ``decode+forward``: the same DataLoader (``--loader-workers`` processes, the predict
  transform of the model's preset) feeding a bare forward pass of the model;
* ``probe``: :func:`probes.shard.probe_stream` over the same loader (capture with the default
  sinks).

Each row prints wall seconds, images/s, the CPU seconds of the process tree (the parent's
user + system time plus that of its reaped DataLoader workers) and the peak resident memory
(the parent's ``ru_maxrss`` plus the DataLoader workers' ``RUSAGE_CHILDREN`` peak, also printed
apart as "own" and "workers"); for the probe also the memory guard's trims and the parent's
resident size after each forward pass ("after pass": median/largest, MB). On a
machine shared with other jobs the CPU seconds are the steadier measure of what each row
costs: throughput is printed both ways (wall and CPU). Targets (issue 14):
peak RSS at 10,000 images within 10 % of 1,000 images; probe throughput >= 80 % of
decode + forward. ``--guard resident`` runs the probe with the capture's memory guard on the
resident size alone (see ``memory_guard.py``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _make_images(root: Path, n: int, size: int) -> None:
    import numpy as np
    from PIL import Image

    have = len(list(root.glob("*/*.png"))) if root.is_dir() else 0
    if have >= n:
        return
    rng = np.random.default_rng(0)
    for i in range(have, n):
        folder = root / f"class{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        # smooth random images (PNG of pure noise would be 150 KB and slow to decode)
        small = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
        Image.fromarray(small).resize((size, size), Image.Resampling.BILINEAR).save(folder / f"{i:06d}.png")


def _child(args: argparse.Namespace) -> None:
    import resource

    import torch
    from torch.utils.data import DataLoader

    from probes.datasets import image_files
    from probes.loading import load_checkpoint
    from probes.shard import probe_stream

    import importlib

    memory = importlib.import_module("probes.capture.memory")   # probes.capture is the function
    if args.guard == "resident":   # the memory guard without glibc's allocated bytes
        memory._HEAP_USED = None
    post: list[int] = []     # resident MB after each forward pass of the probe
    trims = [0]
    check = memory._MemoryGuard.check

    def watched(guard: object) -> None:
        before = guard.trims
        check(guard)
        trims[0] += guard.trims - before
        rss = memory._resident_bytes()
        if rss is not None:
            post.append(rss >> 20)

    memory._MemoryGuard.check = watched
    torch.set_num_threads(args.threads)
    loaded = load_checkpoint(args.arch)
    files = sorted(Path(args.root).glob("*/*.png"))[: args.n]
    stream = image_files(files).prepared(loaded.input_spec, resize_size=loaded.preset.get("resize_size"))
    model = loaded.model.eval()
    t0 = time.perf_counter()
    c0 = _cpu_seconds()
    if args.mode == "decode+forward":
        loader = DataLoader(stream, batch_size=args.batch, num_workers=args.loader_workers)
        with torch.no_grad():
            for batch in loader:
                model(batch)
    else:
        probe_stream(model, stream, batch_size=args.batch, num_workers=args.loader_workers, device="cpu",
                     progress=False)
    seconds = time.perf_counter() - t0
    cpu = _cpu_seconds() - c0
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "cpu_s": cpu, "peak_mb": own + workers, "own_mb": own,
                      "workers_mb": workers, "trims": trims[0], "post_pass_mb": post}))


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its reaped children (the loader workers)."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--root", default="/tmp/bnprobe-stream")
    parser.add_argument("--arch", default="torchvision:mobilenet_v2",
                        help="architecture (load_checkpoint spec; random weights), e.g. torchvision:mobilenet_v3_small")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--loader-workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the main process")
    parser.add_argument("--guard", choices=["allocated", "resident"], default="allocated",
                        help="the capture's memory guard: as shipped (allocated bytes, where glibc reports "
                             "them) or on the resident size alone")
    parser.add_argument("--child", choices=["decode+forward", "probe"], help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        args.mode = args.child
        _child(args)
        return 0
    _make_images(Path(args.root), max(args.sizes), args.image_size)
    print(f"{args.arch}; PNG folder at {args.image_size} px; batch {args.batch}; "
          f"{args.loader_workers} loader workers; {args.threads} torch thread(s)")
    print(f"{'images':>7} {'mode':<15} {'seconds':>8} {'images/s':>9} {'cpu s':>8} {'img/cpu s':>10} "
          f"{'peak RSS MB':>12} {'own':>6} {'workers':>8} {'trims':>6} {'after pass':>11}")
    rows = {}
    for n in args.sizes:
        for mode in ("decode+forward", "probe"):
            out = subprocess.run(
                [sys.executable, __file__, "--child", mode, "--n", str(n), "--root", args.root, "--arch", args.arch,
                 "--batch", str(args.batch), "--loader-workers", str(args.loader_workers),
                 "--threads", str(args.threads), "--guard", args.guard],
                capture_output=True, text=True, check=True, cwd=ROOT)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            rows[n, mode] = r
            after = (f"{statistics.median(r['post_pass_mb']):.0f}/{max(r['post_pass_mb'])}"
                     if r["post_pass_mb"] else "")
            trims = r["trims"] if mode == "probe" else ""
            print(f"{n:>7} {mode:<15} {r['seconds']:>8.1f} {n / r['seconds']:>9.1f} {r['cpu_s']:>8.1f} "
                  f"{n / r['cpu_s']:>10.1f} {r['peak_mb']:>12.0f} {r['own_mb']:>6.0f} {r['workers_mb']:>8.0f} "
                  f"{trims:>6} {after:>11}", flush=True)
    lo, hi = min(args.sizes), max(args.sizes)
    print(f"probe peak RSS {hi} / {lo} images: {rows[hi, 'probe']['peak_mb'] / rows[lo, 'probe']['peak_mb']:.3f} "
          f"(target <= 1.10)")
    for n in args.sizes:
        ratio = rows[n, "decode+forward"]["seconds"] / rows[n, "probe"]["seconds"]
        cpu_ratio = rows[n, "decode+forward"]["cpu_s"] / rows[n, "probe"]["cpu_s"]
        print(f"probe throughput / decode+forward at {n} images: {ratio:.2f} wall, {cpu_ratio:.2f} CPU "
              "(target >= 0.80)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
