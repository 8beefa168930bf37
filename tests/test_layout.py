"""Project rules that keep the code base honest: layering and lint."""

import ast
import os
import shutil
import subprocess
import sys

import pytest
from helpers import ROOT


def _imports(package):
    found = {}
    for dirpath, _, files in os.walk(os.path.join(ROOT, package)):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(dirpath, name)
                for node in ast.walk(ast.parse(open(path).read())):
                    if isinstance(node, ast.Import):
                        mods = [a.name for a in node.names]
                    elif isinstance(node, ast.ImportFrom) and node.level == 0:
                        mods = [node.module]
                    else:
                        continue
                    for mod in mods:
                        found.setdefault(mod.split(".")[0], set()).add(os.path.relpath(path, ROOT))
    return found


def test_method_package_knows_no_stages_formats_or_schedulers():
    imported = _imports("frameexit")
    forbidden = {"cli", "cli_options", "jobs", "cache", "reports"} | {"click", "tqdm", "dask", "distributed"}
    forbidden |= {"h5py", "pyarrow", "yaml"}
    assert not forbidden & set(imported), {m: imported[m] for m in forbidden & set(imported)}


def test_dependencies_point_one_way():
    for package in ("cache", "reports"):
        imported = _imports(package)
        assert not {"cli", "cli_options", "jobs"} & set(imported), package
    assert not {"cli", "cli_options"} & set(_imports("jobs"))


def _module_imports(name):
    tree = ast.parse(open(os.path.join(ROOT, name)).read())
    top = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    return top | {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0}


def test_the_command_line_parses_and_delegates():
    # cli_options is the command line's plumbing: click only at import time, the rest inside callbacks; cli
    # declares the commands and calls jobs (imported inside each command, so --help stays instant)
    at_import = {
        n.module.split(".")[0]
        for n in ast.parse(open(os.path.join(ROOT, "cli_options.py")).read()).body
        if isinstance(n, ast.ImportFrom) and n.level == 0
    }
    assert at_import <= {"__future__", "click", "frameexit"}, at_import
    assert not {"cache", "torch", "dask", "h5py", "pyarrow"} & _module_imports("cli_options.py")
    assert not {"cache", "torch", "dask", "h5py", "pyarrow"} & _module_imports("cli.py")


def test_the_cache_package_owns_its_directory():
    # cache/ (key inputs and key, find, plan and the writer's lock, the directory and its manifest, shards,
    # probes) runs no model and schedules nothing
    imported = _imports("cache")
    forbidden = {"torch", "torchvision", "dask", "distributed", "click", "tqdm", "fcntl"}
    assert not forbidden & set(imported), {m: imported[m] for m in forbidden & set(imported)}
    # a reader computes the key itself (cache.inputs.key_inputs, cache.find.open_cache), not through extract
    for name in os.listdir(os.path.join(ROOT, "jobs")):
        if name.endswith(".py") and name not in ("extract.py", "run.py", "train.py", "demo.py"):
            tree = ast.parse(open(os.path.join(ROOT, "jobs", name)).read())
            relative = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 1}
            assert "extract" not in relative, name


def _loaded_after(code, *args):
    """The heavy packages of :data:`HEAVY` in ``sys.modules`` when a fresh interpreter running ``code`` (with
    this checkout first on the path) exits: what it imported, directly or through any other module."""
    probe = (
        "import atexit, sys\n" + "atexit.register(lambda: print('LOADED', sorted(set({HEAVY!r}) & set(sys.modules))))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    p = subprocess.run(
        [sys.executable, "-c", probe.format(HEAVY=HEAVY) + code, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
    )
    lines = [line for line in p.stdout.splitlines() if line.startswith("LOADED ")]
    assert lines, p.stdout + p.stderr
    return p, ast.literal_eval(lines[-1][len("LOADED ") :])


HEAVY = ("torch", "torchvision", "dask", "distributed")


def test_storage_and_report_writers_import_no_torch():
    # cache/ is read by report-only and check tools, reports/ writes every command's files: neither may load torch
    # (seconds to import) at import time, not even through another module (the AST tests above see direct imports)
    modules = [
        f"{package}.{name[: -len('.py')]}"
        for package in ("cache", "reports")
        for name in sorted(os.listdir(os.path.join(ROOT, package)))
        if name.endswith(".py")
    ]
    p, loaded = _loaded_after("".join(f"import {m}\n" for m in modules))
    assert p.returncode == 0, p.stderr
    assert "torch" not in loaded and "torchvision" not in loaded, loaded


def test_report_imports_neither_torch_nor_dask(reported, tmp_path):
    """`frameexit report` on a real replay's output reads tables and writes text and a figure: no model, no graph."""
    out = str(tmp_path / "run")
    shutil.copytree(reported, out, ignore=shutil.ignore_patterns("summary.*", "curve.png", ".*"))
    code = "from cli import main\nmain(sys.argv[1:])\n"
    p, loaded = _loaded_after(code, "report", "--out", out)
    assert p.returncode == 0, p.stdout + p.stderr
    assert os.path.isfile(os.path.join(out, "summary.md"))
    assert not set(loaded) & set(HEAVY), loaded


RUFF = os.path.join(os.path.dirname(sys.executable), "ruff")
RUFF = RUFF if os.path.exists(RUFF) else shutil.which("ruff")


@pytest.mark.skipif(RUFF is None, reason="ruff is not installed (it comes with the test extras)")
def test_ruff_clean():
    p = subprocess.run([RUFF, "check", "--no-cache", ROOT], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_tests_are_grouped_by_the_package_they_test():
    # one folder per package, cli/ for whole commands; only this project-wide file and the shared modules at the top
    tests = os.path.join(ROOT, "tests")
    folders = {d for d in os.listdir(tests) if os.path.isdir(os.path.join(tests, d)) and not d.startswith((".", "_"))}
    assert folders == {"frameexit", "cache", "jobs", "reports", "cli"}, folders
    top = {f for f in os.listdir(tests) if f.endswith(".py")}
    assert top == {"conftest.py", "helpers.py", "oracles.py", "test_layout.py"}, top
    for folder in folders:
        assert any(f.startswith("test_") for f in os.listdir(os.path.join(tests, folder))), folder
