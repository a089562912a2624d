"""One probe for every monitor: the same measurement in every format, each checked by its own
parser or checker, and runs against the real stack for the formats other monitors read.

- PRTG formats: tools/check_output.py.
- Nagios: `parse_plugin_output` below, written from the Monitoring Plugins development
  guidelines (status line, performance data grammar, units, thresholds, exit codes).
- OpenMetrics: the official Python client's parser (prometheus_client), and `promtool check
  metrics` where Debian's prometheus package is installed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, replace
from typing import Any, Dict, List, Optional

import pytest
from conftest import ROOT, base_args, check_output, with_options

from prtg_roundtrip import cli
from prtg_roundtrip.errors import ImapError, ParameterError
from prtg_roundtrip.imap_wait import ReceiveResult
from prtg_roundtrip.measurement import Measurement, evaluate
from prtg_roundtrip.render import render
from prtg_roundtrip.report import Report
from prtg_roundtrip.settings import ChannelSet, OutputFormat, OutputSettings
from prtg_roundtrip.smtp_send import SendResult
from prtg_roundtrip.tls import Security

# -- a parser for plugin output, after the Monitoring Plugins development guidelines -------------

STATES = {"OK": 0, "WARNING": 1, "CRITICAL": 2, "UNKNOWN": 3}
UOMS = {"", "s", "ms", "us", "%", "B", "KB", "MB", "TB", "c"}
_NUMBER = r"-?\d+(?:\.\d+)?"
_RANGE = re.compile(rf"^@?(?:(?:{_NUMBER}|~):)?(?:{_NUMBER})?$")
_PERF_ITEM = re.compile(
    rf"(?:'(?P<qlabel>(?:[^']|'')+)'|(?P<label>[^'= ][^= ]*))=(?P<value>{_NUMBER})(?P<uom>[A-Za-z%]*)"
    r"(?:;(?P<warn>[^; ]*))?(?:;(?P<crit>[^; ]*))?(?:;(?P<min>[^; ]*))?(?:;(?P<max>[^; ]*))?(?= |$)"
)


@dataclass
class Perf:
    label: str
    value: float
    uom: str
    warn: str
    crit: str
    min: str
    max: str


@dataclass
class PluginOutput:
    service: str
    state: str
    text: str
    perf: Dict[str, Perf]
    long_output: List[str]


def parse_plugin_output(output: str) -> PluginOutput:
    """Parse (and check) one plugin's output: `SERVICE STATE - text[ | perfdata]`, then long
    output lines. Raises AssertionError with the rule that is broken."""
    assert output.endswith("\n") and "\r" not in output, "lines end with a bare newline"
    lines = output[:-1].split("\n")
    first, rest = lines[0], lines[1:]
    head, bar, perftext = first.partition("|")
    match = re.fullmatch(r"(?P<service>[A-Z][A-Z0-9_]*) (?P<state>OK|WARNING|CRITICAL|UNKNOWN) - (?P<text>.+?)",
                         head.rstrip() if bar else head)
    assert match, f"status line is not 'SERVICE STATE - text': {first!r}"
    assert all("|" not in line for line in rest), "performance data only on the first line here"
    perf: Dict[str, Perf] = {}
    perftext = perftext.strip()
    position = 0
    while position < len(perftext):
        item = _PERF_ITEM.match(perftext, position)
        assert item, f"not 'label'=value[UOM];[warn];[crit];[min];[max]: {perftext[position:]!r}"
        label = (item.group("qlabel") or "").replace("''", "'") or item.group("label")
        assert label not in perf, f"label {label!r} twice"
        assert "=" not in label and "'" not in label, label
        uom = item.group("uom")
        assert uom in UOMS, f"unknown unit of measurement {uom!r} for {label}"
        for name in ("warn", "crit"):
            value = item.group(name) or ""
            assert not value or _RANGE.match(value), f"{name} of {label} is not a range: {value!r}"
        for name in ("min", "max"):
            value = item.group(name) or ""
            assert not value or re.fullmatch(_NUMBER, value), f"{name} of {label} is not a number: {value!r}"
        perf[label] = Perf(label, float(item.group("value")), uom, item.group("warn") or "", item.group("crit") or "",
                           item.group("min") or "", item.group("max") or "")
        position = item.end()
        while position < len(perftext) and perftext[position] == " ":
            position += 1
    return PluginOutput(match.group("service"), match.group("state"), match.group("text"), perf, rest)


def test_the_plugin_parser_refuses_what_the_guidelines_forbid() -> None:
    parse_plugin_output("ROUNDTRIP OK - fine | 'total'=10.3ms;500;1000;0 'smtp'=1ms;;;0\n")
    for bad in ("ROUNDTRIP FINE - x\n", "ROUNDTRIP OK - x | 'total'=10,3ms\n", "ROUNDTRIP OK - x | 'a'=1ms;x\n",
                "ROUNDTRIP OK - x | 'a'=1days\n", "ROUNDTRIP OK - x\nmore | 'a'=1\n", "ROUNDTRIP OK - x"):
        with pytest.raises(AssertionError):
            parse_plugin_output(bad)


# -- one measurement, three outcomes ---------------------------------------------------------------

EXPIRES = 1_900_000_000.0


def _security(cn: str) -> Security:
    return Security("TLSv1.3", False, 300.25, cipher="TLS_AES_256_GCM_SHA384", certificate_subject=cn,
                    certificate_expires=EXPIRES)


def measurement() -> Measurement:
    send = SendResult(
        server="smtp.example.test:587", started_at=100.0, connected_at=100.010, tls_started_at=100.011,
        tls_done_at=100.020, auth_started_at=100.021, authenticated_at=100.025, ready_at=100.026,
        accepted_at=100.050, security=_security("smtp.example.test"), reply="2.0.0 Ok: queued", auth="PLAIN",
    )
    receive = ReceiveResult(
        server="imap.example.test:993", mailbox="INBOX", connect_started_at=99.9, logged_in_at=99.95,
        found_at=100.0603, uid=7, security=replace(_security("imap.example.test"), implicit=True),
        detection="IDLE push", checks=2, deletion="expunged", auth="LOGIN",
    )
    return Measurement(send=send, receive=receive, search="server search")


TARGET = (("smtp_host", "smtp.example.test"), ("smtp_port", "587"), ("imap_host", "imap.example.test"),
          ("imap_port", "993"), ("mailbox", 'In"box\\x'))


def reports() -> Dict[str, Report]:
    """success, warning (Total above --warning), error (a failed leg), unknown (bad parameters)."""
    m = measurement()
    ok = evaluate(m, OutputSettings(channels=ChannelSet.DETAILED, warning_ms=500, error_ms=1000))
    warning = evaluate(m, OutputSettings(warning_ms=50, error_ms=1000))
    error = cli._failure(ImapError("login rejected ([AUTHENTICATIONFAILED] Authentication failed)",
                                   server="imap.example.test:993", hint="Check --imap-user and --imap-password"))
    unknown = cli._parameter_failure(ParameterError("--imap-port is not a port | number", hint="Fix it"), ())
    found = {"ok": ok, "warning": warning, "error": error, "unknown": unknown}
    return {name: replace(r, target=TARGET if name != "unknown" else ()) for name, r in found.items()}


OUTCOMES = ["ok", "warning", "error", "unknown"]
EXPECTED_STATE = {"ok": "OK", "warning": "WARNING", "error": "CRITICAL", "unknown": "UNKNOWN"}


@pytest.mark.parametrize("outcome", OUTCOMES)
@pytest.mark.parametrize("fmt", [OutputFormat.PRTG_XML, OutputFormat.PRTG_JSON, OutputFormat.SCRIPT_V2])
def test_prtg_formats_of_the_measurement_pass_the_checker(outcome: str, fmt: OutputFormat) -> None:
    report = reports()[outcome]
    text = render(report, fmt)
    assert check_output.check(text, fmt.value) == []
    doc = check_output.parse(text, fmt.value)
    assert bool(doc.error) == (outcome in ("error", "unknown"))
    assert cli._exit_code(report, fmt) == 0


@pytest.mark.parametrize("outcome", OUTCOMES)
def test_nagios_format_follows_the_guidelines(outcome: str) -> None:
    report = reports()[outcome]
    out = parse_plugin_output(render(report, OutputFormat.NAGIOS))
    assert out.service == "ROUNDTRIP"
    assert out.state == EXPECTED_STATE[outcome]
    assert cli._exit_code(report, OutputFormat.NAGIOS) == STATES[out.state]
    if outcome in ("ok", "warning"):
        total = out.perf["total"]
        assert (total.uom, total.min) == ("ms", "0")
        assert total.value == pytest.approx(60.3)
        assert (total.warn, total.crit) == (("500", "1000") if outcome == "ok" else ("50", "1000"))
        assert out.perf["smtp"].value == pytest.approx(50.0) and out.perf["imap"].value == pytest.approx(10.3)
        # every channel has its item: the same measurement as PRTG's channels
        assert len(out.perf) == len(report.channels)
        assert out.perf["smtp_certificate_days"].uom == ""
        smtp_line = next(line for line in out.long_output if line.startswith("SMTP:"))
        assert "TLSv1.3 (STARTTLS), TLS_AES_256_GCM_SHA384" in smtp_line
        assert "certificate smtp.example.test, expires in 300 days" in smtp_line
        assert "login PLAIN" in smtp_line and "submit 24.0 ms" in smtp_line
        assert "login LOGIN" in next(line for line in out.long_output if line.startswith("IMAP:"))
    else:
        assert out.perf == {}
        assert any(line.startswith("cause: ") for line in out.long_output)
    if outcome == "error":
        assert "cause: login rejected ([AUTHENTICATIONFAILED] Authentication failed)" in out.long_output
        assert "try: Check --imap-user and --imap-password" in out.long_output


def test_nagios_perfdata_example_of_the_issue() -> None:
    report = reports()["ok"]
    first = render(report, OutputFormat.NAGIOS).split("\n", 1)[0]
    assert "'total'=60.3ms;500;1000;0 'smtp'=50ms;;;0 'imap'=10.3ms;;;0" in first


def openmetrics_families(text: str) -> Dict[str, Any]:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    return {f.name: f for f in text_string_to_metric_families(text)}


def promtool_check(text: str) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        return
    proc = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True, check=False)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()


@pytest.mark.parametrize("outcome", OUTCOMES)
def test_openmetrics_format_parses_with_the_official_client(outcome: str) -> None:
    report = reports()[outcome]
    text = render(report, OutputFormat.OPENMETRICS)
    assert text.endswith("# EOF\n")
    families = openmetrics_families(text)
    promtool_check(text)
    success = families["roundtrip_success"].samples[0]
    assert success.value == (0 if outcome in ("error", "unknown") else 1)
    assert families["roundtrip_warning"].samples[0].value == (1 if outcome == "warning" else 0)
    assert cli._exit_code(report, OutputFormat.OPENMETRICS) == 0
    if outcome in ("error", "unknown"):
        assert "roundtrip_duration_seconds" not in {f for f in families}
        return
    assert success.labels == dict(TARGET)  # the target, escaped and read back exactly
    durations = families["roundtrip_duration_seconds"]
    assert durations.unit == "seconds" and durations.type == "gauge"
    by_leg = {s.labels["leg"]: s.value for s in durations.samples}
    assert by_leg == pytest.approx({"total": 0.0603, "smtp": 0.050, "imap": 0.0103})
    expiry = families["roundtrip_certificate_expiry_timestamp_seconds"]
    assert {s.labels["leg"]: s.value for s in expiry.samples} == {"smtp": EXPIRES, "imap": EXPIRES}
    if outcome == "ok":  # detailed channels: each step, in seconds
        samples = families["roundtrip_step_duration_seconds"].samples
        steps = {(s.labels["leg"], s.labels["step"]): s.value for s in samples}
        assert steps[("smtp", "connect")] == pytest.approx(0.010)
        assert families["roundtrip_imap_checks"].samples[0].value == 2


@pytest.mark.parametrize("outcome", OUTCOMES)
def test_text_format_shows_each_leg_and_the_failure(outcome: str) -> None:
    report = reports()[outcome]
    text = render(report, OutputFormat.TEXT)
    assert "\x1b[" not in text
    assert text.split()[0] == {"ok": "OK", "warning": "WARNING", "error": "ERROR", "unknown": "ERROR"}[outcome]
    if outcome in ("ok", "warning"):
        for fact in ("smtp.example.test:587", "imap.example.test:993", "TLSv1.3 (STARTTLS)", "TLSv1.3 (implicit TLS)",
                     "TLS_AES_256_GCM_SHA384", "smtp.example.test, expires in 300 days", "PLAIN", "LOGIN",
                     "connect 10.0 ms", "STARTTLS 9.0 ms", "login 4.0 ms", "submit 24.0 ms"):
            assert fact in text, fact
    if outcome == "error":
        for fact in ("IMAP receive", "imap.example.test:993", "[AUTHENTICATIONFAILED] Authentication failed",
                     "Check --imap-user and --imap-password"):
            assert fact in text, fact
    coloured = render(report, OutputFormat.TEXT, colour=True)
    assert "\x1b[" in coloured
    assert re.sub("\x1b\\[[0-9;]*m", "", coloured) == text


def test_secrets_are_redacted_in_every_part() -> None:
    secret = "Sup3r-S3cret-Pw"
    report = cli._failure(ImapError(f"login rejected (server echoed {secret})", server="imap.example.test:993",
                                    hint=f"not {secret}"))
    report = replace(report, target=(("mailbox", secret),)).redacted((secret,))
    for fmt in OutputFormat:
        assert secret not in render(report, fmt)


def test_no_control_character_from_the_parts_reaches_a_document() -> None:
    hostile = "bad\x00\x1b[31m\u2028line\ufffe"
    report = cli._failure(ImapError(f"refused ({hostile})", server=f"imap{hostile}:993", hint=f"try {hostile}"))
    ok = reports()["ok"]
    legs = tuple(replace(leg, certificate_subject=hostile, cipher=hostile) for leg in ok.legs)
    for r in (replace(report, target=(("mailbox", hostile),)), replace(ok, legs=legs, target=(("mailbox", hostile),))):
        for fmt in OutputFormat:
            document = render(r, fmt)
            assert not any(ch in document for ch in "\x00\x1b\u2028\ufffe"), (fmt, document)
            if fmt is OutputFormat.NAGIOS:
                parse_plugin_output(document)
            if fmt is OutputFormat.OPENMETRICS:
                openmetrics_families(document)


# -- runs against the real stack -------------------------------------------------------------------


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


def run(args: List[str], env: Optional[Dict[str, str]] = None) -> Run:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("prtg_")}
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, "-m", "prtg_roundtrip", *args], capture_output=True, input=b"",
                          env=full_env, cwd=str(ROOT), timeout=120, check=False)
    out = proc.stdout.decode("utf-8")
    assert "Traceback" not in out + proc.stderr.decode("utf-8", "replace")
    return Run(proc.returncode, out, proc.stderr.decode("utf-8", "replace"))


def tls_args(stack: Dict[str, Any]) -> List[str]:
    """Submission with STARTTLS and a password; IMAPS: every per-leg detail has something to show."""
    args = base_args(stack, smtp="submission", imap="imaps")
    sender = stack["users"]["sender"]
    return with_options(args, smtp_tls="starttls", imap_tls="tls", smtp_auth="password",
                        smtp_user=sender["login"], smtp_password=sender["password"])


def test_nagios_against_the_stack(stack: Dict[str, Any], mailbox: Any) -> None:
    args = tls_args(stack)
    ok = run([*args, "--format", "nagios", "-w", "20000", "-c", "25000"])
    out = parse_plugin_output(ok.stdout)
    assert (out.state, ok.returncode) == ("OK", 0), ok
    assert (out.perf["total"].warn, out.perf["total"].crit) == ("20000", "25000")
    assert out.perf["total"].value == pytest.approx(out.perf["smtp"].value + out.perf["imap"].value, abs=0.01)
    assert 0 < out.perf["smtp_certificate_days"].value
    assert any("login PLAIN" in line and "TLSv1." in line for line in out.long_output)

    warn = run([*args, "--format", "nagios", "--warning", "0.001", "--critical", "25000"])
    assert (parse_plugin_output(warn.stdout).state, warn.returncode) == ("WARNING", 1), warn
    crit = run([*args, "--format", "nagios", "-w", "0.001", "-c", "0.002"])
    assert (parse_plugin_output(crit.stdout).state, crit.returncode) == ("CRITICAL", 2), crit

    refused = run(with_options(args, imap_password="not-the-password") + ["--format", "nagios"])
    out = parse_plugin_output(refused.stdout)
    assert (out.state, refused.returncode) == ("CRITICAL", 2), refused
    assert "AUTHENTICATIONFAILED" in refused.stdout and "not-the-password" not in refused.stdout

    unknown = run([*args, "--format", "nagios", "--imap-port", "99999"])
    assert (parse_plugin_output(unknown.stdout).state, unknown.returncode) == ("UNKNOWN", 3), unknown
    assert stack["users"]["probe"]["password"] not in unknown.stdout


def test_openmetrics_output_file_against_the_stack(stack: Dict[str, Any], mailbox: Any, tmp_path: Any) -> None:
    target = tmp_path / "roundtrip.prom"
    target.write_text("old\n")
    result = run([*tls_args(stack), "--format", "openmetrics", "--output", str(target)])
    assert (result.returncode, result.stdout) == (0, ""), result
    text = target.read_text()
    families = openmetrics_families(text)
    promtool_check(text)
    assert families["roundtrip_success"].samples[0].value == 1
    labels = families["roundtrip_success"].samples[0].labels
    assert labels == {"smtp_host": "127.0.0.1", "smtp_port": str(stack["ports"]["submission"]["port"]),
                      "imap_host": "127.0.0.1", "imap_port": str(stack["ports"]["imaps"]["port"]),
                      "mailbox": "INBOX"}
    assert {s.labels["leg"] for s in families["roundtrip_duration_seconds"].samples} == {"total", "smtp", "imap"}
    assert {s.labels["leg"] for s in families["roundtrip_certificate_expiry_timestamp_seconds"].samples} == \
        {"smtp", "imap"}
    assert os.stat(target).st_mode & 0o777 == 0o644  # the collector runs as another account
    assert sorted(os.listdir(tmp_path)) == ["roundtrip.prom"]  # no temporary file left behind

    failed = run([*with_options(tls_args(stack), imap_password="wrong"), "--format", "openmetrics",
                  "--output", str(target)])
    assert failed.returncode == 0 and failed.stdout == ""
    assert openmetrics_families(target.read_text())["roundtrip_success"].samples[0].value == 0


def test_output_refuses_a_symlink(stack: Dict[str, Any], mailbox: Any, tmp_path: Any) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    link = tmp_path / "roundtrip.prom"
    link.symlink_to(victim)
    result = run([*tls_args(stack), "--format", "nagios", "--output", str(link)])
    assert victim.read_text() == "precious\n" and link.is_symlink()
    out = parse_plugin_output(result.stdout)  # the refusal goes to stdout instead, as a document
    assert (out.state, result.returncode) == ("UNKNOWN", 3), result
    assert f"{link} is a symbolic link" in out.text
    assert sorted(os.listdir(tmp_path)) == ["roundtrip.prom", "victim"]


# -- the console ---------------------------------------------------------------------------------


def run_at_terminal(args: List[str], env: Optional[Dict[str, str]] = None) -> Run:
    """Run the sensor with stdin and stdout on a pseudo-terminal, as a person at a console."""
    import pty

    full_env = {k: v for k, v in os.environ.items() if not k.startswith("prtg_") and k not in ("NO_COLOR", "TERM")}
    full_env.update(env or {})
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "prtg_roundtrip", *args], stdin=slave, stdout=slave,
                            stderr=subprocess.PIPE, env=full_env, cwd=str(ROOT))
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the other side is closed
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.stderr is not None
    stderr = proc.stderr.read().decode("utf-8", "replace")
    proc.wait(timeout=60)
    return Run(proc.returncode, b"".join(chunks).decode("utf-8").replace("\r\n", "\n"), stderr)


def test_the_bare_command_at_a_terminal_says_how_to_use_it() -> None:
    result = run_at_terminal([], {"TERM": "xterm"})
    assert result.returncode == 0, result
    assert result.stdout.startswith("prtg-roundtrip ")
    assert "usage: prtg-roundtrip" in result.stdout and "example:" in result.stdout
    assert "prtg-roundtrip check" in result.stdout
    assert "Script v2" not in result.stdout and "error" not in result.stdout.lower()


def test_without_a_terminal_nothing_changes(stack: Dict[str, Any]) -> None:
    bare = run([])  # EXE/Script Advanced with empty Parameters: PRTG XML naming what is missing
    assert check_output.check(bare.stdout, "prtg-xml") == [] and check_output.parse(bare.stdout, "prtg-xml").error
    assert "no parameters were given" in bare.stdout
    refused = run(["--imap-port", "99999"])
    assert check_output.check(refused.stdout, "prtg-xml") == [], refused.stdout
    assert refused.returncode == 0


def test_a_terminal_gets_the_readable_result_in_colour(stack: Dict[str, Any], mailbox: Any) -> None:
    result = run_at_terminal(tls_args(stack), {"TERM": "xterm-256color"})
    assert result.returncode == 0, result
    assert result.stdout.startswith("\x1b[32m\x1b[1mOK\x1b[0m  Round trip "), result.stdout
    plain = re.sub("\x1b\\[[0-9;]*m", "", result.stdout)
    for heading in ("\nSMTP\n", "\nIMAP\n"):
        assert heading in plain
    smtp, imap = plain.split("\nSMTP\n", 1)[1].split("\nIMAP\n", 1)
    assert re.search(rf"server +127\.0\.0\.1:{stack['ports']['submission']['port']}\n", smtp)
    assert re.search(r"security +TLSv1\.[23] \(STARTTLS\), \S+", smtp)
    assert re.search(r"certificate +localhost, expires in \d+ days", smtp)  # the stack's certificate
    assert re.search(r"login +PLAIN\n", smtp)
    assert re.search(r"steps +connect [\d.]+ ms, STARTTLS [\d.]+ ms, login [\d.]+ ms, submit [\d.]+ ms", smtp)
    assert re.search(rf"server +127\.0\.0\.1:{stack['ports']['imaps']['port']}\n", imap)
    assert re.search(r"security +TLSv1\.[23] \(implicit TLS\), \S+", imap)
    assert re.search(r"certificate +localhost, expires in \d+ days", imap)
    assert re.search(r"login +PLAIN\n", imap)
    assert re.search(r"steps +connect and login \(before the send\) [\d.]+ ms, delivery \(", imap)


@pytest.mark.parametrize("env", [{"TERM": "xterm", "NO_COLOR": "1"}, {"TERM": "dumb"}])
def test_no_colour_where_the_terminal_does_not_want_it(env: Dict[str, str]) -> None:
    result = run_at_terminal(["--imap-port", "99999"], env)
    assert result.returncode == 1, result
    assert result.stdout.startswith("ERROR  Parameters: argument --imap-port"), result.stdout
    assert "\x1b" not in result.stdout
    assert re.search(r"\n  try +Run prtg-roundtrip --help", result.stdout)


def test_a_failure_at_a_terminal_names_step_server_words_and_what_to_try(stack: Dict[str, Any]) -> None:
    result = run_at_terminal(with_options(tls_args(stack), imap_password="wrong"), {"TERM": "xterm"})
    plain = re.sub("\x1b\\[[0-9;]*m", "", result.stdout)
    assert plain.startswith("ERROR  IMAP receive"), plain
    assert re.search(r"failed step +IMAP receive\n", plain)
    assert re.search(rf"server +127\.0\.0\.1:{stack['ports']['imaps']['port']}\n", plain)
    assert re.search(r"cause +login rejected \(\[AUTHENTICATIONFAILED\] Authentication failed\)\n", plain)
    assert re.search(r"try +Check --imap-user and --imap-password", plain)


# -- prtg-roundtrip check ------------------------------------------------------------------------


def test_check_logs_in_on_both_legs_and_sends_nothing(stack: Dict[str, Any], mailbox: Any) -> None:
    args = ["check", *tls_args(stack)]
    xml = run([*args, "--verbose"])
    assert xml.returncode == 0 and check_output.check(xml.stdout, "prtg-xml") == [], xml
    doc = check_output.parse(xml.stdout, "prtg-xml")
    assert not doc.error, doc.text
    assert doc.channel_names == ["Total", "SMTP Connect and Login", "IMAP Connect and Login", "SMTP Certificate",
                                 "IMAP Certificate"]
    assert "nothing sent" in str(doc.text)
    assert "IDLE yes, UIDPLUS yes, SPECIAL-USE no" in str(doc.text)  # what the stack's Dovecot offers
    transcript = xml.stderr
    assert "AUTH PLAIN ***" in transcript and "AUTHENTICATE PLAIN ***" in transcript  # both legs logged in
    assert "SELECT" in transcript
    for command in ("MAIL FROM", "RCPT TO", "DATA"):
        assert f"> {command}" not in transcript.upper()
    assert stack["users"]["sender"]["password"] not in xml.stdout + transcript

    out = parse_plugin_output(run([*args, "--format", "nagios"]).stdout)
    assert out.state == "OK"
    assert set(out.perf) == {"total", "smtp_connect_and_login", "imap_connect_and_login", "smtp_certificate_days",
                             "imap_certificate_days"}
    imap_line = next(line for line in out.long_output if line.startswith("IMAP:"))
    assert "offers IDLE yes, UIDPLUS yes, SPECIAL-USE no, AUTH " in imap_line and "PLAIN" in imap_line
    smtp_line = next(line for line in out.long_output if line.startswith("SMTP:"))
    assert re.search(r"offers AUTH [A-Z0-9 -]*PLAIN", smtp_line) and "login PLAIN" in smtp_line

    families = openmetrics_families(run([*args, "--format", "openmetrics"]).stdout)
    offered = {s.labels["capability"]: s.value for s in families["roundtrip_capability"].samples}
    assert offered == {"IDLE": 1, "UIDPLUS": 1, "SPECIAL-USE": 0}

    mailbox.noop()
    assert mailbox.search(["ALL"]) == []  # nothing arrived: nothing was sent


@pytest.mark.parametrize("leg", ["smtp", "imap"])
def test_check_fails_where_a_run_would(stack: Dict[str, Any], leg: str) -> None:
    args = with_options(tls_args(stack), **{f"{leg}_password": "not-the-password"})
    check = run(["check", *args, "--format", "nagios"])
    out = parse_plugin_output(check.stdout)
    assert (out.state, check.returncode) == ("CRITICAL", 2), check
    step = {"smtp": "SMTP send", "imap": "IMAP receive"}[leg]
    assert out.text.startswith(f"{step} ("), out.text
    assert f"failed step: {step}" in out.long_output
    assert "not-the-password" not in check.stdout


def test_check_says_what_the_sensor_would_miss() -> None:
    from prtg_roundtrip.preflight import summary
    from prtg_roundtrip.report import LegDetail

    smtp = LegDetail("smtp", "s:587", "plain text", auth="none", offers=(("AUTH", "(none announced)"),))
    imap = LegDetail("imap", "i:143", "plain text", auth="LOGIN",
                     offers=(("IDLE", "no"), ("UIDPLUS", "no"), ("SPECIAL-USE", "no"), ("AUTH", "PLAIN")))
    text = summary(smtp, imap, "INBOX", 12.0, [])
    assert "without UIDPLUS the sensor expunges its probe only when" in text
    assert "without IDLE the sensor polls" in text
    assert "SMTP s:587 over plain text, no login" in text


# -- the README's configurations -------------------------------------------------------------------


def readme_blocks(kind: str) -> List[str]:
    """The fenced blocks the README marks `<!-- tested: KIND -->`."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(rf"<!-- tested: {kind} -->\n```[a-z]*\n(.*?)```", text, flags=re.S)
    assert blocks, f"no {kind} block in the README"
    return blocks


