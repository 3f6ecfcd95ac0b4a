"""Fixed costs of a probe, each in a fresh process: imports, loading the model, capture setup.

    python benchmarks/fixed_costs.py                              # torchvision:mobilenet_v2
    python benchmarks/fixed_costs.py --compare /path/to/other/checkout --repeats 3

Stages (wall and CPU seconds, each the fastest of ``--repeats`` fresh processes):

- ``import``: ``import torch`` and ``probes.loading`` (what ``bnprobe probe`` needs first);
- ``load_checkpoint``: ``load_checkpoint(--arch)`` with random weights, including the import of
  the architecture's library (torchvision, timm) on first use;
- ``capture setup``: entering :func:`probes.capture.capture` on one 224 px image (discovery of
  the blocks and the example pass) and leaving it, without any batch;
- ``probe N images``: :func:`probes.capture.probe` of ``--images`` random images at the input
  size (default 48, batches of 32), setup included.

``torch._dynamo loaded`` says whether torch's compiler stack was imported by the end.
With ``--compare DIR`` the same children run on the code of another checkout (its ``probes``
package first on ``sys.path``), rows interleaved, for a side-by-side before/after table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

STAGES = ("import", "load_checkpoint", "capture setup", "probe")


def _child(arch: str, images: int, threads: int) -> None:
    clock = {}
    w, c = time.perf_counter(), time.process_time()

    def mark(name: str) -> None:
        nonlocal w, c
        clock[name] = (time.perf_counter() - w, time.process_time() - c)
        w, c = time.perf_counter(), time.process_time()

    import torch

    from probes.loading import load_checkpoint

    torch.set_num_threads(threads)
    mark("import")
    loaded = load_checkpoint(arch)
    mark("load_checkpoint")
    from probes.capture import capture, probe

    size = loaded.input_spec.size
    x = torch.randn(images, loaded.input_spec.channels, size, size, generator=torch.Generator().manual_seed(0))
    model = loaded.model.eval()
    with torch.no_grad(), capture(model, example_input=x[:1]):
        pass
    mark("capture setup")
    probe(model, x, batch_size=32, device="cpu", progress=False)
    mark("probe")
    print(json.dumps({"stages": clock, "dynamo": "torch._dynamo" in sys.modules}))


def _run(root: Path, args: argparse.Namespace) -> dict:
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run([sys.executable, __file__, "--child", "--arch", args.arch, "--images", str(args.images),
                          "--threads", str(args.threads)], capture_output=True, text=True, check=True, env=env,
                         cwd=root)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="torchvision:mobilenet_v2")
    parser.add_argument("--images", type=int, default=48, help="images of the probe row (default 48)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--repeats", type=int, default=2, help="fresh processes per checkout (default 2)")
    parser.add_argument("--compare", type=Path, default=None, help="another checkout to run side by side")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.arch, args.images, args.threads)
        return 0
    roots = {"this": ROOT} if args.compare is None else {"compare": args.compare.resolve(), "this": ROOT}
    runs: dict[str, list[dict]] = {k: [] for k in roots}
    for _ in range(args.repeats):
        for name, root in roots.items():
            runs[name].append(_run(root, args))
    print(f"{args.arch}; {args.images} images in the probe row; torch threads {args.threads}; "
          f"fastest of {args.repeats} fresh processes")
    for name, root in roots.items():
        print(f"{name}: {root}")
    head = f"{'stage':<18}" + "".join(f"{name + ' wall':>14}{name + ' cpu':>13}" for name in roots)
    print(head)
    for stage in STAGES:
        line = f"{stage:<18}"
        for name in roots:
            line += f"{min(r['stages'][stage][0] for r in runs[name]):>14.2f}"
            line += f"{min(r['stages'][stage][1] for r in runs[name]):>13.2f}"
        print(line)
    print(f"{'torch._dynamo loaded':<18}" + "".join(f"{str(runs[n][-1]['dynamo']):>27}" for n in roots))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
