"""Round trips against the real local Postfix and Dovecot (tools/mailstack.py)."""

from __future__ import annotations

import pytest
from conftest import base_args, host, imap_session, port, probe_uids, run_sensor, with_options

CHANNELS = ["Total", "Response Time (SMTP)", "Response Time (IMAP)"]


def assert_success(run):
    assert not run.error, run.text
    assert run.doc.channel_names[:3] == CHANNELS
    smtp, imap, total = (run.doc.value(n) for n in CHANNELS[1:] + CHANNELS[:1])
    assert smtp > 0 and imap > 0
    assert total == pytest.approx(smtp + imap, abs=0.01)
    for name in CHANNELS:
        assert run.doc.channel(name)["unit"] == "TimeResponse"
        assert run.doc.channel(name)["float"] == "1"
    assert "Round trip" in run.text and "deleted" in run.text


@pytest.mark.parametrize("fmt", ["prtg-xml", "prtg-json"])
@pytest.mark.parametrize("search", ["server", "local"])
def test_round_trip_succeeds_and_leaves_no_probe(stack, mailbox, fmt, search):
    run = run_sensor(with_options(base_args(stack), format=fmt, search=search))
    assert_success(run)
    assert f"{search} search" in run.text
    assert f"{host(stack, 'smtp_plain')}:{port(stack, 'smtp_plain')}" in run.text
    assert probe_uids(mailbox) == []


def test_other_messages_are_untouched_bytes_and_flags(stack, mailbox):
    """Messages that are not the probe keep their bytes and flags; \\Deleted ones stay too."""
    bodies = {
        "seen": (b"\\Seen",),
        "flagged": (b"\\Flagged", b"\\Answered"),
        "unread": (),
        "deleted-by-someone": (b"\\Deleted",),
        "lookalike": (),
    }
    for name, flags in bodies.items():
        subject = f"ordinary {name}"
        if name == "lookalike":  # quotes a probe subject but is not a probe
            subject = "Re: PRTG Roundtrip Mail: {00000000-0000-0000-0000-000000000000}"
        msg = (f"From: a@roundtrip.test\r\nTo: probe@roundtrip.test\r\nSubject: {subject}\r\n"
               f"Message-ID: <{name}@roundtrip.test>\r\n\r\nbody of {name}\r\n").encode()
        mailbox.append("INBOX", msg, flags=flags)
    mailbox.noop()
    before = mailbox.fetch(mailbox.search(["ALL"]), ["FLAGS", "BODY.PEEK[]"])

    for search in ("server", "local"):
        assert_success(run_sensor(with_options(base_args(stack), search=search)))

    mailbox.noop()
    after = mailbox.fetch(mailbox.search(["ALL"]), ["FLAGS", "BODY.PEEK[]"])
    assert sorted(before) == sorted(after)
    for uid, data in before.items():
        assert after[uid][b"BODY[]"] == data[b"BODY[]"]
        assert set(after[uid][b"FLAGS"]) == set(data[b"FLAGS"]), uid


def test_probe_in_a_non_inbox_folder(stack, mailbox):
    """Delivery into INBOX while the sensor watches another folder: the folder must exist."""
    run = run_sensor(with_options(base_args(stack), mailbox="Does-Not-Exist"))
    assert run.error
    assert "IMAP receive" in run.text and "Does-Not-Exist" in run.text and "cannot be opened" in run.text


def test_smtp_host_defaults_to_prtg_host_placeholder(stack, mailbox):
    args = base_args(stack)
    i = args.index("--smtp-host")
    del args[i : i + 2]
    run = run_sensor(args, env={"prtg_host": host(stack, "smtp_plain")})
    assert_success(run)


def test_subject_text_and_non_ascii_subject(stack, mailbox):
    run = run_sensor(with_options(base_args(stack), subject_text="Überwachung Mail-Check"))
    assert_success(run)
    assert probe_uids(mailbox) == []


def test_detailed_channels(stack, mailbox):
    args = with_options(base_args(stack, smtp="submission", imap="imap_starttls"),
                        smtp_tls="starttls", imap_tls="starttls", smtp_auth="password",
                        smtp_user=stack["users"]["sender"]["login"],
                        smtp_password=stack["users"]["sender"]["password"], channels="detailed")
    run = run_sensor(args)
    assert_success(run)
    names = run.doc.channel_names
    for name in ("SMTP Connect", "SMTP TLS Handshake", "SMTP Auth", "SMTP Submit",
                 "IMAP Connect and Login", "IMAP Checks", "SMTP Certificate", "IMAP Certificate"):
        assert name in names
    parts = sum(run.doc.value(n) for n in ("SMTP Connect", "SMTP TLS Handshake", "SMTP Auth", "SMTP Submit"))
    assert parts <= run.doc.value("Response Time (SMTP)") + 0.01
    assert 300 < run.doc.value("SMTP Certificate") < 4000


def test_timeout_when_mail_never_arrives(stack, mailbox):
    """The probe goes to another user's mailbox: accepted by SMTP, never seen here."""
    args = with_options(base_args(stack), to=stack["users"]["other"]["address"], max_trip_time="2",
                        interval="1")
    run = run_sensor(args)
    assert run.error
    assert run.text.startswith("Delivery")
    assert "did not arrive" in run.text and "--max-trip-time 2 s" in run.text
    other = imap_session(stack, "other")
    other.select_folder("INBOX")
    leftovers = other.search(["SUBJECT", "PRTG Roundtrip Mail"])
    if leftovers:
        other.delete_messages(leftovers)
        other.expunge()
    other.logout()
    assert leftovers, "the probe was delivered to the other mailbox, where it stays"
