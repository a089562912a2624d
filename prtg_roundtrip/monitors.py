"""What other monitors and people need beyond PRTG's documents: the exit code, Nagios status
and performance data, OpenMetrics families, the readable per-leg lines, colour, and writing a
document to a file atomically (--output).

The templates (templates/nagios.txt.j2, openmetrics.txt.j2, text.txt.j2) lay these out;
everything here is computed from the Report alone, so every format shows the same measurement.

- Nagios / Icinga / Checkmk (Monitoring Plugins development guidelines): one status line
  `ROUNDTRIP OK - text | 'total'=10.3ms;500;1000;0 ...`, long output lines after it, and the
  exit code 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (the run could not be attempted).
- OpenMetrics: base unit seconds, one family per figure with a `leg` label, the target as
  labels, a success gauge, certificate expiry as a Unix timestamp, `# EOF` at the end.
"""

from __future__ import annotations

import math
import os
import re
import stat
from dataclasses import dataclass, replace
from typing import Any, Dict, List, Mapping, Tuple

from .report import Channel, LegDetail, Report, clean_text
from .settings import OutputFormat, Settings

# -- exit codes: the one place that decides them -----------------------------------------------

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
STATE_NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}


def nagios_state(report: Report) -> int:
    """UNKNOWN when the run could not be attempted (bad parameters, an internal error, a stop),
    CRITICAL when a leg failed or Total is above --critical, WARNING above --warning or when the
    run needs attention (a probe left flagged), else OK."""
    if report.error:
        return CRITICAL if report.attempted else UNKNOWN
    if report.limit == "error":
        return CRITICAL
    if report.limit == "warning" or report.warning:
        return WARNING
    return OK


def exit_code(report: Report, fmt: OutputFormat) -> int:
    """The process' exit code: PRTG's formats and OpenMetrics always 0 (the document says how
    the run went; PRTG and the textfile collector read only it), Nagios its state, the text
    format 1 on an error (for scripts at a console)."""
    if fmt is OutputFormat.NAGIOS:
        return nagios_state(report)
    if fmt is OutputFormat.TEXT:
        return 1 if report.error else 0
    return 0


# -- Nagios performance data ---------------------------------------------------------------------

_PERF_LABELS = {
    "Total": "total",
    "Response Time (SMTP)": "smtp",
    "Response Time (IMAP)": "imap",
    "SMTP Certificate": "smtp_certificate_days",
    "IMAP Certificate": "imap_certificate_days",
}


def perf_label(name: str) -> str:
    """A short label without spaces, quotes or '=' (Icinga's advice): 'total', 'smtp_connect'."""
    return _PERF_LABELS.get(name) or re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "value"


def _number(value: float, decimals: int = 3) -> str:
    text = f"{value:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def perf_item(c: Channel) -> str:
    """'label'=value[UOM];[warn];[crit];[min];[max] for one channel."""
    if c.unit == "TimeResponse":
        uom, value = "ms", _number(c.value)
    else:
        uom, value = "", _number(c.value) if c.is_float else str(round(c.value))
    warn = _number(c.limit_max_warning) if c.limit_max_warning is not None else ""
    crit = _number(c.limit_max_error) if c.limit_max_error is not None else ""
    low = "0" if c.value >= 0 else ""
    high = "1" if c.custom_unit == "IDLE" else ""
    item = f"'{perf_label(c.name)}'={value}{uom};{warn};{crit};{low};{high}"
    return item.rstrip(";")


def perfdata(report: Report) -> str:
    return " ".join(perf_item(c) for c in report.channels)


def plugin_text(text: str) -> str:
    """A text for the plugin output: '|' starts the performance data there, so it becomes '/'."""
    return text.replace("|", "/")


# -- readable per-leg lines (text format, Nagios long output) ----------------------------------


def leg_lines(leg: LegDetail) -> List[Tuple[str, str]]:
    """(what, value) pairs describing one leg."""
    lines = [("server", leg.server)]
    security = leg.security + (f", {leg.cipher}" if leg.cipher else "")
    lines.append(("security", security))
    if leg.certificate_subject or leg.certificate_days is not None:
        cert = leg.certificate_subject or "(no subject)"
        if leg.certificate_days is not None:
            cert += f", expires in {leg.certificate_days:.0f} days" if leg.certificate_days >= 1 else \
                ", expires within a day"
        lines.append(("certificate", cert))
    lines.append(("login", leg.auth))
    if leg.steps:
        lines.append(("steps", ", ".join(f"{name} {ms:.1f} ms" for name, ms in leg.steps)))
    if leg.offers:
        lines.append(("offers", ", ".join(f"{name} {value}" for name, value in leg.offers)))
    return lines


