"""The mail stack and what the sections share: the Bench context (ports, users, command lines, IMAP
housekeeping), the inotify watch on a Maildir, and the delaying store-and-forward relay."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import imaplib
import os
import select
import smtplib
import socket
import socketserver
import struct
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from .figures import Results
from .procs import Proc, run_processes
from .sensor import SensorRun
from .util import SENSOR_TIMEOUT, BenchError, load_tool

MAX_WATCH_SECONDS = 4 * 3600.0  # the inotify thread ends after this whatever happens
RELAY_OFFSET = 99  # the delaying relay listens on port base + 99 (the stack uses 25..993)
HELO = "bench.roundtrip.test"
SMTP_PORTS = {"off": "smtp_plain", "starttls": "smtp_starttls", "tls": "smtps"}  # --smtp-tls -> port name
IMAP_PORTS = {"off": "imap_plain", "starttls": "imap_starttls", "tls": "imaps"}  # --imap-tls -> port name

IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
_EVENT = struct.Struct("iIII")


def load_mailstack() -> Any:
    """tools/mailstack.py, loaded by path."""
    return load_tool("mailstack")


# -- Watching the Maildir: inotify through ctypes, in a thread ----------------------------------


class MaildirWatch:
    """Records time.monotonic() whenever a file appears in DIR/new (IN_CREATE, IN_MOVED_TO)."""

    def __init__(self, maildir: Path):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        self.fd = int(libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC))
        if self.fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        path = str(maildir / "new").encode()
        if int(libc.inotify_add_watch(self.fd, path, IN_CREATE | IN_MOVED_TO)) < 0:
            err = ctypes.get_errno()
            os.close(self.fd)
            raise OSError(err, f"inotify_add_watch {path!r}: {os.strerror(err)}")
        self.events: List[Tuple[float, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        end = time.monotonic() + MAX_WATCH_SECONDS
        while not self._stop.is_set() and time.monotonic() < end:
            if not poller.poll(100):
                continue
            seen = time.monotonic()
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                continue
            offset = 0
            while offset + _EVENT.size <= len(data):
                _, _, _, length = _EVENT.unpack_from(data, offset)
                name = data[offset + _EVENT.size: offset + _EVENT.size + length].rstrip(b"\0")
                offset += _EVENT.size + length
                with self._lock:
                    self.events.append((seen, name.decode("utf-8", "replace")))

    def between(self, start: float, end: float) -> List[float]:
        with self._lock:
            return [t for t, _ in self.events if start <= t <= end]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        with contextlib.suppress(OSError):
            os.close(self.fd)


# -- A store-and-forward SMTP relay that delays delivery (to get the sensor into IDLE / slow polling)


class _RelayHandler(socketserver.StreamRequestHandler):
    timeout = 30
    server: DelayRelay

    def reply(self, text: str) -> None:
        self.wfile.write(text.encode() + b"\r\n")

    def handle(self) -> None:
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reply("220 bench-relay ESMTP store-and-forward (delays delivery)")
        sender = ""
        recipients: List[str] = []
        for _ in range(200):  # commands in one session, at most
            line = self.rfile.readline(2048)
            if not line:
                return
            verb = line.split(b" ", 1)[0].split(b":", 1)[0].strip().upper()
            if verb in (b"EHLO", b"HELO"):
                self.reply("250-bench-relay" if verb == b"EHLO" else "250 bench-relay")
                if verb == b"EHLO":
                    self.reply("250 8BITMIME")
            elif verb == b"MAIL":
                sender = _angle(line)
                recipients = []
                self.reply("250 2.1.0 Ok")
            elif verb == b"RCPT":
                recipients.append(_angle(line))
                self.reply("250 2.1.5 Ok")
            elif verb == b"DATA":
                self.reply("354 End data with <CR><LF>.<CR><LF>")
                data = self._read_data()
                if data is None:
                    return
                queue_id = self.server.forward_later(sender, list(recipients), data)
                self.reply(f"250 2.0.0 Ok: queued as {queue_id}")
            elif verb in (b"RSET", b"NOOP"):
                self.reply("250 2.0.0 Ok")
            elif verb == b"QUIT":
                self.reply("221 2.0.0 Bye")
                return
            else:
                self.reply("502 5.5.2 Command not implemented")

    def _read_data(self) -> Optional[bytes]:
        lines: List[bytes] = []
        for _ in range(1_000_000):
            line = self.rfile.readline(65536)
            if not line:
                return None
            if line in (b".\r\n", b".\n"):
                return b"".join(lines)
            lines.append(line[1:] if line.startswith(b".") else line)
        return None


def _angle(line: bytes) -> str:
    text = line.decode("utf-8", "replace")
    return text[text.find("<") + 1: text.rfind(">")] if "<" in text else text.split(":", 1)[-1].strip()


class DelayRelay(socketserver.ThreadingTCPServer):
    """Answers 250 at once; hands the mail to Postfix `delay` seconds later."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, target: Tuple[str, int], delay: float):
        super().__init__(("127.0.0.1", port), _RelayHandler)
        self.target = target
        self.delay = delay
        self.count = 0
        self.failures: List[str] = []
        self._timers: List[threading.Timer] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def forward_later(self, sender: str, recipients: List[str], data: bytes) -> str:
        with self._lock:
            self.count += 1
            queue_id = f"BENCH{self.count}"
            timer = threading.Timer(self.delay, self._forward, (sender, recipients, data))
            timer.daemon = True
            self._timers.append(timer)
        timer.start()
        return queue_id

    def _forward(self, sender: str, recipients: List[str], data: bytes) -> None:
        try:
            with smtplib.SMTP(self.target[0], self.target[1], timeout=15) as smtp:
                smtp.sendmail(sender, recipients, data)
        except (OSError, smtplib.SMTPException) as exc:
            with self._lock:
                self.failures.append(f"{type(exc).__name__}: {exc}")

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        with self._lock:
            timers = list(self._timers)
        for timer in timers:
            timer.join(self.delay + 20.0)


