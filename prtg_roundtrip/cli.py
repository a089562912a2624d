"""Entry point: PRTG's parameters in, one document out.

This is the one place where a failure becomes a PRTG error document and an exit code. It imports
only what parsing needs; the protocol modules are imported once the parameters are known good,
so `--help` and a refused parameter stay cheap.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from typing import IO, List, Mapping, NoReturn, Optional, Sequence, Tuple

from . import __version__
from .auth import AuthMethod, Mechanism, Provider
from .errors import ParameterError, RoundTripError
from .report import Report
from .settings import (
    ChannelSet,
    Credentials,
    OutputFormat,
    SearchMethod,
    Settings,
    TlsMode,
    WaitMethod,
    build_settings,
)
from .transcript import Transcript

MAX_SECONDS = 900  # PRTG's limit for every timeout-like setting
LAST_RESORT_MARGIN = 0.5  # seconds before the budget's end when the watchdog document goes out
_STARTED = time.perf_counter()


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting 2 (PRTG needs a document)."""

    def error(self, message: str) -> NoReturn:
        raise ParameterError(message, hint="Run prtg-roundtrip --help for the list of options")


def _seconds(low: float, high: float, integer: bool = True):
    kind = "a whole number of seconds" if integer else "a number of seconds"

    def parse(text: str) -> float:
        try:
            value = float(int(text)) if integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {kind}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is outside {low:g} to {high:g} seconds")
        return value

    return parse


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a port number (1-65535)")
    return value