def failure_lines(report: Report) -> List[Tuple[str, str]]:
    p = report.problem
    if p is None:
        return []
    lines = [("failed step", p.step)]
    if p.server:
        lines.append(("server", p.server))
    lines.append(("cause", p.cause))
    if p.hint:
        lines.append(("try", p.hint))
    return lines


def long_output(report: Report) -> List[str]:
    """Nagios long output: one line per fact, legs first, no '|' anywhere."""
    lines = []
    for leg in report.legs:
        lines.append(f"{leg.leg.upper()}: " + "; ".join(f"{k} {v}" for k, v in leg_lines(leg)))
    lines.extend(f"{k}: {v}" for k, v in failure_lines(report))
    return [plugin_text(line) for line in lines]


# -- colour ---------------------------------------------------------------------------------------


def use_colour(stream: Any, environ: Mapping[str, str]) -> bool:
    """Colour only for a terminal that shows it: not with NO_COLOR (https://no-color.org: any
    non-empty value), not with TERM=dumb or no TERM (Windows consoles: only where ANSI is known
    to work, Windows Terminal's WT_SESSION)."""
    try:
        if not stream.isatty():
            return False
    except (AttributeError, OSError, ValueError):
        return False
    if environ.get("NO_COLOR"):
        return False
    if os.name == "nt":
        return bool(environ.get("WT_SESSION"))
    term = environ.get("TERM", "")
    return bool(term) and term != "dumb"


@dataclass(frozen=True)
class Palette:
    ok: str = ""
    warning: str = ""
    error: str = ""
    bold: str = ""
    dim: str = ""
    reset: str = ""


COLOURS = Palette(ok="\x1b[32m", warning="\x1b[33m", error="\x1b[31m", bold="\x1b[1m", dim="\x1b[2m",
                  reset="\x1b[0m")
PLAIN = Palette()


# -- OpenMetrics ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    name: str
    type: str
    help: str
    unit: str = ""
    samples: Tuple[Tuple[str, str], ...] = ()  # (label set, value)


_DURATION_LEGS = {"Total": "total", "Response Time (SMTP)": "smtp", "Response Time (IMAP)": "imap"}
_COUNTS = {"IMAP Checks": ("roundtrip_imap_checks", "Mailbox checks until the probe was seen."),
           "IMAP Push Used": ("roundtrip_imap_push_used", "1 when an IDLE push ended the wait, else 0.")}


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(pairs: List[Tuple[str, str]]) -> str:
    return "{" + ",".join(f'{name}="{_label_value(value)}"' for name, value in pairs) + "}"


def _om_number(value: float) -> str:
    if not math.isfinite(value):
        return "NaN"
    return repr(float(value))


def _step_name(channel: str) -> Tuple[str, str]:
    """'SMTP Connect' -> ('smtp', 'connect'); 'Token' -> ('total', 'token')."""
    words = channel.split(" ", 1)
    if words[0] in ("SMTP", "IMAP") and len(words) == 2:
        return words[0].lower(), re.sub(r"[^a-z0-9]+", "_", words[1].lower()).strip("_")
    return "total", re.sub(r"[^a-z0-9]+", "_", channel.lower()).strip("_")


