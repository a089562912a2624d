"""Where the probe landed, and how the receiving server judged it (issue 13), against real parts.

The delivery stack (tools/mailstack.py with delivery=True, tools/deliverystack.py) is a second
private Postfix + Dovecot on its own ports, with Dovecot's Sieve, a Junk folder with the \\Junk
special-use attribute and a real SpamAssassin (spamd) that Sieve asks about every delivered
message: a subject with its spam word scores 20 and is filed into Junk. The ordinary stack (no
Junk folder) and one fake IMAP server (no SPECIAL-USE, the one fault the real Dovecot cannot
show when it has a special-use folder) cover the rest.
"""

from __future__ import annotations

import os
import re
from typing import Any, Dict, Iterator, List

import pytest
from conftest import base_args, imap_session, mailstack, run_sensor, with_options
from fakeservers import DeliveringImapServer, FakeSmtpServer
from imapclient import IMAPClient

CHANNEL_IDS = {"Landed": 30, "SPF": 31, "DKIM": 32, "DMARC": 33, "Spam Score": 34}


@pytest.fixture(scope="session")
def delivery_stack() -> Iterator[Dict[str, Any]]:
    base = int(os.environ.get("PRTG_RT_PORT_BASE", "13000"))
    directory = os.environ.get("PRTG_RT_STACK_DIR", f"/tmp/prtg-roundtrip-tests-{base}") + "-delivery"
    ms = mailstack.MailStack(directory, base, delivery=True)
    info = ms.start()
    info["_stack"] = ms
    yield info
    ms.stop()


def _login(info: Dict[str, Any], user: str = "probe") -> IMAPClient:
    return imap_session(info, user)


@pytest.fixture
def junk(delivery_stack: Dict[str, Any]) -> Iterator[IMAPClient]:
    """The probe user's INBOX and Junk emptied; a session with Junk selected."""
    client = _login(delivery_stack)
    for folder in ("INBOX", delivery_stack["delivery"]["junk_folder"]):
        client.select_folder(folder)
        uids = client.search(["ALL"])
        if uids:
            client.delete_messages(uids)
            client.expunge()
    yield client
    try:
        client.logout()
    except Exception:  # noqa: BLE001 - a test may have broken the session on purpose
        pass


def _probes(client: IMAPClient, folder: str) -> List[int]:
    client.select_folder(folder)
    return list(client.search(["SUBJECT", "PRTG Roundtrip Mail"]))


def _sent(run: Any) -> List[str]:
    """The IMAP commands in the run's transcript (--verbose)."""
    return [line.split(" IMAP > ", 1)[1] for line in run.stderr.splitlines() if " IMAP > " in line]


def _verbs(run: Any) -> List[str]:
    """The verbs of those commands (after the tag), "UID SEARCH" as "SEARCH"."""
    words = [c.split() for c in _sent(run)]
    return [w[2].upper() if len(w) > 2 and w[1].upper() == "UID" else w[1].upper() for w in words if len(w) > 1]


def _spam_args(info: Dict[str, Any], **options: str) -> List[str]:
    return with_options(base_args(info), subject_text=info["delivery"]["spam_word"], **options)


def test_probe_in_the_inbox_reports_landed_inbox_and_the_real_spam_score(delivery_stack, junk):
    run = run_sensor([*base_args(delivery_stack), "--verbose"])
    assert not run.error and not run.doc.warning, run.text
    assert run.doc.value("Landed") == 1
    assert run.doc.channel("Landed")["valuelookup"] == "prtg.roundtrip.landed"
    assert run.doc.value("Spam Score") == 0.0  # SpamAssassin's X-Spam-Status score=0.0
    for method in ("SPF", "DKIM", "DMARC"):  # OpenDKIM (signed, then verified), OpenDMARC (SPF, DMARC)
        assert run.doc.channel(method)["valuelookup"] == "prtg.roundtrip.authresult"
        assert run.doc.value(method) == 1, run.text  # pass
    assert "SPF pass, DKIM pass, DMARC pass (by mail.roundtrip.test)" in run.text
    assert "found it in 'INBOX'" in run.text and "deleted" in run.text
    # the verdict fields came with the probe's header FETCH, read with BODY.PEEK (no \Seen), and
    # the only flag set is the probe's \Deleted
    fetches = [c for c in _sent(run) if " FETCH " in c]
    assert fetches and all("BODY.PEEK[HEADER.FIELDS (" in c and "AUTHENTICATION-RESULTS" in c for c in fetches)
    stores = [c.split(" ", 1)[1] for c in _sent(run) if " STORE " in c]
    assert len(stores) == 1 and re.fullmatch(r"UID STORE \d+ \+FLAGS\.SILENT \(\\+Deleted\)", stores[0]), stores
    assert "watching the Junk folder 'Junk'" in run.stderr
    assert next(c for c in _sent(run) if "LIST" in c).endswith('LIST (SPECIAL-USE) "" "*"')
    assert _probes(junk, "INBOX") == [] and _probes(junk, "Junk") == []


