"""``oauth2`` subcommand: what an OAuth2 login costs the sensor (issue 8, "Targets"); figures, not a test.

Reproduce (as root on Debian 12, from the repository root; about 1 s per sensor run, so some
40 s with the default 9 runs)::

    .venv/bin/python tools/bench oauth2                   # 9 rounds
    .venv/bin/python tools/bench oauth2 --runs 3 --json   # the table, then one JSON line
    .venv/bin/python tools/bench oauth2 --port-base 19000 --dir /tmp/prtg-rt-19000

Use an interpreter that has the package's dependencies: the sensor runs as ``PYTHON -m
prtg_roundtrip`` from the repository root, PYTHON being this interpreter unless ``--python``
names another.  The bench starts its own Postfix + Dovecot with tools/mailstack.py (port base
14000, directory /tmp/prtg-roundtrip-bench-14000: the same defaults as the other
sections, so do not run both at once) and the stack's token service (tools/tokenservice.py, HTTPS with the stack's
server certificate on port base + 443, in a thread of this process), everything on loopback,
and stops both at the end (``--keep-stack`` leaves the mail stack running; a stack directory the
bench created is removed, and so are the token caches it made).

The sensor processes are started and measured with the bench's own pieces: its ``python -S -I``
spawner (procs.py; wall time = from just before posix_spawn to os.wait4's return), the
project's document parser (tools/check_output.py), the Figure/Results table and JSON.  Every figure is the median of
``--runs`` values (min and max beside it) unless it says otherwise.

The runs.  All sensor runs use the same servers, ports, mailbox and options, STARTTLS on both
legs with certificate verification (``--ca-file``): IMAP on the ``imap_starttls`` port as the
``probe`` user, SMTP on ``submission`` as the ``sender`` user (the sensor's "From"), probe sent to
``probe``; ``--format prtg-json --channels detailed``, no ``--verbose``, ``--sensor-id
bench-oauth2``.  They differ only in how they log in:

password run
    ``--imap-auth password --smtp-auth password`` with the two users' passwords.
cached-token run
    ``--imap-auth oauth2 --smtp-auth oauth2``, ``--oauth2-provider generic``, client credentials
    (client id, secret by ``env:``) against the token service's ``/token``; one app-only token
    serves both legs.  Its token cache (``PRTG_RT_STATE_DIR``) holds a valid token from the
    warm-up, so the run makes no token request.  Dovecot still introspects the token at the
    token service for each of the two logins (IMAP, and SMTP through Postfix's Dovecot SASL):
    that server-side round trip is part of this run's cost, as a real provider's check is.
fetching run
    The same command line with an empty token cache: a fresh ``PRTG_RT_STATE_DIR`` per run.
    Only the sweep state (``bench-oauth2.json``, "when did this sensor last sweep for leftover
    probes") is copied into it from the cached runs' folder; without it the fresh folder would
    also make the run sweep the mailbox, which has nothing to do with the token.
endpoint
    A plain client in its own process (urllib, no proxy, the sensor's own TLS context:
    ``prtg_roundtrip.tls.make_context`` with the stack's CA) POSTs the same client-credentials
    form (``grant_type``, ``client_id``, ``client_secret``; the sensor's ``Accept``,
    ``User-Agent`` and ``Content-Type``) to the same ``/token`` twice, each time on a new
    connection: timed from the request to the end of the answer's body (TCP connect, TLS
    handshake, POST, answer).  The second request is *the endpoint's time*; the first, which also
    pays the client's first-use costs, is shown for information.  Then, in the same process, the
    same request twice more through the sensor's own ``prtg_roundtrip.oauth2.http.post_form``
    (http.client, a new connection each), the second one shown for information: urllib always
    sends ``Connection: close``, the sensor's request does not (HTTP/1.1 keep-alive, although it
    closes the connection after the one answer), so where the two differ the difference lies in
    how the request meets the server's TCP behaviour, not in the sensor's code around it.

Each round runs the four once, in an order rotated from round to round (so none is always first
after a pause), after one untimed warm-up of each.  The bench checks every run: each sensor run
must print a document without error; the token service's counters must show no token request
for password and cached runs, exactly one for each fetching run, and no introspection for
password runs (at least two for token runs); a cached run's ``Token`` channel must be 0.  Any
deviation is a note under the table.

What each figure means, exactly (``wall`` = the process's wall time as above; ``Total`` = the
sensor's own ``Total`` channel, which contains neither logins nor the token step):

cached
    ``wall, password run`` / ``wall, cached-token run`` and their ``Total``.
    ``cached - password, wall`` = median wall (cached) - median wall (password).
    **Target: <= 5 ms.**  ``paired`` rows: the same difference taken within each round, then
    the median/min/max of those.  For where the difference goes, the detailed channels of both:
    ``IMAP Connect and Login`` (connect -> mailbox selected, the IMAP login inside) and
    ``SMTP Auth`` (AUTH sent -> 235), and ``Token`` of the cached runs (0 = from the cache).
fetch
    ``wall, fetching run``; ``fetch - cached, wall`` = median wall (fetching) - median wall
    (cached); ``endpoint`` = median of the endpoint's time (second request), ``endpoint, first
    request`` the first, ``endpoint via the sensor's own post_form`` the sensor's HTTP function's
    second request; ``Token channel, fetching run`` = the sensor's own ``Token`` channel
    (ms from starting the token step to having the token: HTTP exchange, answer checks, cache
    lock and write).  ``fetch - cached - endpoint`` = (median wall fetching - median wall
    cached) - median endpoint.  **Target: <= 5 ms** (issue 8: a fetching run adds no more than
    the token endpoint's own time plus 5 ms).  ``paired``: the same within each round.

Output: a table on stdout (figure, unit, median, min, max, target, PASS/MISS), notes below it,
the load average before and after (the figures are only as quiet as the machine), and with
``--json`` one last line of JSON with every figure and value.  Progress goes to stderr.  Stdlib
plus the package; Python 3.9 to 3.13; Linux only (the bench's spawner).
"""

