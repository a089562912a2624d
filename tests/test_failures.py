"""Each failure of the foundation's list gives one clear error document (exit code 0).

Real servers where they produce the fault: refused ports, unknown hosts, wrong passwords,
refused recipients, relaying without authentication, mailboxes that do not exist.
"""

from __future__ import annotations

import socket

import pytest
from conftest import base_args, run_sensor, with_options


def _closed_port() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return str(port)


def test_smtp_connection_refused(stack, mailbox):
    run = run_sensor(with_options(base_args(stack), smtp_port=_closed_port()))
    assert run.error
    assert run.text.startswith("SMTP send (127.0.0.1:")
    assert "connection refused" in run.text and "listens on this port" in run.text


def test_imap_connection_refused(stack):
    run = run_sensor(with_options(base_args(stack), imap_port=_closed_port()))
    assert run.error
    assert run.text.startswith("IMAP receive (127.0.0.1:") and "connection refused" in run.text


@pytest.mark.parametrize("leg", ["smtp", "imap"])
def test_unknown_host(stack, mailbox, leg):
    run = run_sensor(with_options(base_args(stack), **{f"{leg}_host": "no-such-host.invalid"}))
    assert run.error
    assert "no-such-host.invalid" in run.text and "unknown host" in run.text


def test_imap_login_rejected(stack):
    run = run_sensor(with_options(base_args(stack), imap_password="wrong-password"))
    assert run.error
    assert run.text.startswith("IMAP receive") and "login rejected" in run.text
    assert "--imap-password" in run.text and "wrong-password" not in run.text


def test_smtp_login_rejected(stack, mailbox):
    args = with_options(base_args(stack, smtp="submission"), smtp_tls="starttls", smtp_auth="password",
                        smtp_user=stack["users"]["sender"]["login"], smtp_password="wrong-password")
    run = run_sensor(args)
    assert run.error
    assert run.text.startswith("SMTP send") and "login rejected: 535" in run.text
    assert "wrong-password" not in run.text


def test_smtp_auth_succeeds_on_submission_and_smtps(stack, mailbox):
    sender = stack["users"]["sender"]
    for server, mode in (("submission", "starttls"), ("smtps", "tls")):
        args = with_options(base_args(stack, smtp=server), smtp_tls=mode, smtp_auth="password",
                            smtp_user=sender["login"], smtp_password=sender["password"])
        run = run_sensor(args)
        assert not run.error, run.text
        assert "SMTP password was sent without TLS" not in run.text


def test_password_over_plain_text_is_said_in_the_text(stack, mailbox):
    sender = stack["users"]["sender"]
    args = with_options(base_args(stack, smtp="smtp_plain"), smtp_auth="password",
                        smtp_user=sender["login"], smtp_password=sender["password"])
    run = run_sensor(args)
    assert not run.error, run.text
    assert "the SMTP password was sent without TLS" in run.text
    assert "the IMAP password was sent without TLS" in run.text


def test_relay_without_authentication_is_refused_with_the_servers_reply(stack, mailbox):
    run = run_sensor(with_options(base_args(stack, smtp="submission"), smtp_tls="starttls"))
    assert run.error
    assert run.text.startswith("SMTP send")
    assert "rejected at" in run.text and " 5" in run.text  # a 5xx code and the server's words


def test_unknown_recipient_is_refused_at_rcpt(stack, mailbox):
    run = run_sensor(with_options(base_args(stack), to="nobody@roundtrip.test"))
    assert run.error
    assert "recipient <nobody@roundtrip.test> rejected at RCPT TO: 5" in run.text
    assert "permanent refusal" in run.text


def test_mailbox_missing(stack):
    run = run_sensor(with_options(base_args(stack), mailbox="Nope"))
    assert run.error and "mailbox 'Nope' cannot be opened" in run.text


def test_verbose_transcript_is_redacted(stack, mailbox):
    sender = stack["users"]["sender"]
    probe = stack["users"]["probe"]
    args = with_options(base_args(stack, smtp="smtp_plain"), smtp_auth="password",
                        smtp_user=sender["login"], smtp_password=sender["password"]) + ["--verbose"]
    run = run_sensor(args)
    assert not run.error, run.text
    assert "SMTP > AUTH" in run.stderr and "IMAP > " in run.stderr
    everything = run.stdout + run.stderr
    import base64

    for secret in (sender["password"], probe["password"]):
        assert secret not in everything
        assert base64.b64encode(secret.encode()).decode() not in everything


def test_a_password_sent_in_clear_is_said_on_failure_too(stack, mailbox):
    """IMAP logs in over plain text, then the SMTP leg fails: the error still says it."""
    run = run_sensor(with_options(base_args(stack), smtp_port=_closed_port()))
    assert run.error and run.text.startswith("SMTP send"), run.text
    assert "the IMAP password was sent without TLS" in run.text
    both = with_options(base_args(stack, smtp="smtp_plain", imap="imap_starttls"), smtp_auth="password",
                        smtp_user="sender@roundtrip.test", smtp_password="wrong-password", imap_tls="starttls")
    run = run_sensor(both)
    assert run.error and "login rejected" in run.text, run.text
    assert "the SMTP password was sent without TLS" in run.text and "IMAP password" not in run.text


@pytest.mark.parametrize(("reference", "shown"), [
    ("env:RT_NO_SUCH_VARIABLE", "env:RT_NO_SUCH_VARIABLE"),
    ("file:/nonexistent/rt-password", "file:/nonexistent/rt-password"),
    ("keyring:prtg-roundtrip/nobody@example.com", "keyring:prtg-roundtrip/nobody@example.com"),
])
def test_a_missing_secret_reference_is_named_in_the_error(stack, reference, shown):
    run = run_sensor(with_options(base_args(stack), imap_password=reference))
    assert run.error and run.text.startswith("Parameters"), run.text
    assert shown in run.text and "***" not in run.text
