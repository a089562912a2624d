"""Issue 10, hardening of the sensor's edges: state folder, parameters, files, output, signals.

Fast in-process tests through cli.main(argv, environ, stdout, stdin) where possible; a few real
processes where real bytes in argv/environ or signals matter. None needs the mail stack.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple
from unittest import mock

import pytest
from conftest import check_output
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prtg_roundtrip import cli, deadline, roundtrip, state
from prtg_roundtrip import secrets as secret_registry
from prtg_roundtrip.render import render
from prtg_roundtrip.report import Channel, Report, clean_text
from prtg_roundtrip.settings import OutputFormat
from prtg_roundtrip.state import UnsafeStateFolder, private_folder, read_private, write_private

ROOT = Path(__file__).resolve().parent.parent
posix_only = pytest.mark.skipif(os.name == "nt", reason="POSIX ownership and modes")
root_only = pytest.mark.skipif(os.name == "nt" or os.geteuid() != 0, reason="chown to another user needs root")


def _nobody() -> int:
    import pwd  # POSIX only: the file must import on Windows too (the splitter tests run there)

    return pwd.getpwnam("nobody").pw_uid


# ---------------------------------------------------------------- 1. the private state folder


@posix_only
def test_private_folder_default_is_per_user_and_0700(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    folder = private_folder({"HOME": str(home)})
    assert folder == str(home / ".local" / "state" / "prtg-roundtrip")
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    xdg = tmp_path / "xdg"
    xdg.mkdir(mode=0o700)
    assert private_folder({"HOME": str(home), "XDG_STATE_HOME": str(xdg)}) == str(xdg / "prtg-roundtrip")


@posix_only
def test_private_folder_refuses_group_or_world_writable(tmp_path: Path) -> None:
    folder = tmp_path / "shared"
    folder.mkdir()
    for mode in (0o770, 0o777, 0o1777):
        os.chmod(folder, mode)
        with pytest.raises(UnsafeStateFolder, match="writable by other users"):
            private_folder({"PRTG_RT_STATE_DIR": str(folder)})
    os.chmod(folder, 0o700)
    assert private_folder({"PRTG_RT_STATE_DIR": str(folder)}) == str(folder)


@root_only
def test_private_folder_refuses_a_folder_of_another_user(tmp_path: Path) -> None:
    folder = tmp_path / "theirs"
    folder.mkdir(mode=0o700)
    os.chown(folder, _nobody(), -1)
    with pytest.raises(UnsafeStateFolder, match="another user"):
        private_folder({"PRTG_RT_STATE_DIR": str(folder)})
    # ... also as a parent on the way (their folder, our subfolder inside)
    os.chown(folder, 0, -1)
    inner = folder / "inner"
    inner.mkdir(mode=0o700)
    os.chown(folder, _nobody(), -1)
    with pytest.raises(UnsafeStateFolder, match="another user"):
        private_folder({"PRTG_RT_STATE_DIR": str(inner)})


@root_only
def test_private_folder_refuses_a_link_of_another_user(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o1777)  # noqa: S103 - like /tmp: others may create entries
    target = tmp_path / "target"
    target.mkdir(mode=0o700)
    link = tmp_path / "prtg-roundtrip"
    link.symlink_to(target)
    os.lchown(link, _nobody(), -1)
    with pytest.raises(UnsafeStateFolder, match="link of another user"):
        private_folder({"PRTG_RT_STATE_DIR": str(link)})
    os.lchown(link, 0, -1)  # our own link to our own folder is fine
    assert private_folder({"PRTG_RT_STATE_DIR": str(link)}) == str(link)


@posix_only
def test_write_private_replaces_a_planted_link_and_never_follows_it(tmp_path: Path) -> None:
    folder = tmp_path / "state"
    folder.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    planted = folder / "sensor.json"
    planted.symlink_to(victim)
    with pytest.raises(UnsafeStateFolder, match="link"):
        read_private(str(planted))
    write_private(str(planted), b"{}")
    assert victim.read_bytes() == b"precious"
    assert not planted.is_symlink() and planted.read_bytes() == b"{}"
    assert stat.S_IMODE(os.stat(planted).st_mode) == 0o600
    assert sorted(p.name for p in folder.iterdir()) == ["sensor.json"]  # no temporary left
    assert read_private(str(folder / "missing.json")) is None


@posix_only
def test_write_private_refuses_an_unsafe_folder(tmp_path: Path) -> None:
    folder = tmp_path / "open"
    folder.mkdir()
    os.chmod(folder, 0o777)  # noqa: S103
    with pytest.raises(UnsafeStateFolder):
        write_private(str(folder / "x.json"), b"{}")
    assert not (folder / "x.json").exists()


@root_only
def test_read_private_refuses_a_file_of_another_user(tmp_path: Path) -> None:
    folder = tmp_path / "state"
    folder.mkdir(mode=0o700)
    theirs = folder / "sensor.json"
    theirs.write_bytes(b'{"unclean": false}')
    os.chown(theirs, _nobody(), -1)
    with pytest.raises(UnsafeStateFolder, match="another user"):
        read_private(str(theirs))


@posix_only
def test_sweep_state_in_an_unsafe_folder_is_a_note_and_never_follows_a_link(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)  # noqa: S103
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (shared / "s1.json").symlink_to(victim)
    sweep = state.SweepState("s1", {"PRTG_RT_STATE_DIR": str(shared)})
    assert sweep.sweep_due()
    sweep.probe_in_flight("0F8FAD5B-D9CB-469F-A165-70867728950E", 1700000000.0)
    sweep.finished(swept=True, own_probes_left=False)
    assert victim.read_bytes() == b"precious"
    assert sweep.note and "writable by other users" in sweep.note


@posix_only
def test_sweep_state_round_trip_in_a_private_folder(tmp_path: Path) -> None:
    env = {"PRTG_RT_STATE_DIR": str(tmp_path / "private")}
    first = state.SweepState("s1", env)
    assert first.sweep_due() and first.note is None
    first.finished(swept=True, own_probes_left=False)
    assert not state.SweepState("s1", env).sweep_due()
    assert stat.S_IMODE(os.stat(tmp_path / "private").st_mode) == 0o700


# ---------------------------------------------------------------- helpers for in-process runs

PASSWORD = "Zq7-imap-Secret"
GOOD = [
    "--smtp-host", "127.0.0.1", "--imap-host", "127.0.0.1", "--imap-user", "probe", "--imap-password", PASSWORD,
    "--from", "a@example.com", "--to", "b@example.com",
]
PRTG_FORMATS = ("prtg-xml", "prtg-json", "script-v2")


def _format_of(args: List[str], default: str = "prtg-xml") -> str:
    for i, word in enumerate(args):
        if word == "--format" and i + 1 < len(args) and args[i + 1] in (*PRTG_FORMATS, "text"):
            return args[i + 1]
    return default


def run_main(args: List[str], environ: Optional[Dict[str, str]] = None, stdin: Optional[Any] = None,
             fmt: Optional[str] = None) -> Tuple[int, Any, str]:
    """cli.main in-process; the one document must pass the project's checker."""
    out = io.BytesIO()
    code = cli.main(args, environ=environ or {}, stdout=out, stdin=stdin)
    text = out.getvalue().decode("utf-8")
    fmt = fmt or _format_of(args, "prtg-xml" if args else "script-v2")
    if fmt != "text":
        assert check_output.check(text, fmt) == [], text
        return code, check_output.parse(text, fmt), text
    return code, None, text