from __future__ import annotations

import argparse
import contextlib
import imaplib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from .figures import Results, print_results
from .procs import prepare_bytecode, run_processes
from .sensor import SensorRun
from .stack import Bench
from .util import ROOT, RUN_TIMEOUT, SENSOR_TIMEOUT, BenchError, load_tool, progress

TARGET_MS = 5.0
SENSOR_ID = "bench-oauth2"
APP = "bench-oauth2-app"
APP_SECRET = "Bench-App-S3cret-6c1e0a"  # a test value for the bench's own token service
SECRET_ENV = "RT_BENCH_APP_SECRET"
VARIANTS = ("password", "cached", "fetch", "endpoint")


# The plain client for the endpoint's time: the same form, a new connection per request, the
# sensor's TLS context.  Reads the URL, CA file and form as JSON on stdin (the secret stays out
# of the process list); prints the two times and never the token.
_ENDPOINT_CLIENT = r"""
import json, sys, time, urllib.parse, urllib.request
from prtg_roundtrip.settings import TlsSettings
from prtg_roundtrip.tls import make_context
cfg = json.loads(sys.stdin.read())
context = make_context(TlsSettings(ca_file=cfg["ca_file"]))
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context))
body = urllib.parse.urlencode(cfg["form"]).encode("ascii")
headers = {"Accept": "application/json", "User-Agent": "prtg-roundtrip",
           "Content-Type": "application/x-www-form-urlencoded"}
times, problems = [], []
for _ in range(2):
    request = urllib.request.Request(cfg["url"], data=body, headers=headers, method="POST")
    started = time.perf_counter()
    with opener.open(request, timeout=30) as response:
        data = response.read()
        status = response.status
    times.append((time.perf_counter() - started) * 1000.0)
    try:
        answer = json.loads(data)
    except ValueError:
        answer = {}
    if status != 200 or not isinstance(answer, dict) or not answer.get("access_token"):
        problems.append("HTTP %d, error %r" % (status, answer.get("error") if isinstance(answer, dict) else None))
# The same request through the sensor's own HTTP function (http.client; no Connection: close).
from prtg_roundtrip.deadline import Deadline
from prtg_roundtrip.oauth2.http import post_form
own = []
for _ in range(2):
    deadline = Deadline(30)
    started = time.perf_counter()
    answer = post_form(cfg["url"], cfg["form"], deadline, context=context)
    own.append((time.perf_counter() - started) * 1000.0)
    deadline.release()
    if answer.status != 200:
        problems.append("post_form: HTTP %d" % answer.status)
print(json.dumps({"first_ms": times[0], "second_ms": times[1], "own_first_ms": own[0], "own_second_ms": own[1],
                  "problems": problems}))
"""