def test_script_v2_sends_lookup_channels(delivery_stack, junk):
    run = run_sensor(with_options(base_args(delivery_stack), format="script-v2"))
    assert not run.error, run.text
    landed = run.doc.channel("Landed")
    assert landed["type"] == "lookup" and landed["id"] == CHANNEL_IDS["Landed"]
    assert {r["channel"]: r["id"] for r in run.doc.results if r["channel"] in CHANNEL_IDS} == CHANNEL_IDS


def test_probe_in_junk_is_an_error_and_is_deleted_there_only(delivery_stack, junk):
    """Another message in Junk keeps its bytes and its (absent) flags; only the probe goes."""
    other = b"From: a@example.org\r\nSubject: someone else's spam\r\nMessage-ID: <other@example.org>\r\n\r\nhello\r\n"
    junk.append("Junk", other, flags=())
    junk.select_folder("Junk")
    (other_uid,) = junk.search(["ALL"])
    run = run_sensor(_spam_args(delivery_stack))
    assert run.error
    assert run.text.startswith("Delivery")
    assert "arrived in Junk after" in run.text and "spam filter classified the probe" in run.text
    assert "spam score 20" in run.text and "deleted there" in run.text
    assert _probes(junk, "Junk") == [] and _probes(junk, "INBOX") == []
    junk.select_folder("Junk")
    assert junk.search(["ALL"]) == [other_uid]
    fetched = junk.fetch([other_uid], ["FLAGS", "BODY.PEEK[]"])[other_uid]
    assert fetched[b"FLAGS"] == () and fetched[b"BODY[]"] == other


def test_probe_in_junk_is_a_warning_with_junk_is_warning(delivery_stack, junk):
    run = run_sensor(_spam_args(delivery_stack, junk_is="warning", format="prtg-json"))
    assert not run.error and run.doc.warning, run.text
    assert run.text.startswith("Arrived in Junk after")
    assert run.doc.value("Landed") == 2
    assert run.doc.value("Spam Score") == 20.0
    assert run.doc.value("Response Time (IMAP)") > 0  # the timing channels stay what they are
    assert _probes(junk, "Junk") == []


def test_junk_folder_off_waits_for_the_mailbox_only(delivery_stack, junk):
    run = run_sensor([*_spam_args(delivery_stack, junk_folder="off", max_trip_time="3"), "--verbose"])
    assert run.error and "did not arrive in 'INBOX' within" in run.text
    assert "STATUS" not in _verbs(run) and "LIST" not in _verbs(run)
    assert len(_probes(junk, "Junk")) == 1  # it stays where the filter put it


def test_a_named_junk_folder_is_used(delivery_stack, junk):
    run = run_sensor([*_spam_args(delivery_stack, junk_folder="Junk", junk_is="warning"), "--verbose"])
    assert run.doc.warning and run.doc.value("Landed") == 2, run.text
    assert not [c for c in _sent(run) if "SPECIAL-USE" in c]  # named: a plain LIST checks that it exists


@pytest.mark.parametrize("authserv_id", [None, "mail.roundtrip.test"])
def test_a_forged_authentication_results_field_is_ignored(delivery_stack, junk, authserv_id):
    """Sieve appends 'Authentication-Results: forged.example; spf=fail; dkim=fail; dmarc=fail'
    at the bottom of the header, where a sender's own field would be; the receiving server's
    fields (OpenDKIM's, OpenDMARC's) are on top. By default the topmost field's id counts, or
    the one --authserv-id names: the forged one is ignored either way."""
    args = with_options(base_args(delivery_stack), subject_text=delivery_stack["delivery"]["forge_word"])
    if authserv_id:
        args = with_options(args, authserv_id=authserv_id)
    run = run_sensor(args)
    assert not run.error, run.text
    assert [run.doc.value(m) for m in ("SPF", "DKIM", "DMARC")] == [1, 1, 1], run.text
    assert "fail" not in run.text
    # the same message read with the forger's id shows the forged results: they were there
    run = run_sensor(with_options(args, authserv_id=delivery_stack["delivery"]["forged_authserv_id"]))
    assert [run.doc.value(m) for m in ("SPF", "DKIM", "DMARC")] == [2, 2, 2]