class FakeRun:
    """Stands in for the protocol steps: records the settings and echoes hostile text back,
    so what the sensor does with values (cleaning, redaction) shows in the document."""

    def __init__(self, text: str = "") -> None:
        self.settings: Any = None
        self.environ: Any = None
        self.text = text

    def __call__(self, settings: Any, transcript: Any, environ: Any) -> Report:
        self.settings, self.environ = settings, environ
        echo = (f"{self.text} subject {settings.mail.subject_text} mailbox {settings.imap.mailbox} "
                f"user {settings.imap.auth.user} password {settings.imap.auth.password}")
        return Report.success((Channel("Total", 812.4, 10),), echo)


@pytest.fixture
def fake_run(monkeypatch: pytest.MonkeyPatch) -> FakeRun:
    fake = FakeRun()
    monkeypatch.setattr(roundtrip, "run_round_trip", fake)
    return fake


# ---------------------------------------------------------------- 2. secrets echoed by argparse


@pytest.mark.parametrize("words", [
    ["--imap-passwort", "Hunter2-typo"],
    ["--imap-pw", "Hunter2-typo"],
    ["--imap-passwort=Hunter2-typo"],
    ["--imap-pw", "--Hunter2-typo"],
    ["Hunter2-typo"],
])
def test_unknown_options_are_named_but_their_values_never_shown(words: List[str]) -> None:
    args = [w for w in GOOD if w not in ("--imap-password", PASSWORD)] + words
    _, doc, raw = run_main(args)
    assert doc.error and "unrecognized" in doc.text
    assert "Hunter2" not in raw
    if words[0].startswith("--"):
        assert words[0].split("=")[0] in doc.text


def test_abbreviated_options_are_not_accepted() -> None:
    args = [w if w != "--imap-password" else "--imap-pass" for w in GOOD]
    _, doc, raw = run_main(args)
    assert doc.error and "--imap-pass" in doc.text and PASSWORD not in raw


