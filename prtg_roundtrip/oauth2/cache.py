"""The token cache: one owner-only JSON file per cache key, locked while a run fetches.

A run with a valid cached token reads the file and makes no request. A run that has to fetch
takes the key's lock first (fcntl on POSIX, msvcrt on Windows), reads the file again (another
run may have just fetched), fetches, writes, and lets go: two runs never both refresh, and a
refresh token the server rotates is never lost between them. Waiting for the lock stays inside
the run's budget.

Files are created with mode 0600 in a private per-user folder, opened with O_NOFOLLOW where
the system has it, and a cache file that is a symbolic link is refused.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
import tempfile
import time
from typing import Any, Callable, Dict, Iterator, Mapping, Optional

from .. import state
from ..deadline import Deadline
from ..errors import TokenError

# Refresh this long before expiry, or 10 % of the lifetime for tokens that live less than 50 min.
MARGIN = 300.0
MARGIN_SHARE = 0.10
# Between two tries of a held lock.
LOCK_POLL = 0.02

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_BINARY = getattr(os, "O_BINARY", 0)


def _standin_private_folder(environ: Mapping[str, str]) -> str:
    """STAND-IN for `prtg_roundtrip.state.private_folder` (being written on another branch):
    a folder only this user may use, under $PRTG_RT_STATE_DIR or the system's temp folder.
    Used only while state.py has no private_folder; remove it once that is merged."""
    base = environ.get("PRTG_RT_STATE_DIR") or os.path.join(tempfile.gettempdir(), "prtg-roundtrip")
    if os.name == "nt":
        base = environ.get("PRTG_RT_STATE_DIR") or os.path.join(
            environ.get("LOCALAPPDATA") or tempfile.gettempdir(), "prtg-roundtrip"
        )
        folder = os.path.join(base, "private")
        os.makedirs(folder, exist_ok=True)
        return folder
    folder = os.path.join(base, f"private-{os.geteuid()}")
    os.makedirs(base, mode=0o1777, exist_ok=True)
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(folder)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
        raise TokenError(
            f"the token cache folder {folder} is not a private folder of this user (a symbolic link, "
            "another owner, or open to others): refused",
            hint="Remove it; the sensor creates it again with owner-only permission",
        )
    return folder


def private_folder(environ: Mapping[str, str]) -> str:
    """The hardened state.private_folder where it exists, else the stand-in above."""
    hardened: Optional[Callable[[Mapping[str, str]], str]] = getattr(state, "private_folder", None)
    if hardened is not None:
        return hardened(environ)
    return _standin_private_folder(environ)


def margin(lifetime: float) -> float:
    """How long before expiry a token counts as expired."""
    return min(MARGIN, MARGIN_SHARE * max(0.0, lifetime))


def usable(entry: Mapping[str, Any], now: Optional[float] = None) -> bool:
    """A cached access token that does not expire within the margin."""
    token, expires_at, obtained_at = entry.get("access_token"), entry.get("expires_at"), entry.get("obtained_at")
    if not isinstance(token, str) or not token:
        return False
    if not isinstance(expires_at, (int, float)) or not isinstance(obtained_at, (int, float)):
        return False
    now = time.time() if now is None else now
    return expires_at - now > margin(expires_at - obtained_at)


class TokenCache:
    def __init__(self, key: str, environ: Mapping[str, str]):
        self.folder = private_folder(environ)
        name = hashlib.sha256(key.encode("utf-8")).hexdigest()[:40]
        self.path = os.path.join(self.folder, f"oauth2-{name}.json")
        self.lock_path = self.path + ".lock"

    def read(self) -> Dict[str, Any]:
        """The entry, or {} when there is none or it cannot be read as one."""
        try:
            fd = os.open(self.path, os.O_RDONLY | _NOFOLLOW | _BINARY)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise self._symlink() from None
            return {}
        with os.fdopen(fd, "rb") as handle:
            if not _NOFOLLOW and os.path.islink(self.path):  # pragma: no cover - Windows
                raise self._symlink()
            try:
                data = json.loads(handle.read(1 << 20).decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                return {}
        return data if isinstance(data, dict) else {}

    def _symlink(self) -> TokenError:
        return TokenError(
            f"the token cache file {self.path} is a symbolic link: refused",
            hint="Remove it; nobody but this account should write in that folder",
        )

    def write(self, entry: Mapping[str, Any]) -> None:
        """Replace the entry atomically (a new 0600 file renamed over the old one)."""
        temporary = f"{self.path}.{os.getpid()}.tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _BINARY, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(json.dumps(dict(entry)).encode("utf-8"))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise

    @contextlib.contextmanager
    def locked(self, deadline: Deadline) -> Iterator[None]:
        """Hold this key's lock; TokenError if another run holds it past the budget."""
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | _NOFOLLOW | _BINARY, 0o600)
        try:
            started = time.monotonic()
            while not _try_lock(fd):
                if deadline.remaining() <= LOCK_POLL:
                    raise TokenError(
                        f"another run of this sensor has held the token cache lock for "
                        f"{time.monotonic() - started:.1f} s, until the budget ran out",
                        hint="Another run is fetching the same token: check the token endpoint, "
                        "or that no stuck sensor process is left",
                    )
                time.sleep(LOCK_POLL)
            try:
                yield
            finally:
                _unlock(fd)
        finally:
            os.close(fd)


if os.name == "nt":  # pragma: no cover - Windows
    import msvcrt

    def _try_lock(fd: int) -> bool:
        os.lseek(fd, 0, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
        except OSError:
            return False
        return True

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)  # type: ignore[attr-defined]

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
