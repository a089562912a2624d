"""PRTG integration against the real stack: Script v2, placeholders, password references,
limits, result files, and the credentials command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, base_args, check_output, imap_session, probe_uids, run_sensor, with_options

SUPPORT = str(Path(__file__).parent / "support")


def without(args, *options):
    args = list(args)
    for option in options:
        i = args.index(option)
        del args[i : i + 2]
    return args


def test_script_v2_reads_parameters_from_stdin_and_defaults_to_its_format(stack, mailbox):
    line = " ".join(f"'{a}'" for a in base_args(stack))
    run = run_sensor([], stdin=line.encode(), fmt="script-v2", env={"PRTG_ROUNDTRIP_SCRIPT_V2": "1"})
    assert run.doc.format == "script-v2" and not run.error, run.text
    by_name = {r["channel"]: r for r in run.doc.results}
    assert [by_name[n]["id"] for n in ("Total", "Response Time (SMTP)", "Response Time (IMAP)")] == [10, 11, 12]
    assert by_name["Total"]["kind"] == "time_milliseconds" and by_name["Total"]["type"] == "float"
    assert '"status": "ok"' in run.stdout
    assert probe_uids(mailbox) == []


def test_script_v2_channel_ids_are_stable_across_runs_and_channel_sets(stack, mailbox):
    args = with_options(base_args(stack, smtp="smtp_starttls", imap="imap_starttls"),
                        smtp_tls="starttls", imap_tls="starttls", format="script-v2")
    one = run_sensor(args)
    two = run_sensor(with_options(args, channels="detailed"))
    ids_one = {r["channel"]: r["id"] for r in one.doc.results}
    ids_two = {r["channel"]: r["id"] for r in two.doc.results}
    assert ids_one.items() <= ids_two.items()
    assert ids_one["SMTP Certificate"] == 13 and ids_one["IMAP Certificate"] == 14


def test_script_v2_error_status(stack):
    run = run_sensor(with_options(base_args(stack), format="script-v2", mailbox="Missing"))
    assert run.error and '"status": "error"' in run.stdout and "Missing" in run.text


@pytest.mark.parametrize("kind", ["linux", "windows"])
def test_imap_login_from_device_credentials(stack, mailbox, kind):
    probe = stack["users"]["probe"]
    args = without(base_args(stack), "--imap-user", "--imap-password") + ["--imap-credentials", kind]
    env = {f"prtg_{kind}user": probe["login"], f"prtg_{kind}password": probe["password"]}
    run = run_sensor(args, env=env)
    assert not run.error, run.text
    missing = run_sensor(args)
    assert missing.error and missing.text.startswith("Parameters") and f"prtg_{kind}user" in missing.text


def test_smtp_login_from_device_credentials(stack, mailbox):
    sender = stack["users"]["sender"]
    args = with_options(base_args(stack, smtp="submission"), smtp_tls="starttls", smtp_auth="password",
                        smtp_credentials="windows")
    run = run_sensor(args, env={"prtg_windowsuser": sender["login"], "prtg_windowspassword": sender["password"]})
    assert not run.error, run.text


def test_password_references(stack, mailbox, tmp_path):
    password = stack["users"]["probe"]["password"]
    secret_file = tmp_path / "imap.secret"
    secret_file.write_text(password + "\n")
    keyring_file = tmp_path / "keyring.json"
    env = {"PRTG_RT_IMAP_PW": password, "PYTHON_KEYRING_BACKEND": "file_keyring.FileKeyring",
           "PRTG_RT_TEST_KEYRING": str(keyring_file), "PYTHONPATH": SUPPORT}
    stored = subprocess.run([sys.executable, "-m", "prtg_roundtrip", "credentials", "set", "prtg-roundtrip", "probe"],
                            input=password + "\n", capture_output=True, text=True, env={**os.environ, **env},
                            cwd=str(ROOT), check=False)
    assert stored.returncode == 0 and password not in stored.stdout, stored
    for reference in ("env:PRTG_RT_IMAP_PW", f"file:{secret_file}", "keyring:prtg-roundtrip/probe"):
        run = run_sensor(with_options(base_args(stack), imap_password=reference), env=env)
        assert not run.error, (reference, run.text)
    for reference, expected in (("env:NOT_SET_ANYWHERE", "not set"), (f"file:{tmp_path}/nope", "cannot be read"),
                                ("keyring:prtg-roundtrip/nobody", "not stored"), ("keyring:noslash", "SERVICE/USER")):
        run = run_sensor(with_options(base_args(stack), imap_password=reference), env=env)
        assert run.error and run.text.startswith("Parameters") and expected in run.text, run.text
    literal = run_sensor(with_options(base_args(stack), imap_password="literal:" + password), env=env)
    assert not literal.error


def test_credentials_command(tmp_path):
    env = {**os.environ, "PYTHON_KEYRING_BACKEND": "file_keyring.FileKeyring",
           "PRTG_RT_TEST_KEYRING": str(tmp_path / "k.json"), "PYTHONPATH": SUPPORT}

    def cmd(*args, stdin=""):
        return subprocess.run([sys.executable, "-m", "prtg_roundtrip", "credentials", *args], input=stdin,
                              capture_output=True, text=True, env=env, cwd=str(ROOT), check=False)

    assert cmd("get", "svc", "u").returncode == 1
    assert cmd("set", "svc", "u", stdin="s3cret-value\n").returncode == 0
    got = cmd("get", "svc", "u")
    assert got.returncode == 0 and "12 characters" in got.stdout and "s3cret-value" not in got.stdout
    assert cmd("get", "svc", "u", "--reveal").stdout.strip() == "s3cret-value"
    assert cmd("delete", "svc", "u").returncode == 0
    assert cmd("delete", "svc", "u").returncode == 1


@pytest.mark.parametrize("fmt", ["prtg-xml", "prtg-json", "script-v2"])
def test_limits_on_total(stack, mailbox, fmt):
    run = run_sensor(with_options(base_args(stack), format=fmt, warning_ms="0.001", error_ms="600000"))
    assert not run.error, run.text
    if fmt == "script-v2":
        assert '"status": "warning"' in run.stdout and "above the warning limit" in run.text
    else:
        total = run.doc.channel("Total")
        assert total["limitmode"] == "1" and float(total["limitmaxwarning"]) == 0.001
        assert float(total["limitmaxerror"]) == 600000
        assert "limitmode" not in run.doc.channel("Response Time (SMTP)")
    over = run_sensor(with_options(base_args(stack), format="script-v2", error_ms="0.001"))
    assert '"status": "error"' in over.stdout and over.doc.results  # channels still reported


def test_limits_must_be_ordered(stack):
    run = run_sensor(with_options(base_args(stack), warning_ms="500", error_ms="100"))
    assert run.error and "--warning-ms 500 is not below --error-ms 100" in run.text


@pytest.mark.parametrize("fmt", ["prtg-xml", "script-v2"])
def test_store_result_writes_prtgs_two_files(stack, mailbox, tmp_path, fmt):
    args = with_options(base_args(stack), format=fmt, sensor_id="2042", result_dir=str(tmp_path)) + ["--store-result"]
    run = run_sensor(args, env={"prtg_windowspassword": "device-secret-123"})
    assert not run.error, run.text
    result = (tmp_path / "Result of Sensor 2042.prtg-roundtrip.txt").read_bytes()
    assert result == run.stdout.encode("utf-8")
    data = (tmp_path / "Result of Sensor 2042.prtg-roundtrip.Data.txt").read_text(encoding="utf-8")
    assert "Data['imap_password'] := '***';" in data
    assert "Data['imap_host'] := '127.0.0.1';" in data
    assert "Data['prtg_windowspassword'] := '***';" in data
    assert "SMTP > MAIL FROM" in data.upper() and "IMAP > " in data
    assert "LOGIN ***" in data or "AUTHENTICATE PLAIN ***" in data
    assert stack["users"]["probe"]["password"] not in data and "device-secret-123" not in data
    # PRTG overwrites the files with each run: so does the sensor
    again = run_sensor(args)
    assert (tmp_path / "Result of Sensor 2042.prtg-roundtrip.txt").read_bytes() == again.stdout.encode("utf-8")


def test_store_result_without_a_folder_says_so(stack, mailbox):
    run = run_sensor(base_args(stack) + ["--store-result"])
    assert not run.error and "Result files not written" in run.text


def test_every_document_is_utf8_without_bom_whatever_the_locale(stack, mailbox):
    client = imap_session(stack)
    if not client.folder_exists("Prüfung"):
        client.create_folder("Prüfung")
    client.logout()
    env = {"LC_ALL": "de_DE.ISO-8859-1", "LANG": "de_DE.ISO-8859-1", "PYTHONIOENCODING": "latin-1"}
    for fmt in ("prtg-xml", "prtg-json", "script-v2"):
        run = run_sensor(with_options(base_args(stack), mailbox="Prüfung", max_trip_time="1", format=fmt), env=env)
        assert run.error and "'Prüfung'" in run.text  # decoded as UTF-8 by run_sensor
    raw = run.stdout.encode("utf-8")
    assert not raw.startswith(b"\xef\xbb\xbf")
    assert check_output.check(run.stdout) == []


def _without_login(args):
    return without(args, "--imap-user", "--imap-password")


def test_python_script_advanced_entry_end_to_end(stack, mailbox):
    """PRTG's Python Script Advanced: one JSON argument with the device's data."""
    import json
    import shlex

    probe = stack["users"]["probe"]
    params = shlex.join(_without_login(base_args(stack)) + ["--credentials", "linux"])
    data = {"host": "127.0.0.1", "params": params, "linuxloginusername": probe["login"],
            "linuxloginpassword": probe["password"]}
    env = {k: v for k, v in os.environ.items() if not k.startswith("prtg_")}
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "prtg_roundtrip_python.py"), json.dumps(data)],
                          capture_output=True, env=env, cwd="/", timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout.decode("utf-8")
    assert check_output.check(text, "prtg-json") == [], text
    doc = check_output.parse(text, "prtg-json")
    assert not doc.error, doc.text
    assert probe["password"] not in text + proc.stderr.decode("utf-8", "replace")
    assert probe_uids(mailbox) == []


def test_linux_launcher_as_script_v2_end_to_end(stack, mailbox, tmp_path):
    """The multi-platform probe's Script v2: the .sh with its parameters on stdin, no arguments."""
    import shutil

    launcher = Path(shutil.copy2(ROOT / "scripts" / "prtg-roundtrip.sh", tmp_path / "prtg-roundtrip.sh"))
    launcher.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("prtg_")}
    env["PRTG_ROUNDTRIP_PYTHON"] = sys.executable
    line = " ".join(f"'{a}'" for a in base_args(stack))
    proc = subprocess.run([str(launcher)], input=line.encode(), capture_output=True, env=env, cwd=str(ROOT),
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout.decode("utf-8")
    assert check_output.check(text, "script-v2") == [], text
    assert '"status": "ok"' in text and probe_uids(mailbox) == []
