"""A stable channel set (issue 11): PRTG keys channels by name, so which channels a run reports
depends on the settings only. A certificate channel is there for every leg whose TLS mode is not
off, with -1 when the run verified no certificate (plain-text fallback, --insecure)."""

from __future__ import annotations

import subprocess
import sys
from typing import List

import pytest
from conftest import ROOT, base_args, run_sensor, with_options

STANDARD = ["Total", "Response Time (SMTP)", "Response Time (IMAP)"]
DELIVERY = ["Landed", "SPF", "DKIM", "DMARC"]  # always (issue 13); Spam Score only where the server wrote one


def _without_ca(args: List[str]) -> List[str]:
    i = args.index("--ca-file")
    return args[:i] + args[i + 2:]


@pytest.mark.parametrize("fmt", ["prtg-xml", "script-v2"])
@pytest.mark.parametrize(("smtp", "smtp_tls", "imap", "imap_tls", "certificates"), [
    ("smtp_plain", "off", "imap_plain", "off", {}),
    ("smtp_starttls", "starttls", "imap_plain", "off", {"SMTP Certificate": "days"}),
    # "if available" modes against servers without TLS: the channels stay, at -1
    ("smtp_plain", "starttls-if-available", "imap_plain", "tls-if-available",
     {"SMTP Certificate": -1, "IMAP Certificate": -1}),
    ("smtp_plain", "off", "imaps", "tls", {"IMAP Certificate": "days"}),
])
def test_certificate_channels_follow_the_tls_settings(stack, mailbox, fmt, smtp, smtp_tls, imap, imap_tls,
                                                      certificates):
    run = run_sensor(with_options(base_args(stack, smtp=smtp, imap=imap), smtp_tls=smtp_tls, imap_tls=imap_tls,
                                  format=fmt))
    assert not run.error, run.text
    assert run.doc.channel_names == STANDARD + [n for n in ("SMTP Certificate", "IMAP Certificate")
                                                if n in certificates] + DELIVERY
    for name, expected in certificates.items():
        value = run.doc.value(name)
        assert value == -1 if expected == -1 else value > 300, (name, value)  # the stack's certificates: 825 days


def test_insecure_reports_no_verified_certificate(stack, mailbox):
    args = _without_ca(base_args(stack, smtp="smtps", imap="imaps"))
    run = run_sensor(with_options(args, smtp_tls="tls", imap_tls="tls") + ["--insecure"])
    assert not run.error, run.text
    assert run.doc.value("SMTP Certificate") == -1 and run.doc.value("IMAP Certificate") == -1


def test_detailed_channels_keep_the_certificate_channels(stack, mailbox):
    run = run_sensor(with_options(base_args(stack), smtp_tls="starttls-if-available", channels="detailed"))
    assert not run.error, run.text
    names = run.doc.channel_names
    assert names[:4] == STANDARD + ["SMTP Certificate"] and "IMAP Certificate" not in names


def test_help_lists_the_channel_set() -> None:
    text = subprocess.run([sys.executable, "-m", "prtg_roundtrip", "--help"], capture_output=True, text=True,
                          cwd=str(ROOT), check=True).stdout
    flat = " ".join(text.split())
    assert "Total, Response Time (SMTP), Response Time (IMAP)" in flat
    assert "SMTP Certificate / IMAP Certificate for each leg whose TLS mode is not off" in flat
