"""The first run of prtg-roundtrip.pyz with a Python version: unpack and compile it into the cache.

Stored in the archive as `prtg_roundtrip_pyz_unpack.py` by tools/build-pyz; used by
`prtg_roundtrip_pyz` (tools/pyz_bootstrap.py), which checks every folder before and after.
Apart from the later runs' start-up, so that they do not compile this code from source.
"""

from __future__ import annotations

import os


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


def unpack(archive: str, root: str, target: str) -> None:
    """Unpack and compile the archive into a fresh folder in `root`, then rename it to `target`
    (a run sees the whole folder or none; when another run was faster, its folder is kept)."""
    import compileall
    import py_compile
    import shutil
    import zipfile

    temporary = os.path.join(root, f".{os.path.basename(target)}.{os.getpid()}.{os.urandom(6).hex()}.tmp")
    os.mkdir(temporary, 0o700)  # exclusive: never an existing folder or link
    try:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(temporary, [name for name in zf.namelist() if name != "__main__.py"])
        compileall.compile_dir(temporary, quiet=2, workers=1,
                               invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
        try:
            os.rename(temporary, target)
        except OSError:
            if not os.path.isdir(target):
                raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
