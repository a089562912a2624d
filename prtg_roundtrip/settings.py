"""What one run is asked to do: frozen settings objects, their enums and their validation.

cli.py parses the command line; `build_settings` turns the parsed values and PRTG's environment
into these objects and refuses anything invalid, before any connection is made. Later steps
only read them. Passwords are kept out of every repr.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from enum import Enum
from typing import Mapping, Optional

from .auth import Auth
from .errors import ParameterError


class TlsMode(str, Enum):
    """PRTG's four "Transport-Level Security" choices, plus an explicit plain one."""

    STARTTLS_IF_AVAILABLE = "starttls-if-available"
    TLS_IF_AVAILABLE = "tls-if-available"
    STARTTLS = "starttls"
    TLS = "tls"
    OFF = "off"

    @property
    def implicit(self) -> bool:
        """TLS from the first byte (SMTPS/IMAPS) rather than STARTTLS."""
        return self in (TlsMode.TLS, TlsMode.TLS_IF_AVAILABLE)

    @property
    def required(self) -> bool:
        """The run fails when the server offers no TLS."""
        return self in (TlsMode.TLS, TlsMode.STARTTLS)


class SearchMethod(str, Enum):
    """PRTG's "Search Method": ask the server, or read the headers ourselves."""

    SERVER = "server"
    LOCAL = "local"


class WaitMethod(str, Enum):
    """How the IMAP leg learns that mail arrived."""

    AUTO = "auto"  # fast checks right after the send, then IDLE where offered, else polling
    POLL = "poll"  # never IDLE: fast checks, then every --interval seconds


class OutputFormat(str, Enum):
    PRTG_XML = "prtg-xml"  # EXE/Script Advanced
    PRTG_JSON = "prtg-json"  # EXE/Script Advanced, Python Script Advanced
    SCRIPT_V2 = "script-v2"  # Script v2 (PRTG 23+, the Linux multi-platform probe)
    TEXT = "text"  # a person at a console
    NAGIOS = "nagios"  # Nagios, Icinga, Checkmk, Naemon: Monitoring Plugins status line and exit code
    OPENMETRICS = "openmetrics"  # Prometheus (node_exporter's textfile collector)

    @property
    def for_prtg(self) -> bool:
        return self in (OutputFormat.PRTG_XML, OutputFormat.PRTG_JSON, OutputFormat.SCRIPT_V2)


class Credentials(str, Enum):
    """The parent device's credentials that PRTG passes as environment values."""

    LINUX = "linux"
    WINDOWS = "windows"


class ChannelSet(str, Enum):
    STANDARD = "standard"
    DETAILED = "detailed"


class JunkIs(str, Enum):
    """What a probe found in the Junk folder makes of the run (--junk-is)."""

    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class TlsSettings:
    """Certificate policy shared by both legs."""

    ca_file: Optional[str] = None
    insecure: bool = False


@dataclass(frozen=True)
class SmtpSettings:
    """Step 1, sending: the SMTP server and how to reach and log in to it."""

    host: str
    port: int
    timeout: float
    tls: TlsMode
    helo: Optional[str]
    auth: Auth

    @property
    def server(self) -> str:
        return _server(self.host, self.port)


@dataclass(frozen=True)
class ImapSettings:
    """Step 2, waiting: the IMAP server, the mailbox and how to watch it."""

    host: str
    port: int
    timeout: float
    tls: TlsMode
    auth: Auth
    mailbox: str
    search: SearchMethod
    wait: WaitMethod
    interval: float
    max_trip_time: float

    @property
    def server(self) -> str:
        return _server(self.host, self.port)


@dataclass(frozen=True)
class MailSettings:
    """The probe mail: envelope and header addresses, and subject text."""

    sender: str
    recipient: str
    subject_text: str = ""


@dataclass(frozen=True)
class OutputSettings:
    """What is printed and where: format, channel set, limits, result files."""

    format: OutputFormat = OutputFormat.PRTG_XML
    channels: ChannelSet = ChannelSet.STANDARD
    verbose: bool = False
    warning_ms: Optional[float] = None  # limits on Total
    error_ms: Optional[float] = None
    store_result: bool = False  # PRTG's "Result Handling: Store result"
    result_dir: Optional[str] = None
    output_file: Optional[str] = None  # --output: the document goes there (atomically), not to stdout