# -- The bench's context --------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, info: Dict[str, Any], results: Results):
        self.args = args
        self.info = info
        self.results = results
        self.python: str = args.python
        self.runs: int = args.runs
        # Sensor processes run as an installed package would: with bytecode (cli.prepare_bytecode
        # compiles it), so the variable that forbids writing and reading it fresh is left out.
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith("prtg_") and k != "PYTHONDONTWRITEBYTECODE"}
        self.host: str = str(info["host"])
        self.rss_floor_kib = 0

    def port(self, name: str) -> int:
        return int(self.info["ports"][name]["port"])

    def user(self, name: str) -> Dict[str, str]:
        return dict(self.info["users"][name])

    def maildir(self, name: str) -> Path:
        return Path(self.info["maildir"][name])

    def sensor_argv(
        self,
        user: str = "probe",
        tls: bool = False,
        wait: str = "auto",
        search: str = "server",
        verbose: bool = False,
        smtp_port: Optional[int] = None,
        extra: Sequence[str] = (),
        smtp_tls: Optional[str] = None,
        imap_tls: Optional[str] = None,
        smtp_auth: bool = False,
        detailed: bool = False,
    ) -> List[str]:
        """The sensor's command line.  tls=True: STARTTLS on both legs; smtp_tls/imap_tls ("off",
        "starttls", "tls") choose per leg (the stack's port for that mode unless smtp_port);
        smtp_auth logs in to SMTP as the sender user."""
        smtp_mode = smtp_tls or ("starttls" if tls else "off")
        imap_mode = imap_tls or ("starttls" if tls else "off")
        u = self.user(user)
        argv = [
            self.python, "-m", "prtg_roundtrip",
            "--smtp-host", self.host,
            "--smtp-port", str(smtp_port or self.port(SMTP_PORTS[smtp_mode])),
            "--smtp-tls", smtp_mode,
            "--imap-host", self.host,
            "--imap-port", str(self.port(IMAP_PORTS[imap_mode])),
            "--imap-tls", imap_mode,
            "--imap-user", u["login"], "--imap-password", u["password"],
            "--from", self.user("sender")["address"], "--to", u["address"],
            "--helo", HELO,
            "--wait", wait, "--search", search,
            "--timeout", SENSOR_TIMEOUT, "--max-trip-time", "20",
            "--format", "prtg-json",
        ]  # fmt: skip
        if smtp_auth:
            sender = self.user("sender")
            argv += ["--smtp-auth", "password", "--smtp-user", sender["login"], "--smtp-password", sender["password"]]
        if smtp_mode != "off" or imap_mode != "off":
            argv += ["--ca-file", str(self.info["ca_file"])]
        if detailed:
            argv += ["--channels", "detailed"]
        if verbose:
            argv.append("--verbose")
        return argv + list(extra)

    def run(self, argv: List[str]) -> Proc:
        """One process through the spawner (true peak RSS), waited for at most RUN_TIMEOUT."""
        proc = run_processes([argv], self.env, spawner=self.python)[0]
        self.rss_floor_kib = max(self.rss_floor_kib, proc.rss_floor_kib)
        return proc

    def sensor(self, argv: List[str]) -> SensorRun:
        proc = self.run(argv)
        return SensorRun.of(proc)

    def sensors(self, argvs: Sequence[List[str]]) -> List[SensorRun]:
        """Started directly, all at once (their RSS readings are not used: see _SPAWNER)."""
        return [SensorRun.of(proc) for proc in run_processes(argvs, self.env)]

    def must(self, run: SensorRun, what: str) -> SensorRun:
        if not run.ok:
            raise BenchError(f"{what}: the sensor failed: {run.problem}")
        return run

    # -- IMAP housekeeping (stdlib imaplib, plain port) ---------------------------------------
    @contextlib.contextmanager
    def imap(self, user: str) -> Iterator[imaplib.IMAP4]:
        u = self.user(user)
        conn = imaplib.IMAP4(self.host, self.port("imap_plain"), timeout=120)
        try:
            conn.login(u["login"], u["password"])
            yield conn
        finally:
            with contextlib.suppress(OSError, imaplib.IMAP4.error):
                conn.logout()

    def message_count(self, user: str) -> int:
        with self.imap(user) as conn:
            _, data = conn.select("INBOX")
            return int(data[0] or b"0")

    def clear_inbox(self, user: str) -> int:
        """Expunge everything in the user's INBOX (the bench's own stack); the number removed."""
        with self.imap(user) as conn:
            _, data = conn.select("INBOX")
            count = int(data[0] or b"0")
            if count:
                conn.store("1:*", "+FLAGS.SILENT", "(\\Deleted)")
                conn.expunge()
            return count