def _choices(enum: type) -> List[str]:
    return [member.value for member in enum]  # type: ignore[attr-defined]


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="prtg-roundtrip",
        description="Send a marked mail by SMTP, wait for it in an IMAP mailbox, delete it, and "
        "report the time of each leg as PRTG channels (SMTP&IMAP Round Trip).",
        epilog="Failures are reported inside the document (<error>1</error>) with exit code 0, "
        "as PRTG expects. Add --format text --verbose at a console to see a redacted transcript.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")

    mail = p.add_argument_group("email settings")
    mail.add_argument("--from", dest="sender", metavar="ADDRESS", help="sender address (PRTG: From)")
    mail.add_argument("--to", dest="recipient", metavar="ADDRESS", help="recipient address (PRTG: To)")
    mail.add_argument("--helo", metavar="NAME", help="HELO/EHLO ident, ASCII (default: this host's name)")
    mail.add_argument("--subject-text", default="", metavar="TEXT",
                      help="text placed before 'PRTG Roundtrip Mail: {GUID}' in the subject")

    smtp = p.add_argument_group("step 1: send (the parent device, an SMTP server)")
    smtp.add_argument("--smtp-host", metavar="HOST", help="SMTP server (default: $prtg_host, PRTG's %%host)")
    smtp.add_argument("--smtp-port", type=_port, metavar="PORT", help="default 25, or 465 with --smtp-tls tls")
    smtp.add_argument("--smtp-timeout", type=_seconds(1, MAX_SECONDS), default=15.0, metavar="SEC",
                      help="timeout for the SMTP connection, 1-900 s (default 15)")
    smtp.add_argument("--smtp-auth", choices=_choices(AuthMethod), default=AuthMethod.NONE.value,
                      help="none (default), password, or oauth2 (XOAUTH2/OAUTHBEARER with a token)")
    smtp.add_argument("--smtp-user", metavar="USER", help="login name (with oauth2: the mailbox to send as)")
    smtp.add_argument("--smtp-password", metavar="PASSWORD",
                      help="a password, or a reference: env:NAME, file:PATH, keyring:SERVICE/USER")
    smtp.add_argument("--smtp-credentials", choices=_choices(Credentials),
                      help="take user and password from the device's Linux or Windows credentials "
                      "(prtg_linuxuser/... placeholders as environment values)")
    smtp.add_argument("--smtp-refresh-token", metavar="REF",
                      help="oauth2 refresh-token grant: the SMTP user's refresh token (env:, file:, keyring:)")
    smtp.add_argument("--smtp-token-command", metavar="CMD",
                      help="oauth2: a command that prints an access token for the SMTP user")
    smtp.add_argument("--smtp-tls", choices=_choices(TlsMode), default=TlsMode.STARTTLS_IF_AVAILABLE.value,
                      help="transport-level security for SMTP (default starttls-if-available)")

    imap = p.add_argument_group("step 2: receive (an IMAP mailbox)")
    imap.add_argument("--imap-host", metavar="HOST", help="IMAP server (required)")
    imap.add_argument("--imap-port", type=_port, metavar="PORT", help="default 143, or 993 with --imap-tls tls")
    imap.add_argument("--imap-timeout", type=_seconds(1, MAX_SECONDS), default=15.0, metavar="SEC",
                      help="timeout for connecting and for each IMAP command, 1-900 s (default 15)")
    imap.add_argument("--imap-auth", choices=[AuthMethod.PASSWORD.value, AuthMethod.OAUTH2.value],
                      default=AuthMethod.PASSWORD.value,
                      help="password (default), or oauth2 (XOAUTH2/OAUTHBEARER with a token)")
    imap.add_argument("--imap-user", metavar="USER")
    imap.add_argument("--imap-password", metavar="PASSWORD",
                      help="a password, or a reference: env:NAME, file:PATH, keyring:SERVICE/USER")
    imap.add_argument("--imap-credentials", choices=_choices(Credentials),
                      help="take user and password from the device's Linux or Windows credentials")
    imap.add_argument("--imap-refresh-token", metavar="REF",
                      help="oauth2 refresh-token grant: the IMAP user's refresh token (env:, file:, keyring:)")
    imap.add_argument("--imap-token-command", metavar="CMD",
                      help="oauth2: a command that prints an access token for the IMAP user")
    imap.add_argument("--imap-tls", choices=_choices(TlsMode), default=TlsMode.STARTTLS_IF_AVAILABLE.value,
                      help="transport-level security for IMAP (default starttls-if-available)")
    imap.add_argument("--mailbox", default="INBOX", metavar="NAME",
                      help="mailbox to watch (default INBOX); must differ from --from")
    imap.add_argument("--interval", type=_seconds(1, MAX_SECONDS), default=5.0, metavar="SEC",
                      help="seconds between mailbox checks when the server gives no push (default 5)")
    imap.add_argument("--max-trip-time", type=_seconds(1, MAX_SECONDS), default=30.0, metavar="SEC",
                      help="seconds the mail may take to arrive (default 30)")
    imap.add_argument("--search", choices=_choices(SearchMethod), default=SearchMethod.SERVER.value,
                      help="server: IMAP SEARCH (default); local: read the new messages' headers")
    imap.add_argument("--wait", choices=_choices(WaitMethod), default=WaitMethod.AUTO.value,
                      help="auto: IDLE where offered, else polling (default); poll: never IDLE")

    oauth = p.add_argument_group("OAuth2 (one client for both legs; see the README for Microsoft 365 and Google)")
    oauth.add_argument("--oauth2-provider", choices=_choices(Provider),
                       help="microsoft365: app-only client credentials; google: service account or refresh "
                       "token; generic: RFC 6749 at --oauth2-token-url")
    oauth.add_argument("--oauth2-mechanism", choices=_choices(Mechanism), default=Mechanism.AUTO.value,
                       help="SASL mechanism: auto (OAUTHBEARER where offered, else XOAUTH2), xoauth2, oauthbearer")
    oauth.add_argument("--oauth2-tenant", metavar="ID", help="Microsoft 365: the tenant id or domain")
    oauth.add_argument("--oauth2-client-id", metavar="ID", help="the app's (client) id")
    oauth.add_argument("--oauth2-client-secret", metavar="REF",
                       help="the client secret, or a reference: env:NAME, file:PATH, keyring:SERVICE/USER")
    oauth.add_argument("--oauth2-certificate", metavar="PATH",
                       help="Microsoft 365: PEM file with the app's private key and certificate")
    oauth.add_argument("--oauth2-service-account", metavar="PATH",
                       help="Google: the service account's JSON key (domain-wide delegation), or a reference")
    oauth.add_argument("--oauth2-token-url", metavar="URL",
                       help="generic: the token endpoint; others: overrides the provider's endpoint")
    oauth.add_argument("--oauth2-scope", metavar="SCOPE", help="default: the provider's mail scope")
    oauth.add_argument("--oauth2-allow-plain", action="store_true",
                       help="allow sending tokens without TLS to a loopback server (tests only)")

    sec = p.add_argument_group("certificates")
    sec.add_argument("--ca-file", metavar="PATH", help="PEM file of extra trusted CA certificates")
    sec.add_argument("--insecure", action="store_true", help="do not verify certificates (not recommended)")

    out = p.add_argument_group("output")
    out.add_argument("--format", choices=_choices(OutputFormat), default=OutputFormat.PRTG_XML.value)
    out.add_argument("--channels", choices=_choices(ChannelSet), default=ChannelSet.STANDARD.value,
                     help="standard: PRTG's three channels; detailed: also each phase")
    out.add_argument("--warning-ms", type=float, metavar="MS",
                     help="PRTG warning limit on Total (applies when PRTG creates the channel)")
    out.add_argument("--error-ms", type=float, metavar="MS",
                     help="PRTG error limit on Total (applies when PRTG creates the channel)")
    out.add_argument("--store-result", action="store_true",
                     help="write 'Result of Sensor <ID>.txt' and '.Data.txt' (PRTG's Result Handling)")
    out.add_argument("--result-dir", metavar="DIR",
                     help="where --store-result writes (default: PRTG's Logs\\sensors folder)")
    out.add_argument("--timeout", type=_seconds(5, MAX_SECONDS), default=60.0, metavar="SEC",
                     help="budget for the whole run; set it to the sensor's timeout in PRTG (default 60)")
    out.add_argument("--sensor-id", metavar="ID",
                     help="marks this sensor's probe mails (default: $prtg_sensorid, else derived "
                     "from the servers, mailbox and addresses)")
    out.add_argument("-v", "--verbose", action="store_true",
                     help="print a redacted protocol transcript to stderr")
    return p


