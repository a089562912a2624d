"""PRTG's debug result files ("Result Handling: Store result"), written the way PRTG writes them.

`Result of Sensor <ID>.txt` holds exactly what went to stdout; `Result of Sensor <ID>.Data.txt`
the run's inputs, one `Data['key'] := 'value';` line each with every secret as `***`, then the
redacted SMTP and IMAP transcript. Each run overwrites both, as PRTG does.
"""

from __future__ import annotations

import os
from typing import Iterable, List, Mapping, Optional, Tuple

from .transcript import MASK, redact


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


def data_lines(inputs: Iterable[Tuple[str, object]], secrets: Tuple[str, ...]) -> List[str]:
    lines = []
    for key, value in inputs:
        if value is None or value is False:
            continue
        text = MASK if "password" in key.lower() else redact(str(value), secrets)
        text = text.replace("'", "''").replace("\r", " ").replace("\n", " ")
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
    result = os.path.join(directory, f"Result of Sensor {sensor_id}.txt")
    data = os.path.join(directory, f"Result of Sensor {sensor_id}.Data.txt")
    with open(result, "w", encoding="utf-8", newline="") as handle:
        handle.write(document)
    body = "\r\n".join(data_lines(inputs, secrets))
    body += "\r\n\r\n// Protocol transcript (redacted)\r\n" + redact(transcript, secrets).replace("\n", "\r\n")
    with open(data, "w", encoding="utf-8", newline="") as handle:
        handle.write(body)
    return result, data
