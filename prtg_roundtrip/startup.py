"""Start-up work a run can skip without changing what it does (figures: tools/bench overhead).

cli.main calls `prepare_imports()` once the parameters are known good, just before the
protocol modules are imported.
"""

from __future__ import annotations

import os
import re
import sys
import types
from importlib.util import find_spec

_DIST_INFO = re.compile(r"imapclient-(\d+)\.(\d+)\.(\d+)\.dist-info", re.IGNORECASE)


def prepare_imports() -> None:
    _imapclient_version()


def _imapclient_version() -> None:
    """IMAPClient's `version` module asks importlib.metadata for IMAPClient's own version when
    imported: about 10 ms of CPU a run (importlib.metadata, zipfile, csv, a scan of sys.path)
    for a string the sensor never reads. Provide that module with the same string, read from
    the name of IMAPClient's dist-info folder beside the package; where that is not plain
    (a zip application, an unusual layout), leave the real import alone."""
    name = "imapclient.version"
    if name in sys.modules or "imapclient" in sys.modules:
        return
    try:
        spec = find_spec("imapclient")
        locations = list(spec.submodule_search_locations or []) if spec is not None else []
        if len(locations) != 1:
            return
        found = [m for m in map(_DIST_INFO.fullmatch, os.listdir(os.path.dirname(locations[0]))) if m]
    except (ImportError, OSError, ValueError):
        return
    if len(found) != 1:  # none, or two installs side by side: let importlib.metadata decide
        return
    major, minor, micro = (int(part) for part in found[0].groups())
    if major < 4:  # 3.x's version module is plain constants (author, ... too): nothing to save
        return
    module = types.ModuleType(name, "IMAPClient's version, from its dist-info folder (prtg_roundtrip.startup)")
    module.version = f"{major}.{minor}.{micro}"  # type: ignore[attr-defined]
    module.version_info = (major, minor, micro, "final")  # type: ignore[attr-defined]
    sys.modules[name] = module
