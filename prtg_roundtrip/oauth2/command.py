"""--imap-token-command / --smtp-token-command: a site's own helper prints the access token.

The command line is split without a shell: on POSIX with `shlex.split` (POSIX rules: quotes and
backslashes as in sh, but no pipes, redirections or variables); on Windows the string goes to
CreateProcess unchanged, which splits it by the program's own (MSVC) rules, so quoted paths
such as "C:\\Program Files\\helper.exe" --user x work as typed. For shell features, name the
shell: `sh -c '...'` or `powershell -File helper.ps1`.

It runs within the run's budget (killed with its process group when that runs out), with no
stdin and the sensor's environment; the first line of its stdout is the token. A non-zero exit
is an error with its code and the last line of stderr, redacted. The token is not cached (the
helper knows its lifetime; it is asked on every run).
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from typing import List, Mapping, Tuple, Union

from ..deadline import Deadline
from ..errors import TokenError
from ..secrets import register, registered
from ..transcript import redact

COMMAND_TIMEOUT = 30.0


def command_line(command: str) -> Union[str, List[str]]:
    """What Popen gets: the POSIX argument list, or on Windows the string itself."""
    if os.name == "nt":  # pragma: no cover - Windows
        return command
    try:
        argv = shlex.split(command, posix=True)
    except ValueError as exc:
        raise TokenError(f"the token command cannot be split into words ({exc})", hint="Check its quotes") from None
    if not argv:
        raise TokenError("the token command is empty", hint="Give the helper's path and arguments")
    return argv


def program_name(command: str) -> str:
    """The program's file name, for messages (never its arguments: they may hold secrets)."""
    try:
        first = shlex.split(command, posix=os.name != "nt")[0]
    except (ValueError, IndexError):
        return "the token command"
    return os.path.basename(first.strip('"')) or first


def run(command: str, deadline: Deadline, environ: Mapping[str, str]) -> Tuple[str, float]:
    """(token, seconds) from the token command; TokenError on every failure."""
    args = command_line(command)
    name = program_name(command)
    wait = deadline.cap(COMMAND_TIMEOUT)
    env = {**os.environ, **environ}
    started = time.perf_counter()
    try:
        proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
            start_new_session=os.name != "nt",
            creationflags=getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0) if os.name == "nt" else 0,
        )
    except FileNotFoundError:
        raise TokenError(
            f"the token command {name} was not found", hint="Give the helper's full path"
        ) from None
    except PermissionError:
        raise TokenError(
            f"the token command {name} may not be run (permission denied)",
            hint="Make it executable for the probe's account",
        ) from None
    except OSError as exc:
        raise TokenError(f"the token command {name} could not be started ({exc.strerror})") from None
    try:
        out, err = proc.communicate(timeout=wait)
    except subprocess.TimeoutExpired:
        _kill(proc)
        raise TokenError(
            f"the token command {name} did not finish within {wait:.1f} s",
            hint="Check the helper by hand as the probe's account, or raise PRTG's timeout together with --timeout",
        ) from None
    elapsed = time.perf_counter() - started
    lines = out.decode("utf-8", "replace").splitlines()
    token = lines[0].strip() if lines else ""
    register(token)
    if proc.returncode != 0:
        how = (f"was ended by signal {-proc.returncode}" if proc.returncode < 0
               else f"failed with exit code {proc.returncode}")
        raise TokenError(
            f"the token command {name} {how}{_stderr_tail(err)}", hint="Run it by hand as the probe's account"
        )
    if not token:
        raise TokenError(
            f"the token command {name} printed no token{_stderr_tail(err)}",
            hint="It must print the access token on the first line of its output",
        )
    return token, elapsed


def _stderr_tail(err: bytes) -> str:
    lines = [line.strip() for line in err.decode("utf-8", "replace").splitlines() if line.strip()]
    if not lines:
        return ""
    text = redact(lines[-1], registered())
    return f": {text[:200]}"


def _kill(proc: subprocess.Popen[bytes]) -> None:
    try:
        if os.name == "nt":  # pragma: no cover - Windows
            proc.kill()
        else:
            os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    try:
        proc.communicate(timeout=1.0)
    except subprocess.TimeoutExpired:
        pass
