"""Unit tests: pieces that need no server (parameters, probe mail, redaction, rendering)."""

from __future__ import annotations

import base64
import io
import json
import re
import socket
import threading
from typing import Any

import pytest
from conftest import check_output

from prtg_roundtrip import cli
from prtg_roundtrip.probe import build_probe, parse_marker
from prtg_roundtrip.render import render
from prtg_roundtrip.report import TEXT_LIMIT, Channel, Report, clean_text
from prtg_roundtrip.settings import MailSettings, OutputFormat
from prtg_roundtrip.transcript import Transcript, redact

GOOD = [
    "--smtp-host", "127.0.0.1", "--imap-host", "127.0.0.1", "--imap-user", "u", "--imap-password", "p",
    "--from", "a@example.com", "--to", "b@example.com",
]


def run_main(args, environ=None):
    out = io.BytesIO()
    code = cli.main(args, environ=environ or {}, stdout=out)
    text = out.getvalue().decode("utf-8")
    fmt = "prtg-json" if "prtg-json" in args else "prtg-xml"
    assert check_output.check(text, fmt) == [], text
    return code, check_output.parse(text, fmt)


# -- parameters are refused before any connection ------------------------------------------

class _Listener:
    """A local port that counts connections: proof that a refused run connected nowhere."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(5)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.close()

    def close(self):
        self._stop = True
        self.thread.join()
        self.sock.close()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"--from": "not-an-address"}, "--from"),
        ({"--to": "a@example.com, c@example.com"}, "--to"),
        ({"--to": "Probe <p@example.com>"}, "--to"),
        ({"--mailbox": "A@Example.com", "--from": "a@example.com"}, "equals the --from address"),
        ({"--helo": "bad helo"}, "--helo"),
        ({"--helo": "h\u00e9lo.example.com"}, "--helo"),
        ({"--subject-text": "x\r\nBcc: victim@example.com"}, "line break"),
        ({"--smtp-port": "70000"}, "port"),
        ({"--smtp-timeout": "901"}, "outside"),
        ({"--max-trip-time": "0"}, "outside"),
        ({"--interval": "20", "--max-trip-time": "10"}, "longer than --max-trip-time"),
        ({"--smtp-tls": "maybe"}, "invalid choice"),
        ({"--smtp-auth": "password"}, "--smtp-user is missing"),
        ({"--ca-file": "/nonexistent/ca.pem"}, "does not exist"),
        ({"--imap-host": "http://mail.example.com"}, "not a host name"),
    ],
)
def test_bad_parameters_are_refused_before_any_connection(change, expected):
    listener = _Listener()
    try:
        args = list(GOOD) + ["--smtp-port", str(listener.port), "--imap-port", str(listener.port)]
        for key, value in change.items():
            if key in args:
                args[args.index(key) + 1] = value
            else:
                args += [key, value]
        code, doc = run_main(args)
    finally:
        listener.close()
    assert code == 0
    assert doc.error
    assert doc.text.startswith("Parameters")
    assert expected in doc.text
    assert listener.accepted == 0


def test_missing_smtp_host_is_refused_with_a_hint_about_prtg_placeholders():
    args = list(GOOD)
    i = args.index("--smtp-host")
    del args[i : i + 2]
    _, doc = run_main(args, environ={})
    assert doc.error and "--smtp-host is missing" in doc.text and "placeholders" in doc.text


def test_unknown_argument_next_to_a_password_is_not_echoed():
    _, doc = run_main(GOOD + ["--smtp-auth", "password", "--smtp-user", "u", "--smtp-password", "top", "secret"])
    assert doc.error
    assert "secret" not in doc.text and "top" not in doc.text


def test_json_format_is_used_even_for_refused_parameters():
    code, doc = run_main(["--format", "prtg-json", "--from", "x"])
    assert code == 0 and doc.format == "prtg-json" and doc.error


def test_help_does_not_import_protocol_modules():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from prtg_roundtrip import cli\n"
        "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('imapclient', 'smtplib', 'ssl', 'jinja2', 'email.message') if m in sys.modules]\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in proc.stderr
    assert "usage: prtg-roundtrip" in proc.stdout


# -- the probe mail --------------------------------------------------------------------------

def test_probe_subject_follows_prtg_form_and_ids_are_unique():
    mail = MailSettings("a@example.com", "b@example.com", "Custom text")
    one, two = build_probe(mail, "1234", 60), build_probe(mail, "1234", 60)
    assert re.fullmatch(r"Custom text PRTG Roundtrip Mail: \{[0-9A-F]{8}(-[0-9A-F]{4}){3}-[0-9A-F]{12}\}", one.subject)
    assert one.guid != two.guid and one.message_id != two.message_id
    assert one.message_id.startswith("<") and one.message_id.endswith("@example.com>")
    assert b"\r\nX-PRTG-Roundtrip: guid=" + one.guid.encode() + b"; sensor=1234; sent=" in one.data
    assert parse_marker(one.marker.header()) == one.marker
    assert b"\r\nDate: " in one.data and b"\r\nMessage-ID: " + one.message_id.encode() in one.data


# -- redaction -------------------------------------------------------------------------------

def test_transcript_masks_every_form_of_the_password():
    secret = "Pr0be-Pw-7f3a9c"
    stream = io.StringIO()
    t = Transcript([secret], echo=stream)
    plain = base64.b64encode(b"\0user@example.com\0" + secret.encode()).decode()
    t.add("SMTP", ">", f"AUTH PLAIN {plain}")
    t.add("SMTP", "<", "235 2.7.0 Authentication successful")
    t.add("SMTP", ">", "AUTH LOGIN " + base64.b64encode(b"user").decode())
    t.add("SMTP", "<", "334 UGFzc3dvcmQ6")
    t.add("SMTP", ">", base64.b64encode(secret.encode()).decode())
    t.add("SMTP", "<", "235 ok")
    t.add("SMTP", ">", "MAIL FROM:<a@example.com>")
    t.add("IMAP", ">", f'A001 LOGIN user "{secret}"')
    t.add("IMAP", "<", f"* BAD echo {secret}")
    text = t.text() + stream.getvalue()
    assert secret not in text
    assert base64.b64encode(secret.encode()).decode() not in text
    assert plain not in text
    assert "MAIL FROM:<a@example.com>" in text
    assert "AUTH PLAIN ***" in text and "LOGIN ***" in text


@pytest.mark.parametrize("user", ["u", "us", "use", "user@example.com"])
def test_redact_finds_the_password_inside_auth_plain_at_any_alignment(user):
    secret = "correct-horse-battery"
    blob = base64.b64encode(f"\0{user}\0{secret}".encode()).decode()
    assert redact(f"x {blob} y", [secret]).count("***") == 1


# -- reports and rendering -------------------------------------------------------------------

def test_clean_text_is_one_line_within_prtg_limit():
    text = clean_text("a\r\nb\x00c" + "x" * 5000)
    assert "\n" not in text and "\x00" not in text and len(text) <= TEXT_LIMIT


@pytest.mark.parametrize("fmt", [OutputFormat.PRTG_XML, OutputFormat.PRTG_JSON, OutputFormat.SCRIPT_V2])
def test_rendered_documents_escape_hostile_text_and_use_dot_decimals(fmt, monkeypatch):
    import locale

    try:
        locale.setlocale(locale.LC_ALL, "de_DE.UTF-8")
    except locale.Error:
        pass
    hostile = 'a <b> & "c" \'d\' ]]> {"prtg": 1} \u00fc\u20ac'
    report = Report.success((Channel("Total", 1234.5678, 10), Channel("Response Time (SMTP)", 0.25, 11)), hostile)
    doc = check_output.parse(render(report, fmt), fmt.value)
    locale.setlocale(locale.LC_ALL, "C")
    assert doc.text == hostile
    assert doc.channel_names == ["Total", "Response Time (SMTP)"]
    assert doc.value("Total") == pytest.approx(1234.568)
    if fmt is not OutputFormat.SCRIPT_V2:
        assert doc.channel("Total")["float"] == "1"
    else:
        assert doc.channel("Total")["type"] == "float" and doc.channel("Total")["kind"] == "time_milliseconds"


@pytest.mark.parametrize("fmt", [OutputFormat.PRTG_XML, OutputFormat.PRTG_JSON, OutputFormat.SCRIPT_V2])
def test_error_document(fmt):
    doc = check_output.parse(render(Report.failure("SMTP send (x:25): connection refused."), fmt), fmt.value)
    assert doc.error and doc.results == [] and doc.text == "SMTP send (x:25): connection refused."


def test_duplicate_channel_names_or_ids_are_a_programming_error():
    with pytest.raises(ValueError):
        Report.success((Channel("Total", 1, 10), Channel("Total", 2, 11)), "x")
    with pytest.raises(ValueError):
        Report.success((Channel("Total", 1, 10), Channel("Other", 2, 10)), "x")


def test_checker_rejects_what_prtg_rejects():
    assert check_output.check("\ufeff<prtg><text>x</text></prtg>")
    assert check_output.check("<prtg><result><channel>A</channel><value>1,5</value></result></prtg>")
    assert check_output.check("<prtg><result><channel>A</channel><value>1.5</value></result></prtg>")
    assert check_output.check('{"prtg": {"result": [{"channel": "A", "value": 1}, {"channel": "A", "value": 2}]}}')
    assert check_output.check("Traceback (most recent call last):")
    assert check_output.check(json.dumps({"prtg": {"error": 1}}))
    assert check_output.check('{"prtg": {"result": [{"channel": "A", "value": 1}]}}') == []


@pytest.mark.parametrize(
    "value",
    [
        "",
        "guid=x; sensor=1; sent=1700000000; budget=60",
        "guid=0A73440D-3B41-423D-967A-9713F3A602E1; sensor=a b; sent=1700000000; budget=60",
        "guid=0A73440D-3B41-423D-967A-9713F3A602E1; sensor=1; sent=soon; budget=60",
        "guid=0A73440D-3B41-423D-967A-9713F3A602E1; sensor=1; sent=1700000000; budget=60; extra=1",
    ],
)
def test_only_exact_markers_parse(value):
    assert parse_marker(value) is None


def test_checker_knows_script_v2_rules():
    total = {"id": 10, "name": "Total", "type": "float", "kind": "time_milliseconds", "value": 1.5}
    ok = {"version": 2, "status": "ok", "message": "m", "channels": [total]}
    assert check_output.check(json.dumps(ok), "script-v2") == []
    for broken in (
        {**ok, "version": 1},
        {**ok, "status": "fine"},
        {**ok, "channels": [{**total, "id": 9}]},
        {**ok, "channels": [total, {**total, "name": "Other"}]},
        {**ok, "channels": [{**total, "type": "integer"}]},
        {**ok, "message": "x" * 2001},
    ):
        assert check_output.check(json.dumps(broken), "script-v2"), broken


def test_a_new_uidvalidity_widens_the_search_to_the_whole_mailbox():
    from types import SimpleNamespace

    from prtg_roundtrip.imap_mailbox import Mailbox
    from prtg_roundtrip.settings import SearchMethod

    session: Any = SimpleNamespace(transcript=Transcript(), uidvalidity=5, uidnext=10, client=None)
    mailbox = Mailbox(session, SearchMethod.SERVER)  # only the bookkeeping, no connection
    mailbox.notice_uidvalidity([(1, b"EXISTS"), (b"OK", b"[UIDVALIDITY 5] UIDs valid")])
    assert mailbox.uidnext == 10
    mailbox.notice_uidvalidity([(b"OK", b"[UIDVALIDITY 77] UIDs valid")])
    assert (mailbox.uidvalidity, mailbox.uidnext) == (77, None)


def test_progress_goes_only_to_a_terminal():
    quiet, tty = io.StringIO(), io.StringIO()
    Transcript().progress("waiting")
    t = Transcript(echo=quiet, progress=tty)
    t.progress("waiting 1 s")
    t.progress(None)
    assert "waiting 1 s" in tty.getvalue() and tty.getvalue().endswith("\n")
    assert "waiting" not in quiet.getvalue()


def test_unbalanced_quotes_on_stdin_give_a_script_v2_error_document():
    out = io.BytesIO()
    code = cli.main([], environ={}, stdout=out, stdin=io.BytesIO(b'--from "a@example.com'))
    doc = check_output.parse(out.getvalue().decode("utf-8"), "script-v2")
    assert code == 0 and doc.error and "do not split" in doc.text


def test_imapclient_version_without_importlib_metadata():
    """startup.prepare_imports gives IMAPClient the version importlib.metadata would (in a
    fresh interpreter, where neither is imported yet)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from prtg_roundtrip.startup import prepare_imports\n"
        "prepare_imports()\n"
        "import imapclient\n"
        "print('importlib.metadata' in sys.modules)\n"
        "from importlib import metadata\n"
        "print(imapclient.__version__ == metadata.version('imapclient'), imapclient.version_info)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "False"
    assert out[1].startswith("True (")


@pytest.mark.parametrize("fmt", list(OutputFormat))
def test_compiled_templates_cached_in_the_private_folder(tmp_path, monkeypatch, fmt):
    """render(cache_folder=...) keeps each compiled template in the state folder (0600) and a
    later run loads it instead of compiling; a damaged entry is compiled again."""
    import os
    import stat

    import jinja2

    from prtg_roundtrip import render as render_module

    folder = tmp_path / "state"
    folder.mkdir(mode=0o700)
    report = Report.success((Channel("Total", 12.5, 10),), "fine")
    first = render(report, fmt, str(folder))
    (entry,) = list(folder.iterdir())
    assert entry.name.startswith("template-") and stat.S_IMODE(os.lstat(entry).st_mode) == 0o600

    render_module._environment.cache_clear()  # as a new process would start

    def no_compiling(*args, **kwargs):
        raise AssertionError("compiled although cached")

    with monkeypatch.context() as m:
        m.setattr(jinja2.Environment, "compile", no_compiling)
        assert render(report, fmt, str(folder)) == first
    render_module._environment.cache_clear()
    entry.write_bytes(b"garbage")
    assert render(report, fmt, str(folder)) == first
    render_module._environment.cache_clear()
