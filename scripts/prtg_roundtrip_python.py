"""prtg-roundtrip for PRTG's Python Script Advanced sensor (copy into `Custom Sensors\\python`).

PRTG runs this file with its bundled Python and one argument: a JSON object with the parent
device's data (`host`, `params` = the sensor's "Additional Parameters", the login fields). It
prints one PRTG JSON document and exits 0, whatever happens.

- `params` is split like a POSIX shell would (double or single quotes around values with spaces,
  backslash escapes) and becomes prtg-roundtrip's command line.
- `--smtp-host` defaults to the device's `host`.
- The device's login fields are handed to the package the way the EXE/Script Advanced sensor's
  "Set placeholders as environment values" does (`prtg_linuxuser`, `prtg_linuxpassword`,
  `prtg_windowsuser`, `prtg_windowspassword`, `prtg_windowsdomain`, `prtg_host`), so
  `--imap-credentials linux|windows` and `--smtp-credentials linux|windows` work here too.
  `--credentials linux|windows` is short for `--imap-credentials`. The package is called in
  this process (no child process), so no password appears in any process list or command line.
- PRTG's "Credentials for Script Sensors" (`scriptplaceholder1`..`5`) become
  `prtg_scriptplaceholder1`..`5`: `--imap-password placeholder:1` and the like read them.
- The output is always `--format prtg-json`, the only format this sensor type reads.
- The budget: PRTG kills this sensor at its scanning interval minus 1 s. `--timeout` is set one
  second below that point: from PRTG's `timeout` field (the killing point, in seconds) if the
  argument has one, else from its `interval` field minus 1 s, else from PRTG's default interval
  of 60 s (59 s, so `--timeout 58`). A larger `--timeout` in the parameters is lowered to it; a
  smaller one stands. (PRTG's manual does not list the argument's fields: whether it carries
  `timeout` or `interval` is unconfirmed, so the default is what counts on an unknown PRTG.)

The package is imported from PRTG's Python (install it there from the offline bundle, see
docs/launchers.md) or, failing that, from a virtual environment of the same Python version next
to this file (`prtg-roundtrip-venv` or `.venv`), or from the single file `prtg-roundtrip.pyz`
next to this file (nothing to install). If it cannot be imported, the document says so.
Runs on Python 3.9 and later.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

# PRTG's JSON field -> the environment variable the package reads (as EXE/Script Advanced gets it)
ENVIRONMENT_FIELDS = {
    "host": "prtg_host",
    "linuxloginusername": "prtg_linuxuser",
    "linuxloginpassword": "prtg_linuxpassword",
    "windowsloginusername": "prtg_windowsuser",
    "windowsloginpassword": "prtg_windowspassword",
    "windowslogindomain": "prtg_windowsdomain",
    "sensorid": "prtg_sensorid",
    "deviceid": "prtg_deviceid",
    **{f"scriptplaceholder{n}": f"prtg_scriptplaceholder{n}" for n in range(1, 6)},
}
DEFAULT_INTERVAL = 60.0  # PRTG's default scanning interval
MIN_TIMEOUT, MAX_TIMEOUT = 5, 900  # what --timeout takes
CREDENTIAL_KINDS = ("linux", "windows")
VENV_NAMES = ("prtg-roundtrip-venv", ".venv")
PYZ_NAME = "prtg-roundtrip.pyz"


class EntryError(Exception):
    """A problem with PRTG's argument; the message is safe to show (it holds no credential)."""


def error_document(text: str) -> str:
    return json.dumps({"prtg": {"error": 1, "text": text[:2000]}})


def _write(document: str) -> None:
    sys.stdout.buffer.write(document.encode("utf-8") + b"\n")
    sys.stdout.buffer.flush()


def _option(args: Sequence[str], name: str) -> Tuple[bool, Optional[str]]:
    """Whether `--name` is given (as `--name VALUE` or `--name=VALUE`), and its last value."""
    found, value = False, None
    for i, arg in enumerate(args):
        if arg == name:
            found = True
            value = args[i + 1] if i + 1 < len(args) else None
        elif arg.startswith(name + "="):
            found, value = True, arg[len(name) + 1:]
    return found, value


