"""The token cache: one owner-only JSON file per cache key, locked while a run fetches.

A run with a valid cached token reads the file and makes no request. A run that has to fetch
takes the key's lock first (fcntl on POSIX, msvcrt on Windows), reads the file again (another
run may have just fetched), fetches, writes, and lets go: two runs never both refresh, and a
refresh token the server rotates is never lost between them. Waiting for the lock stays inside
the run's budget.

The files live in the sensor's private state folder and are read and written with state.py's
functions (owner-only, no link followed, atomic replace); a cache file that is a link or belongs
to another user is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from typing import Any, Dict, Iterator, Mapping, Optional

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


def _folder(environ: Mapping[str, str]) -> str:
    """The private state folder; OSError (the run goes on without a cache) where none is safe."""
    try:
        return state.private_folder(environ)
    except state.UnsafeStateFolder as exc:
        raise OSError(f"no safe folder for the token cache: {exc.cause}") from None


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
    """One cache entry, in the sensor's private state folder (state.py: private_folder,
    read_private, write_private, the same rules as the sweep state)."""

    def __init__(self, key: str, environ: Mapping[str, str]):
        self.folder = _folder(environ)
        name = hashlib.sha256(key.encode("utf-8")).hexdigest()[:40]
        self.path = os.path.join(self.folder, f"oauth2-{name}.json")
        self.lock_path = self.path + ".lock"

    def read(self) -> Dict[str, Any]:
        """The entry, or {} when there is none or it cannot be read as one."""
        try:
            raw = state.read_private(self.path)
        except state.UnsafeStateFolder as exc:
            raise TokenError(
                f"the token cache file is refused: {exc.cause}",
                hint="Remove it; nobody but this account should write in that folder",
            ) from None
        except OSError:
            return {}
        try:
            data = json.loads((raw or b"{}")[: 1 << 20].decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def write(self, entry: Mapping[str, Any]) -> None:
        """Replace the entry atomically (a new 0600 file renamed over the old one)."""
        try:
            state.write_private(self.path, json.dumps(dict(entry)).encode("utf-8"))
        except state.UnsafeStateFolder as exc:
            raise OSError(f"the token cache folder is refused: {exc.cause}") from None

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