# ---------------------------------------------------------------- 3. Data.txt masks credentials


def test_result_file_masks_every_prtg_credential_placeholder(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(roundtrip, "run_round_trip", lambda s, t, e: Report.failure("SMTP send: refused."))
    monkeypatch.setattr(secret_registry, "_REGISTERED", set(secret_registry._REGISTERED))
    secret_registry.register("Registered-Token-77")
    env = {
        "prtg_snmpcommunity": "Community-1", "prtg_windowspassword": "Win-Pw-2", "prtg_linuxpassword": "Lin-Pw-3",
        "prtg_scriptplaceholder1": "Script-Ph-4", "prtg_oauth_token": "Tok-5", "prtg_api_secret": "Sec-6",
        "prtg_host": "mail.example.com", "prtg_sensorid": "2301",
    }
    args = GOOD + ["--store-result", "--result-dir", str(tmp_path), "--subject-text", "x Registered-Token-77 y"]
    run_main(args, env)
    data = (tmp_path / "Result of Sensor 2301.prtg-roundtrip.Data.txt").read_text(encoding="utf-8")
    for value in ("Community-1", "Win-Pw-2", "Lin-Pw-3", "Script-Ph-4", "Tok-5", "Sec-6", "Registered-Token-77",
                  PASSWORD):
        assert value not in data
    assert "Data['prtg_snmpcommunity'] := '***';" in data
    assert "Data['prtg_scriptplaceholder1'] := '***';" in data
    assert "Data['prtg_host'] := 'mail.example.com';" in data


# ---------------------------------------------------------------- 4. bytes that are not UTF-8


def test_undecodable_option_value_is_a_parameter_error_naming_it() -> None:
    code, doc, _ = run_main(GOOD + ["--subject-text", "bad \udcff bytes"])
    assert code == 0 and doc.error and "--subject-text" in doc.text and "UTF-8" in doc.text
    args = [w if w != "probe" else "pr\udcfeobe" for w in GOOD]
    code, doc, _ = run_main(args)
    assert doc.error and "--imap-user" in doc.text


def test_undecodable_environment_value_matters_only_when_used(fake_run: FakeRun) -> None:
    code, doc, _ = run_main(GOOD, {"prtg_device": "dev\udcff", "prtg_name": "\udc80"})
    assert code == 0 and not doc.error and fake_run.settings is not None
    no_host = GOOD[2:]
    assert "--smtp-host" not in no_host
    code, doc, _ = run_main(no_host, {"prtg_host": "mail\udcff.example.com"})
    assert code == 0 and doc.error and "prtg_host" in doc.text and "UTF-8" in doc.text
    args = [w if w != PASSWORD else "env:MY_PW" for w in GOOD]
    code, doc, _ = run_main(args, {"MY_PW": "pw\udcff"})
    assert doc.error and "MY_PW" in doc.text


def test_undecodable_bytes_in_a_real_process_give_one_document(tmp_path: Path) -> None:
    closed = _closed_port()
    args = [b"--smtp-host", b"127.0.0.1", b"--smtp-port", str(closed).encode(), b"--imap-host", b"127.0.0.1",
            b"--imap-port", str(closed).encode(), b"--imap-user", b"probe", b"--imap-password", b"pw",
            b"--from", b"a@example.com", b"--to", b"b@example.com", b"--timeout", b"5"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("prtg_")}
    env_bytes = {k.encode(): v.encode() for k, v in env.items()}
    env_bytes[b"prtg_device"] = b"Ger\xe4t \xff\xfe"  # Latin-1, not UTF-8: unused, ignored
    proc = subprocess.run([sys.executable.encode(), b"-m", b"prtg_roundtrip", *args], capture_output=True,
                          env=env_bytes, cwd=str(ROOT), timeout=60, check=False)
    out = proc.stdout.decode("utf-8")
    assert proc.returncode == 0 and check_output.check(out, "prtg-xml") == [], (out, proc.stderr)
    doc = check_output.parse(out, "prtg-xml")
    assert doc.error and "UTF-8" not in doc.text and "internal error" not in doc.text  # refused connection
    proc = subprocess.run([sys.executable.encode(), b"-m", b"prtg_roundtrip", *args,
                           b"--subject-text", b"Pr\xfcfung"], capture_output=True, env=env_bytes,
                          cwd=str(ROOT), timeout=60, check=False)
    out = proc.stdout.decode("utf-8")
    assert proc.returncode == 0 and check_output.check(out, "prtg-xml") == [], (out, proc.stderr)
    assert "--subject-text" in check_output.parse(out, "prtg-xml").text and not proc.stderr


def _closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return int(port)


# ---------------------------------------------------------------- 5. characters XML forbids

FORBIDDEN = "\x00\x01\x08\x0b\x0c\x1b\x7f\x85\x9f\ufffe\uffff\ufdd0\U0001fffe\U0010ffff\ud800\udcff"


@pytest.mark.parametrize("fmt", list(OutputFormat))
def test_no_forbidden_character_reaches_any_document(fmt: OutputFormat) -> None:
    for report in (Report.failure(f"IMAP receive: {FORBIDDEN} end"), Report(text=f"a{FORBIDDEN}b", error=True),
                   Report.success((Channel("Total", 1.0, 10),), f"ok {FORBIDDEN}")):
        document = render(report, fmt)
        document.encode("utf-8")  # no lone surrogate
        assert not any(ch in document for ch in FORBIDDEN.replace("\x85", ""))  # NEL becomes a space
        if fmt.for_prtg:  # (nagios and openmetrics have their own checks in test_monitors.py)
            assert check_output.check(document, fmt.value) == [], document
        if fmt is OutputFormat.PRTG_XML:
            from defusedxml.ElementTree import fromstring

            fromstring(document)


def test_forbidden_characters_from_a_run_are_cleaned_in_the_document(monkeypatch: pytest.MonkeyPatch) -> None:
    hostile = Report(text=f"server said {FORBIDDEN}", error=True)
    monkeypatch.setattr(roundtrip, "run_round_trip", lambda s, t, e: hostile)
    for fmt in PRTG_FORMATS:
        code, doc, raw = run_main(GOOD + ["--format", fmt])
        assert code == 0 and "server said" in doc.text and "\ufffe" not in raw


# ---------------------------------------------------------------- 6. non-finite and non-positive limits


@pytest.mark.parametrize("option", ["--warning-ms", "--error-ms"])
@pytest.mark.parametrize("value", ["inf", "-inf", "Infinity", "1e400", "nan", "NaN", "0", "-5", "0.0"])
def test_limits_must_be_finite_and_positive(option: str, value: str, fake_run: FakeRun) -> None:
    code, doc, _ = run_main(GOOD + ["--format", "prtg-json", option + "=" + value])
    assert code == 0 and doc.error and fake_run.settings is None
    assert doc.text.startswith("Parameters:") and ("finite" in doc.text or "not positive" in doc.text), doc.text
    assert option in doc.text, doc.text  # the refusal names the option


@pytest.mark.parametrize("value", ["inf", "-inf", "1e400", "nan"])
def test_each_layer_refuses_non_finite_limits(value: str) -> None:
    import argparse

    from prtg_roundtrip.errors import ParameterError
    from prtg_roundtrip.settings import _positive

    with pytest.raises(argparse.ArgumentTypeError, match="finite"):
        cli._milliseconds(value)
    with pytest.raises(ParameterError, match="finite"):
        _positive(value, "--warning-ms")
    with pytest.raises(ParameterError, match="finite"):
        _positive(float(value), "--error-ms")


def test_finite_limits_are_taken(fake_run: FakeRun) -> None:
    _, doc, _ = run_main(GOOD + ["--warning-ms", "500", "--error-ms", "1e3"])
    assert not doc.error and fake_run.settings.output.error_ms == 1000.0


# ---------------------------------------------------------------- 7. subject, --ca-file, hosts


@pytest.mark.parametrize("char", ["\x0b", "\x0c", "\x85", "\u2028", "\u2029", "\x1b", "\x07", "\x7f", "\x9b",
                                  "\ufffe"])
def test_subject_text_with_a_control_character_is_a_parameter_error(char: str, fake_run: FakeRun) -> None:
    code, doc, _ = run_main(GOOD + ["--subject-text", f"Probe{char}[31m"])
    assert code == 0 and doc.error and "--subject-text" in doc.text and "internal error" not in doc.text
    assert fake_run.settings is None
    if char in "\x0b\x0c\x85\u2028\u2029":
        assert "line break" in doc.text


def test_ordinary_unicode_subject_text_is_fine(fake_run: FakeRun) -> None:
    _, doc, _ = run_main(GOOD + ["--subject-text", "Prüfung 检查 ✓"])
    assert not doc.error and fake_run.settings.mail.subject_text == "Prüfung 检查 ✓"


@pytest.mark.parametrize("content", [b"", b"not a certificate\n", b"\x30\x82\x01\x0a\x02",
                                     b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                                     b"-----BEGIN PRIVATE KEY-----\nMC4CAQA=\n-----END PRIVATE KEY-----\n"])
def test_ca_file_that_is_not_a_pem_certificate_is_a_parameter_error(content: bytes, tmp_path: Path,
                                                                      fake_run: FakeRun) -> None:
    path = tmp_path / "ca.pem"
    path.write_bytes(content)
    code, doc, _ = run_main(GOOD + ["--ca-file", str(path)])
    assert code == 0 and doc.error and doc.text.startswith("Parameters: --ca-file"), doc.text
    assert fake_run.settings is None


def test_a_real_ca_file_is_accepted(tmp_path: Path, fake_run: FakeRun) -> None:
    import ssl

    cafile = ssl.get_default_verify_paths().cafile or ""
    if not os.path.isfile(cafile):
        pytest.skip("no system CA bundle")
    _, doc, _ = run_main(GOOD + ["--ca-file", cafile])
    assert not doc.error, doc.text


@pytest.mark.parametrize("value", ["[::1", "::1]", "host:143", "http://x", "mail.example.com:25", "a b", "a..b",
                                   "-x.example", "[mail.example.com]", "1.2.3.4:5"])
@pytest.mark.parametrize("option", ["--smtp-host", "--imap-host"])
def test_host_values_with_ports_schemes_or_broken_brackets_are_refused(option: str, value: str,
                                                                      fake_run: FakeRun) -> None:
    i = GOOD.index(option)
    args = GOOD[:i] + GOOD[i + 2:] + [f"{option}={value}"]
    _, doc, _ = run_main(args)
    assert doc.error and doc.text.startswith(f"Parameters: {option}"), doc.text
    assert fake_run.settings is None


@pytest.mark.parametrize("value,expected", [("::1", "::1"), ("[::1]", "::1"), ("mail.example.com", "mail.example.com"),
                                            ("192.0.2.7", "192.0.2.7"), ("mail_1.example", "mail_1.example")])
def test_good_host_values_are_taken(value: str, expected: str, fake_run: FakeRun) -> None:
    args = [w for w in GOOD]
    args[args.index("--imap-host") + 1] = value
    _, doc, _ = run_main(args)
    assert not doc.error and fake_run.settings.imap.host == expected


# ---------------------------------------------------------------- 8. Script v2 stdin, quoting, length


def test_stdin_line_is_read_without_waiting_for_end_of_file(fake_run: FakeRun) -> None:
    read_fd, write_fd = os.pipe()
    stream = os.fdopen(read_fd, "rb", closefd=False)
    results: List[Tuple[int, Any, str]] = []
    runner = threading.Thread(target=lambda: results.append(run_main([], stdin=stream)), daemon=True)
    try:
        os.write(write_fd, " ".join(GOOD).encode() + b"\n")  # ... and the writer never closes its end
        runner.start()
        runner.join(20)  # a generous bound, so that a run waiting for EOF fails instead of hanging
        assert results, "the run waited for the end of stdin"
    finally:
        os.close(write_fd)  # now the end of file comes: a blocked reader returns
        runner.join(5)
        os.close(read_fd)
    code, doc, _ = results[0]
    assert code == 0 and not doc.error and fake_run.settings.imap.auth.password == PASSWORD


def test_read_line_takes_a_line_without_newline_after_silence_and_gives_up_on_nothing() -> None:
    read_fd, write_fd = os.pipe()
    try:
        os.write(write_fd, b"--a b")
        got: List[Optional[bytes]] = []
        with os.fdopen(read_fd, "rb", closefd=False) as stream:
            reader = threading.Thread(target=lambda: got.append(cli.read_line(stream, 5.0, 0.2, 1000)), daemon=True)
            reader.start()
            reader.join(20)  # a generous bound, so that a broken reader fails instead of hanging
        assert got == [b"--a b"]
    finally:
        os.close(write_fd)
        os.close(read_fd)
    read_fd, write_fd = os.pipe()
    try:
        with os.fdopen(read_fd, "rb", closefd=False) as stream:
            assert cli.read_line(stream, 0.3, 0.2, 1000) == b""
    finally:
        os.close(write_fd)
        os.close(read_fd)
    assert cli.read_line(io.BytesIO(b"one\r\ntwo\n"), 1.0, 0.2, 1000) == b"one"
    assert cli.read_line(io.BytesIO(b"x" * 2000), 1.0, 0.2, 1000) is None


def test_overlong_stdin_is_a_parameter_error() -> None:
    code, doc, _ = run_main([], stdin=io.BytesIO(b"--x " * 20000 + b"\n"))
    assert code == 0 and doc.error and "longer than" in doc.text


WINDOWS_CASES = [
    ('--imap-password "my pass" --to b@x', ["--imap-password", "my pass", "--to", "b@x"]),
    (r'--ca-file C:\certs\ca.pem', ["--ca-file", r"C:\certs\ca.pem"]),
    (r'--ca-file "C:\Program Files\ca.pem"', ["--ca-file", r"C:\Program Files\ca.pem"]),
    (r'--subject-text "say \"hi\""', ["--subject-text", 'say "hi"']),
    (r'a\\"b c"', [r"a\b c"]),
    (r'a\\\"b', [r'a\"b']),
    ("it's  ok", ["it's", "ok"]),
    ('""', [""]),
    ("", []),
]
POSIX_CASES = [
    ('--imap-password "my pass" --to b@x', ["--imap-password", "my pass", "--to", "b@x"]),
    ("--imap-password 'it''s'", ["--imap-password", "its"]),
    (r'--subject-text "say \"hi\""', ["--subject-text", 'say "hi"']),
    (r"a\ b", ["a b"]),
    ("", []),
]


@pytest.mark.parametrize("text,expected", WINDOWS_CASES)
def test_windows_splitter_follows_the_c_runtime_rules(text: str, expected: List[str]) -> None:
    assert cli.split_parameters(text, windows=True) == expected


@pytest.mark.parametrize("text,expected", POSIX_CASES)
def test_posix_splitter_follows_the_shell(text: str, expected: List[str]) -> None:
    assert cli.split_parameters(text, windows=False) == expected


def test_stdin_is_split_by_the_platform_rule(fake_run: FakeRun, monkeypatch: pytest.MonkeyPatch) -> None:
    line = " ".join(w if w != PASSWORD else '"my pass"' for w in GOOD).encode() + b' --subject-text C:\\dir\\x\n'
    for name, subject in (("nt", "C:\\dir\\x"), ("posix", "C:dirx")):
        monkeypatch.setattr(cli.os, "name", name)
        try:
            _, doc, _ = run_main([], stdin=io.BytesIO(line))
        finally:
            monkeypatch.undo()
        monkeypatch.setattr(roundtrip, "run_round_trip", fake_run)
        assert not doc.error and fake_run.settings.imap.auth.password == "my pass"
        assert fake_run.settings.mail.subject_text == subject


def test_an_absurdly_long_parameter_list_is_refused_before_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("parsed anyway")

    monkeypatch.setattr(cli, "build_parser", never)
    code, doc, _ = run_main(GOOD + ["--verbose"] * 50000)
    assert code == 0 and doc.error and "too long" in doc.text
    code, doc, _ = run_main(GOOD + ["--subject-text", "x" * 70000])
    assert doc.error and "too long" in doc.text


# ---------------------------------------------------------------- 9, 10. signals, budget, step tracker

SCRIPT = """
import sys, time
from prtg_roundtrip import cli, deadline, roundtrip
from prtg_roundtrip.report import Report
def fake(settings, transcript, environ):
    d = roundtrip.run_deadline(settings)
    deadline.note_step(MODE_STEP)
    if MODE == "age":
        return Report.failure("age %.3f" % (deadline.now() - d.start))
    sys.stderr.write("READY\\n"); sys.stderr.flush()
    time.sleep(120)
roundtrip.run_round_trip = fake
cli.run()
"""


def _script(mode: str, step: str, sleep_first: float = 0.0) -> str:
    return f"import time; time.sleep({sleep_first})\nMODE = {mode!r}; MODE_STEP = {step!r}\n" + SCRIPT


def _sensor_process(script: str, args: List[str]) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("prtg_")}
    return subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, env=env, cwd=str(ROOT))


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
@pytest.mark.parametrize("fmt", PRTG_FORMATS)
def test_sigterm_prints_the_stopped_document_naming_the_step(fmt: str) -> None:
    proc = _sensor_process(_script("hang", "IMAP IDLE"), GOOD + ["--format", fmt])
    assert proc.stderr is not None
    assert proc.stderr.readline() == b"READY\n"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    text = out.decode("utf-8")
    assert proc.returncode == 0 and check_output.check(text, fmt) == [], text
    doc = check_output.parse(text, fmt)
    assert doc.error and doc.text == "Sensor: stopped by a signal (SIGTERM) during IMAP IDLE."