def openmetrics_families(report: Report) -> List[Family]:
    target = list(report.target)
    families = []
    families.append(Family(
        "roundtrip_success", "gauge", "1 when the last mail round trip succeeded, 0 when it failed.",
        samples=((_labels(target), "0" if report.error else "1"),),
    ))
    families.append(Family(
        "roundtrip_warning", "gauge",
        "1 when the round trip succeeded but needs attention (a limit exceeded, a probe left behind).",
        samples=((_labels(target), "1" if not report.error and report.status != "ok" else "0"),),
    ))
    durations, steps = [], []
    counts: Dict[str, List[Tuple[str, str]]] = {}
    for c in report.channels:
        if c.name in _DURATION_LEGS:
            durations.append((_labels([("leg", _DURATION_LEGS[c.name]), *target]), _om_number(c.value / 1000.0)))
        elif c.name in _COUNTS:
            counts.setdefault(c.name, []).append((_labels([("leg", "imap"), *target]), _om_number(c.value)))
        elif c.unit == "TimeResponse":
            leg, step = _step_name(c.name)
            steps.append((_labels([("leg", leg), ("step", step), *target]), _om_number(c.value / 1000.0)))
    if durations:
        families.append(Family("roundtrip_duration_seconds", "gauge",
                               "Time of the mail round trip (leg total) and of each leg (smtp: connect to accepted; "
                               "imap: accepted to seen in the mailbox).", "seconds", tuple(durations)))
    if steps:
        families.append(Family("roundtrip_step_duration_seconds", "gauge", "Time of each step of a leg.",
                               "seconds", tuple(steps)))
    for name, samples in counts.items():
        family, text = _COUNTS[name]
        families.append(Family(family, "gauge", text, samples=tuple(samples)))
    offered = [(_labels([("leg", leg.leg), ("capability", name), *target]), "1" if value == "yes" else "0")
               for leg in report.legs for name, value in leg.offers if value in ("yes", "no")]
    if offered:
        families.append(Family("roundtrip_capability", "gauge",
                               "1 when the server offers a capability the sensor uses (prtg-roundtrip check).",
                               samples=tuple(offered)))
    expiry = [(_labels([("leg", leg.leg), *target]), _om_number(leg.certificate_expires))
              for leg in report.legs if leg.certificate_expires is not None]
    if expiry:
        families.append(Family("roundtrip_certificate_expiry_timestamp_seconds", "gauge",
                               "When the server's verified TLS certificate expires (Unix time).", "seconds",
                               tuple(expiry)))
    return families


def target_labels(settings: Settings) -> Tuple[Tuple[str, str], ...]:
    """The labels that identify what a run checks."""
    return (
        ("smtp_host", settings.smtp.host),
        ("smtp_port", str(settings.smtp.port)),
        ("imap_host", settings.imap.host),
        ("imap_port", str(settings.imap.port)),
        ("mailbox", settings.imap.mailbox),
    )


# -- the template's view --------------------------------------------------------------------------


def view(report: Report, fmt: OutputFormat, colour: bool = False) -> Dict[str, Any]:
    """What the templates get besides the report (whose parts are cleaned here like its text:
    one line each, no character a document must not carry)."""
    report = replace(
        report, legs=tuple(leg.cleaned(clean_text) for leg in report.legs),
        problem=None if report.problem is None else report.problem.cleaned(clean_text),
        target=tuple((name, clean_text(value)) for name, value in report.target),
    )
    if fmt is OutputFormat.NAGIOS:
        return {
            "state": STATE_NAMES[nagios_state(report)],
            "summary": plugin_text(report.text),
            "perfdata": perfdata(report) if not report.error else "",
            "long_output": long_output(report),
        }
    if fmt is OutputFormat.OPENMETRICS:
        return {"families": openmetrics_families(report)}
    if fmt is OutputFormat.TEXT:
        return {
            "style": COLOURS if colour else PLAIN,
            "legs": [(leg.leg.upper(), leg_lines(leg)) for leg in report.legs],
            "failure": failure_lines(report),
        }
    return {}


# -- --output: a file written atomically ------------------------------------------------------


class OutputRefused(OSError):
    """--output names something that must not be replaced (a link, a folder, a device)."""


def write_output(path: str, data: bytes, mode: int = 0o644) -> None:
    """Replace `path` with `data` as node_exporter's textfile collector wants it: a temporary
    file created exclusively (no link followed) in the same folder, then renamed over `path`,
    so a reader sees the old or the new document, never a part. A link at `path` is refused,
    as state.py refuses links for its files; so is anything but a regular file. The file is
    readable by others (mode 0644): the collector usually runs as another account, which is
    why state.write_private (0600, in a folder only this account may write) does not fit; the
    writing itself is state.replace_file."""
    path = os.path.abspath(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if stat.S_ISLNK(st.st_mode):
            raise OutputRefused(f"{path} is a symbolic link; give the real file")
        if not stat.S_ISREG(st.st_mode):
            raise OutputRefused(f"{path} is not a regular file")
    from .state import replace_file

    replace_file(path, data, mode)


def output_problem(path: str, exc: OSError) -> str:
    """Why --output failed, in words: 'the document could not be written to PATH (reason)'."""
    reason = str(exc) if isinstance(exc, OutputRefused) else (exc.strerror or str(exc))
    return f"the document could not be written to {path} ({reason})"