class Round:
    """One round's measurements."""

    def __init__(self) -> None:
        self.runs: Dict[str, Any] = {}  # variant -> SensorRun
        self.endpoint: Optional[Dict[str, Any]] = None


class OAuthBench:
    def __init__(self, args: argparse.Namespace, info: Dict[str, Any], service: Any, results: Any, work: Path):
        self.args = args
        self.b = Bench(args, info, results)  # ports, users, IMAP housekeeping
        self.info = info
        self.service = service
        self.results = results
        self.work = work
        self.warm_state = work / "state-cached"
        self.warm_state.mkdir(mode=0o700)
        self.fresh_count = 0
        self.notes: List[str] = []

    # -- command lines ----------------------------------------------------------------------
    def common_argv(self) -> List[str]:
        b = self.b
        probe, sender = b.user("probe"), b.user("sender")
        return [
            self.args.python, "-m", "prtg_roundtrip",
            "--smtp-host", b.host, "--smtp-port", str(b.port("submission")), "--smtp-tls", "starttls",
            "--smtp-user", sender["login"],
            "--imap-host", b.host, "--imap-port", str(b.port("imap_starttls")), "--imap-tls", "starttls",
            "--imap-user", probe["login"],
            "--from", sender["address"], "--to", probe["address"],
            "--ca-file", str(self.info["ca_file"]), "--helo", "bench.roundtrip.test",
            "--timeout", SENSOR_TIMEOUT, "--max-trip-time", "20",
            "--format", "prtg-json", "--channels", "detailed", "--sensor-id", SENSOR_ID,
        ]  # fmt: skip

    def password_argv(self) -> List[str]:
        b = self.b
        return self.common_argv() + [
            "--imap-auth", "password", "--imap-password", b.user("probe")["password"],
            "--smtp-auth", "password", "--smtp-password", b.user("sender")["password"],
        ]  # fmt: skip

    def oauth_argv(self) -> List[str]:
        return self.common_argv() + [
            "--imap-auth", "oauth2", "--smtp-auth", "oauth2",
            "--oauth2-provider", "generic", "--oauth2-token-url", self.service.token_url,
            "--oauth2-client-id", APP, "--oauth2-client-secret", f"env:{SECRET_ENV}",
            "--oauth2-mechanism", self.args.mechanism,
        ]  # fmt: skip

    # -- one run of each kind ---------------------------------------------------------------
    def sensor(self, argv: List[str], state: Path, what: str) -> Any:
        env = {**self.b.env, SECRET_ENV: APP_SECRET, "PRTG_RT_STATE_DIR": str(state)}
        before = (self.service.requests("token"), self.service.requests("introspect"))
        proc = run_processes([argv], env, spawner=self.args.python)[0]
        run: Any = SensorRun.of(proc)  # with the token service's counters added below
        self.b.must(run, what)
        run.token_requests = self.service.requests("token") - before[0]
        run.introspections = self.service.requests("introspect") - before[1]
        return run

    def fresh_state(self) -> Path:
        """An empty state folder with only the sweep state of the cached runs' folder in it."""
        self.fresh_count += 1
        folder = self.work / f"state-fresh-{self.fresh_count}"
        folder.mkdir(mode=0o700)
        sweep = self.warm_state / f"{SENSOR_ID}.json"
        if sweep.is_file():
            shutil.copy2(sweep, folder / sweep.name)
        else:
            self.note(f"no sweep state in {self.warm_state} to copy: fetching run {self.fresh_count} may sweep")
        return folder

    def run_variant(self, variant: str, what: str) -> Any:
        if variant == "password":
            return self.sensor(self.password_argv(), self.warm_state, what)
        if variant == "cached":
            return self.sensor(self.oauth_argv(), self.warm_state, what)
        if variant == "fetch":
            folder = self.fresh_state()
            try:
                return self.sensor(self.oauth_argv(), folder, what)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
        raise ValueError(variant)

    def endpoint(self) -> Dict[str, Any]:
        config = {"url": self.service.token_url, "ca_file": str(self.info["ca_file"]),
                  "form": {"grant_type": "client_credentials", "client_id": APP, "client_secret": APP_SECRET}}
        before = self.service.requests("token")
        proc = subprocess.run([self.args.python, "-c", _ENDPOINT_CLIENT], input=json.dumps(config),
                              capture_output=True, text=True, cwd=str(ROOT), env=self.b.env,
                              timeout=RUN_TIMEOUT, check=False)
        if proc.returncode != 0:
            raise BenchError(f"the endpoint client failed: {proc.stderr.strip()[-500:]}")
        data = json.loads(proc.stdout.strip().splitlines()[-1])
        if data["problems"]:
            raise BenchError(f"the token endpoint refused the plain client: {data['problems']}")
        asked = self.service.requests("token") - before
        if asked != 4:
            self.note(f"the endpoint client made {asked} token requests, not 4")
        return dict(data)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)
            progress(text)

    def check(self, variant: str, run: Any) -> None:
        channels = run.doc.channels
        if variant == "password":
            if run.token_requests or run.introspections or "Token" in channels:
                self.note(f"a password run touched the token service ({run.token_requests} token requests, "
                          f"{run.introspections} introspections, Token channel {'Token' in channels})")
        else:
            if run.introspections < 2:
                self.note(f"a {variant} run: only {run.introspections} introspection(s): did both legs use the token?")
            if "Token" not in channels:
                self.note(f"a {variant} run has no Token channel")
        if variant == "cached" and (run.token_requests or channels.get("Token")):
            self.note(f"a cached-token run asked the token endpoint {run.token_requests} time(s) "
                      f"(Token channel {channels.get('Token')}): its cache was not used")
        if variant == "fetch" and run.token_requests != 1:
            self.note(f"a fetching run made {run.token_requests} token requests, not 1")

    # -- the whole series -------------------------------------------------------------------
    def measure(self) -> List[Round]:
        progress("warm-up: one run of each (the first fetching run fills the cached runs' token cache)")
        self.check("password", self.run_variant("password", "warm-up, password"))
        first = self.sensor(self.oauth_argv(), self.warm_state, "warm-up, first token run")
        if first.token_requests != 1:
            self.note(f"the first token run made {first.token_requests} token requests, not 1")
        self.check("cached", self.run_variant("cached", "warm-up, cached"))
        self.check("fetch", self.run_variant("fetch", "warm-up, fetching"))
        self.endpoint()
        rounds: List[Round] = []
        for i in range(self.args.runs):
            order = VARIANTS[i % len(VARIANTS):] + VARIANTS[:i % len(VARIANTS)]
            progress(f"round {i + 1}/{self.args.runs}: {', '.join(order)}")
            r = Round()
            for variant in order:
                if variant == "endpoint":
                    r.endpoint = self.endpoint()
                else:
                    run = self.run_variant(variant, f"round {i + 1}, {variant}")
                    self.check(variant, run)
                    r.runs[variant] = run
            rounds.append(r)
        return rounds