def test_the_budget_counts_from_the_process_start() -> None:
    proc = _sensor_process(_script("age", "x", sleep_first=1.0), GOOD)
    out, err = proc.communicate(timeout=60)
    doc = check_output.parse(out.decode("utf-8"), "prtg-xml")
    assert doc.text.startswith("age"), (out, err)
    assert float(doc.text.split()[1].rstrip(".")) >= 0.9  # the second slept before the imports counts


def test_last_resort_document_names_the_running_step() -> None:
    proc = _sensor_process(_script("hang", "IMAP SEARCH (local)"), GOOD + ["--timeout", "5", "--format", "prtg-json"])
    out, _ = proc.communicate(timeout=60)
    text = out.decode("utf-8")
    assert proc.returncode == 0 and check_output.check(text, "prtg-json") == [], text
    doc = check_output.parse(text, "prtg-json")
    assert doc.error and "during IMAP SEARCH (local)" in doc.text and "--timeout budget of 5 s" in doc.text


def test_step_tracker_and_run_start() -> None:
    deadline.note_step("SMTP DATA")
    assert deadline.current_step() == "SMTP DATA"
    seen: List[str] = []
    worker = threading.Thread(target=lambda: seen.append(deadline.current_step()))
    worker.start()
    worker.join()
    assert seen == ["SMTP DATA"]
    deadline.set_run_start(deadline.now() - 3.0)
    try:
        assert deadline.Deadline(10, deadline.run_start()).remaining() <= 10 - deadline.RESERVE_SECONDS - 3.0
    finally:
        deadline.set_run_start(None)
    assert deadline.process_start() <= deadline._IMPORTED


