"""Load: 50 runs, 10 at a time, on one mailbox, with one concurrent run killed mid-wait.

Bounded (50 runs, each with a 30 s budget) and on loopback only. Afterwards every surviving run
succeeded, one more run of the killed sensor leaves no probe behind, and the ordinary messages
placed there first are unchanged to the byte and the flag.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from conftest import ROOT, base_args, check_output, imap_session, probe_uids, run_sensor, with_options

RUNS, PARALLEL, KILLED_BUDGET = 50, 10, 8


def snapshot(client):
    client.noop()
    return client.fetch(client.search(["NOT", "SUBJECT", "PRTG Roundtrip Mail"]), ["FLAGS", "BODY.PEEK[]"])


def test_soak(stack, mailbox):
    for i, flags in enumerate([(), (b"\\Seen",), (b"\\Flagged", b"\\Seen"), (b"\\Deleted",), (b"\\Answered",)]):
        msg = (f"From: someone@roundtrip.test\r\nTo: probe@roundtrip.test\r\nSubject: ordinary {i}\r\n"
               f"Message-ID: <ordinary-{i}@roundtrip.test>\r\n\r\nbody {i}\r\n").encode()
        mailbox.append("INBOX", msg, flags=flags)
    before = snapshot(mailbox)

    # The run to be killed watches another folder, so it waits while its probe sits in INBOX.
    helper = imap_session(stack)
    if not helper.folder_exists("Elsewhere"):
        helper.create_folder("Elsewhere")
    helper.logout()
    victim_args = with_options(base_args(stack), sensor_id="victim", mailbox="Elsewhere",
                               timeout=str(KILLED_BUDGET), max_trip_time="6")
    victim = subprocess.Popen([sys.executable, "-m", "prtg_roundtrip", *victim_args], cwd=str(ROOT),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not probe_uids(mailbox) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert probe_uids(mailbox), "the victim's probe never arrived"
    victim_sent = time.monotonic()

    def one(n: int):
        return run_sensor(with_options(base_args(stack), sensor_id=f"soak-{n % 5}", timeout="30",
                                       search="local" if n % 2 else "server"))

    with ThreadPoolExecutor(PARALLEL) as pool:
        futures = [pool.submit(one, n) for n in range(RUNS)]
        time.sleep(0.5)
        assert victim.poll() is None, "the victim finished before it could be killed mid-wait"
        victim.send_signal(signal.SIGKILL)  # what PRTG does to a sensor that overruns its timeout
        results = [f.result() for f in futures]
    victim.wait(10)
    failures = [r.text for r in results if r.error]
    assert not failures, failures
    assert all(r.doc.value("Total") > 0 for r in results)
    assert len(probe_uids(mailbox)) == 1, "only the killed run's probe may be left"

    time.sleep(max(0.0, victim_sent + KILLED_BUDGET + 0.5 - time.monotonic()))
    final = run_sensor(with_options(base_args(stack), sensor_id="victim"))
    assert not final.error and "removed 1 leftover probe(s)" in final.text
    assert probe_uids(mailbox) == []

    after = snapshot(mailbox)
    assert sorted(after) == sorted(before)
    for uid, data in before.items():
        assert after[uid][b"BODY[]"] == data[b"BODY[]"]
        assert set(after[uid][b"FLAGS"]) == set(data[b"FLAGS"])
    assert check_output.check(final.stdout) == []
