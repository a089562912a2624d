"""What one run of a sensor leaves for the next, and the private folder that holds it.

Sweeping for leftovers means a header search over the whole mailbox, which on a large mailbox
costs the server tens to hundreds of milliseconds. So a run sweeps only when one may be there:
a run of this sensor did not finish cleanly since the last sweep (it was killed, timed out, or
kept a probe still in flight), or the last sweep was a day ago (for other sensors' orphans),
or nothing is known (first run, state not writable). A small JSON file per sensor id holds that.

A probe that arrives after its run gave up (deferred mail, retried minutes to hours later) would
wait for the daily sweep; so the state also lists the GUIDs of this sensor's probes that were
sent and never found, and every run looks for exactly those (one SUBJECT search, after the
measurement) and removes what is provably this sensor's expired probe, until it is found or five
days have passed.

The sensor often runs as root or LocalSystem, so whatever it writes lives in a folder only its
own account can write (`private_folder`): per user, created 0700, owner and mode checked before
every use, every link on the way owned by this account or root. Files there are read and
written without following links (`read_private`, `write_private`); a write replaces the file
atomically through a temporary file created exclusively in the same folder. The OAuth2 token
cache uses the same three functions.
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
from typing import Dict, Iterable, List, Mapping, Optional

from .errors import RoundTripError

SWEEP_EVERY = 86400.0  # seconds: other sensors' orphans are removed once they are a day old
# A probe that was sent but not found is looked for by later runs this long: Postfix retries
# deferred mail for 5 days (maximal_queue_lifetime), Exchange for 2.
LATE_PROBE_SECONDS = 5 * 86400.0
MAX_PENDING = 50  # the newest unresolved probes kept; one search looks for all of them
_GUID = re.compile(r"[0-9A-F]{8}(?:-[0-9A-F]{4}){3}-[0-9A-F]{12}")
FOLDER_NAME = "prtg-roundtrip"

_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_BINARY = getattr(os, "O_BINARY", 0)
_REPARSE_POINT = getattr(stat, "FILE_ATTRIBUTE_REPARSE_POINT", 0x400)


class UnsafeStateFolder(RoundTripError):
    """No folder (or file) exists that only this sensor's account can write."""

    step = "State folder"

    def __init__(self, cause: str, *, hint: Optional[str] = None):
        super().__init__(
            cause,
            hint=hint or "Give PRTG_RT_STATE_DIR a folder that only the probe's account owns and can write",
        )


def private_folder(environ: Mapping[str, str]) -> str:
    """The per-user folder for the sensor's state and caches, created if missing and checked.

    POSIX: $PRTG_RT_STATE_DIR, else $XDG_STATE_HOME/prtg-roundtrip, else
    ~/.local/state/prtg-roundtrip. Windows: $PRTG_RT_STATE_DIR, else
    %LOCALAPPDATA%\\prtg-roundtrip (LocalSystem's profile is private to it).
    Raises UnsafeStateFolder when the folder cannot be made safe: owned by another user, writable
    by group or others, or reached through a link or folder that another user controls.
    """
    override = environ.get("PRTG_RT_STATE_DIR")
    if os.name == "nt":
        folder = override or os.path.join(_windows_base(environ), FOLDER_NAME)
    else:
        folder = override or os.path.join(_posix_base(environ), FOLDER_NAME)
    folder = os.path.abspath(folder)
    _make_folder(folder)
    check_folder(folder)
    return folder


def _windows_base(environ: Mapping[str, str]) -> str:
    base = environ.get("LOCALAPPDATA")
    if not base or not os.path.isabs(base):
        raise UnsafeStateFolder("%LOCALAPPDATA% is not set for the probe's account")
    return base


def _posix_base(environ: Mapping[str, str]) -> str:
    xdg = environ.get("XDG_STATE_HOME")
    if xdg and os.path.isabs(xdg):
        return xdg
    home = environ.get("HOME")
    if not home or not os.path.isabs(home):
        try:
            import pwd

            home = pwd.getpwuid(os.getuid()).pw_dir
        except (ImportError, KeyError):
            home = ""
    if not home or not os.path.isabs(home):
        raise UnsafeStateFolder("the probe's account has no home folder ($HOME)")
    return os.path.join(home, ".local", "state")