def _sniff_format(argv: Sequence[str], default: OutputFormat) -> OutputFormat:
    """The requested format, read tolerantly, so even a refused command line gets its document."""
    for i, arg in enumerate(argv):
        value = None
        if arg == "--format" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--format="):
            value = arg.split("=", 1)[1]
        if value in _choices(OutputFormat):
            return OutputFormat(value)
    return default


STDIN_WAIT_SECONDS = 5.0


def _stdin_params(stdin: Optional[IO[bytes]]) -> List[str]:
    """Script v2 passes the Parameters field on stdin (when stdin is not a terminal)."""
    stream = stdin if stdin is not None else sys.stdin.buffer
    try:
        if stream.isatty():
            return []
        if os.name != "nt" and _has_fileno(stream):  # don't hang on a pipe nobody writes to
            import select

            if not select.select([stream], [], [], STDIN_WAIT_SECONDS)[0]:
                return []
        text = stream.read().decode("utf-8", "replace").strip()
    except (OSError, ValueError):
        return []
    import shlex

    try:
        return shlex.split(text, posix=os.name != "nt")
    except ValueError as exc:
        raise ParameterError(f"the parameters on stdin do not split ({exc})", hint="Check the quotes") from None


def _has_fileno(stream: IO[bytes]) -> bool:
    try:
        stream.fileno()
    except (OSError, ValueError):  # an in-memory stream
        return False
    return True


_OUTPUT_LOCK = threading.Lock()
_emitted = False  # one document per process, whoever writes it first


def _emit(report: Report, fmt: OutputFormat, stdout: Optional[IO[bytes]]) -> None:
    global _emitted
    from .render import render

    document = render(report, fmt).encode("utf-8")  # UTF-8 without BOM, whatever the code page
    out = stdout if stdout is not None else sys.stdout.buffer
    with _OUTPUT_LOCK:
        if _emitted and stdout is None:
            return
        _emitted = stdout is None
        out.write(document)
        out.flush()


def _last_resort(budget: float, fmt: OutputFormat, stdout: Optional[IO[bytes]]) -> threading.Timer:
    """If the run is still going just before PRTG's timeout (stuck where no socket timeout
    reaches, such as a name lookup), print an error document and end the process."""

    def fire() -> None:
        _emit(Report.failure(
            f"Sensor: the run did not finish within its --timeout budget of {budget:g} s (stuck in a "
            "name lookup or a system call). Check DNS and the network path, or raise PRTG's timeout "
            "together with --timeout."
        ), fmt, stdout)
        os._exit(0)

    timer = threading.Timer(max(0.5, budget - LAST_RESORT_MARGIN - (time.perf_counter() - _STARTED)), fire)
    timer.daemon = True
    timer.start()
    return timer


SECRET_OPTION_WORDS = ("password", "secret", "refresh-token")


def _sniff_secrets(argv: Sequence[str]) -> Tuple[str, ...]:
    """Secret values on the command line, for redaction even when parsing fails. A reference
    (env:, file:, keyring:) is not a secret: error texts must be able to name it."""
    from .secrets import PREFIXES

    found = []
    for i, arg in enumerate(argv):
        name, _, value = arg.partition("=")
        if name.startswith("--") and any(word in name for word in SECRET_OPTION_WORDS):
            if not value and i + 1 < len(argv):
                value = argv[i + 1]
            if value and not (value.startswith(PREFIXES) and not value.startswith("literal:")):
                found.append(value)
    return tuple(found)


