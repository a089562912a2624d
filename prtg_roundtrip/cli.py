"""Entry point: PRTG's parameters in, one document out.

This is the one place where a failure becomes a PRTG error document and an exit code. It imports
only what parsing needs; the protocol modules are imported once the parameters are known good,
so `--help` and a refused parameter stay cheap.
"""

from __future__ import annotations

import argparse
import atexit
import math
import os
import re
import sys
import threading
from dataclasses import replace
from typing import IO, Iterator, List, Mapping, NoReturn, Optional, Sequence, Tuple, Union

from . import __version__
from .auth import AuthMethod, Mechanism, Provider
from .deadline import current_step, note_step, now, process_start, run_start, set_run_start
from .errors import ParameterError, RoundTripError
from .report import Failure, Report, usable_secrets
from .settings import (
    ChannelSet,
    Credentials,
    JunkIs,
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
# The sensor takes about 40 options: a parameter list far longer than that is a mistake (and
# argparse's run time grows faster than the list), so it is refused before parsing.
MAX_WORDS = 400
MAX_PARAMETER_CHARS = 65536
_OPTION_NAME = re.compile(r"^--?[A-Za-z][A-Za-z0-9_-]{0,63}$")


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting 2 (PRTG needs a document),
    and that never shows the values of words it does not know (they may be passwords)."""

    def error(self, message: str) -> NoReturn:
        raise ParameterError(message, hint="Run prtg-roundtrip --help for the list of options")

    def parse_args(self, args=None, namespace=None):
        values, extras = self.parse_known_args(args, namespace)
        if extras:
            raise ParameterError(unrecognized_message(extras), hint="Run prtg-roundtrip --help for the list of options")
        return values


def unrecognized_message(extras: Sequence[str]) -> str:
    """Name the unknown options, never a value: a word after an unknown option may be its value."""
    names: List[str] = []
    hidden = 0
    after_option = False
    for word in extras:
        name = word.split("=", 1)[0]
        if not after_option and _OPTION_NAME.fullmatch(name) and name not in names:
            names.append(name)
            after_option = "=" not in word
        else:
            hidden += 1
            after_option = False
    text = "unrecognized option" + ("s " if len(names) > 1 else " ") + ", ".join(names) if names else ""
    if hidden:
        words = f"{hidden} other word{'s' if hidden > 1 else ''} (not shown, as values may be passwords)"
        text = f"{text} and {words}" if text else f"unrecognized arguments: {words}"
    return text


def _milliseconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of milliseconds") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number of milliseconds")
    return value


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
        allow_abbrev=False,  # --imap-pass must not silently mean --imap-password
        description="Send a marked mail by SMTP, wait for it in an IMAP mailbox, delete it, and "
        "report the time of each leg as PRTG channels (SMTP&IMAP Round Trip).",
        epilog="Failures are reported inside the document (<error>1</error>) with exit code 0, "
        "as PRTG expects (--format nagios: exit code 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN). "
        "'prtg-roundtrip check ARGS' connects and logs in on both legs and sends nothing. "
        "Add --verbose at a console to see a redacted transcript.",
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
                      help="a password, or a reference: env:NAME, file:PATH, keyring:SERVICE/USER, placeholder:N")
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
                      help="a password, or a reference: env:NAME, file:PATH, keyring:SERVICE/USER, placeholder:N")
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

    deliver = p.add_argument_group("deliverability (where the probe landed, how the receiving server judged it)")
    deliver.add_argument("--junk-folder", metavar="NAME|off",
                         help="the Junk folder watched besides the mailbox (default: the folder with the "
                         "\\Junk attribute, else a common name such as Junk or Spam); off: not watched")
    deliver.add_argument("--junk-is", choices=_choices(JunkIs), default=JunkIs.ERROR.value,
                         help="a probe that landed in the Junk folder is an error (default) or a warning")
    deliver.add_argument("--authserv-id", metavar="ID",
                         help="read only the Authentication-Results this server wrote (default: the "
                         "topmost field's authserv-id, the nearest server's)")

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
                     help="standard: Total, Response Time (SMTP), Response Time (IMAP), and "
                     "SMTP Certificate / IMAP Certificate for each leg whose TLS mode is not off (days "
                     "until the verified certificate expires; -1: none verified, as after a fall-back "
                     "to plain text or with --insecure); then Landed, SPF, DKIM, DMARC (value lookups), and "
                     "Spam Score where the server writes one; detailed: also each phase (see the README)")
    out.add_argument("--warning-ms", "-w", "--warning", dest="warning_ms", type=_milliseconds, metavar="MS",
                     help="warning limit on Total (PRTG: applies when PRTG creates the channel; "
                     "Nagios: WARNING above it)")
    out.add_argument("--error-ms", "-c", "--critical", dest="error_ms", type=_milliseconds, metavar="MS",
                     help="error limit on Total (PRTG: applies when PRTG creates the channel; "
                     "Nagios: CRITICAL above it)")
    out.add_argument("--output", metavar="FILE",
                     help="write the document to FILE (atomically: a temporary file renamed over it) "
                     "instead of stdout, e.g. for node_exporter's textfile collector")
    out.add_argument("--store-result", action="store_true",
                     help="write 'Result of Sensor <ID>.prtg-roundtrip.txt' and '.Data.txt' (as PRTG's "
                     "Result Handling does, under names of their own)")
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
    for i, arg in enumerate(argv[: MAX_WORDS + 1]):
        value = None
        if arg == "--format" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--format="):
            value = arg.split("=", 1)[1]
        if value in _choices(OutputFormat):
            return OutputFormat(value)
    return default


def _is_tty(stream: object) -> bool:
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return False


USAGE = """\
prtg-roundtrip {version}: sends a marked mail by SMTP, waits for it in an IMAP mailbox, deletes it,
and reports how long each leg took.

usage: prtg-roundtrip [--smtp-host HOST] --imap-host HOST --imap-user USER --imap-password PW
                      --from ADDRESS --to ADDRESS [options]
       prtg-roundtrip check [the same options]   connect and log in on both legs, send nothing
       prtg-roundtrip --help                     every option

example:
  prtg-roundtrip --smtp-host mail.example.com --smtp-port 587 --smtp-tls starttls \\
      --smtp-auth password --smtp-user monitor@example.com --smtp-password env:SMTP_PASSWORD \\
      --imap-host mail.example.com --imap-tls tls --imap-user monitor@example.com \\
      --imap-password env:IMAP_PASSWORD --from monitor@example.com --to monitor@example.com

At a terminal the result is readable text; monitors choose --format prtg-xml, prtg-json,
script-v2, nagios or openmetrics.
"""


def _usage(stdout: Optional[IO[bytes]]) -> int:
    out = stdout if stdout is not None else sys.stdout.buffer
    out.write(USAGE.format(version=__version__).encode("utf-8"))
    out.flush()
    return 0


STDIN_WAIT_SECONDS = 5.0  # for the first byte of the parameters, when the launcher says Script v2
STDIN_IDLE_SECONDS = 0.5  # a line that never gets its newline is taken after this much silence
# Set to 1 by the launchers where they run as Script v2 (prtg-roundtrip.sh without arguments off a
# terminal, prtg-roundtrip.bat in Custom Sensors\scripts): PRTG's Script v2 sensor passes the
# Parameters field on stdin, and the answer is a Script v2 document.
SCRIPT_V2_MARKER = "PRTG_ROUNDTRIP_SCRIPT_V2"


def _default_format(
    argv: Sequence[str], environ: Mapping[str, str], stdin: Optional[IO[bytes]], stdout_is_tty: bool
) -> Tuple[OutputFormat, Union[List[str], str, None]]:
    """The format when --format is not given, and where the parameters come from: the command
    line (a list), or the line read from stdin (a string; None: longer than allowed).

    Script v2 only when something says so, never from an empty command line alone: the Script v2
    launcher's marker (then stdin is read, within STDIN_WAIT_SECONDS), or, without arguments, a
    parameter line already waiting on stdin. A closed, empty or silent stdin is not Script v2
    and is not waited for. Otherwise the readable text for a person at a terminal, and PRTG XML
    under PRTG (no terminal; EXE/Script Advanced, also with empty Parameters)."""
    declared = _declared_format(environ, stdout_is_tty)
    if declared is OutputFormat.SCRIPT_V2:
        return declared, (list(argv) if argv else _stdin_line(stdin, STDIN_WAIT_SECONDS))
    if declared is OutputFormat.TEXT:
        return declared, list(argv)
    if argv or not _stdin_waiting(stdin):
        return OutputFormat.PRTG_XML, list(argv)
    line = _stdin_line(stdin, STDIN_WAIT_SECONDS)  # something is there: the first read returns at once
    return (OutputFormat.SCRIPT_V2 if line != "" else OutputFormat.PRTG_XML), line


def _declared_format(environ: Mapping[str, str], stdout_is_tty: bool) -> OutputFormat:
    """The default format that needs no look at stdin: Script v2 where the launcher says so,
    the readable text at a terminal, else PRTG XML."""
    if environ.get(SCRIPT_V2_MARKER) == "1":
        return OutputFormat.SCRIPT_V2
    return OutputFormat.TEXT if stdout_is_tty else OutputFormat.PRTG_XML


def _parameters(given: Union[List[str], str, None]) -> List[str]:
    if given is None:
        raise ParameterError(
            f"the parameters on stdin are longer than {MAX_PARAMETER_CHARS} bytes",
            hint="Check the sensor's Parameters field",
        )
    if isinstance(given, str):
        return split_parameters(given, windows=os.name == "nt")
    return given


def _stdin_line(stdin: Optional[IO[bytes]], wait: float) -> Optional[str]:
    """The Parameters field from stdin (not a terminal): one line, stripped, never waiting for
    an end of file that may not come; None if it is longer than MAX_PARAMETER_CHARS."""
    stream = stdin if stdin is not None else sys.stdin.buffer
    try:
        if stream.isatty():
            return ""
    except (OSError, ValueError):
        return ""
    line = read_line(stream, wait, STDIN_IDLE_SECONDS, MAX_PARAMETER_CHARS)
    return None if line is None else line.decode("utf-8", "surrogateescape").strip()


def _stdin_waiting(stdin: Optional[IO[bytes]]) -> bool:
    """Whether stdin holds something to read right now (data, or its end), without waiting."""
    stream = stdin if stdin is not None else sys.stdin.buffer
    try:
        if stream.isatty():
            return False
    except (OSError, ValueError):
        return False
    try:
        fd = stream.fileno()
    except (OSError, ValueError, AttributeError):  # an in-memory stream: what it holds is there now
        return True
    if sys.platform == "win32":
        return _windows_waiting(fd)
    import select

    try:
        return bool(select.select([fd], [], [], 0)[0])
    except (OSError, ValueError):
        return False


def _windows_waiting(fd: int) -> bool:
    """A file redirected to stdin, or a pipe with bytes in it (PeekNamedPipe); not a console."""
    import stat

    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            return True
    except OSError:
        return False
    if sys.platform != "win32":  # pragma: no cover - for the type checker
        return False
    import ctypes
    import msvcrt

    available = ctypes.c_ulong(0)
    try:
        handle = msvcrt.get_osfhandle(fd)
    except OSError:
        return False
    peek = ctypes.windll.kernel32.PeekNamedPipe
    return bool(peek(handle, None, 0, None, ctypes.byref(available), None)) and available.value > 0


def _empty_parameters(environ: Mapping[str, str]) -> ParameterError:
    """What a run without any parameter lacks, all of it named at once."""
    needed = ["--from", "--to", "--imap-host", "--imap-user", "--imap-password (or --imap-credentials linux|windows)"]
    if not environ.get("prtg_host"):
        needed.append("--smtp-host (or PRTG's %host: 'Set placeholders as environment values')")
    return ParameterError(
        "no parameters were given; the sensor needs at least " + ", ".join(needed),
        hint="Fill in the sensor's Parameters field (EXE/Script Advanced, Script v2) or Additional Parameters "
        "(Python Script Advanced); see the README",
    )


def read_line(stream: IO[bytes], wait: float, idle: float, limit: int) -> Optional[bytes]:
    """The first line of `stream` (without its line break): what arrived until a newline, the
    end of the stream, `idle` seconds of silence after some data, or `wait` seconds without
    any. A reader thread does the blocking reads, so a stream nobody closes cannot hold the
    run. None if more than `limit` bytes arrive without a newline."""
    buffer = bytearray()
    lock = threading.Lock()
    done = threading.Event()
    last: List[float] = []

    def reader() -> None:
        try:
            fd = stream.fileno()
        except (OSError, ValueError, AttributeError):  # an in-memory stream
            read = getattr(stream, "read1", None) or stream.read
        else:  # the file descriptor itself: a blocked read then holds no lock of the stream object

            def read(size: int) -> bytes:
                return os.read(fd, size)

        try:
            while True:
                chunk = read(4096)
                if not chunk:
                    break
                with lock:
                    buffer.extend(chunk)
                    last[:] = [now()]
                if b"\n" in chunk or len(buffer) > limit:
                    break
        except (OSError, ValueError):
            pass
        done.set()

    threading.Thread(target=reader, name="stdin", daemon=True).start()
    give_up = now() + wait
    while not done.wait(0.02):
        with lock:
            seen = last[0] if last else None
        if (seen is None and now() >= give_up) or (seen is not None and now() - seen >= idle):
            break
    with lock:
        data = bytes(buffer)
    line = data.split(b"\n", 1)[0]
    if len(line) > limit:
        return None
    return line.rstrip(b"\r")


def split_parameters(text: str, windows: bool) -> List[str]:
    """Split PRTG's Parameters field as the platform's command line would: POSIX shell words,
    or on Windows the C runtime's rules (double quotes group, \\" is a literal quote,
    other backslashes stay, so C:\\path works)."""
    if len(text) > MAX_PARAMETER_CHARS:
        raise ParameterError(f"the parameters are longer than {MAX_PARAMETER_CHARS} characters")
    if windows:
        return list(_windows_words(text))
    import shlex

    try:
        return shlex.split(text, posix=True)
    except ValueError as exc:
        raise ParameterError(f"the parameters on stdin do not split ({exc})", hint="Check the quotes") from None


def _windows_words(text: str) -> Iterator[str]:
    """CommandLineToArgvW's rules: 2n backslashes before a quote give n and the quote toggles
    quoting; 2n+1 give n and a literal quote; backslashes before anything else are literal."""
    word: List[str] = []
    in_word = quoted = False
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            j = i
            while j < n and text[j] == "\\":
                j += 1
            count = j - i
            if j < n and text[j] == '"':
                word.append("\\" * (count // 2))
                if count % 2:
                    word.append('"')
                    j += 1
            else:
                word.append("\\" * count)
            in_word = True
            i = j
            continue
        if ch == '"':
            quoted = not quoted
            in_word = True
        elif ch in " \t" and not quoted:
            if in_word:
                yield "".join(word)
                word, in_word = [], False
        else:
            word.append(ch)
            in_word = True
        i += 1
    if in_word:
        yield "".join(word)


_OUTPUT_LOCK = threading.Lock()
_emitted = False  # one document per process, whoever writes it first
_emitting = False  # the main thread is writing it (a signal handler then leaves it alone)
_format = OutputFormat.PRTG_XML  # the format known so far, for a signal's document


_output_file: Optional[str] = None  # --output, once the parameters are known good
_colour = False  # the text format may colour its words (a terminal that shows colour)


def _emit(report: Report, fmt: OutputFormat, stdout: Optional[IO[bytes]], cache_folder: Optional[str] = None) -> Report:
    """Write the document (to --output, or stdout); return the report written (a refused
    --output file makes it an error report, on stdout). `cache_folder`: see render()."""
    global _emitted, _emitting
    _emitting = True
    # UTF-8 without BOM, whatever the code page; render() keeps only characters XML allows.
    document = _document(report, fmt, cache_folder, colour=_colour and fmt is OutputFormat.TEXT).encode(
        "utf-8", "replace")
    out = stdout if stdout is not None else sys.stdout.buffer
    with _OUTPUT_LOCK:
        if _emitted and stdout is None:
            return report
        _emitted = stdout is None
        if _output_file is not None:
            from .monitors import output_problem, write_output

            try:
                write_output(_output_file, document)
                return report
            except OSError as exc:  # the document goes to stdout instead, saying why
                cause = output_problem(_output_file, exc)
                report = Report.failure(f"Output: {cause}.", _problem("Output", cause, attempted=False))
                document = _document(report, fmt).encode("utf-8", "replace")
        out.write(document)
        out.flush()
    return report


def _document(report: Report, fmt: OutputFormat, cache_folder: Optional[str] = None, colour: bool = False) -> str:
    """The rendered document, checked: one that does not parse becomes a minimal error document."""
    from .outcheck import checked, failed_render
    from .render import render

    try:
        document = render(report, fmt, cache_folder, colour=colour)
    except Exception as exc:  # noqa: BLE001 - a template bug must still give PRTG a document
        return failed_render(exc, fmt)
    return checked(document, fmt)


def _last_resort(budget: float, fmt: OutputFormat, stdout: Optional[IO[bytes]]) -> threading.Timer:
    """If the run is still going just before PRTG's timeout (stuck where no socket timeout
    reaches, such as a name lookup), print an error document and end the process."""

    def fire() -> None:
        report = _emit(Report.failure(
            f"Sensor: the run did not finish within its --timeout budget of {budget:g} s (stuck during "
            f"{current_step()}). Check the server and the network path, or raise PRTG's timeout "
            "together with --timeout."
        ), fmt, stdout)
        leave(_exit_code(report, fmt))

    timer = threading.Timer(max(0.5, budget - LAST_RESORT_MARGIN - (now() - run_start())), fire)
    timer.daemon = True
    timer.start()
    return timer


SECRET_OPTION_WORDS = ("password", "secret", "refresh-token")


def _install_stop_handlers() -> None:
    """SIGTERM (PRTG, systemd, a Windows service stop) and SIGBREAK: print the error document
    for "stopped" first, then end, as Ctrl-C does."""
    import signal

    def stop(signum: int, frame: object) -> None:
        if _emitting:
            return  # the document is being written: let it finish
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        report = Report.failure(f"Sensor: stopped by a signal ({name}) during {current_step()}.",
                                _problem("Sensor", f"stopped by a signal ({name})", attempted=False))
        report = _emit(report, _format, None)
        leave(_exit_code(report, _format))

    for name in ("SIGTERM", "SIGBREAK"):
        number = getattr(signal, name, None)
        if number is not None:
            try:
                signal.signal(number, stop)
            except (ValueError, OSError):  # not the main thread
                pass


class _CheckedEnviron(Mapping[str, str]):
    """The environment as the sensor reads it: a value that is not valid text (bytes that are
    not UTF-8) is refused when, and only when, the run uses it."""

    def __init__(self, environ: Mapping[str, str]):
        self._environ = environ

    def __getitem__(self, key: str) -> str:
        value = self._environ[key]
        if not _is_text(value):
            raise ParameterError(
                f"the environment value {key} is not valid UTF-8 text",
                hint="Check the device's settings in PRTG for characters that are not text",
            )
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._environ)

    def __len__(self) -> int:
        return len(self._environ)


def _is_text(value: object) -> bool:
    """False for a string that holds undecodable bytes (surrogate escapes) or lone surrogates."""
    if not isinstance(value, str):
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_values(values: Mapping[str, object], parser: argparse.ArgumentParser) -> None:
    """Every option value given must be text: name the option whose value is not."""
    options = {
        action.dest: max(action.option_strings, key=len) for action in parser._actions if action.option_strings
    }
    for dest, value in values.items():
        if not _is_text(value):
            option = options.get(dest, dest)
            raise ParameterError(
                f"{option} is not valid UTF-8 text",
                hint=f"Check the value of {option} for characters that are not text",
            )


def _check_length(argv: Sequence[str]) -> None:
    if len(argv) > MAX_WORDS or sum(len(word) for word in argv) > MAX_PARAMETER_CHARS:
        raise ParameterError(
            f"the parameter list is too long ({len(argv)} words); the sensor takes at most {MAX_WORDS} "
            f"words and {MAX_PARAMETER_CHARS} characters",
            hint="Check the sensor's Parameters field",
        )


def _sniff_secrets(argv: Sequence[str]) -> Tuple[str, ...]:
    """Secret values on the command line, for redaction even when parsing fails. A reference
    (env:, file:, keyring:) is not a secret: error texts must be able to name it."""
    from .secrets import PREFIXES

    found = []
    for i, arg in enumerate(argv[: MAX_WORDS + 1]):
        name, _, value = arg.partition("=")
        if name.startswith("--") and any(word in name for word in SECRET_OPTION_WORDS):
            if not value and i + 1 < len(argv):
                value = argv[i + 1]
            if value and not (value.startswith(PREFIXES) and not value.startswith("literal:")):
                found.append(value)
    return tuple(found)


def _parameter_failure(exc: ParameterError, secrets: Tuple[str, ...]) -> Report:
    if secrets and exc.cause.startswith("unrecognized") and "not shown" in exc.cause:
        # Stray words next to a password are most likely a password split at a space.
        exc = ParameterError(exc.cause, hint="Put values that contain spaces in double quotes")
    return _failure(exc, attempted=False)


def _problem(step: str, cause: str, attempted: bool = True, server: Optional[str] = None,
             hint: Optional[str] = None) -> Failure:
    return Failure(step=step, cause=cause, server=server, hint=hint, attempted=attempted)


def _failure(exc: RoundTripError, attempted: bool = True) -> Report:
    """The error report of a failed step, with its parts for the readable formats."""
    return Report.failure(exc.message(), _problem(exc.step, exc.cause, attempted, exc.server, exc.hint))


def _exit_code(report: Report, fmt: OutputFormat) -> int:
    from .monitors import exit_code

    return exit_code(report, fmt)


def main(
    argv: Optional[Sequence[str]] = None,
    environ: Optional[Mapping[str, str]] = None,
    stdout: Optional[IO[bytes]] = None,
    stdin: Optional[IO[bytes]] = None,
) -> int:
    """Run once; return the process exit code (monitors.exit_code: always 0 for the PRTG formats)."""
    global _format, _output_file, _colour
    _output_file = None
    process = stdout is None  # a real process (tests that pass a buffer run in-process)
    set_run_start(process_start() if process else now())  # budgets count from here
    note_step("reading parameters")
    argv = list(sys.argv[1:] if argv is None else argv)
    raw_environ = os.environ if environ is None else environ
    if argv[:1] == ["credentials"]:
        from .credentials import main as credentials_main

        return credentials_main(argv[1:])
    preflight = argv[:1] == ["check"]  # prtg-roundtrip check ARGS: connect and log in, send nothing
    if preflight:
        argv = argv[1:]
    out_stream = stdout if stdout is not None else sys.stdout
    if not argv and _is_tty(out_stream) and _is_tty(stdin if stdin is not None else sys.stdin):
        return _usage(stdout)  # a person typed the bare command: say how to use it
    from .secrets import environment_secrets, registered

    default = fmt = _format = _declared_format(raw_environ, _is_tty(out_stream))  # until stdin is looked at
    from .monitors import use_colour

    _colour = use_colour(out_stream, raw_environ)  # used by the text format only
    if process:
        _install_stop_handlers()
    secrets: Tuple[str, ...] = environment_secrets(raw_environ)
    checked: Mapping[str, str] = _CheckedEnviron(raw_environ)
    verbose, settings, transcript, values = False, None, None, {}
    try:
        default, given = _default_format(argv, raw_environ, stdin, _is_tty(out_stream))
        fmt = _format = default
        argv = _parameters(given)
        fmt = _format = _sniff_format(argv, default)
        if not argv:
            raise _empty_parameters(raw_environ)
        secrets += _sniff_secrets(argv)
        _check_length(argv)
        parser = build_parser()
        parser.set_defaults(format=default.value)
        values = vars(parser.parse_args(argv))
        _check_values(values, parser)
        settings = build_settings(values, checked)
        fmt, verbose = settings.output.format, settings.output.verbose
        _format = fmt
        _output_file = settings.output.output_file
        if process:
            _last_resort(settings.timeout, fmt, stdout)
        from .startup import prepare_imports

        prepare_imports()
        if preflight:
            from .preflight import run_preflight as measure
        else:
            from .roundtrip import run_round_trip as measure

        note_step("the preflight" if preflight else "the round trip")  # the protocol steps say more precisely
        console = not verbose and sys.stderr.isatty()
        transcript = Transcript(
            usable_secrets(secrets), echo=sys.stderr if verbose else None, progress=sys.stderr if console else None
        )
        report = measure(settings, transcript, checked)
    except ParameterError as exc:
        report = _parameter_failure(exc, secrets)
    except RoundTripError as exc:
        report = _failure(exc)
    except KeyboardInterrupt:
        report = Report.failure("Sensor: interrupted by the user.",
                                _problem("Sensor", "interrupted by the user", attempted=False))
    except Exception as exc:  # noqa: BLE001 - the one guarded place: nothing may escape as a traceback
        if verbose:
            import traceback

            traceback.print_exc(file=sys.stderr)
        report = Report.failure(
            f"Sensor: internal error ({type(exc).__name__}: {exc}). "
            "Run the sensor by hand with --format text --verbose and report the transcript.",
            _problem("Sensor", f"internal error ({type(exc).__name__}: {exc})", attempted=False,
                     hint="Run the sensor by hand with --format text --verbose and report the transcript"),
        )
    secrets += registered()  # every secret the run resolved or fetched
    if settings is not None:
        from .monitors import target_labels

        report = replace(report, target=target_labels(settings))
    report = report.redacted(secrets)
    if settings is not None and settings.output.store_result:
        note_step("writing result files")
        report = _store_result(report, fmt, settings, values, checked, transcript, secrets)
    report = _emit(report, fmt, stdout, _cache_folder(raw_environ) if settings is not None else None)
    return _exit_code(report, fmt)


def _cache_folder(environ: Mapping[str, str]) -> Optional[str]:
    """The private state folder, for compiled templates; None where it cannot be used."""
    from .state import private_folder

    try:
        return private_folder(environ)
    except (OSError, RoundTripError):
        return None


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
    from .resultfile import default_result_dir, write_result_files

    directory = settings.output.result_dir or default_result_dir(environ)
    if directory is None:
        return report.with_note("Result files not written: no PRTG Logs\\sensors folder here; give --result-dir")
    # The raw environment: a value that is not text is cleaned when written, not refused.
    raw = environ._environ if isinstance(environ, _CheckedEnviron) else environ
    inputs = sorted(values.items()) + sorted((k, v) for k, v in raw.items() if k.startswith("prtg_"))
    try:
        write_result_files(
            directory, settings.sensor_id, _document(report, fmt), inputs,
            transcript.text() if transcript else "", secrets,
        )
    except OSError as exc:
        return report.with_note(f"Result files not written to {directory}: {exc.strerror}")
    return report


def leave(code: int) -> NoReturn:
    """End the process with `code` at once: stdout and stderr flushed and the functions
    registered with atexit run (logging's flush, the .pyz's temporary folder), but without the
    interpreter's teardown. Once the document is out there is nothing left to finalize; the
    teardown would cost about 17 ms a run (measured with this project's imports)."""
    sys.stdout.flush()
    sys.stderr.flush()
    atexit._run_exitfuncs()
    os._exit(code)


def run() -> NoReturn:
    """The console script and `python -m prtg_roundtrip`: main(), then a fast exit (leave())."""
    try:
        code = main()
    except SystemExit as exc:  # --help, --version
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
        if exc.code is not None and not isinstance(exc.code, int):
            sys.stderr.write(f"{exc.code}\n")
    leave(code)
