"""Outputs: checked before any work, and a result whose write fails late is kept and its place
named (issue 13, item 4)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pandas as pd
import pytest

from analysis import cli
from probes import _io
from probes._io import OutputRescued, check_output, save_or_rescue


def test_file_output_that_is_a_folder(tmp_path: Path) -> None:
    for suffixes in (None, (".csv",)):
        with pytest.raises(ValueError, match=rf"^The --out path '{tmp_path}' is a folder; expected a file name\.$"):
            check_output(tmp_path, suffixes=suffixes)


def test_output_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match=r"lies under '.*/f', which is a file, not a folder"):
        check_output(tmp_path / "f" / "sub" / "m.csv", suffixes=(".csv",))
    with pytest.raises(ValueError, match=r"lies under '.*/f', which is a file"):
        check_output(tmp_path / "f" / "report", kind="folder")


def test_folder_output_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match=r"The --out path '.*/f' exists and is not a folder\."):
        check_output(tmp_path / "f", kind="folder")


def test_wrong_suffix_names_the_parameter(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"The --figure file '.*fig\.gif' must end in \.png or \.svg\."):
        check_output(tmp_path / "fig.gif", suffixes=(".png", ".svg"), name="--figure")


def test_read_only_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # root ignores permission bits, so the read-only mount is simulated at the probe file
    def read_only(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(_io.tempfile, "mkstemp", read_only)
    with pytest.raises(ValueError, match=r"cannot be written: folder '.*' is not writable \(Read-only file system\)"):
        check_output(tmp_path / "new" / "m.parquet")


def test_check_leaves_nothing_behind(tmp_path: Path) -> None:
    check_output(tmp_path / "a" / "b.csv")
    assert list(tmp_path.iterdir()) == []


def test_late_failure_is_rescued_next_to_the_path(tmp_path: Path) -> None:
    target = tmp_path / "out.csv"

    def write(path: Path) -> None:
        if path == target:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        path.write_text("result")

    with pytest.raises(OutputRescued) as err:
        save_or_rescue(write, target)
    rescued = err.value.rescued
    assert rescued.parent == tmp_path and rescued.read_text() == "result"
    assert str(err.value) == (f"could not write '{target}' (No space left on device); the result was "
                              f"saved to '{rescued}' instead")


def test_late_failure_falls_back_to_a_temporary_folder(tmp_path: Path) -> None:
    def write(path: Path) -> None:
        if path.parent == tmp_path:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        path.write_text("result")

    with pytest.raises(OutputRescued) as err:
        save_or_rescue(write, tmp_path / "out.csv")
    assert err.value.rescued.name == "out.csv" and err.value.rescued.read_text() == "result"
    assert "bnprobe-rescued-" in str(err.value.rescued.parent)


def _no_work(*args: object, **kwargs: object) -> None:
    raise AssertionError("work started before the output was checked")


@pytest.mark.parametrize("argv", [
    ["probe", "digits-linear-s0", "--out", "{dir}"],
    ["probe", "digits-linear-s0", "--out", "{file}/m.parquet"],
    ["spiral", "--out", "{dir}"],
    ["spiral", "--figure", "{file}/fig.png"],
    ["report", "cfg.toml", "--out", "{file}"],
    ["train", "digits-linear-s0", "--out", "{file}"],
])
def test_cli_checks_out_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys,
                                        argv: list[str]) -> None:
    import analysis.report
    import analysis.spiral
    import analysis.study
    import probes.loading
    import probes.train

    for mod, name in ((probes.loading, "load_checkpoint"), (analysis.spiral, "run_spiral"),
                      (analysis.report, "run_report"), (probes.train, "train"),
                      (analysis.study, "run_study")):
        monkeypatch.setattr(mod, name, _no_work)
    (tmp_path / "file").write_text("x")
    args = [a.format(dir=tmp_path, file=tmp_path / "file") for a in argv]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"bnprobe {argv[0]}: error: The --") and err.count("\n") == 1, err


def test_cli_rescues_a_finished_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import analysis.spiral
    import analysis.study

    table = pd.DataFrame({"dims": [2], "error": [0.5]})
    monkeypatch.setattr(analysis.spiral, "run_spiral", lambda *a, **k: (table, None))
    real = analysis.study.write_table
    target = tmp_path / "spiral.csv"

    def failing(df: pd.DataFrame, path: Path) -> None:
        if Path(path) == target:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        real(df, path)

    monkeypatch.setattr(analysis.study, "write_table", failing)
    assert cli.main(["spiral", "--out", str(target)]) == 1
    err = capsys.readouterr().err.strip()
    rescued = tmp_path / f"spiral.rescued-{os.getpid()}.csv"
    assert err == (f"bnprobe spiral: error: could not write '{target}' (Permission denied); the result "
                   f"was saved to '{rescued}' instead")
    pd.testing.assert_frame_equal(pd.read_csv(rescued), table)