def _make_folder(folder: str) -> None:
    """Create the folder and its missing parents, readable and writable by this account only."""
    missing: List[str] = []
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
            pass  # made meanwhile: checked below like any other
        except OSError as exc:
            raise UnsafeStateFolder(f"the state folder {path} cannot be created ({exc.strerror})") from None


def check_folder(folder: str) -> None:
    """Raise UnsafeStateFolder unless `folder` is safe for this account's private files."""
    if os.name == "nt":
        _check_windows(folder)
        return
    uid = os.geteuid()
    _check_path(folder, uid, set())
    try:
        st = os.lstat(folder)
    except OSError as exc:
        raise UnsafeStateFolder(f"the state folder {folder} is not usable ({exc.strerror})") from None
    if stat.S_ISLNK(st.st_mode):
        # A link owned by this account or root (checked above): judge where it leads.
        st = os.stat(folder)
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeStateFolder(f"the state folder {folder} is not a folder")
    if st.st_uid != uid:
        raise UnsafeStateFolder(f"the state folder {folder} belongs to another user (uid {st.st_uid})")
    if st.st_mode & 0o022:
        raise UnsafeStateFolder(
            f"the state folder {folder} is writable by other users (mode {stat.S_IMODE(st.st_mode):o})",
            hint="chmod 700 it, or give PRTG_RT_STATE_DIR a private folder",
        )


def _check_path(path: str, uid: int, seen: set) -> None:
    """Every folder and link on the way to `path` is controlled by this account or root only
    (a shared folder with the sticky bit, such as /tmp, may be passed through)."""
    if path in seen:
        raise UnsafeStateFolder(f"the state folder path {path} loops")
    seen.add(path)
    parts = [p for p in path.split(os.sep) if p]
    current = os.sep
    _check_directory(current, uid, final=False)
    for part in parts[:-1] if parts else []:
        current = os.path.join(current, part)
        try:
            st = os.lstat(current)
        except OSError as exc:
            raise UnsafeStateFolder(f"the state folder path {current} is not usable ({exc.strerror})") from None
        if stat.S_ISLNK(st.st_mode):
            if st.st_uid not in (0, uid):
                raise UnsafeStateFolder(f"the state folder path goes through {current}, a link of another user")
            target = os.path.realpath(current)
            _check_path(target, uid, seen)
            _check_directory(target, uid, final=False)
            current = target
        else:
            _check_directory(current, uid, final=False, st=st)
    if parts:
        last = os.path.join(current, parts[-1])
        try:
            st = os.lstat(last)
        except OSError:
            return
        if stat.S_ISLNK(st.st_mode):
            if st.st_uid not in (0, uid):
                raise UnsafeStateFolder(f"the state folder {last} is a link of another user")
            _check_path(os.path.realpath(last), uid, seen)


def _check_directory(path: str, uid: int, final: bool, st: Optional[os.stat_result] = None) -> None:
    if st is None:
        try:
            st = os.stat(path)
        except OSError as exc:
            raise UnsafeStateFolder(f"the state folder path {path} is not usable ({exc.strerror})") from None
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeStateFolder(f"the state folder path {path} is not a folder")
    if st.st_uid not in (0, uid):
        raise UnsafeStateFolder(f"the state folder path goes through {path}, a folder of another user")
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        raise UnsafeStateFolder(f"the state folder path goes through {path}, which other users can write")


def _check_windows(folder: str) -> None:
    try:
        st = os.lstat(folder)
    except OSError as exc:
        raise UnsafeStateFolder(f"the state folder {folder} is not usable ({exc.strerror})") from None
    if stat.S_ISLNK(st.st_mode) or getattr(st, "st_file_attributes", 0) & _REPARSE_POINT:
        raise UnsafeStateFolder(f"the state folder {folder} is a link or junction")
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeStateFolder(f"the state folder {folder} is not a folder")


def read_private(path: str) -> Optional[bytes]:
    """The content of a private file; None if it does not exist.

    The file is opened without following a link; UnsafeStateFolder if it is a link, not a
    regular file, or (POSIX) belongs to another user. Other OSErrors pass through.
    """
    try:
        fd = os.open(path, os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC | _O_BINARY)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if os.path.islink(path):
            raise UnsafeStateFolder(f"the state file {path} is a link") from None
        raise exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeStateFolder(f"the state file {path} is not a regular file")
        if os.name != "nt" and st.st_uid != os.geteuid():
            raise UnsafeStateFolder(f"the state file {path} belongs to another user (uid {st.st_uid})")
        if os.name == "nt" and os.path.islink(path):
            raise UnsafeStateFolder(f"the state file {path} is a link")
        chunks = []
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def write_private(path: str, data: bytes) -> None:
    """Replace `path` with `data`, readable and writable by this account only (0600), in a
    folder checked first (see replace_file)."""
    check_folder(os.path.dirname(os.path.abspath(path)))
    replace_file(path, data, 0o600)


