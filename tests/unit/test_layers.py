"""The import rules the layer contract (`lint-imports`, in `make test`) cannot see: which imports may hide
inside functions, and which modules must load without pyspark."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

JOBS = Path(__file__).resolve().parents[2] / "jobs"

# Imports deferred into a function on purpose: each costs seconds or hundreds of MB at import, or is absent
# where the function never runs (pyspark on a no-JVM reader, onnx at run time, matplotlib on executors).
HEAVY = {"pyspark", "delta", "deltalake", "pyarrow", "pandas", "faiss", "onnx", "onnxruntime", "cv2", "matplotlib"}
HEAVY |= {"venv_pack"}  # only `lineup package` needs it
HEAVY |= {"pillow_heif"}  # optional (`lineup[heif]`): absent where it is not installed
# The command line defers every job so that `lineup --help` and `lineup package` start in a second.
DEFERS_JOBS = {JOBS / "cli.py", JOBS / "commands.py"}

# Pure compute: runs on executors or in a notebook without a JVM.
PURE = [
    "jobs.faces.read",
    "jobs.faces.rows",
    "jobs.faces.worker",
    "jobs.shards.files",
    "jobs.shards.search",
    "jobs.shards.build",
    "jobs.shards.choose",
    "jobs.audit.metrics",
    "jobs.audit.pairs",
    "jobs.audit.one_to_n",
    "jobs.common.normalization",
    "jobs.common.erasures",
    "jobs.models.pipeline",
    "jobs.models.quality",
    "jobs.models.quality_model",
    "jobs.audit.quality_bands",
    "jobs.demo.probe_filter",
    "jobs.cli",
    "jobs.commands",
]


def _function_imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    found = []
    for function in ast.walk(tree):
        if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            for node in ast.walk(function):
                if isinstance(node, ast.ImportFrom) and node.module:
                    found.append((node.lineno, node.module))
                elif isinstance(node, ast.Import):
                    found.extend((node.lineno, alias.name) for alias in node.names)
    return found


def test_imports_inside_functions_only_defer_heavy_modules() -> None:
    hidden = []
    for path in sorted(JOBS.rglob("*.py")):
        for line, module in _function_imports(path):
            top = module.split(".")[0]
            if top in HEAVY or (top in ("jobs", "lineup") and path in DEFERS_JOBS):
                continue
            hidden.append(f"{path.relative_to(JOBS.parent)}:{line} imports {module}")
    assert not hidden, "move these imports to the top of their module (or defer a heavy one):\n" + "\n".join(hidden)


def test_the_check_sees_a_hidden_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from jobs.common import ids\n    return ids\n")
    assert _function_imports(module) == [(2, "jobs.common")]


def test_pure_modules_load_without_pyspark_or_onnxruntime() -> None:
    code = (
        "import importlib, sys\n"
        f"for name in {PURE!r}:\n"
        "    importlib.import_module(name)\n"
        "    loaded = [m for m in ('pyspark', 'onnxruntime') if m in sys.modules]\n"
        "    assert not loaded, f'{name} loads {loaded}'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
