"""paths: every path's channel next to a standard-library client doing the same transaction.

For each path, in the same run and interleaved (sensor, reference, sensor, reference ...), so
that machine noise hits both alike: the sensor's channel, the reference's time, and the
difference of the medians, judged against issue 9's target: within max(3 ms, 20 %) of the
reference.  The reference clients are tools/bench/refclient.py (its docstring says exactly what
each does), one process per transaction, started with the sensor's interpreter and environment.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any, Dict, List, Tuple

from . import parsers
from .lag import Detected, detection_series, how_seen, known, start_relay
from .stack import HELO, IMAP_PORTS, Bench, MaildirWatch
from .util import ROOT, RUN_TIMEOUT, BenchError, progress

REFCLIENT = ROOT / "tools" / "bench" / "refclient.py"
PROBE_SIZE = 750  # bytes, when a transcript does not say the probe's size

# key, label, --smtp-tls, the stack's port, log in (as the sender user)
SMTP_PATHS: Tuple[Tuple[str, str, str, str, bool], ...] = (
    ("plain", "plain", "off", "smtp_plain", False),
    ("plain_auth", "plain + AUTH", "off", "smtp_plain", True),
    ("starttls", "STARTTLS", "starttls", "smtp_starttls", False),
    ("starttls_auth", "STARTTLS + AUTH (submission)", "starttls", "submission", True),
    ("tls", "implicit TLS", "tls", "smtps", False),
    ("tls_auth", "implicit TLS + AUTH", "tls", "smtps", True),
)
IMAP_MODES: Tuple[Tuple[str, str], ...] = (("off", "plain"), ("starttls", "STARTTLS"), ("tls", "implicit TLS"))


def reference(b: Bench, cfg: Dict[str, Any]) -> Dict[str, Any]:
    """One reference transaction in its own process; its JSON answer."""
    # -I: not its own folder on sys.path (whose modules would hide the standard library's)
    proc = subprocess.run([b.python, "-I", str(REFCLIENT)], input=json.dumps(cfg), capture_output=True, text=True,
                          cwd=str(ROOT), env=b.env, timeout=RUN_TIMEOUT, check=False)
    lines = proc.stdout.strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else {}
    except ValueError:
        answer = {}
    if proc.returncode != 0 or not isinstance(answer, dict) or "ms" not in answer:
        why = answer.get("error") if isinstance(answer, dict) and answer.get("error") else proc.stderr.strip()[-300:]
        raise BenchError(f"the reference client failed ({cfg['kind']} {cfg['mode']}): {why}")
    return answer


def bench_paths(b: Bench) -> None:
    for key, label, mode, port, auth in SMTP_PATHS:
        smtp_path(b, key, label, mode, port, auth)
    for mode, label in IMAP_MODES:
        imap_path(b, mode, label)
    detection_paths(b)


def _references(kind: str, mode: str) -> List[str]:
    """Where the standard library's client itself shows an artifact, also a tuned one (refclient.py):
    implicit TLS (the greeting waits behind the server's session tickets and Linux's delayed ACK;
    tuned: TCP_QUICKACK after the handshake) and imaplib on every mode (a literal and its CRLF in
    two writes, the CRLF held by Nagle; tuned: one write per line)."""
    return ["stdlib", "tuned"] if mode == "tls" or kind == "imap" else ["stdlib"]


def _compare(b: Bench, base: str, label: str, channel: str, client: str, sensor: List[float],
             refs: Dict[str, List[float]], tuning: str = "") -> None:
    r = b.results
    r.stat("paths", f"{base}.sensor_ms", f"{label}: sensor {channel}", "ms", sensor)
    r.stat("paths", f"{base}.reference_ms", f"  reference: {client}", "ms", refs["stdlib"])
    if "tuned" in refs:
        r.stat("paths", f"{base}.tuned_ms", f"  reference, tuned: {client}, {tuning}", "ms", refs["tuned"])
        diff = r.difference("paths", f"{base}.diff_stdlib_ms", "  sensor - reference (medians)", sensor,
                            refs["stdlib"])
        diff.passed, diff.target_text = None, ""  # information: the target is judged against the tuned one
        r.difference("paths", f"{base}.diff_ms", "  sensor - tuned reference (medians)", sensor, refs["tuned"])
    else:
        r.difference("paths", f"{base}.diff_ms", "  sensor - reference (medians)", sensor, refs["stdlib"])


def smtp_path(b: Bench, key: str, label: str, mode: str, port: str, auth: bool) -> None:
    sender, probe = b.user("sender"), b.user("probe")
    argv = b.sensor_argv(smtp_tls=mode, smtp_port=b.port(port), smtp_auth=auth)  # IMAP: plain text
    # One --verbose warm-up: its transcript says the probe's size and the AUTH mechanism the sensor chose.
    warm = b.must(b.sensor(argv + ["--verbose"]), f"paths SMTP {label} warm-up")
    size = parsers.message_size(warm.proc.stderr) or PROBE_SIZE
    mechanism = parsers.smtp_auth_mechanism(warm.proc.stderr)
    cfg: Dict[str, Any] = {
        "kind": "smtp", "mode": mode, "host": b.host, "port": b.port(port), "ca_file": str(b.info["ca_file"]),
        "ehlo": HELO, "from": sender["address"], "to": probe["address"], "size": size,
    }  # fmt: skip
    if auth:
        cfg.update(user=sender["login"], password=sender["password"])
    variants = _references("smtp", mode)
    answers = {v: reference(b, {**cfg, "tuned": v == "tuned"}) for v in variants}  # warm-up
    sensor: List[float] = []
    refs: Dict[str, List[float]] = {v: [] for v in variants}
    for i in range(b.runs):
        progress(f"paths: SMTP {label} run {i + 1}/{b.runs}")
        sensor.append(b.must(b.sensor(argv), f"paths SMTP {label}").smtp_ms)
        for v in variants:
            answers[v] = reference(b, {**cfg, "tuned": v == "tuned"})
            refs[v].append(float(answers[v]["ms"]))
    _compare(b, f"paths.smtp.{key}", f"SMTP {label}", "Response Time (SMTP)", "smtplib", sensor, refs,
             "TCP_QUICKACK after the handshake")
    ref_auth = answers["stdlib"].get("auth")
    b.results.note("paths", f"SMTP {label}: probe {size} bytes, reference message {answers['stdlib'].get('size')} "
                   f"bytes; AUTH: sensor {mechanism or 'none'}, reference {ref_auth or 'none'}"
                   + ("" if mechanism == ref_auth else " (NOT the same transaction)"))
    b.clear_inbox("probe")


def imap_path(b: Bench, mode: str, label: str) -> None:
    probe = b.user("probe")
    argv = b.sensor_argv(imap_tls=mode, detailed=True)  # SMTP: plain text
    warm = b.must(b.sensor(argv + ["--verbose"]), f"paths IMAP {label} warm-up")
    login = parsers.imap_login_command(warm.proc.stderr) or "LOGIN"
    cfg: Dict[str, Any] = {
        "kind": "imap", "mode": mode, "host": b.host, "port": b.port(IMAP_PORTS[mode]),
        "ca_file": str(b.info["ca_file"]), "user": probe["login"], "password": probe["password"], "login": login,
    }  # fmt: skip
    variants = _references("imap", mode)
    for v in variants:
        reference(b, {**cfg, "tuned": v == "tuned"})  # warm-up
    sensor: List[float] = []
    refs: Dict[str, List[float]] = {v: [] for v in variants}
    channel = "IMAP Connect and Login"
    for i in range(b.runs):
        progress(f"paths: IMAP {label} connect+login+select run {i + 1}/{b.runs}")
        run = b.must(b.sensor(argv), f"paths IMAP {label}")
        if channel not in run.channels:
            raise BenchError(f"the sensor printed no {channel!r} channel with --channels detailed")
        sensor.append(run.channel(channel))
        for v in variants:
            refs[v].append(float(reference(b, {**cfg, "tuned": v == "tuned"})["ms"]))
    tuning = "one write per line" + (", TCP_QUICKACK after the handshake" if mode == "tls" else "")
    _compare(b, f"paths.imap.{mode}", f"IMAP {label} connect+login+SELECT", channel, f"imaplib, {login}", sensor,
             refs, tuning)
    b.results.note("paths", f"IMAP {label}: the sensor logged in with {login} (its transcript), so did the reference")


def detection_paths(b: Bench) -> None:
    """Response Time (IMAP) against the server's own delivery time, per IMAP TLS mode: the fast
    path (SMTP straight to Postfix), and through the delaying relay --wait auto (IDLE) and --wait poll."""
    r = b.results
    watch = MaildirWatch(b.maildir("probe"))
    relay = start_relay(b)
    try:
        for mode, label in IMAP_MODES:
            variants: Dict[str, Dict[str, Any]] = {"fast": {"imap_tls": mode, "wait": "auto"}}
            if relay is not None:
                variants["idle"] = {"imap_tls": mode, "wait": "auto", "smtp_port": relay[1]}
                variants["poll"] = {"imap_tls": mode, "wait": "poll", "smtp_port": relay[1]}
            b.must(b.sensor(b.sensor_argv(verbose=True, imap_tls=mode)), f"paths detection {label} warm-up")
            series = detection_series(b, watch, variants, f"paths: IMAP detection {label}")
            for name, runs in series.items():
                _detection_figures(b, f"paths.detect.{mode}.{name}", label, name, runs)
            r.note("paths", f"IMAP detection {label}: what saw the probe: "
                   + "; ".join(f"{name} {how_seen(runs)}" for name, runs in series.items()))
        if relay is not None and relay[0].failures:
            r.note("paths", f"relay forwarding failures: {relay[0].failures[:3]}")
    finally:
        if relay is not None:
            relay[0].close()
        watch.close()


DETECTION_LABELS = {
    "fast": "fast path (SMTP straight to Postfix), --wait auto",
    "idle": "delivery delayed by the relay, --wait auto (IDLE)",
    "poll": "delivery delayed by the relay, --wait poll",
}


def _detection_figures(b: Bench, base: str, label: str, name: str, runs: List[Detected]) -> None:
    r = b.results
    matched = [d for d in runs if d.delivery_ms is not None]
    sensor = [d.run.imap_ms for d in matched]
    delivery: List[float] = known([d.delivery_ms for d in matched])
    r.stat("paths", f"{base}.imap_ms", f"IMAP detection {label}, {DETECTION_LABELS[name]}: sensor Response Time (IMAP)",
           "ms", sensor)
    r.stat("paths", f"{base}.delivery_ms", "  reference: delivery (SMTP 250 -> file in new/, inotify)", "ms", delivery)
    r.difference("paths", f"{base}.diff_ms", "  sensor - delivery (medians)", sensor, delivery)
    left = len(runs) - len(matched)
    if left:
        r.note("paths", f"IMAP detection {label} {name}: {left} run(s) without exactly one delivery event, left out")