def _without(args: Sequence[str], name: str) -> List[str]:
    """`args` without `--name VALUE` / `--name=VALUE`."""
    kept: List[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg == name:
            skip = True
        elif not arg.startswith(name + "="):
            kept.append(arg)
    return kept


def build_environment(data: Dict[str, Any], base: Dict[str, str]) -> Dict[str, str]:
    """`base` plus the device's data under the names of PRTG's environment placeholders."""
    environ = {k: v for k, v in base.items() if not k.startswith("prtg_")}
    for field, name in ENVIRONMENT_FIELDS.items():
        value = data.get(field)
        if value is not None and value != "":
            environ[name] = str(value)
    return environ


def build_argv(data: Dict[str, Any]) -> List[str]:
    """prtg-roundtrip's command line from PRTG's JSON argument (it never holds a password)."""
    params = data.get("params") or ""
    if not isinstance(params, str):
        raise EntryError("'params' in PRTG's argument is not text")
    try:
        args = shlex.split(params, posix=True)
    except ValueError as exc:  # unbalanced quotes, a trailing backslash
        raise EntryError(
            f"Additional Parameters cannot be split: {exc}. Put values that contain spaces in "
            "double quotes and close every quote"
        ) from None

    given, kind = _option(args, "--credentials")
    if given:
        if kind not in CREDENTIAL_KINDS:
            raise EntryError(f"--credentials must be 'linux' or 'windows', not {kind!r}")
        args = _without(args, "--credentials") + ["--imap-credentials", str(kind)]

    host = data.get("host")
    if host and not _option(args, "--smtp-host")[0]:
        args += ["--smtp-host", str(host)]
    return _without(args, "--format") + ["--format", "prtg-json"]


def _seconds(value: Any) -> Optional[float]:
    """A number of seconds from PRTG's argument (a number or a numeric string), else None."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if 1 <= seconds <= 86400 else None


def timeout_for(data: Dict[str, Any]) -> int:
    """The run's budget: one second below the point where PRTG kills the script."""
    kill = _seconds(data.get("timeout"))
    if kill is None:
        kill = (_seconds(data.get("interval")) or DEFAULT_INTERVAL) - 1
    return int(max(MIN_TIMEOUT, min(MAX_TIMEOUT, int(kill) - 1)))


def with_budget(args: List[str], data: Dict[str, Any]) -> List[str]:
    """`args` with a --timeout that ends before PRTG's killing point (a smaller one stands)."""
    limit = timeout_for(data)
    given, value = _option(args, "--timeout")
    if given:
        try:
            if float(str(value)) <= limit:
                return args
        except ValueError:
            return args  # the sensor refuses it with a document of its own
    return _without(args, "--timeout") + ["--timeout", str(limit)]


def _add_venv_next_to(script: str) -> Optional[str]:
    """Put the site-packages of a same-version virtual environment beside `script` on sys.path."""
    import site

    here = os.path.dirname(os.path.abspath(script))
    wanted = f"{sys.version_info[0]}.{sys.version_info[1]}"
    for name in VENV_NAMES:
        venv = os.path.join(here, name)
        try:
            with open(os.path.join(venv, "pyvenv.cfg"), encoding="utf-8") as handle:
                config = dict(
                    (key.strip().lower(), value.strip())
                    for key, _, value in (line.partition("=") for line in handle)
                )
        except OSError:
            continue
        version = config.get("version_info") or config.get("version") or ""
        if ".".join(version.split(".")[:2]) != wanted:
            continue
        for candidate in (
            os.path.join(venv, "Lib", "site-packages"),
            os.path.join(venv, "lib", "python" + wanted, "site-packages"),
        ):
            if os.path.isdir(candidate):
                site.addsitedir(candidate)
                return candidate
    return None


def _add_pyz_next_to(script: str) -> Optional[str]:
    """Import the package from prtg-roundtrip.pyz beside `script` (through its bytecode cache)."""
    archive = os.path.join(os.path.dirname(os.path.abspath(script)), PYZ_NAME)
    if not os.path.isfile(archive):
        return None
    sys.path.insert(0, archive)
    import prtg_roundtrip_pyz  # the archive's start-up module (tools/pyz_bootstrap.py)

    prtg_roundtrip_pyz.activate(archive)
    return archive


def _import_main() -> Any:
    try:
        from prtg_roundtrip.cli import main
    except ImportError as first:
        if _add_venv_next_to(__file__) is None and _add_pyz_next_to(__file__) is None:
            raise first from None
        from prtg_roundtrip.cli import main
    return main


def run(argv: Sequence[str]) -> int:
    if len(argv) < 2:
        _write(error_document(
            "prtg_roundtrip_python.py: no argument from PRTG. This script is for PRTG's "
            "Python Script Advanced sensor, which passes the device's data as one JSON argument"
        ))
        return 0
    try:
        data = json.loads(argv[1])
        if not isinstance(data, dict):
            raise EntryError("PRTG's argument is not a JSON object")
        sensor_argv = with_budget(build_argv(data), data)
        environ = build_environment(data, dict(os.environ))
    except EntryError as exc:
        _write(error_document(f"prtg_roundtrip_python.py: {exc}."))
        return 0
    except json.JSONDecodeError as exc:  # the argument itself holds passwords: not shown
        _write(error_document(f"prtg_roundtrip_python.py: PRTG's argument is not valid JSON ({exc.msg})."))
        return 0

    try:
        main = _import_main()
    except Exception as exc:  # noqa: BLE001 - any import failure must become a document
        _write(error_document(
            f"prtg_roundtrip_python.py: cannot import prtg_roundtrip ({type(exc).__name__}: {exc}) "
            f"with Python {sys.version.split()[0]} at {sys.executable}. Install it into this Python "
            "offline from the bundle (python -m pip install --no-index --find-links wheels "
            "prtg-roundtrip), or put prtg-roundtrip.pyz next to this script, or make a virtual "
            "environment of the same Python version named "
            "prtg-roundtrip-venv next to this script. Python 3.9 or later is needed."
        ))
        return 0
    return int(main(sensor_argv, environ) or 0)


if __name__ == "__main__":
    sys.exit(run(sys.argv))
