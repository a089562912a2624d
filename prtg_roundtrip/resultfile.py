"""The sensor's debug result files (--store-result), written the way PRTG writes its own.

`Result of Sensor <ID>.prtg-roundtrip.txt` holds exactly what went to stdout;
`Result of Sensor <ID>.prtg-roundtrip.Data.txt` the run's inputs, one `Data['key'] := 'value';`
line each with every secret as `***`, then the redacted SMTP and IMAP transcript. Each run
overwrites both, as PRTG does. The names differ from PRTG's own `Result of Sensor <ID>.txt` /
`.Data.txt` (EXE/Script Advanced's "Write EXE result to disk", in the same Logs\\sensors folder),
so the two never overwrite each other.

Masked by name: every input whose name marks a credential (passwords, secrets, tokens, SNMP
communities, PRTG's "Credentials for Script Sensors" placeholders, private keys), whether this
run used it or not. Masked by value: every secret the run knows, and every one registered in
`secrets.registered()`, wherever it appears.
"""

from __future__ import annotations

import os
import re
from typing import Iterable, List, Mapping, Optional, Tuple

from .report import clean_text, usable_secrets
from .secrets import registered
from .transcript import MASK, redact

# Names of inputs whose values are credentials: prtg_windowspassword, prtg_linuxpassword,
# prtg_snmpcommunity, prtg_scriptplaceholder1..5, --imap-password, --oauth2-client-secret,
# --oauth2-refresh-token, and the like.
_CREDENTIAL_NAME = re.compile(
    r"pass|secret|token(?![_-]?(url|endpoint))|community|snmp|scriptplaceholder|private.?key|api.?key|assertion|auth.?code",
    re.IGNORECASE,
)


def is_credential(name: str) -> bool:
    return bool(_CREDENTIAL_NAME.search(name))


def _all_secrets(secrets: Tuple[str, ...]) -> Tuple[str, ...]:
    return usable_secrets(tuple(secrets) + registered())


def default_result_dir(environ: Mapping[str, str]) -> Optional[str]:
    """The probe's Logs\\sensors folder (older PRTG: "Logs (Sensors)"), where it exists."""
    if os.name != "nt":
        return None  # the Linux multi-platform probe has no such folder: use --result-dir
    base = os.path.join(environ.get("ProgramData", r"C:\ProgramData"), "Paessler", "PRTG Network Monitor")
    for name in (os.path.join("Logs", "sensors"), "Logs (Sensors)"):
        candidate = os.path.join(base, name)
        if os.path.isdir(candidate):
            return candidate
    return None


SUFFIX = ".prtg-roundtrip"  # after PRTG's own "Result of Sensor <ID>", before .txt / .Data.txt


def result_paths(directory: str, sensor_id: str) -> Tuple[str, str]:
    """(the document's file, the data file) for a sensor id in `directory`."""
    stem = os.path.join(directory, f"Result of Sensor {sensor_id}{SUFFIX}")
    return stem + ".txt", stem + ".Data.txt"


def data_lines(inputs: Iterable[Tuple[str, object]], secrets: Tuple[str, ...]) -> List[str]:
    lines = []
    secrets = _all_secrets(secrets)
    for key, value in inputs:
        if value is None or value is False:
            continue
        text = MASK if is_credential(key) else clean_text(redact(str(value), secrets))
        text = text.replace("'", "''")
        key = clean_text(key).replace("'", "''")
        lines.append(f"Data['{key}'] := '{text}';")
    return lines


def write_result_files(
    directory: str,
    sensor_id: str,
    document: str,
    inputs: Iterable[Tuple[str, object]],
    transcript: str,
    secrets: Tuple[str, ...],
) -> Tuple[str, str]:
    """Write both files (replacing earlier ones) and return their paths."""
    os.makedirs(directory, exist_ok=True)
    result, data = result_paths(directory, sensor_id)
    with open(result, "w", encoding="utf-8", errors="replace", newline="") as handle:
        handle.write(document)
    body = "\r\n".join(data_lines(inputs, secrets))
    redacted = redact(transcript, _all_secrets(secrets)).replace("\n", "\r\n")
    body += "\r\n\r\n// Protocol transcript (redacted)\r\n" + redacted
    with open(data, "w", encoding="utf-8", errors="replace", newline="") as handle:
        handle.write(body)
    return result, data
