"""A refresh token the server rotated goes back where it came from.

- `file:PATH`: the file's first line is replaced atomically (a new file with the same mode,
  renamed over the old one; the other lines are kept).
- `keyring:SERVICE/USER`: keyring.set_password.
- `env:NAME` or a literal value cannot be written back: the caller keeps the rotated token in
  the token cache and uses it from there while the configured value stays the same.
"""

from __future__ import annotations

import contextlib
import os
import stat
from typing import Optional

from ..secrets import split_keyring_reference


def store_back(reference: Optional[str], token: str) -> Optional[str]:
    """None when stored; else why not, in words for the transcript."""
    if reference and reference.startswith("file:"):
        return _to_file(reference[len("file:"):], token)
    if reference and reference.startswith("keyring:"):
        try:
            service, user = split_keyring_reference(reference[len("keyring:"):], "refresh token")
            import keyring
            from keyring.errors import KeyringError

            try:
                keyring.set_password(service, user, token)
            except KeyringError as exc:
                return f"the credential store refused it ({type(exc).__name__})"
        except Exception as exc:  # noqa: BLE001 - any failure here means: keep it in the cache
            return f"{type(exc).__name__}"
        return None
    if reference and reference.startswith("env:"):
        return f"an environment variable ({reference}) cannot be written back"
    return "a value given on the command line cannot be written back"


def _to_file(path: str, token: str) -> Optional[str]:
    path = os.path.realpath(path)  # a link to the secret file: rewrite the file, keep the link
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        info = os.stat(path)
        with open(path, encoding="utf-8", newline="") as handle:
            lines = handle.read().splitlines(keepends=True)
        ending = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
        rest = lines[1:]
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        fd = os.open(temporary, flags, stat.S_IMODE(info.st_mode))
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(token + ending + "".join(rest))
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(OSError):
            os.chmod(temporary, stat.S_IMODE(info.st_mode))  # the umask may have narrowed it
        if hasattr(os, "chown"):
            with contextlib.suppress(OSError):
                os.chown(temporary, info.st_uid, info.st_gid)
        os.replace(temporary, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        return f"the file {path} cannot be rewritten ({exc.strerror})"
    return None