def replace_file(path: str, data: bytes, mode: int) -> None:
    """Replace `path` with `data` atomically, with `mode` whatever the umask.

    Written to a temporary file created exclusively (O_EXCL, no link followed) in the same
    folder, then renamed over `path`: a reader sees the old or the new content, never a part,
    and a link planted at `path` is replaced, not followed.
    """
    folder = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.{os.urandom(6).hex()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC | _O_BINARY, mode)
    try:
        try:
            if hasattr(os, "fchmod"):
                os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


class SweepState:
    def __init__(self, sensor_id: str, environ: Mapping[str, str]):
        self.note: Optional[str] = None  # "no safe place": for the result text, not a failure
        self.path: Optional[str] = None
        try:
            folder = private_folder(environ)
        except UnsafeStateFolder as exc:
            self.note = f"sweep state not kept ({exc.cause}), so every run sweeps"
        else:
            self.path = os.path.join(folder, re.sub(r"[^A-Za-z0-9._-]", "_", sensor_id) + ".json")
        self._saved = self._load()  # as the previous runs left it
        self._latest = dict(self._saved)  # with this run's marks
        self._current = ""  # this run's probe

    def _load(self) -> dict:
        if self.path is None:
            return {}
        try:
            raw = read_private(self.path)
            data = json.loads(raw.decode("utf-8")) if raw is not None else {}
            return data if isinstance(data, dict) else {}
        except UnsafeStateFolder as exc:
            self.note = f"sweep state not read ({exc.cause}), so this run sweeps"
            return {}
        except (OSError, ValueError):
            return {}

    def _save(self, data: dict) -> None:
        self._latest = data
        if self.path is None:
            return
        try:
            write_private(self.path, json.dumps(data).encode("utf-8"))
        except UnsafeStateFolder as exc:
            self.note = f"sweep state not kept ({exc.cause}), so every run sweeps"
        except OSError:
            pass  # unknown state next time means: sweep

    def sweep_due(self) -> bool:
        """As the previous runs left it (read before this run marks itself)."""
        swept_at = self._saved.get("swept_at")
        if self._saved.get("unclean", True) or not isinstance(swept_at, (int, float)):
            return True
        return time.time() - swept_at > SWEEP_EVERY

    def late_probes(self, wall_now: float) -> List[str]:
        """GUIDs of this sensor's earlier probes that were sent but never found and may still
        arrive (deferred mail is retried for days): each run looks for exactly these."""
        return [guid for guid, sent in self._pending().items() if wall_now - sent < LATE_PROBE_SECONDS]

    def probe_in_flight(self, guid: str, sent: float) -> None:
        """Written before sending: if this run never finishes, the next one sweeps, and later
        runs look for this probe until it arrives (or LATE_PROBE_SECONDS have passed)."""
        pending = self._pending()
        pending[guid] = sent
        newest = sorted(pending.items(), key=lambda item: item[1])[-MAX_PENDING:]
        self._save({**self._saved, "unclean": True, "pending": dict(newest)})
        self._current = guid

    def finished(self, swept: bool, own_probes_left: bool, resolved: Iterable[str] = ()) -> None:
        """This run removed its own probe. `swept`: it also swept; `own_probes_left`: the sweep
        kept probes of this sensor that were still in flight (they need a later sweep);
        `resolved`: GUIDs of late probes found and removed (or no longer there)."""
        data = dict(self._saved)
        if swept:
            data["swept_at"] = time.time()
        data["unclean"] = bool(own_probes_left) or (not swept and self._saved.get("unclean", True))
        gone = set(resolved) | {self._current}
        now = time.time()
        data["pending"] = {g: t for g, t in self._pending().items()
                           if g not in gone and now - t < LATE_PROBE_SECONDS}
        self._save(data)

    def _pending(self) -> Dict[str, float]:
        raw = self._latest.get("pending")
        if not isinstance(raw, dict):
            return {}
        return {str(g): float(t) for g, t in raw.items() if isinstance(t, (int, float)) and _GUID.fullmatch(str(g))}