@dataclass(frozen=True)
class DeliverySettings:
    """Where the probe landed and how the receiving server judged it (--junk-folder, --junk-is,
    --authserv-id)."""

    watch_junk: bool = True  # --junk-folder off: False
    junk_folder: Optional[str] = None  # a name given with --junk-folder; None: found by LIST
    junk_is: JunkIs = JunkIs.ERROR
    authserv_id: Optional[str] = None  # None: the topmost Authentication-Results field's id


@dataclass(frozen=True)
class Settings:
    """One run, validated: everything the steps after cli.py read."""

    smtp: SmtpSettings
    imap: ImapSettings
    mail: MailSettings
    tls: TlsSettings
    output: OutputSettings
    timeout: float  # the whole run's budget, seconds
    sensor_id: str  # marks this sensor's probes (PRTG's sensor id, or derived from the settings)
    delivery: DeliverySettings = DeliverySettings()


def _server(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# Default ports by TLS mode, as PRTG documents them.
SMTP_PORTS = {True: 465, False: 25}
IMAP_PORTS = {True: 993, False: 143}

# A plain addr-spec: what PRTG's "Enter a valid email address" accepts. Quoted local parts and
# address literals are refused on purpose: they are not needed for a probe and invite injection.
_ADDRESS = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
# A DNS name or IPv4 address: labels of letters, digits, '-' and '_' joined by dots.
_LABEL = r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*\.?$")
_HELO = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII, no space


def check_address(value: Optional[str], option: str) -> str:
    if not value:
        raise ParameterError(f"{option} is missing", hint=f"Give exactly one email address with {option}")
    check_text(value, option, limit=254)
    value = value.strip()
    if not _ADDRESS.fullmatch(value) or len(value) > 254:
        raise ParameterError(
            f"{option} {value!r} is not one valid email address",
            hint="Enter exactly one address such as probe@example.com, without a display name",
        )
    return value


def check_host(value: Optional[str], option: str, missing_hint: str) -> str:
    if not value or not value.strip():
        raise ParameterError(f"{option} is missing", hint=missing_hint)
    value = value.strip()
    literal = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    if ":" in literal or "[" in value or "]" in value:
        import ipaddress

        try:
            ipaddress.IPv6Address(literal)
        except ValueError:
            raise ParameterError(
                f"{option} {value!r} is not a host name or IP address",
                hint="Enter a DNS name or an IP address, without a port (use --smtp-port/--imap-port) "
                "or a URL scheme; an IPv6 address as ::1 or [::1]",
            ) from None
        return literal
    if not _HOSTNAME.fullmatch(value):
        raise ParameterError(
            f"{option} {value!r} is not a host name or IP address",
            hint="Enter a DNS name or an IP address, without a port or a URL scheme",
        )
    return value


def check_helo(value: Optional[str]) -> Optional[str]:
    if value is None or value == "":
        return None
    if not _HELO.fullmatch(value) or len(value) > 255:
        raise ParameterError(
            f"--helo {value!r} is not allowed",
            hint="The HELO ident must be ASCII without spaces or line breaks, e.g. probe.example.com",
        )
    return value


def check_text(value: str, option: str, limit: int = 200) -> str:
    """One line of text: no line break of any kind and no control character (VT, FF, NEL,
    U+2028/U+2029, ESC, ...), no lone surrogate and no non-character."""
    if any(ch in value for ch in "\r\n\0\x0b\x0c\x85\u2028\u2029"):
        raise ParameterError(f"{option} contains a line break", hint="Use a single line of text")
    bad = next((ch for ch in value if _not_text(ch)), None)
    if bad is not None:
        raise ParameterError(
            f"{option} contains the control or non-text character U+{ord(bad):04X}", hint="Use printable text only"
        )
    if len(value) > limit:
        raise ParameterError(f"{option} is longer than {limit} characters", hint="Shorten it")
    return value


def _not_text(ch: str) -> bool:
    code = ord(ch)
    return (
        unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp")
        or 0xFDD0 <= code <= 0xFDEF
        or code & 0xFFFE == 0xFFFE
    )


def check_ca_file(path: Optional[str]) -> Optional[str]:
    """--ca-file: an existing PEM file holding at least one certificate."""
    if not path:
        return None
    import os.path

    if not os.path.isfile(path):
        raise ParameterError(f"--ca-file {path!r} does not exist", hint="Give the path of a PEM file")
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cafile=path)
    except (ssl.SSLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or type(exc).__name__
        raise ParameterError(
            f"--ca-file {path!r} holds no usable PEM certificate ({reason})",
            hint="Give a PEM file with one or more '-----BEGIN CERTIFICATE-----' blocks",
        ) from None
    if not context.get_ca_certs():
        raise ParameterError(
            f"--ca-file {path!r} holds no CA certificate",
            hint="Give a PEM file with one or more '-----BEGIN CERTIFICATE-----' blocks",
        )
    return path


def require(value: Optional[str], option: str, hint: str) -> str:
    if not value:
        raise ParameterError(f"{option} is missing", hint=hint)
    if any(ch in value for ch in "\r\n\0"):
        raise ParameterError(f"{option} contains a line break or NUL", hint="Check the value")
    return value


_SENSOR_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def sensor_id(given: Optional[str], environ: Mapping[str, str], *identity: object) -> str:
    """--sensor-id, else PRTG's prtg_sensorid, else a stable digest of what the sensor watches."""
    value = given or environ.get("prtg_sensorid")
    if value:
        value = value.strip()
        if not _SENSOR_ID.fullmatch(value):
            raise ParameterError(
                f"sensor id {value!r} is not allowed", hint="Use letters, digits, '.', '_' or '-' (PRTG's %sensorid)"
            )
        return value
    import hashlib

    digest = hashlib.sha256("\0".join(str(part) for part in identity).encode("utf-8")).hexdigest()
    return "cfg-" + digest[:12]


def default_smtp_host(environ: Mapping[str, str]) -> Optional[str]:
    """PRTG's %host of the parent device, when placeholders are passed as environment values."""
    return environ.get("prtg_host") or None


def build_settings(values: Mapping[str, object], environ: Mapping[str, str]) -> Settings:
    """Validate parsed option values (cli.py's namespace as a dict) into one Settings object."""
    v = dict(values)
    smtp_tls = TlsMode(v["smtp_tls"])
    imap_tls = TlsMode(v["imap_tls"])
    sender = check_address(_str(v.get("sender")), "--from")
    recipient = check_address(_str(v.get("recipient")), "--to")
    smtp_host = check_host(
        _str(v.get("smtp_host")) or default_smtp_host(environ),
        "--smtp-host",
        "Give --smtp-host, or set the sensor's Environment to "
        "'Set placeholders as environment values' so PRTG passes the device's host",
    )
    imap_host = check_host(_str(v.get("imap_host")), "--imap-host", "Give the IMAP server with --imap-host")
    mailbox = require(_str(v.get("mailbox")), "--mailbox", "Give the mailbox to watch, e.g. INBOX")
    if mailbox.strip().lower() == sender.lower():
        raise ParameterError(
            f"--mailbox {mailbox!r} equals the --from address",
            hint="PRTG requires a mailbox that differs from the sender, "
            "otherwise a failed round trip can look successful",
        )

    interval = float(_num(v["interval"]))
    max_trip = float(_num(v["max_trip_time"]))
    if interval > max_trip:
        raise ParameterError(
            f"--interval {interval:g} s is longer than --max-trip-time {max_trip:g} s",
            hint="The mailbox must be checked at least once within the maximum trip time",
        )

    tls = TlsSettings(ca_file=_str(v.get("ca_file")), insecure=bool(v.get("insecure")))
    from .auth_settings import leg_auth, oauth2_client, with_cache_key

    client = oauth2_client(v, environ)
    imap_auth = leg_auth(v, "imap", environ, client, imap_host)
    smtp_auth = leg_auth(v, "smtp", environ, client, smtp_host)
    sensor = sensor_id(_str(v.get("sensor_id")), environ, smtp_host, imap_host, getattr(imap_auth, "user", ""),
                       mailbox, sender, recipient)
    imap_auth, smtp_auth = with_cache_key(imap_auth, sensor), with_cache_key(smtp_auth, sensor)
    warning_ms, error_ms = _positive(v.get("warning_ms"), "--warning-ms"), _positive(v.get("error_ms"), "--error-ms")
    if warning_ms is not None and error_ms is not None and warning_ms >= error_ms:
        raise ParameterError(
            f"--warning-ms {warning_ms:g} is not below --error-ms {error_ms:g}", hint="The warning limit comes first"
        )
    check_ca_file(tls.ca_file)

    return Settings(
        smtp=SmtpSettings(
            host=smtp_host,
            port=int(_num(v.get("smtp_port") or SMTP_PORTS[smtp_tls.implicit])),
            timeout=float(_num(v["smtp_timeout"])),
            tls=smtp_tls,
            helo=check_helo(_str(v.get("helo"))),
            auth=smtp_auth,
        ),
        imap=ImapSettings(
            host=imap_host,
            port=int(_num(v.get("imap_port") or IMAP_PORTS[imap_tls.implicit])),
            timeout=float(_num(v["imap_timeout"])),
            tls=imap_tls,
            auth=imap_auth,
            mailbox=mailbox,
            search=SearchMethod(v["search"]),
            wait=WaitMethod(v["wait"]),
            interval=interval,
            max_trip_time=max_trip,
        ),
        mail=MailSettings(
            sender=sender,
            recipient=recipient,
            subject_text=check_text(_str(v.get("subject_text")) or "", "--subject-text"),
        ),
        tls=tls,
        output=OutputSettings(
            format=OutputFormat(v["format"]),
            channels=ChannelSet(v["channels"]),
            verbose=bool(v.get("verbose")),
            warning_ms=warning_ms,
            error_ms=error_ms,
            store_result=bool(v.get("store_result")),
            result_dir=_str(v.get("result_dir")),
            output_file=_str(v.get("output")),
        ),
        timeout=float(_num(v["timeout"])),
        sensor_id=sensor,
        delivery=delivery_settings(v, mailbox),
    )


_AUTHSERV_ID = re.compile(r"^[\x21-\x7e]{1,255}$")  # printable ASCII, no space


def delivery_settings(v: Mapping[str, object], mailbox: str) -> DeliverySettings:
    """--junk-folder NAME|off, --junk-is warning|error, --authserv-id ID."""
    junk = _str(v.get("junk_folder"))
    watch = True
    if junk is not None:
        if junk.strip().lower() == "off":
            watch, junk = False, None
        else:
            junk = check_text(junk, "--junk-folder")
            if not junk.strip():
                raise ParameterError("--junk-folder is empty", hint="Name the Junk folder, or give 'off'")
            same = junk.upper() == mailbox.upper() if "INBOX" in (junk.upper(), mailbox.upper()) else junk == mailbox
            if same:
                raise ParameterError(
                    f"--junk-folder {junk!r} is the watched --mailbox",
                    hint="The Junk folder is watched besides the mailbox: name another folder, or give 'off'",
                )
    authserv = _str(v.get("authserv_id"))
    if authserv is not None and (not _AUTHSERV_ID.fullmatch(authserv) or ";" in authserv or '"' in authserv):
        raise ParameterError(
            f"--authserv-id {authserv!r} is not an authserv-id",
            hint="Give the receiving server's id as it writes it in Authentication-Results "
            "(usually its host name, e.g. mx.example.com): ASCII, no spaces",
        )
    return DeliverySettings(
        watch_junk=watch,
        junk_folder=junk,
        junk_is=JunkIs(v.get("junk_is") or JunkIs.ERROR.value),
        authserv_id=authserv or None,
    )


def _positive(value: object, option: str) -> Optional[float]:
    if value is None:
        return None
    try:
        number = float(_num(value))
    except (TypeError, ValueError):
        raise ParameterError(f"{option} {value!r} is not a number", hint="Give milliseconds above 0") from None
    if not math.isfinite(number):
        raise ParameterError(f"{option} {number} is not a finite number", hint="Give milliseconds above 0")
    if not number > 0:
        raise ParameterError(f"{option} {number:g} ms is not positive", hint="Give milliseconds above 0")
    return number


def _str(value: object) -> Optional[str]:
    return None if value is None else str(value)


def _num(value: object) -> float:
    if isinstance(value, (int, float)):
        return value
    return float(str(value))
