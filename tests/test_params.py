"""params.yaml is the one source of the parameters: every key known, every key read from it, typos named."""
from __future__ import annotations

import ast
import subprocess
import sys

import pytest
import yaml

from semivl_edge.errors import PipelineError
from semivl_edge.params import PARAMETERS, Params

from conftest import REPO, committed_params

GETTERS = {"raw", "get_int", "get_float", "get_bool", "get_str", "get_optional_str", "get_list"}


def leaves(node: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in node.items():
        keys |= leaves(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}"}
    return keys


def keys_read_by_the_code() -> set[str]:
    """Every literal key passed to a Params getter anywhere in the package."""
    keys = set()
    for path in (REPO / "src" / "semivl_edge").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in GETTERS
                    and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                keys.add(node.args[0].value)
    return keys


def test_the_committed_params_hold_exactly_the_known_keys():
    assert leaves(yaml.safe_load((REPO / "params.yaml").read_text())) == set(PARAMETERS)


def test_every_key_the_code_reads_is_a_known_parameter_and_every_parameter_is_read():
    read = keys_read_by_the_code()
    assert read - PARAMETERS == set()
    assert PARAMETERS - read == set()


@pytest.mark.parametrize("key, value, message", [
    ("train.iteration", 5, "unknown parameter train.iteration (did you mean train.iterations?)"),
    ("eval.stirde", 5, "unknown parameter eval.stirde (did you mean eval.stride?)"),
    ("zzz", 1, "unknown parameter zzz"),
    ("train.optim", 3, "train.optim must be a section of parameters, got a single value"),
])
def test_unknown_or_misspelled_keys_stop_with_the_nearest_valid_one(key, value, message):
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    node = data
    *parents, last = key.split(".")
    for part in parents:
        node = node[part]
    node[last] = value
    with pytest.raises(PipelineError) as error:
        Params(data, source="params.yaml")
    assert str(error.value) == f"params.yaml: {message}"


def test_a_missing_key_is_named_not_defaulted():
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    del data["train"]["save"]
    from semivl_edge.train.config import TrainConfig

    with pytest.raises(PipelineError, match=r"^params.yaml: missing parameter train.save$"):
        TrainConfig.from_params(Params(data))


@pytest.mark.parametrize("overrides, message", [
    ({"train": {"iterations": "many"}}, "train.iterations must be an integer >= 1 or \"<E> epochs\" (e.g. \"80 epochs\"), got 'many'"),
    ({"train": {"iterations": 0}}, "train.iterations must be an integer >= 1 or \"<E> epochs\" (e.g. \"80 epochs\"), got 0"),
    ({"train": {"batch_size": -2}}, "train.batch_size must be an integer >= 1, got -2"),
    ({"train": {"optim": {"lr": 0}}}, "train.optim.lr must be a number > 0.0, got 0"),
    ({"train": {"optim": {"lr": -1e-4}}}, "train.optim.lr must be a number > 0.0, got -0.0001"),
    ({"train": {"method": "fixmatch"}}, "train.method must be one of supervised, unimatch, semivl, got 'fixmatch'"),
    ({"train": {"amp": True}}, "train.amp must be a non-empty string, got True"),
    ({"train": {"unimatch": {"conf_threshold": 1.5}}}, "train.unimatch.conf_threshold must be a number <= 1.0, got 1.5"),
    ({"eval": {"stride": 200}}, "eval.stride (200) must not exceed eval.crop_size (128): windows would leave gaps"),
])
def test_wrong_train_parameters_are_one_line_errors(overrides, message):
    from semivl_edge.train.config import TrainConfig

    with pytest.raises(PipelineError) as error:
        TrainConfig.from_params(committed_params(overrides))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_stage_stops_on_a_misspelled_key_with_exit_code_2(tmp_path):
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    data["split"]["labelled"] = 92
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
    result = subprocess.run([sys.executable, str(REPO / "stages" / "splits.py")], cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == \
        "error: params.yaml: unknown parameter split.labelled (did you mean split.labeled?)"
    assert not (tmp_path / "data").exists()