def test_a_mailbox_without_a_junk_folder(stack, mailbox):
    """The ordinary stack has no Junk folder and no SPECIAL-USE: the run is the usual one."""
    run = run_sensor([*base_args(stack), "--verbose"])
    assert not run.error and not run.doc.warning, run.text
    assert run.doc.value("Landed") == 1
    assert "no Junk folder found" in run.stderr and "STATUS" not in _verbs(run)


def test_a_named_junk_folder_that_does_not_exist_is_an_error(stack, mailbox):
    run = run_sensor(with_options(base_args(stack), junk_folder="NoSuchJunk"))
    assert run.error and "'NoSuchJunk' (--junk-folder) does not exist" in run.text


class _NoSpecialUse(DeliveringImapServer):
    """A server without SPECIAL-USE whose Junk folder has only its name: LIST answers INBOX and
    Junk without attributes, STATUS answers a UIDNEXT that never grows."""

    def _answer(self, conn: Any, tag: str, verb: str) -> bool:
        if verb == "LIST":
            conn.send(f'* LIST (\\HasNoChildren) "/" INBOX\r\n* LIST (\\HasNoChildren) "/" Junk\r\n'
                      f"{tag} OK List completed.\r\n")
            return True
        if verb == "STATUS":
            conn.send(f"* STATUS Junk (UIDNEXT 7)\r\n{tag} OK Status completed.\r\n")
            return True
        return super()._answer(conn, tag, verb)


def test_a_server_without_special_use_is_searched_by_name(stack):
    with FakeSmtpServer() as smtp, _NoSpecialUse(smtp, visible_after=1.5) as imap:
        args = with_options(base_args(stack), imap_host=imap.host, imap_port=str(imap.port), smtp_host=smtp.host,
                            smtp_port=str(smtp.port), max_trip_time="5", interval="1") + ["--verbose"]
        run = run_sensor(args)
        commands = imap.commands
    assert not run.error, run.text
    assert run.doc.value("Landed") == 1
    assert "watching the Junk folder 'Junk'" in run.stderr
    lists = [c for c in commands if c.upper().startswith("LIST")]
    assert lists == ['LIST "" "*"']  # no LIST (SPECIAL-USE) to a server that does not offer it
    statuses = [c for c in commands if c.upper().startswith("STATUS")]
    assert 2 <= len(statuses) <= 3  # at arming, and once per --interval while it took 1.5 s
    first_search = next(i for i, c in enumerate(commands) if c.startswith("UID SEARCH"))
    assert commands[first_search + 1] != 'STATUS "Junk" (UIDNEXT)'  # never after the first check


def test_nothing_is_asked_of_the_junk_folder_before_the_probe_is_found_fast(delivery_stack, junk):
    """The normal case: a probe in the mailbox within the first --interval costs no STATUS."""
    run = run_sensor([*with_options(base_args(delivery_stack), interval="5"), "--verbose"])
    assert not run.error, run.text
    verbs = _verbs(run)
    statuses = [i for i, verb in enumerate(verbs) if verb == "STATUS"]
    assert len(statuses) == 1  # when armed, before the send; none while waiting
    assert statuses[0] < verbs.index("SEARCH")


class _JunkGoneAway(_NoSpecialUse):
    """Junk gets mail (UIDNEXT grows) but cannot be selected (deleted meanwhile: NO)."""

    statuses = 0

    def _answer(self, conn: Any, tag: str, verb: str) -> bool:
        line = self.received[-1]
        if verb == "STATUS":
            self.statuses += 1
            conn.send(f"* STATUS Junk (UIDNEXT {7 + self.statuses})\r\n{tag} OK Status completed.\r\n")
            return True
        if verb == "SELECT" and "Junk" in line:
            conn.send(f"{tag} NO Mailbox doesn't exist: Junk\r\n")
            return True
        return super()._answer(conn, tag, verb)


def test_a_junk_folder_that_cannot_be_selected_ends_the_watch_not_the_run(stack):
    with FakeSmtpServer() as smtp, _JunkGoneAway(smtp, visible_after=2.5) as imap:
        args = with_options(base_args(stack), imap_host=imap.host, imap_port=str(imap.port), smtp_host=smtp.host,
                            smtp_port=str(smtp.port), max_trip_time="6", interval="1") + ["--verbose"]
        run = run_sensor(args)
        commands = imap.commands
    assert not run.error, run.text
    assert run.doc.value("Landed") == 1
    assert "no longer watching the Junk folder" in run.stderr
    selects = [c for c in commands if c.upper().startswith("SELECT")]
    assert selects == ['SELECT "INBOX"', 'SELECT "Junk"', 'SELECT "INBOX"']  # back to the mailbox, once
