"""Benchmark of the round-trip sensor against the real local mail stack: prints figures, not a test.

A package run as a program (``python3 tools/bench``); the modules: figures.py (Figure, Results,
the table), procs.py (the spawner, wait4 figures), parsers.py (transcript and ``-X importtime``
parsers), sensor.py (SensorRun; documents read by tools/check_output.py's ``parse()``), stack.py
(the mail stack, the Bench context, the Maildir watch, the delaying relay), refclient.py (the
standard-library reference clients), one module per section, oauth2.py (a subcommand), cli.py.

Reproduce (as root on Debian 12, from the repository root; about two to three minutes)::

    python3 tools/bench                      # everything, 7 runs per figure
    python3 tools/bench --runs 3 --only lag,paths,overhead
    python3 tools/bench --json               # the table, then one JSON line with every figure
    python3 tools/bench --probe-command '{python} -m prtg_roundtrip --smtp-host {smtp_host} ...'
    python3 tools/bench oauth2 [--runs 9]    # OAuth2's cost: its own options (see oauth2.py)

Use an interpreter that has the package's dependencies (imapclient, jinja2, defusedxml): the
sensor runs as ``PYTHON -m prtg_roundtrip`` from the repository root, PYTHON being this
interpreter unless ``--python`` names another.  The bench starts its own Postfix + Dovecot with
tools/mailstack.py on port base 14000 in /tmp/prtg-roundtrip-bench-14000 (``--port-base``,
``--dir``), loopback only, and stops it at the end (``--keep-stack`` leaves it running; a
directory the bench created is removed).  Every sensor run is a separate process, started the way
PRTG starts it; every figure below is the median of ``--runs`` runs (min and max beside it)
unless it says otherwise.  Plain text (``--smtp-tls off --imap-tls off``) everywhere except the
TLS overhead variant and the paths section.

Bytecode: a PRTG probe runs an installed package, whose bytecode pip compiled.  Before the first
section the bench compiles prtg_roundtrip with ``python -m compileall`` (into ``__pycache__``,
for the sensor's interpreter) and runs every sensor process without ``PYTHONDONTWRITEBYTECODE``
(this machine sets it); the ``setup`` note says so, and names any dependency without bytecode.

What each figure means, exactly:

lag (user probe, empty INBOX, ``--verbose --format prtg-json``)
    The sensor's transcript starts with ``RUN * clock origin <s> (time.perf_counter)`` and every
    line carries milliseconds since that origin; on Linux perf_counter and the bench's
    time.monotonic() both read CLOCK_MONOTONIC.  *accepted* = the transcript line
    ``SMTP < 250 ... queued as`` (the sensor's IMAP leg starts there).  *delivered* = the moment
    the bench's inotify watch (IN_CREATE/IN_MOVED_TO on the probe user's ``Maildir/new``, a
    thread of this process) saw the message file appear.
    ``delivery`` = delivered - accepted.  ``detection lag`` = the sensor's
    ``Response Time (IMAP)`` channel - delivery: how long after the message was really in the
    mailbox the sensor noticed it.  Measured for ``--wait auto`` (IDLE is available on Dovecot)
    and ``--wait poll``, runs interleaved.  Target: median <= 5 ms.
    On loopback Postfix delivers within a few milliseconds, inside the sensor's fast-check
    phase, so neither mode gets as far as IDLE.  The *delayed* rows therefore send through a
    store-and-forward relay inside the bench (127.0.0.1, port base + 99) that answers
    ``250 queued`` at once and hands the mail to Postfix ``--relay-delay`` seconds later: that
    exercises the sensor's IDLE wait (auto) and its slow polling (poll) the way a slow real
    server would.  Same definition, same target.
paths (every path against a standard-library reference client, same run, interleaved)
    For each path, ``--runs`` rounds of: a sensor run, then the reference client (each in its own
    process), so machine noise hits both alike; warm-ups of each first, untimed.  Printed: the
    sensor's channel, the reference's time (median, min, max) and ``sensor - reference`` (the
    difference of the medians).  Target (issue 9): within max(3 ms, 20 %) of the reference's
    median, either way.  The reference clients are tools/bench/refclient.py (stdlib only; its
    docstring says exactly what each does); TLS contexts verify with the stack's CA.
    SMTP: plain (smtp_plain), plain + AUTH (smtp_plain offers AUTH), STARTTLS (smtp_starttls),
    STARTTLS + AUTH (submission), implicit TLS (smtps), implicit TLS + AUTH (smtps); the IMAP leg
    plain.  Sensor: ``Response Time (SMTP)`` (start of the TCP connect -> 250 after DATA).
    Reference: smtplib with its defaults: connect, EHLO, [STARTTLS, EHLO], [AUTH as smtplib
    chooses: PLAIN], MAIL, RCPT, DATA with a message as big as the probe (its size read from a
    --verbose warm-up's transcript), timed from before the connect to the 250 after DATA.  For
    implicit TLS smtplib itself shows an artifact (its greeting waits about 40 ms behind the
    server's TLS session tickets and Linux's delayed ACK), so a *tuned* reference, the same with
    TCP_QUICKACK set right after the handshake (what the sensor does), is printed too, and the
    target is judged against the tuned one; sensor - stdlib reference is shown for information.
    IMAP connect + login + SELECT, plain / STARTTLS / implicit TLS (SMTP leg plain): sensor
    ``IMAP Connect and Login`` (``--channels detailed``); reference imaplib: connect, CAPABILITY,
    [STARTTLS, CAPABILITY], the login the sensor used according to its transcript (``AUTHENTICATE
    PLAIN`` where the server offers it, else LOGIN), SELECT INBOX; implicit TLS also tuned.
    IMAP detection per IMAP TLS mode (SMTP leg plain): the sensor's ``Response Time (IMAP)``
    against the server's own delivery time (accepted -> file in new/, as in lag) for the fast path
    (SMTP straight to Postfix, ``--wait auto``) and, through the delaying relay, ``--wait auto``
    (IDLE) and ``--wait poll``; runs without exactly one delivery event are left out (noted).
overhead (user probe, ``--format prtg-json``, no ``--verbose``)
    ``overhead`` = the process's wall time (from just before the spawn to its exit, reaped with
    os.wait4) - its own ``Total`` channel: interpreter start, imports, IMAP login before the
    send, deleting the probe, the sweep for leftover probes, LOGOUT, rendering.  Target <= 80 ms
    (issue 9; it was 100 ms).  ``peak RSS`` =
    ru_maxrss of that process from os.wait4 (KiB on Linux, shown in MiB).  Target <= 40 MiB.
    A child forked straight from this (bigger) process would report this process's peak instead
    of its own (exec() carries the old address space's high-water mark into ru_maxrss), so
    every measured run is started by a minimal ``python -S -I`` spawner that does the
    posix_spawn and the wait4 and writes the figures down; its own peak (about 8 MiB) is the
    floor a reading cannot go below, printed as a note.  Plain text and a TLS variant
    (``--smtp-tls starttls --imap-tls starttls --ca-file``).  The same runs again with
    ``--verbose`` split the overhead into phases by the transcript's clock: spawn -> transcript
    origin (interpreter, imports, option parsing), origin -> SMTP connect (IMAP connect, login,
    SELECT), found -> last line (delete, sweep, LOGOUT), last line -> exit (rendering, exit).
    ``CPU`` = ru_utime + ru_stime of the sensor process from the same os.wait4: target for a
    plain round trip <= 90 ms (the TLS variant for information).  The same three figures (CPU,
    wall, peak RSS) of a bare interpreter (``python -c pass``), of ``--help`` and of a refused
    parameter, as references: what any Python process costs here.
    Also, for information: wall time and peak RSS of ``--help`` and of a refused parameter,
    and ``python -X importtime`` of those and of a plain round trip: the sum of all top-level
    cumulative import times, the part under prtg_roundtrip, and the heaviest imports.
bigmailbox (plain, ``--wait auto``, ``--verbose``)
    The ``other`` user's INBOX gets ``--messages`` (50,000) Maildir files written straight into
    ``cur/`` (owner and mode as the Maildir's), indexed once by an untimed warm-up client (SELECT
    and FETCH 1:* (FLAGS)).  Runs then alternate: probe's empty INBOX, other's full INBOX, for
    ``--search server`` and ``--search local``.  ``ratio`` = median Total (full) / median Total
    (empty, same phase): one number per search method.  Target <= 1.2x for both.  To show
    where a difference comes from, each side's delivery and detection lag (as in lag, with an
    inotify watch on each user's ``new/``) and the median server time per IMAP command (from
    the transcripts) are printed too, and a calibration ratio of the two users while both were
    still empty.  The messages are removed afterwards (files deleted, Dovecot resynced).
concurrent (user probe, plain, ``--wait auto``)
    ``--concurrency`` (20) sensors started at once against the same INBOX, ``--runs`` rounds:
    every one must print a successful document (no error).  Their median Total next to the
    median Total of lone runs, and the ratio: target <= 10x (issue 9).
compare (only with ``--probe-command``)
    Another probe command, a shell-split template with placeholders {smtp_host} {smtp_port}
    {imap_host} {imap_port} (the plain-text ports) {user} {password} {from} {to} {ca_file}
    {python} {smtp_starttls_port} {imap_starttls_port} {smtps_port} {imaps_port}
    {submission_port}, runs as many times as the sensor, alternating with it, against the same
    stack.  ``ratio`` = its median wall time / the sensor's; where it prints a PRTG document
    (JSON or XML) with a Total channel, the ratio of median Totals too.  Messages it leaves in
    probe's INBOX are counted and removed.  Example, the sensor itself over STARTTLS::

        --probe-command '{python} -m prtg_roundtrip --smtp-host {smtp_host} --smtp-port
        {smtp_starttls_port} --imap-host {imap_host} --imap-port {imap_starttls_port}
        --ca-file {ca_file} --imap-user {user} --imap-password {password} --from {from} --to {to}'

Every document a sensor run prints is read by tools/check_output.py's ``parse()``: a document
PRTG would refuse counts as a failed run.

Output: a table on stdout (figure, median, min, max, target, PASS/MISS), notes below it, the
load average before and after, the bench's wall time, and with ``--json`` one last line of
JSON with every figure.  Progress goes
to stderr.  Stdlib plus the project's dependencies; Python 3.9 to 3.13; Linux only.
"""