# ---------------------------------------------------------------- 11. fuzzing

ENV_SECRET = "Env-Linux-Pw-9f3"
PRTG_KEYS = ["prtg_host", "prtg_device", "prtg_deviceid", "prtg_sensorid", "prtg_name", "prtg_windowsdomain",
             "prtg_windowsuser", "prtg_windowspassword", "prtg_linuxuser", "prtg_snmpcommunity", "prtg_url",
             "prtg_version", "prtg_probe", "prtg_primarychannel"]
_PARSER = cli.build_parser()
# --output is left out: it sends the document to a file named by the fuzzed value (tests/test_monitors.py
# covers it), where this test reads stdout.
OPTIONS = sorted(max(a.option_strings, key=len) for a in _PARSER._actions
                 if a.option_strings and a.nargs != 0 and "--help" not in a.option_strings
                 and "--output" not in a.option_strings)
FLAGS = ["--insecure", "--store-result", "--verbose"]
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

any_text = st.one_of(
    st.text(max_size=40),
    st.binary(max_size=40).map(lambda b: b.decode("utf-8", "surrogateescape")),
    st.sampled_from(["", " ", "inf", "nan", "1e400", "-1", "0", "[::1", "host:143", "\x1b[2J", "\u2028",
                     "\ufffe", "env:NOPE", "file:/nonexistent", "keyring:x", "literal:", "--format", "-v", "=",
                     '"', "'"]),
)
secret_text = st.text(min_size=5, max_size=20).map(lambda t: "Pw#" + t)


