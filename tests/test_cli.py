"""The command lines users type: `semivl-edge` (its parser and errors) and `python stages/<name>.py --help`."""
from __future__ import annotations

import subprocess
import sys

import pytest

from semivl_edge.cli import build_parser, main

from conftest import REPO


def test_parser_knows_the_tools_and_no_second_way_to_run_a_stage(capsys):
    parser = build_parser()
    assert parser.parse_args(["summary"]).module == "semivl_edge.tools.summary"
    assert parser.parse_args(["bench", "model"]).module == "semivl_edge.tools.bench_model"
    assert parser.parse_args(["bench", "deploy", "--image-size", "64"]).module == "semivl_edge.tools.bench_deploy"
    for argv in (["stage", "train"], [], ["bench"], ["summary", "--image-size", "many"]):
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args(argv)
        assert exit_info.value.code == 2, argv
    assert "invalid choice: 'stage'" in capsys.readouterr().err


def test_a_tool_error_is_one_line_and_exit_code_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["summary", "--clip-model", "ViT-Nope"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: clip.model: unknown open_clip model 'ViT-Nope'")


@pytest.mark.parametrize("stage", ["splits"])  # train imports torch for its --help: 12 s
def test_stage_help_says_what_the_stage_does(stage):
    result = subprocess.run([sys.executable, str(REPO / "stages" / f"{stage}.py"), "--help"],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert f"usage: stages/{stage}.py [-h] [--params PARAMS]" in result.stdout
    assert f"Stage `{stage}`" in result.stdout
