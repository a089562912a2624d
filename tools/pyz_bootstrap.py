"""Start-up of prtg-roundtrip.pyz: the module `prtg_roundtrip_pyz`, whose main() the archive's
`__main__.py` calls, and whose activate() the entry scripts that import the package from a .pyz
call (scripts/prtg_roundtrip_python.py).

tools/build-pyz stores this file in the archive, with BUILD_ID set to the hash of the payload and
without docstrings and comments, as `prtg_roundtrip_pyz_start.py`, and compiled by each CPython
3.9+ on the build machine as `prtg_roundtrip_pyz_start_cpython_3XX.pyc`; `prtg_roundtrip_pyz.py`
imports the bytecode for the running Python when there is one, else the source, under its own
name. Other entries: the cold path (`prtg_roundtrip_pyz_cold.py`, tools/pyz_cold.py), LICENSE,
and `payload.zip`, a zip stored inside the zip that holds the package and its dependencies.

Why so: Python reads the whole directory of a zip application before it runs it, in Python code,
about 40,000 instructions an entry: the payload's 230 entries would cost some 10 million
instructions (2 ms) a run. And zipimport never writes bytecode: a module it imports from
source is compiled on every run, about 3.5 million instructions a kilobyte. So the archive has
few entries, and this module is bytecode where the build could make it and otherwise kept to the
warm path (an existing, safe cache folder); everything else is in the cold module.

The first run of each build with each Python version unpacks the payload once into a private
cache folder and compiles it there; every run imports from that folder with bytecode:

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
read-only, full disk), the run unpacks the payload into a new private temporary folder, imports
from there and removes it at exit: slower, same result. PRTG_RT_PYZ_CACHE=off does that on
purpose; PRTG_RT_PYZ_DEBUG=1 says on stderr where the package was imported from. When no folder
at all can be had, the run prints one error document saying so (the cold module's fail()).
"""

from __future__ import annotations

import os
import stat
import sys
from typing import List, Mapping, Optional, Tuple

BUILD_ID = "unbuilt"  # set by tools/build-pyz


def state_folder(environ: Mapping[str, str]) -> Optional[str]:
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
    parts = [part for part in path.split(os.sep) if part]
    current = os.sep
    for i in range(len(parts) + 1):
        if i:
            current = os.path.join(current, parts[i - 1])
        st = os.lstat(current)
        if st.st_uid not in (0, uid) or depth > 16:
            return False
        if stat.S_ISLNK(st.st_mode):
            return _trusted_way(os.path.join(os.path.realpath(current), *parts[i:]), uid, depth + 1)
        if not stat.S_ISDIR(st.st_mode) or (st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX):
            return False
    return True


def safe(state: str, folders: List[str]) -> bool:
    """The way to `state` is trusted, and it and `folders` are real folders of this account that
    only it can write (on Windows: no link or junction among them)."""
    if os.name != "nt" and not _trusted_way(state, os.geteuid()):
        return False
    for folder in [state, *folders]:
        st = os.lstat(folder)
        if not stat.S_ISDIR(st.st_mode) or getattr(st, "st_file_attributes", 0) & 0x400:  # a reparse point
            return False
        if os.name != "nt" and (st.st_uid != os.geteuid() or st.st_mode & 0o022):
            return False
    return True


def cache_target(environ: Mapping[str, str]) -> Optional[Tuple[str, str]]:
    """(the state folder, the cache folder of this build for this Python), or None when no
    cache is wanted or possible."""
    state = state_folder(environ)
    if state is None or BUILD_ID == "unbuilt" or environ.get("PRTG_RT_PYZ_CACHE", "").lower() == "off":
        return None
    return state, os.path.join(state, "pyz", f"{BUILD_ID}-{sys.implementation.cache_tag}")


def warm_folder(environ: Mapping[str, str]) -> Optional[str]:
    """The cache folder when it exists and is safe, else None (nothing is made here). Its time
    stamp says when it was last used (the cold module removes folders unused for 30 days)."""
    where = cache_target(environ)
    try:
        if not (where and os.path.isdir(where[1]) and safe(where[0], [os.path.dirname(where[1]), where[1]])):
            return None
    except OSError:
        return None
    try:
        os.utime(where[1])
    except OSError:
        pass  # a read-only state folder: the cache still serves
    return where[1]


def after_standard_library() -> int:
    """Where the cache folder goes in sys.path: after the standard library's folder, so that
    importing the standard library does not look into it, and before site-packages, so that the
    archive's pinned dependencies come first (at the front where that folder is not listed)."""
    try:
        return sys.path.index(os.path.dirname(os.__file__)) + 1
    except (AttributeError, ValueError):
        return 0


def activate(archive: str) -> None:
    """Make `import prtg_roundtrip` load from the cache folder instead of `archive` (an entry of
    sys.path), or else from a folder the cold module makes now. OSError when none can be had."""
    folder = None if os.environ.get("PRTG_RT_PYZ_DEBUG") else warm_folder(os.environ)
    if folder and archive in sys.path:
        sys.path.remove(archive)
        sys.path.insert(after_standard_library(), folder)
    else:
        import prtg_roundtrip_pyz_cold as cold

        cold.activate(archive)


def main() -> None:
    """`python prtg-roundtrip.pyz ARGS` (the archive's __main__.py calls this): the same as the
    `prtg-roundtrip` command."""
    try:
        activate(os.path.dirname(__file__))  # the archive, as Python put it on sys.path
    except OSError as exc:
        import prtg_roundtrip_pyz_cold as cold

        sys.exit(cold.fail(exc))
    from prtg_roundtrip.cli import run

    run()