def _detect(raw: str) -> str:
    if raw.startswith("<?xml") or raw.startswith("<prtg"):
        return "prtg-xml"
    if raw.startswith("{"):
        return "script-v2" if '"version"' in raw else "prtg-json"
    return "text"


def _check_one_document(code: int, raw: str, secrets: List[str]) -> None:
    fmt = _detect(raw)
    if fmt != "text":
        assert check_output.check(raw, fmt) == [], raw
        assert code == 0
    else:
        assert raw.strip() and "Traceback" not in raw
    raw.encode("utf-8")
    for secret in secrets:
        assert secret not in raw, (secret, raw)
        cleaned = clean_text(secret)  # the form a secret takes in a cleaned text
        assert len(cleaned) < 6 or cleaned not in raw, (cleaned, raw)


def _fuzz_main(args: List[str], environ: Dict[str, str], stdin: Optional[Any] = None,
               reply: str = "echo") -> Tuple[int, str]:
    """cli.main with the protocol steps replaced by a fake that echoes `reply` (what a hostile
    server might say) and the settings' text values into the result text."""
    out = io.BytesIO()
    with mock.patch.object(roundtrip, "run_round_trip", FakeRun(reply)):
        code = cli.main(args, environ=environ, stdout=out, stdin=stdin)
    return code, out.getvalue().decode("utf-8")