def _parameter_failure(exc: ParameterError, secrets: Tuple[str, ...]) -> Report:
    if secrets and exc.cause.startswith("unrecognized arguments"):
        # Stray words next to a password are most likely a password split at a space.
        exc = ParameterError(
            "unrecognized arguments (not shown: the command line holds a password)",
            hint="Put values that contain spaces in double quotes",
        )
    return Report.failure(exc.message())


def main(
    argv: Optional[Sequence[str]] = None,
    environ: Optional[Mapping[str, str]] = None,
    stdout: Optional[IO[bytes]] = None,
    stdin: Optional[IO[bytes]] = None,
) -> int:
    """Run once; return the process exit code (always 0 for the PRTG formats)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    environ = os.environ if environ is None else environ
    if argv[:1] == ["credentials"]:
        from .credentials import main as credentials_main

        return credentials_main(argv[1:])
    from .secrets import environment_secrets

    default = fmt = OutputFormat.PRTG_XML if argv else OutputFormat.SCRIPT_V2
    secrets: Tuple[str, ...] = environment_secrets(environ)
    verbose, settings, transcript, values = False, None, None, {}
    try:
        if not argv:  # Script v2: parameters on stdin, and its format unless told otherwise
            argv = _stdin_params(stdin)
        fmt = _sniff_format(argv, default)
        secrets += _sniff_secrets(argv)
        parser = build_parser()
        parser.set_defaults(format=default.value)
        values = vars(parser.parse_args(argv))
        settings = build_settings(values, environ)
        fmt, verbose = settings.output.format, settings.output.verbose
        if stdout is None:  # a real process (tests that pass a buffer run in-process)
            _last_resort(settings.timeout, fmt, stdout)
        from .roundtrip import run_round_trip

        console = not verbose and sys.stderr.isatty()
        transcript = Transcript(secrets, echo=sys.stderr if verbose else None, progress=sys.stderr if console else None)
        report = run_round_trip(settings, transcript, environ)
    except ParameterError as exc:
        report = _parameter_failure(exc, secrets)
    except RoundTripError as exc:
        report = Report.failure(exc.message())
    except KeyboardInterrupt:
        report = Report.failure("Sensor: interrupted by the user.")
    except Exception as exc:  # noqa: BLE001 - the one guarded place: nothing may escape as a traceback
        if verbose:
            import traceback

            traceback.print_exc(file=sys.stderr)
        report = Report.failure(
            f"Sensor: internal error ({type(exc).__name__}: {exc}). "
            "Run the sensor by hand with --format text --verbose and report the transcript."
        )
    report = report.redacted(secrets)
    if settings is not None and settings.output.store_result:
        report = _store_result(report, fmt, settings, values, environ, transcript, secrets)
    _emit(report, fmt, stdout)
    if fmt.for_prtg:
        return 0
    return 1 if report.error else 0


def _store_result(
    report: Report,
    fmt: OutputFormat,
    settings: Settings,
    values: Mapping[str, object],
    environ: Mapping[str, str],
    transcript: Optional[Transcript],
    secrets: Tuple[str, ...],
) -> Report:
    """Write PRTG's result files; say in the text when that is impossible (the run stands)."""
    from .render import render
    from .resultfile import default_result_dir, write_result_files

    directory = settings.output.result_dir or default_result_dir(environ)
    if directory is None:
        return report.with_note("Result files not written: no PRTG Logs\\sensors folder here; give --result-dir")
    inputs = sorted(values.items()) + sorted((k, v) for k, v in environ.items() if k.startswith("prtg_"))
    try:
        write_result_files(
            directory, settings.sensor_id, render(report, fmt), inputs, transcript.text() if transcript else "", secrets
        )
    except OSError as exc:
        return report.with_note(f"Result files not written to {directory}: {exc.strerror}")
    return report


def run() -> NoReturn:
    """The console script and `python -m prtg_roundtrip`: main(), then a fast exit.

    Once the document is out there is nothing left to finalize (files are closed, stdout and
    stderr flushed): skipping the interpreter's teardown saves about 17 ms a run (measured with
    this project's imports).
    """
    try:
        code = main()
    except SystemExit as exc:  # --help, --version
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
        if exc.code is not None and not isinstance(exc.code, int):
            sys.stderr.write(f"{exc.code}\n")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
