"""Every TLS mode on both legs, against servers that offer TLS and servers that do not.

Enforced modes must fail where TLS is missing; "if available" modes fall back to plain text
only when the server offers no TLS at all, and say so; a certificate failure never falls back.
"""

from __future__ import annotations

import pytest
from conftest import base_args, probe_uids, run_sensor, with_options

# (mode, server, outcome): outcome is the security the text reports, or "error: <fragment>"
SMTP_CASES = [
    ("off", "smtp_starttls", "over plain text"),
    ("starttls-if-available", "smtp_starttls", "(STARTTLS)"),
    ("starttls-if-available", "smtp_plain", "SMTP without TLS: the server does not announce STARTTLS"),
    ("starttls", "smtp_starttls", "(STARTTLS)"),
    ("starttls", "smtp_plain", "error: TLS not offered: the server does not announce STARTTLS"),
    ("tls", "smtps", "(implicit TLS)"),
    ("tls", "smtp_plain", "error: TLS not offered on this port"),
    ("tls-if-available", "smtps", "(implicit TLS)"),
    ("tls-if-available", "smtp_plain", "SMTP without TLS: the port does not speak implicit TLS"),
    ("tls-if-available", "smtp_starttls", "(STARTTLS)"),
]
IMAP_CASES = [
    ("off", "imap_starttls", "over plain text"),
    ("starttls-if-available", "imap_starttls", "(STARTTLS)"),
    ("starttls-if-available", "imap_plain", "IMAP without TLS: the server does not announce STARTTLS"),
    ("starttls", "imap_starttls", "(STARTTLS)"),
    ("starttls", "imap_plain", "error: TLS not offered: the server does not announce STARTTLS"),
    ("tls", "imaps", "(implicit TLS)"),
    ("tls", "imap_plain", "error: TLS not offered on this port"),
    ("tls-if-available", "imaps", "(implicit TLS)"),
    ("tls-if-available", "imap_plain", "IMAP without TLS: the port does not speak implicit TLS"),
    ("tls-if-available", "imap_starttls", "(STARTTLS)"),
]


def _check(run, outcome, step, mailbox):
    if outcome.startswith("error: "):
        assert run.error, run.text
        assert run.text.startswith(step), run.text
        assert outcome[len("error: "):] in run.text
    else:
        assert not run.error, run.text
        assert outcome in run.text
        assert probe_uids(mailbox) == []


@pytest.mark.parametrize(("mode", "server", "outcome"), SMTP_CASES)
def test_smtp_tls_modes(stack, mailbox, mode, server, outcome):
    run = run_sensor(with_options(base_args(stack, smtp=server), smtp_tls=mode))
    _check(run, outcome, "SMTP send", mailbox)


@pytest.mark.parametrize(("mode", "server", "outcome"), IMAP_CASES)
def test_imap_tls_modes(stack, mailbox, mode, server, outcome):
    run = run_sensor(with_options(base_args(stack, imap=server), imap_tls=mode))
    _check(run, outcome, "IMAP receive", mailbox)


@pytest.mark.parametrize(
    ("leg", "server", "mode"),
    [
        ("smtp", "smtp_starttls", "starttls-if-available"),
        ("smtp", "smtps", "tls-if-available"),
        ("imap", "imap_starttls", "starttls-if-available"),
        ("imap", "imaps", "tls-if-available"),
    ],
)
def test_untrusted_certificate_is_an_error_never_a_fallback(stack, mailbox, leg, server, mode):
    args = base_args(stack, **{leg: server})
    i = args.index("--ca-file")
    del args[i : i + 2]
    run = run_sensor(with_options(args, **{f"{leg}_tls": mode}))
    assert run.error
    assert "certificate is not trusted" in run.text and "--ca-file" in run.text
    assert run.text.startswith("SMTP send" if leg == "smtp" else "IMAP receive")


def test_insecure_turns_checking_off(stack, mailbox):
    args = base_args(stack, smtp="smtps", imap="imaps")
    i = args.index("--ca-file")
    del args[i : i + 2]
    run = run_sensor(with_options(args, smtp_tls="tls", imap_tls="tls") + ["--insecure"])
    assert not run.error, run.text
    assert "(implicit TLS)" in run.text


def _without_ca_file(args):
    i = args.index("--ca-file")
    return args[:i] + args[i + 2:]


@pytest.mark.parametrize("source", ["directory", "file"])
def test_system_trust_store_as_a_hashed_directory_or_a_named_file(stack, mailbox, tmp_path, source):
    """The system's CAs are read from OpenSSL's hashed directory where there is one (cheaper
    than parsing the bundle, tls.system_ca_directory); SSL_CERT_FILE naming another file than
    the system bundle is honoured. Here the stack's CA stands for a public CA in each place."""
    import shutil
    import subprocess

    hashed = tmp_path / "certs"
    hashed.mkdir()
    ca_copy = tmp_path / "stack-ca.pem"
    shutil.copy(stack["ca_file"], ca_copy)
    if source == "directory":
        shutil.copy(stack["ca_file"], hashed / "stack-ca.pem")
        subprocess.run(["openssl", "rehash", str(hashed)], check=True, capture_output=True)
        env = {"SSL_CERT_DIR": str(hashed), "SSL_CERT_FILE": ""}
    else:  # a hashed directory without this CA must not stand in for the file that has it
        (hashed / "00000000.0").write_text("")
        env = {"SSL_CERT_DIR": str(hashed), "SSL_CERT_FILE": str(ca_copy)}
    args = with_options(_without_ca_file(base_args(stack, smtp="smtps", imap="imaps")), smtp_tls="tls", imap_tls="tls")
    run = run_sensor(args, env=env)
    assert not run.error, run.text
    assert "(implicit TLS)" in run.text


@pytest.mark.parametrize(
    "cert_file, expected",
    [(None, "dir"), ("bundle", "dir"), ("other", None)],
)
def test_system_ca_directory_only_where_it_holds_the_same_cas(monkeypatch, tmp_path, cert_file, expected):
    import ssl

    from prtg_roundtrip.tls import system_ca_directory

    paths = ssl.get_default_verify_paths()
    (tmp_path / "0123abcd.0").write_text("")
    monkeypatch.setenv(paths.openssl_capath_env, str(tmp_path))
    if cert_file is None:
        monkeypatch.delenv(paths.openssl_cafile_env, raising=False)
    else:
        monkeypatch.setenv(paths.openssl_cafile_env,
                           paths.openssl_cafile if cert_file == "bundle" else str(tmp_path / "other.pem"))
    assert system_ca_directory() == (str(tmp_path) if expected else None)
    (tmp_path / "0123abcd.0").unlink()  # not hashed: no directory form
    assert system_ca_directory() is None
