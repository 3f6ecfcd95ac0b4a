"""Rerun the tries of issue 13 against the real CLI and dashboard code; print the four counts.

    PYTHONPATH=. python tests/security/rerun_issue13.py

payloads run (marker files created), orphaned processes (alive 20 s after the report process
was killed), tracebacks (stderr of a failing command holding "Traceback" or more than one
line), results lost (a finished result neither at --out nor at the rescue path named).
Not collected by pytest (its name does not start with test_); takes a few minutes.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
CLI = [sys.executable, "-m", "analysis.cli"]


class _Reduce:
    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=timeout)


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="issue13-"))
    marker = work / "PWNED"
    touch = f"open({str(marker)!r}, 'w').close()"
    tracebacks: list[str] = []
    failures = 0

    def expect_error(name: str, proc: subprocess.CompletedProcess) -> None:
        nonlocal failures
        failures += 1
        err = proc.stderr.strip()
        bad = proc.returncode == 0 or "Traceback" in err or len(err.splitlines()) != 1
        print(f"  {name:38s} exit {proc.returncode}  {err.splitlines()[-1][:150] if err else '(no stderr)'}")
        if bad:
            tracebacks.append(name)

    # ------------------------------------------------------------------ payloads
    payloads = {
        "os.system (torch.save)": ("torch", _Reduce(os.system, f"touch {marker}")),
        "os.system (pickle p4)": ("pickle", _Reduce(os.system, f"touch {marker}")),
        "exec": ("torch", _Reduce(exec, touch)),
        "eval": ("torch", _Reduce(eval, touch)),
        "subprocess.call": ("torch", _Reduce(subprocess.call, ["touch", str(marker)])),
        "builtins.getattr": ("torch", _Reduce(getattr, object, "__subclasses__")),
    }
    files = []
    for name, (writer, obj) in payloads.items():
        path = work / f"{name.split()[0].replace('.', '_')}-{writer}.pt"
        obj = {"weight": torch.zeros(2), "x": obj}
        if writer == "torch":
            torch.save(obj, path)
        else:
            path.write_bytes(pickle.dumps(obj, protocol=4))
        files.append((name, path))
    torch.save(nn.Linear(2, 2), work / "whole.pt")
    files.append(("whole module", work / "whole.pt"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(nn.Linear(2, 2)).save(str(work / "ts.pt"))
    files.append(("TorchScript", work / "ts.pt"))
    print("payloads through the CLI (probe):")
    for name, path in files:
        expect_error(name, cli("probe", str(path), "--arch", "torchvision:mobilenet_v2", "--n-images", "4"))

    print("payloads through the dashboard's loader and architecture check:")
    from dashboard.views import probe_checkpoint as page

    class Upload:
        def __init__(self, path: Path) -> None:
            self.name, self._data = path.name, path.read_bytes()
            self.size = len(self._data)

        def getvalue(self) -> bytes:
            return self._data

    (work / "evil.py").write_text(f"{touch}\ndef build():\n    return None\n")
    dash_refused = 0
    for name, path in files:
        try:
            page.load_upload(Upload(path), None, "torchvision:mobilenet_v2")
        except ValueError:
            dash_refused += 1
    for arch in ("os:abort", "os:getpid", f"{work / 'evil.py'}:build"):
        try:
            page.load_upload(Upload(work / "whole.pt"), None, arch)
        except ValueError:
            dash_refused += 1
        try:
            page.checked_architecture(arch)
        except ValueError:
            dash_refused += 1
    print(f"  refused {dash_refused} of {len(files) + 6}")

    # ------------------------------------------------------------------ bad inputs: one line each
    print("bad inputs:")
    from probes._io import sha256_file
    from probes.zoo import ZooConfig, build_model

    cfg = ZooConfig(input_size=32, num_classes=3, width_mult=0.35, head_channels=32, in_channels=1)
    state = {k: v.contiguous() for k, v in build_model(cfg).state_dict().items()}
    for name, change in (("width_mult abc", {"width_mult": "abc"}), ("width_mult 1000", {"width_mult": 1000})):
        folder = work / name.replace(" ", "_")
        folder.mkdir()
        save_file(state, str(folder / "m.safetensors"))
        conf = {**cfg.to_dict(), **change}
        (folder / "m.json").write_text(json.dumps({"name": "m", "architecture": {"family": "zoo", "config": conf},
                                                   "weights_file": "m.safetensors",
                                                   "sha256": sha256_file(folder / "m.safetensors")}))
        expect_error(f"card {name}", cli("probe", str(folder / "m.safetensors"), "--n-images", "4"))
    (work / "badjson").mkdir()
    save_file(state, str(work / "badjson" / "m.safetensors"))
    (work / "badjson" / "m.json").write_text("{")
    expect_error("card bad JSON", cli("probe", str(work / "badjson" / "m.safetensors")))
    nan = dict(state)
    nan["classifier.weight"] = nan["classifier.weight"].clone()
    nan["classifier.weight"][0, 0] = float("nan")
    (work / "nan").mkdir()
    save_file(nan, str(work / "nan" / "m.safetensors"))
    (work / "nan" / "m.json").write_text(json.dumps({"name": "m", "architecture": {"family": "zoo", "config": cfg.to_dict()},
                                                     "input": {"size": 32, "channels": 1, "mean": [0.5], "std": [0.5]}}))
    expect_error("NaN weights", cli("probe", str(work / "nan" / "m.safetensors"), "--n-images", "4"))
    (work / "rand.pt").write_bytes(os.urandom(4096))
    expect_error("random bytes", cli("probe", str(work / "rand.pt"), "--arch", "torchvision:mobilenet_v2"))
    (work / "adir.pt").mkdir()
    expect_error("directory as checkpoint", cli("probe", str(work / "adir.pt"), "--arch", "torchvision:mobilenet_v2"))
    (work / "afile").write_text("x")
    expect_error("probe --out a folder", cli("probe", "digits-linear-s0", "--out", str(work)))
    expect_error("probe --out under a file", cli("probe", "digits-linear-s0", "--out", str(work / "afile" / "m.csv")))
    expect_error("report --out under a file", cli("report", "analysis/configs/smoke.toml", "--out", str(work / "afile" / "r")))
    bad_points = work / "points.toml"
    bad_points.write_text((REPO / "analysis/configs/smoke.toml").read_text().replace(
        'points = ["blocks.1.*", "blocks.2.*"]', 'points = "blocks.*.projcet"'))
    expect_error("report study.points typo", cli("report", str(bad_points), "--out", str(work / "r0")))
    expect_error("regnet builds, bad images", cli("predict", "torchvision:regnet_y_400mf", str(work / "afile")))

    # ------------------------------------------------------------------ lock, orphans
    tiny = work / "tiny.toml"
    tiny.write_text((REPO / "analysis/configs/smoke.toml").read_text().replace("n_images = 16", "n_images = 300"))
    orphans = 0
    for sig in (signal.SIGKILL, signal.SIGTERM):
        out = work / f"report-{sig.name}"
        proc = subprocess.Popen([*CLI, "report", str(tiny), "--out", str(out), "--workers", "2"], cwd=REPO, env=ENV,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        deadline = time.monotonic() + 120
        kids: set[int] = set()
        while time.monotonic() < deadline and len(kids) < 3:
            kids = _descendants(proc.pid)
            time.sleep(0.5)
        if sig == signal.SIGKILL:
            second = cli("report", str(tiny), "--out", str(out), timeout=300)
            expect_error("second report on a locked folder", second)
        proc.send_signal(sig)
        proc.wait(timeout=60)
        time.sleep(20)
        alive = [p for p in kids if _alive(p)]
        orphans += len(alive)
        print(f"  report {sig.name}: {len(kids)} descendants before, {len(alive)} alive 20 s after")
        for p in alive:
            os.kill(p, signal.SIGKILL)

    # ------------------------------------------------------------------ late write failure
    target_dir = work / "late"
    target_dir.mkdir()
    proc = subprocess.Popen([*CLI, "probe", "digits-linear-s0", "--n-images", "16", "--metrics", "spectrum",
                             "--quiet", "--out", str(target_dir / "m.csv")], cwd=REPO, env=ENV,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(3)  # checked and started; now the folder disappears under it
    shutil.rmtree(target_dir)
    target_dir.write_text("now a file")
    err = proc.communicate(timeout=600)[1].strip()
    rescued = err.rsplit("saved to '", 1)[-1].split("'")[0] if "saved to" in err else ""
    lost = 0 if rescued and Path(rescued).is_file() and Path(rescued).stat().st_size > 0 else 1
    print(f"  late write failure: exit {proc.returncode}; {err.splitlines()[-1][:200] if err else ''}")

    print()
    print(f"payloads run: {int(marker.exists())}")
    print(f"orphaned processes: {orphans}")
    print(f"tracebacks (or multi-line / exit-0 errors): {len(tracebacks)} of {failures} failing commands {tracebacks}")
    print(f"results lost: {lost}")


def _descendants(pid: int) -> set[int]:
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {c for c, p in parents.items() if p in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


if __name__ == "__main__":
    main()