OPTIONS = {option for action in cli.build_parser()._actions for option in action.option_strings}


def test_readme_icinga2_checkcommand() -> None:
    (block,) = readme_blocks("icinga2")
    arguments = re.findall(r'^\s+"(-[^"]+)" =', block, flags=re.M)
    assert "--format" in arguments and "--imap-password" in arguments
    assert set(arguments) <= OPTIONS, set(arguments) - OPTIONS
    icinga2 = shutil.which("icinga2") or next(
        (p for p in ("/usr/sbin/icinga2", "/usr/lib/x86_64-linux-gnu/icinga2/sbin/icinga2") if os.path.exists(p)), None)
    if icinga2 is None:
        pytest.skip("icinga2 is not installed (Debian: icinga2-bin)")
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="prtg-rt-icinga2-") as folder:
        os.chmod(folder, 0o755)  # noqa: S103 - icinga2 reads it as its own account (nagios) when started as root
        config = Path(folder) / "icinga2.conf"
        config.write_text('include <itl>\nobject Host "mail.example.com" {\n  address = "192.0.2.25"\n'
                          '  check_command = "dummy"\n}\n' + block)
        os.chmod(config, 0o644)
        proc = subprocess.run([icinga2, "daemon", "-C", "-c", str(config)], capture_output=True, check=False,
                              timeout=60)
    output = proc.stdout.decode() + proc.stderr.decode()
    assert proc.returncode == 0, output
    assert "Instantiated 1 Service" in output


