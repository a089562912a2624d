"""What every section shares: the repository root, progress lines, the bench's own error, tools loaded by path."""

from __future__ import annotations

import importlib.util
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent.parent

RUN_TIMEOUT = 90.0  # seconds a sensor process may take before the bench kills it
SENSOR_TIMEOUT = "30"  # the sensor's own --timeout


class BenchError(RuntimeError):
    pass


def progress(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def load_tool(name: str) -> Any:
    """tools/NAME.py as a module (the other tools are files, not a package), loaded once."""
    module_name = f"bench_tool_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, ROOT / "tools" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def median(values: Sequence[float]) -> Optional[float]:
    return statistics.median(values) if values else None


def ratio(top: Sequence[float], bottom: Sequence[float]) -> Optional[float]:
    """median(top) / median(bottom), or None when either is empty or the bottom is not positive."""
    a, b = median(top), median(bottom)
    if a is None or b is None or b <= 0:
        return None
    return a / b
