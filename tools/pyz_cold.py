"""The cold path of prtg-roundtrip.pyz: everything the start-up module leaves out.

Stored in the archive as `prtg_roundtrip_pyz_cold.py` by tools/build-pyz. The archive's
__main__.py (tools/pyz_bootstrap.py, known as `prtg_roundtrip_pyz`) comes here only when its warm
path cannot run: the first run of a build with a Python version (into_cache), a run without a
usable cache (temporary), a run with PRTG_RT_PYZ_DEBUG set, and a run with no folder to import
from at all (fail). Kept
apart from the start-up module so that warm runs do not compile this code from source.
"""

from __future__ import annotations

import os
import sys
from typing import Mapping, Sequence

PAYLOAD = "payload.zip"  # the package and its dependencies: a zip stored inside the archive
TEMPORARY_PREFIX = "prtg-roundtrip-pyz-"
STALE_AFTER = 86400  # s: no run lasts a day; a temporary folder that old was left by a killed run
UNUSED_AFTER = 30 * 86400  # s: a cache folder no run has used for 30 days


def activate(archive: str) -> str:
    """Make `import prtg_roundtrip` load from the cache folder (made and filled on first use), or
    else from a temporary folder removed at exit, instead of `archive`; returns the folder.
    OSError when neither can be had."""
    import prtg_roundtrip_pyz as start

    archive = os.path.abspath(archive)
    folder = cache_folder(archive) or temporary(archive)
    sys.path[:] = [entry for entry in sys.path if os.path.abspath(entry) != archive]
    sys.path.insert(start.after_standard_library(), folder)
    if os.environ.get("PRTG_RT_PYZ_DEBUG"):
        print(f"prtg-roundtrip.pyz: importing from {folder}\n"
              f"prtg-roundtrip.pyz: start-up module {start.__name__}", file=sys.stderr)
    return folder


def cache_folder(archive: str, environ: Mapping[str, str] = os.environ) -> str | None:
    """The checked cache folder holding the payload of `archive` unpacked and compiled for this
    Python (made on first use), or None when no safe one can be had."""
    import prtg_roundtrip_pyz as start

    where = start.cache_target(environ)
    if where is None:
        return None
    try:
        return start.warm_folder(environ) or into_cache(archive, *where)
    except Exception:  # noqa: BLE001 - no cache (read-only, full, anything): a temporary folder, same result
        return None


