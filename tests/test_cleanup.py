"""Leftover probes: a later run of the same sensor removes its own stale ones, nothing else.

Against the real stack. Leftovers are made the way they arise (a run that timed out), or
appended as exact copies of what a probe looks like, with a marker dated in the past.
"""

from __future__ import annotations

import re
import time
import uuid

import pytest
from conftest import base_args, imap_session, probe_uids, run_sensor, with_options

from prtg_roundtrip.probe import SUBJECT_MARK, Marker, probe_message_id


def probe_like(sensor: str, age: float, budget: float = 60, marker: bool = True, subject_guid: str = "") -> bytes:
    guid = str(uuid.uuid4()).upper()
    m = Marker(guid, sensor, round(time.time() - age, 3), budget)
    lines = [
        "From: sender@roundtrip.test",
        "To: probe@roundtrip.test",
        f"Subject: {SUBJECT_MARK} {{{subject_guid or guid}}}",
        f"Message-ID: {probe_message_id(guid, 'roundtrip.test')}",
    ]
    if marker:
        lines.append(f"X-PRTG-Roundtrip: {m.header()}")
    return ("\r\n".join(lines) + "\r\n\r\nleftover\r\n").encode()


def subjects(client) -> list:
    client.noop()
    uids = client.search(["ALL"])
    return sorted(d[b"ENVELOPE"].subject.decode() for d in client.fetch(uids, ["ENVELOPE"]).values())


def test_sweep_removes_only_stale_probes_of_this_sensor_and_old_orphans(stack, mailbox):
    keep = {
        "in flight (this sensor, within its budget)": probe_like("S1", age=5, budget=60),
        "another sensor's, two hours old": probe_like("S2", age=7200),
        "no marker header": probe_like("S1", age=1000, marker=False),
        "marker disagrees with subject": probe_like("S1", age=1000, subject_guid=str(uuid.uuid4()).upper()),
    }
    remove = {
        "this sensor's, past its budget": probe_like("S1", age=100, budget=60),
        "another sensor's, two days old": probe_like("S2", age=2 * 86400),
    }
    for msg in list(keep.values()) + list(remove.values()):
        mailbox.append("INBOX", msg)
    before = subjects(mailbox)

    run = run_sensor(with_options(base_args(stack), sensor_id="S1"))
    assert not run.error, run.text
    assert "removed 1 leftover probe(s) of earlier runs of this sensor" in run.text
    assert "removed 1 probe(s) of other sensors older than a day" in run.text

    after = subjects(mailbox)
    assert len(after) == len(before) - 2
    assert len(probe_uids(mailbox)) == len(keep)


def test_a_timed_out_runs_probe_is_removed_by_the_next_run_after_its_budget(stack, mailbox):
    # Run 1 watches the wrong mailbox (other's INBOX), times out, and leaves its probe in probe's INBOX.
    other = stack["users"]["other"]
    lost = with_options(base_args(stack), sensor_id="S9", imap_user=other["login"], imap_password=other["password"],
                        max_trip_time="1", interval="1", timeout="5")
    first = run_sensor(lost)
    assert first.error and first.text.startswith("Delivery")
    assert len(probe_uids(mailbox)) == 1

    # Run 2, same sensor, within run 1's budget: the probe could still be waited for; it stays.
    second = run_sensor(with_options(base_args(stack), sensor_id="S9"))
    assert not second.error and "leftover" not in second.text
    assert len(probe_uids(mailbox)) == 1

    time.sleep(5.5)  # run 1's --timeout has passed: its probe is stale now
    third = run_sensor(with_options(base_args(stack), sensor_id="S9"))
    assert not third.error
    assert "removed 1 leftover probe(s)" in third.text
    assert probe_uids(mailbox) == []


def test_other_sensors_sharing_the_mailbox_keep_their_fresh_probes(stack, mailbox):
    mailbox.append("INBOX", probe_like("S-other", age=600))
    run = run_sensor(with_options(base_args(stack), sensor_id="S-mine"))
    assert not run.error and "removed" not in run.text
    assert len(probe_uids(mailbox)) == 1


def test_sensor_id_comes_from_prtg_placeholder(stack, mailbox):
    mailbox.append("INBOX", probe_like("4711", age=120, budget=60))
    run = run_sensor(base_args(stack), env={"prtg_sensorid": "4711"})
    assert "removed 1 leftover probe(s)" in run.text


@pytest.mark.parametrize("name", ["Prüfung", "Überwachung.日本 &Co"])
def test_non_ascii_mailbox_names_use_modified_utf7(stack, mailbox, name):
    client = imap_session(stack)
    if not client.folder_exists(name):
        client.create_folder(name)
    client.logout()
    run = run_sensor(with_options(base_args(stack), mailbox=name, max_trip_time="1", interval="1"))
    # The folder was selected (no "cannot be opened"): the probe went to INBOX, so it times out.
    assert run.error and run.text.startswith("Delivery") and name in run.text


def test_a_probe_that_arrives_after_its_run_gave_up_is_removed_by_the_next_run(stack, mailbox, tmp_path):
    """The run times out (its SMTP server swallows the probe); the probe then arrives late, as
    deferred mail does. The next run removes exactly that probe, although a full sweep is not
    due, and leaves alone a message that only quotes its subject and another sensor's probe."""
    from fakeservers import FakeSmtpServer

    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    env = {"PRTG_RT_STATE_DIR": str(state)}
    args = with_options(base_args(stack), sensor_id="LATE1")
    assert not run_sensor(args, env=env).error  # a clean start: the full sweep is done, not due again
    with FakeSmtpServer() as smtp:
        lost = run_sensor(with_options(args, smtp_host=smtp.host, smtp_port=str(smtp.port), max_trip_time="1",
                                       timeout="5"), env=env)
        lost_at = time.monotonic()
        swallowed = list(smtp.messages)
    assert lost.error and lost.text.startswith("Delivery"), lost.text
    assert len(swallowed) == 1
    guid = re.search(rb"guid=([0-9A-F-]{36});", swallowed[0]).group(1).decode()  # type: ignore[union-attr]
    assert not run_sensor(args, env=env).error  # the probe has not arrived yet: the sweep finds nothing

    time.sleep(max(0.0, lost_at + 5.5 - time.monotonic()))  # past its run's budget: nobody waits for it
    mailbox.append("INBOX", swallowed[0])  # now it arrives, late
    quoting = f"From: x@roundtrip.test\r\nSubject: Re: {SUBJECT_MARK} {{{guid}}}\r\n\r\nquoted\r\n".encode()
    mailbox.append("INBOX", quoting)
    mailbox.append("INBOX", probe_like("OTHER", age=100, budget=60))
    run = run_sensor(args + ["--verbose"], env=env)
    assert not run.error, run.text
    assert "removed 1 leftover probe(s) of earlier runs of this sensor that arrived late" in run.text
    assert f"SUBJECT {guid}" in run.stderr and "HEADER X-PRTG-Roundtrip" not in run.stderr  # targeted
    left = subjects(mailbox)
    assert len(left) == 2 and any(s.startswith("Re: ") for s in left)

    again = run_sensor(args + ["--verbose"], env=env)
    assert not again.error and f"SUBJECT {guid}" not in again.stderr  # resolved: no more searches
