"""`bnprobe` command line: every subcommand works, bad input exits 2 with one line."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis.cli import build_parser, main
from analysis.study import SCHEMA_COLUMNS
from probes.catalogue import list_checkpoints


def _need(name: str) -> None:
    if name not in {c["name"] for c in list_checkpoints()}:
        pytest.fail(f"shipped checkpoint {name} is missing: checkpoints/{name}.safetensors and .json")


@pytest.mark.parametrize("command", ["checkpoints", "train", "probe", "spiral", "report", "predict"])
def test_every_subcommand_has_help(command: str, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert "usage: bnprobe " + command in capsys.readouterr().out


def test_checkpoints_lists_shipped_checkpoints(capsys) -> None:
    cards = list_checkpoints()
    assert cards, "no shipped checkpoint (*.safetensors with its .json card) in checkpoints/"
    assert main(["checkpoints"]) == 0
    out = capsys.readouterr().out
    for card in cards:
        assert card["name"] in out
        assert f"{card['test_accuracy']:.4f}"[:5] in out


def test_zoo_is_a_deprecated_alias_of_checkpoints(capsys) -> None:
    assert main(["checkpoints"]) == 0
    new = capsys.readouterr()
    assert main(["zoo"]) == 0
    old = capsys.readouterr()
    assert old.out == new.out
    assert old.err == "bnprobe zoo is deprecated; use bnprobe checkpoints (the zoo is the architecture).\n"


def test_probe_writes_tidy_table(tmp_path, capsys) -> None:
    _need("digits-relu6-s0")
    out = tmp_path / "m.csv"
    code = main(["probe", "digits-relu6-s0", "--n-images", "12", "--points", "blocks.2.*",
                 "--families", "spectrum", "activity", "--reservoir", "50", "--out", str(out), "--quiet"])
    assert code == 0
    df = pd.read_csv(out, keep_default_na=True)
    assert list(df.columns) == list(SCHEMA_COLUMNS)
    assert set(df.point) <= {f"blocks.2.{s}" for s in ("input", "expand.pre", "expand", "depthwise.pre",
                                                        "depthwise", "project.pre", "project", "output")}
    assert {"rank", "dead_fraction", "positive_mean"} <= set(df.metric)


def test_unknown_checkpoint_is_one_line_listing_names(capsys) -> None:
    _need("digits-linear-s0")
    assert main(["probe", "no-such-net"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert err.startswith("bnprobe probe: error:") and "digits-linear-s0" in err


def test_bad_output_suffix_fails_before_work(tmp_path, capsys) -> None:
    assert main(["spiral", "--dims", "2", "--seeds", "0", "--out", str(tmp_path / "s.xlsx")]) == 2
    assert "must end in .parquet or .csv" in capsys.readouterr().err


def test_spiral_table(tmp_path) -> None:
    out = tmp_path / "spiral.csv"
    assert main(["spiral", "--dims", "2", "30", "--seeds", "0", "--out", str(out)]) == 0
    df = pd.read_csv(out)
    active = df[df.method == "active_set"].set_index("n").recon_error
    assert active[30] < 1e-6 < active[2]


def test_unknown_recipe(capsys) -> None:
    assert main(["train", "digits-magic-s9", "--out", "unused"]) == 2
    err = capsys.readouterr().err
    assert "unknown recipe 'digits-magic-s9'" in err and "digits-linear-s0" in err


def test_parser_defaults() -> None:
    args = build_parser().parse_args(["probe", "x"])
    assert args.dataset == "digits" and args.split == "test" and args.out is None


def test_probe_options_are_the_study_schema() -> None:
    """One option per StudyConfig field with a CLI name, its default the schema's; unset options
    give exactly StudyConfig()."""
    from analysis.cli import _study_config
    from analysis.settings import STUDY_FIELDS, StudyConfig

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["probe"]
    by_dest = {a.dest: a for a in sub._actions}
    assert {n for n, s in STUDY_FIELDS.items() if s.cli} == set(STUDY_FIELDS) == set(by_dest) & set(STUDY_FIELDS)
    for name, spec in STUDY_FIELDS.items():
        action = by_dest[name]
        assert action.option_strings == [spec.cli]
        assert action.default == (None if spec.kind == "names" else getattr(StudyConfig(), name)), name
        if spec.choices:
            assert list(action.choices) == list(spec.choices), name
    assert _study_config(build_parser().parse_args(["probe", "x"])) == StudyConfig()
    args = build_parser().parse_args(["probe", "x", "--moments", "exact", "--topology-maxdim", "2", "--rtol", "1e-4",
                                      "--families", "spectrum", "--gray-to-rgb"])
    assert _study_config(args) == StudyConfig(moments="exact", topology_maxdim=2, rtol=1e-4, families=("spectrum",),
                                              gray_to_rgb=True)


@pytest.mark.parametrize("argv, message", [
    (["--reservoir", "5"], "bnprobe probe: error: argument --reservoir: must be an int >= 10. Got 5 instead."),
    (["--rtol", "2"], r"bnprobe probe: error: argument --rtol: must be a float in (0, 1). Got 2.0 instead."),
    (["--n-images", "1"], "bnprobe probe: error: argument --n-images: must be an int >= 2 or None. Got 1 instead."),
    (["--metrics", "spectrum", "--families", "spectrum"],
     "bnprobe probe: error: --metrics is the deprecated name of --families; give only --families"),
])
def test_bad_study_option_is_one_line_naming_the_option_before_loading(argv, message, capsys) -> None:
    assert main(["probe", "no-such-net", *argv]) == 2  # the config fails before the checkpoint is read
    assert capsys.readouterr().err.strip().splitlines()[-1] == message


def test_deprecated_metrics_option_still_selects_families_and_warns(capsys) -> None:
    from analysis.cli import _study_config

    config = _study_config(build_parser().parse_args(["probe", "x", "--metrics", "spectrum", "topology"]))
    assert config.families == ("spectrum", "topology")
    assert capsys.readouterr().err == ("bnprobe probe: warning: --metrics is deprecated and will be removed; use "
                                       "--families (it takes metric family names)\n")


def test_surgery_rejects_a_bad_figure_suffix_before_work(tmp_path, capsys) -> None:
    assert main(["surgery", "digits-relu6-s0", "--figure", str(tmp_path / "s.gif")]) == 2
    assert "must end in .png, .svg or .pdf" in capsys.readouterr().err


def test_surgery_unknown_checkpoint(capsys) -> None:
    assert main(["surgery", "digits-magic-s9", "--blocks", "0"]) == 2
    assert "digits-magic-s9" in capsys.readouterr().err


@pytest.mark.parametrize(("flag", "value", "low"), [("--workers", "0", 1), ("--loader-workers", "-1", 0)])
def test_probe_worker_counts_are_checked_before_work(flag, value, low, capsys) -> None:
    assert main(["probe", "no-such-net", flag, value]) == 2
    assert capsys.readouterr().err.strip() == f"bnprobe probe: error: {flag} must be an int >= {low}; got {value}"
