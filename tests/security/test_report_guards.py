"""A report's output folder is locked against a second run, and its config's capture-point
globs are checked before any job (issue 13, items 6 and 9)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from analysis import report as rp
from analysis.report import jobs, run


def test_second_run_on_the_folder_names_the_holder(tmp_path: Path) -> None:
    with jobs._locked(tmp_path / "out"):
        with pytest.raises(ValueError, match=rf"^The report folder '{tmp_path}/out' is in use by another "
                                             rf"bnprobe report \(PID {os.getpid()}\); wait for it"):
            with jobs._locked(tmp_path / "out"):
                pass
    with jobs._locked(tmp_path / "out"):  # released on exit
        pass


def test_lock_held_by_another_process(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = ("import sys, time; from pathlib import Path; from analysis.report.jobs import _locked\n"
            "with _locked(Path(sys.argv[1])):\n    print('locked', flush=True); time.sleep(60)\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    holder = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "locked"  # type: ignore[union-attr]
        with pytest.raises(ValueError, match=rf"in use by another bnprobe report \(PID {holder.pid}\)"):
            with jobs._locked(out):
                pass
    finally:
        holder.kill()
        holder.wait()
    with jobs._locked(out):  # the kernel released the dead holder's lock
        pass


def test_run_report_stops_at_the_lock_before_any_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run, "_execute", lambda *a, **k: pytest.fail("a job ran"))
    config = Path(__file__).resolve().parents[2] / "analysis" / "configs" / "smoke.toml"
    with jobs._locked(tmp_path / "out"):
        with pytest.raises(ValueError, match=r"is in use by another bnprobe report"):
            rp.run_report(config, tmp_path / "out", workers=1, progress=False)


@pytest.mark.parametrize("points", ["blocks.*.projcet", ["blocks.1.*", "block.2.input"], "stem"])
def test_point_globs_that_match_nothing_fail_before_work(tmp_path: Path, points) -> None:
    text = (Path(__file__).resolve().parents[2] / "analysis" / "configs" / "smoke.toml").read_text()
    value = points if isinstance(points, str) else None
    line = f'points = "{value}"' if value else "points = " + str(points).replace("'", '"')
    text = text.replace('points = ["blocks.1.*", "blocks.2.*"]', line)
    (tmp_path / "cfg.toml").write_text(text)
    bad = points if isinstance(points, str) else points[1]
    with pytest.raises(ValueError, match=rf"study\.points.*Got '{bad.replace('.', '[.]').replace('*', '[*]')}' instead"):
        rp.load_config(tmp_path / "cfg.toml")


def test_bad_card_in_a_report_fails_at_config_time(tmp_path: Path) -> None:
    import json

    import torch
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "m.safetensors"))
    (tmp_path / "m.json").write_text(json.dumps({"architecture": {"family": "zoo", "config": {"width_mult": "abc"}}}))
    text = (Path(__file__).resolve().parents[2] / "analysis" / "configs" / "smoke.toml").read_text()
    text = text.replace('zoo = ["*-linear-s0", "*-relu6-s0"]', 'files = ["m.safetensors"]')
    (tmp_path / "cfg.toml").write_text(text)
    with pytest.raises(ValueError, match=r"^Card .*m\.json: key 'architecture\.config\.width_mult' must be a number"):
        rp.load_config(tmp_path / "cfg.toml")
