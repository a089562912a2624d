"""Start-up of prtg-roundtrip.pyz: the archive's `__main__.py`, and the module `prtg_roundtrip_pyz`.

tools/build-pyz stores this file in the archive twice, with BUILD_ID set to the hash of
everything else in the archive and without docstrings and comments: as `__main__.py`, which
calls main(), and as `prtg_roundtrip_pyz.py` for the entry scripts that import the package from
a .pyz (scripts/prtg_roundtrip_python.py calls activate()).

A zip application imports its modules from source on every run (zipimport never writes
bytecode), and compiling the package and its dependencies costs more than a round trip. So the
first run of each build with each Python version unpacks the archive once into a private cache
folder, compiles it there, and every run imports from that folder with bytecode:

    <state folder>/pyz/<BUILD_ID>-<cache tag, e.g. cpython-313>/

The state folder is the sensor's own (prtg_roundtrip/state.py): $PRTG_RT_STATE_DIR, else
$XDG_STATE_HOME/prtg-roundtrip or ~/.local/state/prtg-roundtrip, on Windows
%LOCALAPPDATA%\\prtg-roundtrip. The same rules hold, checked here by code from the archive
(code in the cache cannot vouch for the cache): every folder is created 0700; the cache folder
and the folders above it must belong to this account (or root, above the state folder), no other
account may write them (a sticky folder such as /tmp may be passed through), links on the way
must belong to this account or root; on Windows no folder may be a link or junction. A folder
is unpacked and compiled under a temporary name, created exclusively, and renamed into place
whole, so a run sees a complete folder or none. Whenever the cache cannot be used (unsafe,
read-only, full disk), the run imports from the archive itself: slower, same result.
PRTG_RT_PYZ_CACHE=off does that on purpose; PRTG_RT_PYZ_DEBUG=1 says on stderr where the
package was imported from.
"""

from __future__ import annotations

import os
import stat
import sys
from typing import List, Mapping, Optional

BUILD_ID = "unbuilt"  # set by tools/build-pyz
MAIN_MODULE = "prtg_roundtrip_pyz"
_REPARSE_POINT = 0x400  # stat.FILE_ATTRIBUTE_REPARSE_POINT


def _state_folder(environ: Mapping[str, str]) -> Optional[str]:
    """state.private_folder's choice of folder (not created or checked here)."""
    override = environ.get("PRTG_RT_STATE_DIR")
    if override:
        return os.path.abspath(override)
    if os.name == "nt":
        base = environ.get("LOCALAPPDATA", "")
        return os.path.join(base, "prtg-roundtrip") if os.path.isabs(base) else None
    base = environ.get("XDG_STATE_HOME", "")
    if not os.path.isabs(base):
        home = environ.get("HOME", "")
        if not os.path.isabs(home):
            return None
        base = os.path.join(home, ".local", "state")
    return os.path.join(base, "prtg-roundtrip")


def _trusted_way(path: str, uid: int, depth: int = 0) -> bool:
    """Every folder on the way to `path`, `path` included, belongs to this account or root and
    no other account can write it unless it is sticky; links belong to this account or root and
    are judged by where they lead."""
    if depth > 16:
        return False
    parts = [part for part in path.split(os.sep) if part]
    current = os.sep
    for i in range(len(parts) + 1):
        if i:
            current = os.path.join(current, parts[i - 1])
        st = os.lstat(current)
        if stat.S_ISLNK(st.st_mode):
            if st.st_uid not in (0, uid):
                return False
            return _trusted_way(os.path.join(os.path.realpath(current), *parts[i:]), uid, depth + 1)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid not in (0, uid):
            return False
        if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
            return False
    return True


def _private(folder: str) -> bool:
    """`folder` is a real folder of this account that only this account can write."""
    st = os.lstat(folder)
    if os.name == "nt":
        return stat.S_ISDIR(st.st_mode) and not getattr(st, "st_file_attributes", 0) & _REPARSE_POINT
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o022


def _safe(state: str, folders: List[str]) -> bool:
    if os.name != "nt" and not _trusted_way(state, os.geteuid()):
        return False
    return all(_private(folder) for folder in [state, *folders])


def cache_folder(archive: str, environ: Mapping[str, str] = os.environ) -> Optional[str]:
    """The checked cache folder holding `archive` unpacked and compiled for this Python (made
    on first use), or None when no safe one can be had."""
    if environ.get("PRTG_RT_PYZ_CACHE", "").lower() == "off" or BUILD_ID == "unbuilt":
        return None
    state = _state_folder(environ)
    if state is None:
        return None
    root = os.path.join(state, "pyz")
    target = os.path.join(root, f"{BUILD_ID}-{sys.implementation.cache_tag}")
    try:
        if os.path.isdir(target):
            return target if _safe(state, [root, target]) else None
        import prtg_roundtrip_pyz_unpack as unpack  # the first run only

        unpack.make_folder(root)
        if not _safe(state, [root]):
            return None
        unpack.unpack(archive, root, target)
        return target if _safe(state, [root, target]) else None
    except Exception:  # noqa: BLE001 - no cache (read-only, full, anything): run from the archive, same result
        return None


def activate(archive: str) -> str:
    """Make `import prtg_roundtrip` load from the cache folder, or else from `archive`; returns
    where from. For the entry scripts that import the package from a .pyz beside them."""
    archive = os.path.abspath(archive)
    folder = cache_folder(archive) or archive
    while archive in sys.path:
        sys.path.remove(archive)
    sys.path.insert(0, folder)
    if os.environ.get("PRTG_RT_PYZ_DEBUG"):
        print(f"prtg-roundtrip.pyz: importing from {folder}", file=sys.stderr)
    return folder


def main() -> None:
    """`python prtg-roundtrip.pyz ARGS`: the same as the `prtg-roundtrip` command. (Run as the
    archive's __main__.py, which holds this code too: known to the package by its module name.)"""
    sys.modules.setdefault(MAIN_MODULE, sys.modules[__name__])
    activate(os.path.dirname(os.path.abspath(__file__)))
    from prtg_roundtrip.cli import run

    run()