@FUZZ
@given(
    changes=st.lists(st.tuples(st.sampled_from(OPTIONS), any_text, st.booleans()), max_size=4),
    passwords=st.lists(st.tuples(st.sampled_from(["--imap-password", "--smtp-password"]), secret_text), max_size=2),
    flags=st.lists(st.sampled_from(FLAGS), max_size=2),
    extra=st.lists(any_text, max_size=2),
    fmt=st.sampled_from([*PRTG_FORMATS, "text"]),
    env=st.dictionaries(st.sampled_from(PRTG_KEYS), any_text, max_size=4),
    reply=any_text,
)
def test_fuzz_every_option_and_environment_value(changes: List[Tuple[str, str, bool]],
                                                 passwords: List[Tuple[str, str]], flags: List[str],
                                                 extra: List[str], fmt: str, env: Dict[str, str],
                                                 reply: str) -> None:
    args = GOOD + ["--format", fmt]
    for option, value, joined in changes:
        args += [f"{option}={value}"] if joined else [option, value]
    for option, value in passwords:
        args += [f"{option}={value}"]
    args += [f for f in flags if f != "--store-result"] + extra
    environ = {**env, "prtg_linuxpassword": ENV_SECRET}
    code, raw = _fuzz_main(args, environ, reply=reply)
    _check_one_document(code, raw, [PASSWORD, ENV_SECRET] + [v for _, v in passwords])


