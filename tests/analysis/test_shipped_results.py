"""The shipped results recompute byte for byte (issue 15: behaviour stays identical).

``checkpoints/results/`` holds the studies that ``scripts/precompute_results.py`` made with
:func:`analysis.study.compute_shipped`. Recomputing the cheapest one (digits-linear-s9, about
35 s of CPU time) through the same function, in a fresh process started with
:data:`analysis.study.SHIPPED_ENV` (kernels pinned to AVX2, as the script's workers are), must
give the same files: the metrics table
byte for byte, and in the ``.npz`` every detail array byte for byte and the provenance equal
except ``seconds`` (wall-clock timings, which legitimately differ; the zip entries carry a
fixed 1980 date, so nothing else in the file varies).

When metric code changes on purpose, the shipped results are recomputed with
``scripts/precompute_results.py --force`` in the same commit, and this test passes again.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.study import SHIPPED_ENV, compute_shipped, read_table, shipped_result_path

ROOT = Path(__file__).resolve().parents[2]

NAME, DATASET = "digits-linear-s9", "digits"


def _npz(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k != "__meta__"}
        meta = json.loads(str(z["__meta__"]))
    return arrays, meta


def _value_changes(new: Path, old: Path) -> str:
    """Which metrics changed and by how much (the failure message), or which columns differ."""
    a, b = read_table(new.with_suffix(".parquet")), read_table(old.with_suffix(".parquet"))
    if list(a.columns) != list(b.columns) or len(a) != len(b):
        return f"columns/rows {list(a.columns)} x {len(a)} vs {list(b.columns)} x {len(b)}"
    x, y = a["value"].to_numpy(float), b["value"].to_numpy(float)
    same = (x == y) | (np.isnan(x) & np.isnan(y))
    if same.all():
        other = [c for c in a.columns if not a[c].equals(b[c])]
        return f"values equal; columns {other} differ"
    rel = np.abs(x - y) / np.maximum(np.abs(y), 1e-12)
    per = (pd.DataFrame({"metric": a["metric"], "rel": rel})[~same].groupby("metric")["rel"]
           .agg(["size", "max"]).sort_values("max", ascending=False))
    return (f"{int((~same).sum())} of {len(x)} values; per metric (count, max relative difference): "
            + "; ".join(f"{m} {int(r['size'])} {r['max']:.2g}" for m, r in per.head(12).iterrows()))


def test_cheapest_shipped_study_recomputes_byte_for_byte(tmp_path: Path) -> None:
    shipped = shipped_result_path(NAME, DATASET)
    assert shipped.with_suffix(".parquet").is_file() and shipped.with_suffix(".npz").is_file(), (
        f"the shipped study {shipped} is missing (committed under checkpoints/results/)")
    again = tmp_path / shipped.name
    # numpy, OpenBLAS, torch and oneDNN read the pinned instruction set when they load, so the
    # recompute runs in a fresh interpreter (this one loaded them already)
    code = ("import sys; from analysis.study import compute_shipped; "
            "compute_shipped(sys.argv[1], sys.argv[2]).save(sys.argv[3])")
    run = subprocess.run([sys.executable, "-c", code, NAME, DATASET, str(again)], cwd=ROOT,
                         env={**os.environ, **SHIPPED_ENV}, capture_output=True, text=True)
    assert run.returncode == 0, f"recompute failed:\n{run.stderr[-3000:]}"

    if again.with_suffix(".parquet").read_bytes() != shipped.with_suffix(".parquet").read_bytes():
        pytest.fail("metrics table differs from the shipped one (recompute with scripts/precompute_results.py "
                    f"--force if the change is meant): {_value_changes(again, shipped)}")

    arrays, meta = _npz(again.with_suffix(".npz"))
    ref_arrays, ref_meta = _npz(shipped.with_suffix(".npz"))
    assert sorted(arrays) == sorted(ref_arrays)
    differ = [k for k in ref_arrays if arrays[k].dtype != ref_arrays[k].dtype
              or arrays[k].shape != ref_arrays[k].shape or arrays[k].tobytes() != ref_arrays[k].tobytes()]
    assert differ == []
    assert set(meta["seconds"]) == set(ref_meta["seconds"])
    meta.pop("seconds"), ref_meta.pop("seconds")
    assert meta == ref_meta


def test_compute_shipped_pins_one_thread_and_restores_the_count(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    from threadpoolctl import threadpool_info

    import analysis.study as study

    seen = []

    def fake(*a: object, **k: object) -> None:
        blas = {p["num_threads"] for p in threadpool_info()}
        seen.append((torch.get_num_threads(), blas, a, k))

    monkeypatch.setattr(study, "run_study", fake)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        compute_shipped(NAME, DATASET)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    (threads, blas, args, kwargs), = seen
    assert threads == 1 and blas <= {1}
    assert args[0] == NAME and args[1] == dataclasses.replace(study.SHIPPED_CONFIG, dataset=DATASET)
    assert kwargs["device"] == "cpu"


def test_shipped_env_pins_every_kernel_family_below_avx512() -> None:
    """SHIPPED_ENV reaches the libraries: in a process started with it, torch dispatches to at
    most AVX2, numpy's AVX-512 loops are off and OpenBLAS runs Haswell (AVX2) kernels, whatever
    this machine has."""
    code = ("import json, numpy, torch, scipy.linalg; from threadpoolctl import threadpool_info; "
            "from numpy._core._multiarray_umath import __cpu_features__ as f; "
            "print(json.dumps({'torch': torch.backends.cpu.get_cpu_capability(), 'v4': f.get('X86_V4', False), "
            "'blas': sorted({i.get('architecture') for i in threadpool_info() if i['internal_api'] == 'openblas'})}))")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, **SHIPPED_ENV},
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert seen["torch"] in {"AVX2", "DEFAULT", "NO AVX"}
    assert seen["v4"] is False
    assert seen["blas"] and all(a in {"Haswell", "Sandybridge", "Nehalem", "Prescott", "Core2"} for a in seen["blas"])
