"""Leftover probes: a later run of the same sensor removes its own stale ones, nothing else.

Against the real stack. Leftovers are made the way they arise (a run that timed out), or
appended as exact copies of what a probe looks like, with a marker dated in the past.
"""

from __future__ import annotations

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