@FUZZ
@given(data=st.binary(max_size=300), line=st.lists(any_text, max_size=6), newline=st.booleans())
def test_fuzz_script_v2_stdin(data: bytes, line: List[str], newline: bool) -> None:
    words = " ".join(GOOD + line).encode("utf-8", "surrogateescape")
    for payload in (data, words + (b"\n" if newline else b"") + data):
        code, raw = _fuzz_main([], {"prtg_windowspassword": ENV_SECRET}, stdin=io.BytesIO(payload))
        _check_one_document(code, raw, [ENV_SECRET, PASSWORD])


@settings(max_examples=6, deadline=None)
@given(value=st.binary(min_size=1, max_size=30).filter(lambda b: b"\0" not in b),
       env_value=st.binary(max_size=30).filter(lambda b: b"\0" not in b),
       option=st.sampled_from([b"--subject-text", b"--imap-user", b"--mailbox", b"--imap-password", b"--helo"]),
       fmt=st.sampled_from([f.encode() for f in PRTG_FORMATS]))
def test_fuzz_real_bytes_in_a_real_process(value: bytes, env_value: bytes, option: bytes, fmt: bytes) -> None:
    closed = str(_closed_port()).encode()
    args = [b"--smtp-host", b"127.0.0.1", b"--smtp-port", closed, b"--imap-host", b"127.0.0.1", b"--imap-port",
            closed, b"--imap-user", b"probe", b"--imap-password", PASSWORD.encode(), b"--from", b"a@example.com",
            b"--to", b"b@example.com", b"--timeout", b"5", b"--format", fmt, option + b"=" + value]
    env = {k.encode(): v.encode() for k, v in os.environ.items() if not k.startswith("prtg_")}
    env.update({b"prtg_device": env_value, b"prtg_linuxpassword": ENV_SECRET.encode()})
    proc = subprocess.run([sys.executable.encode(), b"-m", b"prtg_roundtrip", *args], capture_output=True, env=env,
                          cwd=str(ROOT), timeout=60, check=False)
    raw = proc.stdout.decode("utf-8")
    assert check_output.check(raw, fmt.decode()) == [], (raw, proc.stderr)
    assert proc.returncode == 0 and b"Traceback" not in proc.stderr
    for secret in (PASSWORD.encode(), ENV_SECRET.encode()):
        assert secret not in proc.stdout and secret not in proc.stderr


def test_result_file_redacts_registered_secrets_by_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from prtg_roundtrip.resultfile import write_result_files

    monkeypatch.setattr(secret_registry, "_REGISTERED", set(secret_registry._REGISTERED))
    secret_registry.register("Refresh-Token-Xy1")
    _, data = write_result_files(str(tmp_path), "7", "<prtg/>", [("subject_text", "a Refresh-Token-Xy1 b")],
                                 "S: 334 Refresh-Token-Xy1\n", ())
    text = Path(data).read_text(encoding="utf-8")
    assert "Refresh-Token-Xy1" not in text and "Data['subject_text'] := 'a *** b';" in text


def test_registered_secrets_never_reach_the_document(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(secret_registry, "_REGISTERED", set(secret_registry._REGISTERED))

    def leaky(settings: Any, transcript: Any, environ: Any) -> Report:
        secret_registry.register("Access-Token-Q1")  # as the OAuth2 code does when it fetches one
        return Report.failure("OAuth2 token: the server said Access-Token-Q1 is bad.")

    monkeypatch.setattr(roundtrip, "run_round_trip", leaky)
    for fmt in PRTG_FORMATS:
        _, doc, raw = run_main(GOOD + ["--format", fmt])
        assert doc.error and "Access-Token-Q1" not in raw and "***" in doc.text


@pytest.mark.parametrize("password", ["Pw#ab\x07cd-ef", "Pw#ab\u2028cd-ef", "Pw#ab\ufffecd-ef"])
def test_a_secret_with_control_characters_is_redacted_in_its_cleaned_form(password: str, fake_run: FakeRun) -> None:
    args = [w if w != PASSWORD else password for w in GOOD]
    _, doc, raw = run_main(args)  # the fake run echoes the password into the text
    assert not doc.error and "password ***" in doc.text
    assert clean_text(password) not in raw and "cd-ef" not in raw
