"""The house's one-way flow (DESIGN.md), checked in fresh interpreters: analysis reads files and imports no
torch; suite, but for its cli, knows nothing of Ray or MLflow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imported_after(modules: list[str]) -> set[str]:
    code = (f"import sys\nfor m in {modules!r}: __import__(m)\n"
            "print('\\n'.join(sorted({n.split('.')[0] for n in sys.modules})))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_analysis_imports_no_torch_and_no_suite() -> None:
    analysis = [f"analysis.{p.stem}" for p in (ROOT / "analysis").glob("*.py") if p.stem != "__init__"]
    loaded = imported_after(["analysis", *analysis])
    assert not loaded & {"torch", "suite", "runners", "ray", "mlflow"}


def test_suite_but_its_cli_imports_neither_ray_nor_mlflow() -> None:
    suite = [".".join(p.relative_to(ROOT).with_suffix("").parts) for p in (ROOT / "suite").rglob("*.py")
             if "cli" not in p.parts and p.stem not in ("__init__", "__main__")]
    loaded = imported_after(suite)
    assert not loaded & {"ray", "mlflow", "runners", "analysis"}
