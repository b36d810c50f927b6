"""DVC sees every code change: each stage's `deps` are exactly the project files its command imports."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from semivl_edge.code_closure import import_closure

REPO = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def code_dep_problems(name: str, stage: dict) -> list[str]:
    """What is wrong with a stage's code deps: modules it runs that DVC would not see, and deps it never runs."""
    if stage["cmd"] != f"python stages/{name}.py":
        return [f"{name}: the command must be `python stages/{name}.py`, is `{stage['cmd']}`"]
    deps = {d for d in stage.get("deps", []) if isinstance(d, str) and d.startswith(("stages/", "src/"))}
    runs = {p.relative_to(REPO).as_posix() for p in import_closure(REPO / "stages" / f"{name}.py")}
    return ([f"{name}: runs {path} but does not list it in deps" for path in sorted(runs - deps)]
            + [f"{name}: lists {path} in deps but never imports it" for path in sorted(deps - runs)])


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_deps_are_its_import_closure(name):
    assert code_dep_problems(name, STAGES[name]) == []


def test_a_removed_or_needless_dep_is_named():
    stage = dict(STAGES["eval_cpu"])
    stage["deps"] = [d for d in stage["deps"] if d != "src/semivl_edge/export/torchscript.py"]
    stage["deps"].append("src/semivl_edge/train/loop.py")
    assert code_dep_problems("eval_cpu", stage) == [
        "eval_cpu: runs src/semivl_edge/export/torchscript.py but does not list it in deps",
        "eval_cpu: lists src/semivl_edge/train/loop.py in deps but never imports it",
    ]


def test_closure_follows_lazy_relative_and_package_imports(tmp_path):
    package = tmp_path / "semivl_edge"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "eager.py").write_text("from . import sibling\n")
    (package / "sub" / "sibling.py").write_text("def f():\n    from ..lazy import x\n")
    (package / "lazy.py").write_text("import importlib\nimportlib.import_module('semivl_edge.dynamic')\n")
    (package / "dynamic.py").write_text("")
    (package / "unused.py").write_text("")
    script = tmp_path / "script.py"
    script.write_text("import os\nfrom semivl_edge.sub.eager import *\n")
    found = {p.relative_to(tmp_path).as_posix() for p in import_closure(script, src=tmp_path)}
    assert found == {"script.py", "semivl_edge/__init__.py", "semivl_edge/sub/__init__.py", "semivl_edge/sub/eager.py",
                     "semivl_edge/sub/sibling.py", "semivl_edge/lazy.py", "semivl_edge/dynamic.py"}


def test_stage_package_imports_no_torch_before_the_stage_module():
    """`pipeline/train.py` sets OMP_WAIT_POLICY before torch loads OpenMP: nothing on the way may import torch."""
    code = ("import sys; import semivl_edge.pipeline; assert 'torch' not in sys.modules, 'torch imported early'; "
            "import os; os.environ.pop('OMP_WAIT_POLICY', None); from semivl_edge.pipeline import train; "
            "print(os.environ['OMP_WAIT_POLICY'])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "PASSIVE"