def test_readme_command_lines_use_real_options() -> None:
    import shlex

    commands = [line for block in readme_blocks("command") for line in block.splitlines()
                if "/usr/local/bin/prtg-roundtrip" in line]
    assert len(commands) == 3  # Nagios, Checkmk MRPE, cron for the textfile collector
    for line in commands:
        words = shlex.split(line.split("/usr/local/bin/prtg-roundtrip", 1)[1])
        words = [re.sub(r"\$ARG[23]\$", "5000", w) for w in words]
        words = [re.sub(r"\$[A-Z0-9]+\$", "mail.example.com", w) for w in words]
        values = vars(cli.build_parser().parse_args(words))
        assert values["format"] in ("nagios", "openmetrics")
        assert values["imap_password"].startswith("file:") and values["smtp_password"].startswith("file:")
        assert values["timeout"] <= 60


def test_minimal_error_documents_of_the_other_formats_parse():
    """outcheck's last-resort documents (a template that failed) for nagios and openmetrics."""
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    from prtg_roundtrip.outcheck import minimal_error

    nagios = minimal_error("broken | template", OutputFormat.NAGIOS)
    assert nagios.startswith("ROUNDTRIP UNKNOWN - ") and "|" not in nagios
    families = list(text_string_to_metric_families(minimal_error("broken", OutputFormat.OPENMETRICS)))
    assert [(f.name, [s.value for s in f.samples]) for f in families] == [("roundtrip_success", [0.0])]