def _diff(a: Sequence[float], b: Sequence[float]) -> List[float]:
    """[median(a) - median(b)] (one value), or [] when either is empty."""
    return [statistics.median(a) - statistics.median(b)] if a and b else []


def report(rounds: List[Round], results: Any) -> None:
    def wall(variant: str) -> List[float]:
        return [r.runs[variant].proc.wall_ms for r in rounds]

    def channel(variant: str, name: str) -> List[float]:
        return [r.runs[variant].doc.channels[name] for r in rounds if name in r.runs[variant].doc.channels]

    endpoint = [float(r.endpoint["second_ms"]) for r in rounds if r.endpoint]
    endpoint_first = [float(r.endpoint["first_ms"]) for r in rounds if r.endpoint]
    endpoint_own = [float(r.endpoint["own_second_ms"]) for r in rounds if r.endpoint]
    s = results.stat

    s("cached", "cached.password_wall_ms", "wall, password run", "ms", wall("password"))
    s("cached", "cached.cached_wall_ms", "wall, cached-token run", "ms", wall("cached"))
    s("cached", "cached.wall_diff_ms", "cached - password, wall (difference of medians)", "ms",
      _diff(wall("cached"), wall("password")), TARGET_MS)
    s("cached", "cached.wall_diff_paired_ms", "  paired: cached - password, wall, within each round", "ms",
      [r.runs["cached"].proc.wall_ms - r.runs["password"].proc.wall_ms for r in rounds])
    s("cached", "cached.password_total_ms", "Total, password run", "ms", channel("password", "Total"))
    s("cached", "cached.cached_total_ms", "Total, cached-token run", "ms", channel("cached", "Total"))
    s("cached", "cached.total_diff_ms", "cached - password, Total (difference of medians)", "ms",
      _diff(channel("cached", "Total"), channel("password", "Total")))
    for name, key in (("IMAP Connect and Login", "imap_login"), ("SMTP Auth", "smtp_auth")):
        s("cached", f"cached.password_{key}_ms", f"  {name}, password run", "ms", channel("password", name))
        s("cached", f"cached.cached_{key}_ms", f"  {name}, cached-token run", "ms", channel("cached", name))
    s("cached", "cached.token_channel_ms", "  Token channel, cached-token run", "ms", channel("cached", "Token"))

    s("fetch", "fetch.fetch_wall_ms", "wall, fetching run", "ms", wall("fetch"))
    s("fetch", "fetch.wall_diff_ms", "fetch - cached, wall (difference of medians)", "ms",
      _diff(wall("fetch"), wall("cached")))
    s("fetch", "fetch.endpoint_ms", "endpoint: plain client, new connection, same POST", "ms", endpoint)
    s("fetch", "fetch.endpoint_first_ms", "  endpoint, the client's first request", "ms", endpoint_first)
    s("fetch", "fetch.endpoint_sensor_http_ms", "  endpoint via the sensor's own oauth2.http.post_form", "ms",
      endpoint_own)
    s("fetch", "fetch.token_channel_ms", "Token channel, fetching run", "ms", channel("fetch", "Token"))
    excess = _diff(wall("fetch"), wall("cached"))
    s("fetch", "fetch.excess_ms", "fetch - cached - endpoint (medians)", "ms",
      [excess[0] - statistics.median(endpoint)] if excess and endpoint else [], TARGET_MS)
    s("fetch", "fetch.excess_paired_ms", "  paired: fetch - cached - endpoint, within each round", "ms",
      [r.runs["fetch"].proc.wall_ms - r.runs["cached"].proc.wall_ms - float(r.endpoint["second_ms"])
       for r in rounds if r.endpoint])
    s("fetch", "fetch.token_minus_endpoint_ms", "  Token channel - endpoint (medians)", "ms",
      _diff(channel("fetch", "Token"), endpoint))
    s("fetch", "fetch.fetch_total_ms", "  Total, fetching run", "ms", channel("fetch", "Total"))


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="tools/bench oauth2",
                                description="Benchmark what an OAuth2 login costs the sensor against the local "
                                "mail stack and token service (see tools/bench/oauth2.py).")
    p.add_argument("--runs", type=int, default=9, help="rounds, each one run of every kind (default 9)")
    p.add_argument("--port-base", type=int, default=14000, help="mail stack port base (default 14000)")
    p.add_argument("--dir", help="mail stack directory (default /tmp/prtg-roundtrip-bench-PORTBASE)")
    p.add_argument("--keep-stack", action="store_true", help="leave the mail stack running at the end")
    p.add_argument("--python", default=sys.executable, help="interpreter for the sensor (default: this one)")
    p.add_argument("--mechanism", default="auto", choices=("auto", "xoauth2", "oauthbearer"),
                   help="--oauth2-mechanism of the token runs (default auto: OAUTHBEARER on this stack)")
    p.add_argument("--json", action="store_true", help="print one JSON line with every figure at the end")
    args = p.parse_args(argv)
    if not 1 <= args.runs <= 1000:
        p.error("--runs must be 1 to 1000")
    args.dir = args.dir or f"/tmp/prtg-roundtrip-bench-{args.port_base}"
    return args


