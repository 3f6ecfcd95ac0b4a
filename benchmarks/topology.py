"""Time of our topology step against a direct ripser call on the same cloud.

    python benchmarks/topology.py                 # 2,000-point noisy circle in 64 dims (~6 min)
    python benchmarks/topology.py --n 600         # a quick look

Rows: ``ripser`` (``ripser.ripser(x, maxdim=1)``, the baseline), ``ours`` (
:func:`analysis.topology.persistent_homology` with the same options: validation, RMS scale,
ripser, diagram normalisation, Betti numbers, total persistence, entropy), and both with a
greedy-permutation subsample (``n_perm``). The target is ours / ripser - 1 <= 10 % without
subsampling. Wall time and process CPU time are printed: on a machine shared with other jobs
CPU time is the steadier measure of the work done. Imports are done before timing; they are a
one-off per process.

A second table is the topology family as the study runs it: ``--clouds`` clouds (a block's
input, then points compared with it) of ``--n`` points, greedy subsample of ``--n-perm``, each
with the bottleneck and Wasserstein distance of its H1 diagram to the first cloud's. It compares
the whole family (:func:`persistent_homology` with a reference) with the ripser calls alone on
the same subsample distance matrices (``ripser(dm, distance_matrix=True)``, the part no
implementation can skip). Target: family / ripser <= 1.5. Below it, the greedy subsamples
alone (the Gram matrix of each cloud and the distances of the rows picked) and the diagram
distances alone, ours (:func:`analysis.topology.diagram_distances`) side by side with the previous route
(hera's exact bottleneck through ``gudhi.hera`` and POT's Wasserstein through
``gudhi.wasserstein``), with the largest difference between the two.

    python benchmarks/topology.py --family-only --n 1000 --n-perm 200 --dim 96   # the study's size

A third table does the same on real activation clouds: ``--arch`` (default torchvision
mobilenet_v2, random weights) probed as the study probes it on ``--images`` random RGB 32x32
images (default 48), every distinct reservoir greedily subsampled to ``--n-perm`` points, each
block's points compared with the block's input. Printed after the synthetic tables unless
``--no-real``; ``--real-only`` prints only it. ``--threads`` sets torch's and the BLAS thread
count (default 1). The reference routes for the distances (hera, POT) come from gudhi, a test
dependency: without it that row is skipped.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _time(func: Callable[[], object], repeats: int) -> tuple[float, float]:
    walls, cpus = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        func()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return min(walls), min(cpus)


def _family_table(args: argparse.Namespace) -> None:
    import numpy as np
    from ripser import ripser

    from analysis.topology import greedy_permutation, persistent_homology

    rng = np.random.default_rng(0)
    # a block's input and activations derived from it: random ReLU layers of growing width
    base = rng.standard_normal((args.n, args.dim))
    clouds = [base]
    for k in range(1, args.clouds):
        width = args.dim * (1 + k % 3)
        clouds.append(np.maximum(base @ rng.standard_normal((args.dim, width)) / np.sqrt(args.dim), 0.0))
    mats = []
    for c in clouds:
        idx, dperm2all, _ = greedy_permutation(c, args.n_perm)
        mats.append(dperm2all[:, idx])

    def ripser_only() -> None:
        for dm in mats:
            ripser(dm, maxdim=1, distance_matrix=True)

    def family() -> None:
        ref = persistent_homology(clouds[0], n_perm=args.n_perm)
        for c in clouds[1:]:
            persistent_homology(c, n_perm=args.n_perm, reference=ref)

    print(f"\ntopology family: {args.clouds} clouds of {args.n} points ({args.dim}..{3 * args.dim} dims), "
          f"greedy subsample {args.n_perm}, H0+H1, distances to the first; repeats={args.repeats}")
    print(f"{'step':<22} {'wall s':>9} {'cpu s':>9} {'ratio (wall / cpu)':>20}")
    rw, rc = _time(ripser_only, args.repeats)
    fw, fc = _time(family, args.repeats)
    print(f"{'ripser calls alone':<22} {rw:>9.2f} {rc:>9.2f} {'1.00 / 1.00':>20}")
    print(f"{'whole family':<22} {fw:>9.2f} {fc:>9.2f} {f'{fw / rw:.2f} / {fc / rc:.2f}':>20}", flush=True)
    _greedy_row(clouds, args, rw, rc)
    _distances_rows(clouds, args, rw, rc)


def _greedy_row(clouds: list, args: argparse.Namespace, rw: float, rc: float) -> None:
    """The greedy subsamples alone (the Gram matrix and the picked rows), as the family computes them."""
    from analysis.topology import greedy_permutation

    def greedy() -> None:
        for c in clouds:
            if args.n_perm < len(c):
                greedy_permutation(c, args.n_perm)

    gw, gc = _time(greedy, args.repeats)
    print(f"{'greedy subsamples':<22} {gw:>9.2f} {gc:>9.2f} {f'{gw / rw:.2f} / {gc / rc:.2f}':>20}", flush=True)


def _distances_rows(clouds: list, args: argparse.Namespace, rw: float, rc: float,
                    pairs_of: list[tuple[int, int]] | None = None) -> None:
    from analysis.topology import diagram_distances, persistent_homology

    h1 = [persistent_homology(c, n_perm=args.n_perm).diagrams[1] for c in clouds]
    h1 = [d[d[:, 1] > d[:, 0]] for d in h1]
    if pairs_of is None:
        pairs_of = [(k, 0) for k in range(1, len(h1))]
    pairs = [(h1[i], h1[j]) for i, j in pairs_of]
    ours: list[dict[str, float]] = []
    theirs: list[tuple[float, float]] = []

    def run_ours() -> None:
        ours[:] = [diagram_distances(a, b) for a, b in pairs]

    ow, oc = _time(run_ours, args.repeats)
    sizes = [len(d) for d in h1]
    print(f"diagram distances of {len(pairs)} pairs ({min(sizes)}..{max(sizes)} finite H1 bars), "
          f"ratio to the ripser calls alone:")
    print(f"{'distances, ours':<22} {ow:>9.2f} {oc:>9.2f} {f'{ow / rw:.2f} / {oc / rc:.2f}':>20}")
    try:
        from gudhi.hera import bottleneck_distance
        from gudhi.wasserstein import wasserstein_distance
    except ImportError:
        print("distances, hera + POT: skipped (gudhi and POT are test dependencies: pip install -e '.[test]')")
        return

    def run_theirs() -> None:
        theirs[:] = [(bottleneck_distance(a, b, delta=0.0), wasserstein_distance(a, b, order=1, internal_p=2))
                     for a, b in pairs]

    tw, tc = _time(run_theirs, args.repeats)
    print(f"{'distances, hera + POT':<22} {tw:>9.2f} {tc:>9.2f} {f'{tw / rw:.2f} / {tc / rc:.2f}':>20}")
    diff_b = max(abs(o["bottleneck"] - t[0]) for o, t in zip(ours, theirs))
    diff_w = max(abs(o["wasserstein"] / t[1] - 1) if t[1] else abs(o["wasserstein"])
                 for o, t in zip(ours, theirs))
    print(f"largest difference: bottleneck {diff_b:.1e} (absolute), wasserstein {diff_w:.1e} (relative)", flush=True)


def _real_clouds(args: argparse.Namespace) -> tuple[list, list[int]]:
    """Distinct reservoir clouds of ``--arch`` (random weights) probed as the study probes it.

    Returns the clouds and, for each, the index of its block input's cloud (its own index for
    an input, or when the block has no input point)."""
    import tempfile

    import numpy as np

    from analysis.study import StudyConfig, _content_key, _study_stream
    from probes.blocks import find_blocks
    from probes.loading import load_checkpoint
    from probes.points import point_name
    from probes.shard import probe_stream

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rgb.npz"
        rng = np.random.default_rng(0)
        np.savez(path, x=rng.integers(0, 256, (args.images, 3, 32, 32), dtype=np.uint8))
        config = StudyConfig(dataset=str(path))
        loaded = load_checkpoint(args.arch)
        stream = _study_stream(config, loaded.input_spec, loaded.preset.get("resize_size"))
        find_blocks(loaded.model, stream[0][None])
        pr = probe_stream(loaded.model, stream, points=config.points, batch_size=config.batch_size, device="cpu",
                          reservoir_size=config.reservoir_size, seed=config.seed, moments=config.moments,
                          moment_positions=config.moment_positions, progress=False)
    ids: dict[tuple, int] = {}
    clouds: list = []
    point_cloud: dict[str, int] = {}
    for pt in pr.points.values():
        res = pr.stats[pt.name].reservoir
        if res is None or len(res) == 0:
            continue
        cloud = np.asarray(res.values, dtype=np.float64)
        if not np.all(np.isfinite(cloud)):
            continue
        key = _content_key(cloud)
        if key not in ids:
            ids[key] = len(clouds)
            clouds.append(cloud)
        point_cloud[pt.name] = ids[key]
    ref = list(range(len(clouds)))
    for pt in pr.points.values():
        inp = point_name(pt.block, "input")
        if pt.name in point_cloud and inp in point_cloud and pt.stage != "input":
            ref[point_cloud[pt.name]] = point_cloud[inp]
    print(f"{args.arch} (random weights), {args.images} RGB 32x32 images: {len(point_cloud)} points, "
          f"{len(clouds)} distinct clouds of {min(len(c) for c in clouds)}..{max(len(c) for c in clouds)} points "
          f"({min(c.shape[1] for c in clouds)}..{max(c.shape[1] for c in clouds)} channels)")
    return clouds, ref


def _real_table(args: argparse.Namespace) -> None:
    from ripser import ripser

    from analysis.topology import greedy_permutation, persistent_homology

    clouds, ref = _real_clouds(args)
    n_perm = args.n_perm
    mats = []
    for c in clouds:
        if n_perm < len(c):
            idx, dperm2all, _ = greedy_permutation(c, n_perm)
            mats.append(dperm2all[:, idx])
        else:
            from analysis.topology import distance_matrix

            mats.append(distance_matrix(c))

    def ripser_only() -> None:
        for dm in mats:
            ripser(dm, maxdim=1, distance_matrix=True)

    def family() -> None:
        # as the study: each distinct cloud once, then its distances to its block's input
        results = [persistent_homology(c, n_perm=n_perm) for c in clouds]
        for k, r in enumerate(ref):
            if r != k:
                from analysis.topology import with_reference

                with_reference(results[k], results[r])

    print(f"\ntopology family on real clouds: greedy subsample {n_perm}, H0+H1, distances to the block input; "
          f"repeats={args.repeats}")
    print(f"{'step':<22} {'wall s':>9} {'cpu s':>9} {'ratio (wall / cpu)':>20}")
    rw, rc = _time(ripser_only, args.repeats)
    fw, fc = _time(family, args.repeats)
    print(f"{'ripser calls alone':<22} {rw:>9.2f} {rc:>9.2f} {'1.00 / 1.00':>20}")
    print(f"{'whole family':<22} {fw:>9.2f} {fc:>9.2f} {f'{fw / rw:.2f} / {fc / rc:.2f}':>20}", flush=True)
    _greedy_row(clouds, args, rw, rc)
    pairs = [(k, r) for k, r in enumerate(ref) if r != k]
    if pairs:
        _distances_rows(clouds, args, rw, rc, pairs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="points in the cloud (default 2000)")
    parser.add_argument("--dim", type=int, default=64, help="ambient dimension (default 64)")
    parser.add_argument("--noise", type=float, default=0.1, help="noise std relative to the radius (default 0.1)")
    parser.add_argument("--n-perm", type=int, default=500, help="greedy subsample size (default 500)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per row, the fastest is shown (default 1)")
    parser.add_argument("--clouds", type=int, default=6, help="clouds in the family table (default 6)")
    parser.add_argument("--family-only", action="store_true", help="print only the family tables")
    parser.add_argument("--real-only", action="store_true", help="print only the real-cloud table")
    parser.add_argument("--no-real", action="store_true", help="leave out the real-cloud table")
    parser.add_argument("--images", type=int, default=48, help="images probed for the real clouds (default 48)")
    parser.add_argument("--arch", default="torchvision:mobilenet_v2", help="model of the real clouds")
    parser.add_argument("--threads", type=int, default=1, help="torch and BLAS threads (default 1)")
    args = parser.parse_args(argv)

    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    # imported here so that their import time is not counted
    try:
        import gudhi.hera  # noqa: F401
        import gudhi.wasserstein  # noqa: F401
    except ImportError:
        pass
    from ripser import ripser

    from analysis.topology import persistent_homology
    from tests.manifolds import make_manifold

    if args.real_only:
        _real_table(args)
        return 0
    if args.family_only:
        _family_table(args)
        if not args.no_real:
            _real_table(args)
        return 0
    x = make_manifold("circle", args.n, noise=args.noise, seed=0, ambient_dim=args.dim)
    rows = [
        ("ripser", None, lambda: ripser(x, maxdim=1)),
        ("ours", None, lambda: persistent_homology(x, maxdim=1)),
        ("ripser", args.n_perm, lambda: ripser(x, maxdim=1, n_perm=args.n_perm)),
        ("ours", args.n_perm, lambda: persistent_homology(x, maxdim=1, n_perm=args.n_perm)),
    ]
    print(f"noisy circle (noise {args.noise}), {args.n} points in {args.dim} dims, H0+H1, repeats={args.repeats}")
    print(f"{'step':<8} {'points used':>11} {'wall s':>9} {'cpu s':>9} {'overhead (wall / cpu)':>22}")
    base: tuple[float, float] | None = None
    for name, n_perm, func in rows:
        wall, cpu = _time(func, args.repeats)
        used = args.n if n_perm is None else min(n_perm, args.n)
        if name == "ripser":
            base, note = (wall, cpu), "baseline"
        else:
            assert base is not None
            note = f"{wall / base[0] - 1:+.1%} / {cpu / base[1] - 1:+.1%}"
        print(f"{name:<8} {used:>11} {wall:>9.2f} {cpu:>9.2f} {note:>22}", flush=True)
    _family_table(args)
    res = persistent_homology(x, n_perm=args.n_perm)
    print(f"subsample metrics: betti0={res.metrics['betti0']:.0f} betti1={res.metrics['betti1']:.0f} "
          f"cover radius={res.cover_radius:.3f} (units of the RMS scale)")
    if not args.no_real:
        _real_table(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