def make_folder(folder: str) -> None:
    """Create `folder` and its missing parents, 0700 (state.py's _make_folder)."""
    missing = []
    current = folder
    while not os.path.lexists(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass  # made meanwhile: checked like any other


def extract(archive: str, folder: str) -> None:
    """The payload of `archive`, unpacked into `folder` (read through one open file, so an
    archive replaced meanwhile gives the old payload or an error, never a mix)."""
    import io
    import zipfile

    with zipfile.ZipFile(archive) as outer:
        data = outer.read(PAYLOAD)
    with zipfile.ZipFile(io.BytesIO(data)) as payload:
        payload.extractall(folder)


def into_cache(archive: str, state: str, target: str) -> str | None:
    """Unpack and compile the payload into a fresh folder beside `target`, then rename it to
    `target` (a run sees the whole folder or none; when another run was faster, its folder is
    kept). Every folder is checked before and after; None when one is not safe."""
    import compileall
    import py_compile
    import shutil

    from prtg_roundtrip_pyz import safe

    if os.path.lexists(target):  # a file, a link or an unsafe folder where the cache should be
        return None
    root = os.path.dirname(target)
    make_folder(root)
    if not safe(state, [root]):
        return None
    temporary = os.path.join(root, f".{os.path.basename(target)}.{os.getpid()}.{os.urandom(6).hex()}.tmp")
    os.mkdir(temporary, 0o700)  # exclusive: never an existing folder or link
    try:
        extract(archive, temporary)
        compileall.compile_dir(temporary, quiet=2, workers=1, ddir=target,
                               invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
        try:
            os.rename(temporary, target)
        except OSError:
            if not os.path.isdir(target):
                raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    if not safe(state, [root, target]):
        return None
    _remove_stale(root, "", UNUSED_AFTER, keep=os.path.basename(target))
    return target


def temporary(archive: str) -> str:
    """The payload unpacked into a new private temporary folder (made by tempfile.mkdtemp: 0700,
    a new random name), removed when the run ends (prtg_roundtrip.cli.leave runs the atexit
    functions). OSError saying what failed when it can't be had."""
    import atexit
    import shutil
    import tempfile

    _remove_stale(tempfile.gettempdir(), TEMPORARY_PREFIX, STALE_AFTER)
    try:
        folder = tempfile.mkdtemp(prefix=TEMPORARY_PREFIX)
    except OSError as exc:
        raise OSError(f"no usable cache folder, and no temporary folder could be made ({exc})") from None
    atexit.register(shutil.rmtree, folder, True)
    try:
        extract(archive, folder)
    except Exception as exc:  # noqa: BLE001 - a full disk, a broken or replaced archive: said, not raised
        raise OSError(f"cannot unpack {archive} into {folder} ({type(exc).__name__}: {exc})") from None
    return folder


def _remove_stale(where: str, prefix: str, age: float, keep: str = "") -> None:
    """Remove the folders in `where` named `prefix`... that this account left behind: only real
    folders (no link or junction) owned by this account and unchanged for `age` seconds, never
    `keep`. Temporary folders of runs that were killed before their end (PRTG ends a run at its
    timeout without letting it clean up); cache folders of builds or Python versions no run has
    used for 30 days (a warm run touches its folder), and unpacking leftovers."""
    import shutil
    import stat
    import time

    try:
        names = [name for name in os.listdir(where) if name.startswith(prefix) and name != keep]
    except OSError:
        return
    for name in names:
        path = os.path.join(where, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if (not stat.S_ISDIR(st.st_mode) or getattr(st, "st_file_attributes", 0) & 0x400
                or (os.name != "nt" and st.st_uid != os.geteuid()) or time.time() - st.st_mtime < age):
            continue
        shutil.rmtree(path, ignore_errors=True)


def fail(problem: BaseException, argv: Sequence[str] = sys.argv[1:]) -> int:
    """Print one error document about `problem` in the format the arguments ask for (read as
    the launchers read it: the first known --format value; else Script v2 when the launcher says
    so; else PRTG's XML) and return the exit code the package would use. A deliberate copy of
    prtg_roundtrip.outcheck.minimal_error: the package is what could not be loaded."""
    import json

    text = (f"prtg-roundtrip.pyz: cannot start: {problem}. Give the sensor's account a writable state "
            "folder (PRTG_RT_STATE_DIR) or temporary folder (TEMP/TMPDIR), and a complete prtg-roundtrip.pyz.")
    text = "".join(c if c.isprintable() else " " for c in text)
    fmt = "script-v2" if os.environ.get("PRTG_ROUNDTRIP_SCRIPT_V2") == "1" else "prtg-xml"
    for i, arg in enumerate(argv):
        value = arg[len("--format="):] if arg.startswith("--format=") else ""
        if arg == "--format" and i + 1 < len(argv):
            value = argv[i + 1]
        if value in ("prtg-xml", "prtg-json", "script-v2", "text", "nagios", "openmetrics"):
            fmt = value
            break
    code = 0
    if fmt == "prtg-json":
        document = json.dumps({"prtg": {"error": 1, "text": text}})
    elif fmt == "script-v2":
        document = json.dumps({"version": 2, "status": "error", "message": text})
    elif fmt == "nagios":
        document, code = "ROUNDTRIP UNKNOWN - " + text.replace("|", "/"), 3
    elif fmt == "openmetrics":
        document = ("# HELP roundtrip_success 1 when the last mail round trip succeeded, 0 when it failed.\n"
                    "# TYPE roundtrip_success gauge\nroundtrip_success 0\n# EOF")
        sys.stderr.write(text + "\n")
    elif fmt == "text":
        document, code = "ERROR  " + text, 1
    else:
        escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        document = ('<?xml version="1.0" encoding="UTF-8"?>\n<prtg>\n  <error>1</error>\n'
                    f"  <text>{escaped}</text>\n</prtg>")
    out = getattr(sys.stdout, "buffer", None)
    if out is None:
        sys.stdout.write(document + "\n")
    else:
        out.write((document + "\n").encode("utf-8", "replace"))
    sys.stdout.flush()
    return code