def _load() -> str:
    with contextlib.suppress(OSError):
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    return "?"


def main(argv: Optional[Sequence[str]] = None) -> int:
    started = time.monotonic()
    args = parse_args(argv)
    results = Results()
    results.meta.update(
        runs=args.runs, port_base=args.port_base, dir=args.dir, python=args.python, mechanism=args.mechanism,
        bench_python=sys.version.split()[0], started=time.strftime("%Y-%m-%dT%H:%M:%S%z"), cpus=os.cpu_count(),
        load_before=_load(),
    )  # fmt: skip
    check = subprocess.run([args.python, "-c", "import prtg_roundtrip, imapclient; print(prtg_roundtrip.__version__)"],
                           cwd=str(ROOT), capture_output=True, text=True, check=False, timeout=60)
    if check.returncode != 0:
        print(f"bench oauth2: {args.python} cannot import the sensor:\n{check.stderr}", file=sys.stderr)
        return 2
    results.meta["sensor_version"] = check.stdout.strip()
    mailstack = load_tool("mailstack")
    tokenservice = load_tool("tokenservice")
    stack = mailstack.MailStack(args.dir, args.port_base)
    created = not Path(args.dir).exists()
    service = None
    work = Path(tempfile.mkdtemp(prefix="prtg-bench-oauth2-"))
    status = 0
    try:
        progress(f"starting the mail stack in {args.dir} (port base {args.port_base}) and the token service")
        info = stack.start()
        oauth2 = info["oauth2"]
        service = tokenservice.TokenService(info["host"], oauth2["port"], certfile=oauth2["server_cert"],
                                            keyfile=oauth2["server_key"])
        service.start()
        if service.url != oauth2["url"]:
            raise BenchError(f"the token service listens at {service.url}, Dovecot asks {oauth2['url']}")
        users = info["users"]
        service.add_client(APP, secret=APP_SECRET, mailboxes=[users["probe"]["login"], users["sender"]["login"]])
        ob = OAuthBench(args, info, service, results, work)
        results.note("setup", prepare_bytecode(args.python, ob.b.env))
        left = ob.b.clear_inbox("probe")
        if left:
            results.note("setup", f"probe's INBOX held {left} message(s) at the start: expunged")
        rounds = ob.measure()
        report(rounds, results)
        for text in ob.notes:
            results.note("checks", text)
        if not ob.notes:
            results.note("checks", "every run as expected: cached runs made no token request and showed Token 0, "
                         "each fetching run made exactly one, password runs never reached the token service")
        left = ob.b.clear_inbox("probe")
        if left:
            results.note("checks", f"{left} message(s) left in probe's INBOX afterwards: expunged")
    except (BenchError, RuntimeError, OSError, imaplib.IMAP4.error) as exc:
        results.note("aborted", f"{type(exc).__name__}: {exc}")
        status = 1
    except KeyboardInterrupt:
        results.note("aborted", "interrupted")
        status = 130
    finally:
        if service is not None:
            service.stop()
        shutil.rmtree(work, ignore_errors=True)
        if not args.keep_stack:
            progress("stopping the mail stack")
            stack.stop()
            if created:
                shutil.rmtree(args.dir, ignore_errors=True)
    wall = time.monotonic() - started
    results.meta.update(wall_seconds=round(wall, 1), load_after=_load())
    header = (f"prtg-roundtrip OAuth2 benchmark: sensor {results.meta.get('sensor_version', '?')}, {args.python} "
          f"(Python {results.meta['bench_python']}), {args.runs} rounds, {os.cpu_count()} CPUs, "
          f"stack {args.dir} port base {args.port_base}, --oauth2-mechanism {args.mechanism}")
    print_results(results, header, wall, args.keep_stack, args.json)
    return status

