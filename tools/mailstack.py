#!/usr/bin/env python3
"""A real Postfix and a real Dovecot on loopback, for the test suite and the demo.

The round-trip sensor talks to real mail servers, so its tests do too: this launcher installs
Debian's ``postfix``, ``dovecot-imapd`` and ``dovecot-lmtpd`` packages (if missing) and runs a
*private* instance of each from a directory of its own (default
``/tmp/prtg-roundtrip-mailstack``).  The system-wide instances and ``/etc/postfix`` /
``/etc/dovecot`` are never used or touched.  Everything listens on 127.0.0.1 only; Postfix
has no outbound transport and rejects every domain but ``roundtrip.test``, so nothing can
leave the machine.

Mail flow: SMTP client -> Postfix (virtual domain ``roundtrip.test``) -> LMTP over a unix
socket in Postfix's queue directory -> Dovecot -> Maildir under ``DIR/mail/`` -> IMAP client.
SMTP AUTH is Dovecot SASL over another unix socket there; the same users and passwords work
for SMTP AUTH (PLAIN, LOGIN) and IMAP LOGIN.

Ports are ``port base + offset`` (base 12000 by default), one per TLS mode the sensor has:

==============  ======  ================================================================
name            offset  what it is for
==============  ======  ================================================================
smtp_plain      +25     SMTP without STARTTLS; AUTH offered in clear (a test can see a
                        password leak), not required for local mail
smtp_starttls   +26     SMTP offering (not requiring) STARTTLS; AUTH offered, not required
smtps           +465    SMTP with implicit TLS (wrapper mode); AUTH offered, not required
submission      +587    STARTTLS required and AUTH required before any recipient
imap_plain      +143    IMAP without STARTTLS, LOGIN allowed in clear
imap_starttls   +144    IMAP offering STARTTLS, LOGIN allowed before it too
imaps           +993    IMAP with implicit TLS
==============  ======  ================================================================

``MailStack(DIR, BASE, delivery=True)`` (``--delivery``) is a stack with Sieve, a ``\\Junk``
folder, SpamAssassin, OpenDKIM, OpenDMARC and a DNS server (tools/deliverystack.py, which has the
details) on offsets of its own, so it runs beside an ordinary stack of the same port base:
smtp_plain +625, smtp_starttls +626, smtp_verify +627, imap_plain +643, imap_starttls +644,
smtps +665, submission +687, imaps +693, OpenDKIM +781, OpenDMARC +782, spamd +783, and DNS on
port 53 of 127.53.x.y (from the port base).  Give it its own DIR.

All ports are on 127.0.0.1.  ``imap_plain`` is a second imap-login service started with
``-o ssl=no`` (so no STARTTLS) rather than a listener on another loopback address.

Certificates come from a throwaway CA made at first start (``DIR/tls/ca.pem``, its key
``DIR/tls/ca.key`` beside it; ``issue_certificate()`` mints more); the server certificate is
valid for ``localhost`` and ``127.0.0.1``.  Failed logins are answered at once (no
``auth_failure_delay``, no anvil penalty), so wrong-password tests are fast.  Users
(``probe``, ``other``, ``sender`` @roundtrip.test) and their passwords are in ``USERS``.

OAuth2: IMAP and SMTP AUTH also offer XOAUTH2 and OAUTHBEARER (RFC 7628).  Dovecot's
``oauth2`` passdb asks a token service about every token it is shown (introspection, no auth
cache, so a revoked token fails at the next login); only these two mechanisms reach it, so
password logins never wait for it.  The token service is *not* started here: run
``tools/tokenservice.py`` (the test suite's ``tokens`` fixture does) with HTTPS and the stack's
server certificate on ``port base + 443`` (``TOKEN_SERVICE_OFFSET``), or give another base URL
with ``MailStack(..., oauth2_url=URL)`` / ``--oauth2-url``; Dovecot trusts the stack's CA for it.
While nothing listens there, every token login fails with ``NO [UNAVAILABLE]``.  Tokens must
carry the scope ``https://mail.roundtrip.test/`` (``MAIL_SCOPE``).  Every user can log in with a
token; ``oauth@roundtrip.test`` (``OAUTH_USERS``) has a mailbox and no password at all.  The
info JSON's ``oauth2`` entry has the URLs, port, scope, mechanisms and OAuth users.  Dovecot
accepts a token in clear on loopback (it counts loopback as secure), before STARTTLS too.

Command line::

    python3 tools/mailstack.py {install,start,stop,status,info} [--dir DIR] [--port-base N]
                               [--oauth2-url URL] [--delivery]

``install`` installs the packages if missing; ``start`` installs if needed, writes the config,
starts Dovecot then Postfix, waits for every port and prints the info JSON (ports, users,
passwords, CA, maildirs, config, logs), or only prints it if already running; ``stop`` stops
both and waits until no process of the stack is left; ``status`` exits 0 when running and 1
when not; ``info`` prints the JSON.  Defaults: ``$PRTG_RT_STACK_DIR`` or
``/tmp/prtg-roundtrip-mailstack``, ``$PRTG_RT_PORT_BASE`` or 12000.  Stacks with different
directories and port bases run side by side.  Logs: ``DIR/log/postfix.log`` (maillog_file)
and ``DIR/log/dovecot.log``.

From Python (load the file by path; stdlib only)::

    stack = MailStack("/tmp/my-stack", 13000)   # oauth2_url=... to move the token service
    info = stack.start()        # idempotent; same dict as `info`
    stack.flush_queue()         # postqueue -f for this instance
    stack.stop()

Needs root on Debian 12 (Postfix 3.7, Dovecot 2.3.19); Python 3.9 or later.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import grp
import json
import os
import pwd
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

DEFAULT_DIR = "/tmp/prtg-roundtrip-mailstack"
DEFAULT_PORT_BASE = 12000
ENV_DIR = "PRTG_RT_STACK_DIR"
ENV_PORT_BASE = "PRTG_RT_PORT_BASE"

DOMAIN = "roundtrip.test"
HOST = "127.0.0.1"

PORT_OFFSETS = {
    "smtp_plain": 25,
    "smtp_starttls": 26,
    "smtps": 465,
    "submission": 587,
    "imap_plain": 143,
    "imap_starttls": 144,
    "imaps": 993,
}

# Fixed, distinctive passwords: easy to spot in a leak test, and safe in any config syntax.
USERS = {
    "probe": "Pr0be-Pw-7f3a9c",
    "other": "0ther-Pw-2b8e41",
    "sender": "S3nder-Pw-9d1c57",
}

# Mailboxes with no password at all: they can only log in with an OAuth2 bearer token.
OAUTH_USERS = ["oauth"]

# Logins that are no plain ASCII words, as real sites have them (UTF-8, a space, IMAP's literal
# syntax, quotes and backslashes in the password): each is another name for an existing mailbox
# (the passdb's user= field renames it), so delivery stays ASCII.  auth_username_chars admits
# exactly the characters these need.
LOGIN_ALIASES = {
    "utf8": ("prübe@" + DOMAIN, "Pässwört-Ünï-7c1e", "probe"),
    "space": ("john smith@" + DOMAIN, 'Sp ace "quo" \\ 9a', "probe"),
    "literal": ("x{5}@" + DOMAIN, "Lit{5}eral-3b", "probe"),
}

# OAuth2 (SASL XOAUTH2 / OAUTHBEARER): Dovecot asks a token service for every token it is shown
# (RFC 7662 style introspection, no cache).  The service listens on port base + this offset
# (tools/tokenservice.py; not started by this module) unless MailStack(oauth2_url=...) says
# otherwise.  Every word of MAIL_SCOPE must be in a token's scope.
TOKEN_SERVICE_OFFSET = 443
MAIL_SCOPE = "https://mail.roundtrip.test/"
OAUTH2_TIMEOUT_MS = 5000

APT_PACKAGES = ["postfix", "dovecot-core", "dovecot-imapd", "dovecot-lmtpd", "openssl"]
REQUIRED_FILES = [
    "/usr/sbin/postfix",
    "/usr/lib/postfix/sbin/master",
    "/usr/sbin/dovecot",
    "/usr/lib/dovecot/imap",
    "/usr/lib/dovecot/imap-login",
    "/usr/lib/dovecot/lmtp",
    "/usr/bin/openssl",
]
POSTFIX_PRESEED = "postfix postfix/main_mailer_type select No configuration\n"
INSTALL_LOCK = "/tmp/prtg-roundtrip-mailstack-install.lock"
POLICY_RC_D = "/usr/sbin/policy-rc.d"

SERVER_SAN = "DNS:localhost, IP:127.0.0.1"
EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]

# DIR/dovecot/run/replication-notify-fifo, the longest socket path, must fit a sockaddr_un.
MAX_DIR_LENGTH = 70
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0

# --------------------------------------------------------------------------------------------
# Configuration templates.  {placeholders} are filled by str.format, so literal braces are
# doubled.  Paths are absolute except Postfix's private/... sockets, which are relative to
# its queue directory (where Dovecot puts its LMTP and auth listeners).
# --------------------------------------------------------------------------------------------

POSTFIX_MAIN_CF = """\
# Generated by tools/mailstack.py: a private, loopback-only Postfix for tests.
compatibility_level = 3.6
queue_directory = {spool}
data_directory = {postfix_data}
mail_owner = postfix
setgid_group = postdrop
syslog_name = {syslog_name}
maillog_file = {postfix_log}
maillog_file_prefixes = {log_dir}

myhostname = mail.{domain}
mydomain = {domain}
myorigin = {domain}
mydestination =
inet_interfaces = {host}
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
append_dot_mydomain = no
biff = no
smtpd_banner = $myhostname ESMTP prtg-roundtrip test stack
smtpd_peername_lookup = no

# Only the virtual domain is delivered, over LMTP into Dovecot.  Nothing else has a route.
virtual_mailbox_domains = {domain}
virtual_mailbox_maps = inline:{{ {mailbox_map} }}
virtual_transport = lmtp:unix:private/dovecot-lmtp
relay_domains =
default_transport = error:outbound mail is disabled in the test stack
relay_transport = error:outbound mail is disabled in the test stack
local_transport = error:local delivery is disabled in the test stack
alias_maps =
alias_database =
local_recipient_maps =
smtp_dns_support_level = disabled
lmtp_dns_support_level = disabled
lmtp_host_lookup = native

# Accept mail for known local users from anyone on loopback; reject every other domain
# (even for authenticated clients) and unknown users (550 at RCPT).
smtpd_relay_restrictions = reject_unauth_destination
smtpd_recipient_restrictions =
smtpd_reject_unlisted_recipient = yes

# SMTP AUTH through Dovecot; offered on every port, in clear where the port has no TLS.
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = private/auth
smtpd_tls_auth_only = no

smtpd_tls_cert_file = {server_cert}
smtpd_tls_key_file = {server_key}
smtpd_tls_security_level = may
smtpd_tls_loglevel = 0
smtpd_tls_received_header = yes

# Retry quickly if Dovecot was briefly unavailable; never warn about delays.
queue_run_delay = 5s
minimal_backoff_time = 5s
maximal_backoff_time = 30s
delay_warning_time = 0
{main_extra}"""

POSTFIX_MASTER_CF = """\
# Generated by tools/mailstack.py.  No chroot; only the services this stack needs.
# service           type  private unpriv chroot wakeup maxproc command
{host}:{smtp_plain} inet  n       -      n      -      -       smtpd
  -o syslog_name={syslog_name}/smtp_plain
  -o smtpd_tls_security_level=none
{smtp_plain_extra}{host}:{smtp_starttls} inet n     -      n      -      -       smtpd
  -o syslog_name={syslog_name}/smtp_starttls
  -o smtpd_tls_security_level=may
{host}:{smtps} inet    n       -      n      -      -       smtpd
  -o syslog_name={syslog_name}/smtps
  -o smtpd_tls_wrappermode=yes
  -o smtpd_tls_security_level=encrypt
{host}:{submission} inet n       -      n      -      -       smtpd
  -o syslog_name={syslog_name}/submission
  -o smtpd_tls_security_level=encrypt
  -o smtpd_tls_auth_only=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
  -o smtpd_sender_restrictions=permit_sasl_authenticated,reject
  -o smtpd_recipient_restrictions=permit_sasl_authenticated,reject
pickup     unix  n       -       n       60      1       pickup
cleanup    unix  n       -       n       -       0       cleanup
qmgr       unix  n       -       n       300     1       qmgr
tlsmgr     unix  -       -       n       1000?   1       tlsmgr
rewrite    unix  -       -       n       -       -       trivial-rewrite
bounce     unix  -       -       n       -       0       bounce
defer      unix  -       -       n       -       0       bounce
trace      unix  -       -       n       -       0       bounce
verify     unix  -       -       n       -       1       verify
flush      unix  n       -       n       1000?   0       flush
proxymap   unix  -       -       n       -       -       proxymap
proxywrite unix  -       -       n       -       1       proxymap
showq      unix  n       -       n       -       -       showq
error      unix  -       -       n       -       -       error
retry      unix  -       -       n       -       -       error
discard    unix  -       -       n       -       -       discard
lmtp       unix  -       -       n       -       -       lmtp
anvil      unix  -       -       n       -       1       anvil
scache     unix  -       -       n       -       1       scache
postlog    unix-dgram n  -       n       -       1       postlogd
{master_extra}"""

DOVECOT_CONF = """\
# Generated by tools/mailstack.py: a private, loopback-only Dovecot for tests.
instance_name = {instance_name}
base_dir = {dovecot_run}
state_dir = {dovecot_state}
log_path = {dovecot_log}
protocols = imap lmtp
listen = {host}
shutdown_clients = yes

ssl = yes
ssl_cert = <{server_cert}
ssl_key = <{server_key}
{ssl_dh_line}
ssl_min_protocol = TLSv1.2

# Tests send passwords in clear on purpose, and test wrong passwords without waiting.
disable_plaintext_auth = no
auth_mechanisms = plain login xoauth2 oauthbearer
auth_failure_delay = 0
auth_default_realm = {domain}
auth_verbose = yes
# No cache: every OAuth2 login asks the token service, so a revoked token fails at once.
auth_cache_size = 0
# Dovecot's default, plus what LOGIN_ALIASES need (a space, braces, the bytes of UTF-8 "ü");
# stated because the oauth2 passdb's mailbox check (DOVECOT_OAUTH2_CONF) relies on it: no
# wildcard (* ?) or list separator (,) can be part of a login name.
auth_username_chars = abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ01234567890.-_@ {{}}ü

# auth_failure_delay = 0 still leaves Dovecot 2.3.19 answering failures from a 500 ms timer
# unless the request carries `nodelay`.  A failing passdb's own fields are rolled back, so
# this first passdb adds `nodelay` and passes on (noauthenticate) without deciding anything.
passdb {{
  driver = static
  args = nopassword=y noauthenticate=y nodelay=y
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {users_file}
  mechanisms = plain login
}}
# Bearer tokens (XOAUTH2, OAUTHBEARER) are introspected by the token service ({oauth2_conf}).
# Only these two mechanisms reach it, so a wrong password never waits for HTTP.
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {oauth2_conf}
}}
# Every mailbox, also those without a password (OAUTH_USERS).
userdb {{
  driver = passwd-file
  args = {userdb_file}
  default_fields = uid={mail_user} gid={mail_group} home={mail_root}/%d/%n
}}

# Mailboxes belong to the ordinary `mail` user: Dovecot refuses to deliver as root.
first_valid_uid = {mail_uid}
mail_location = maildir:~/Maildir
namespace inbox {{
  inbox = yes
{inbox_extra}}}

service imap-login {{
  inet_listener imap {{
    port = {imap_starttls}
  }}
  inet_listener imaps {{
    port = {imaps}
    ssl = yes
  }}
}}

# Same login process, ssl forced off: no STARTTLS in CAPABILITY, LOGIN in clear.
service imap-login-plain {{
  executable = imap-login -o ssl=no
  protocol = imap
  type = login
  user = $default_login_user
  chroot = login
  inet_listener imap_plain {{
    port = {imap_plain}
  }}
}}

# auth_failure_delay is only half of it: anvil also adds 2, 4, 8, 15 s per failing IP.
# Without its auth-penalty socket, Dovecot skips the penalty altogether.
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}

service lmtp {{
  unix_listener {spool}/private/dovecot-lmtp {{
    mode = 0600
    user = postfix
    group = postfix
  }}
}}

service auth {{
  unix_listener {spool}/private/auth {{
    mode = 0660
    user = postfix
    group = postfix
  }}
}}

protocol lmtp {{
  postmaster_address = postmaster@{domain}
{lmtp_extra}}}

# Load tests run dozens of sensors on one mailbox from one address (Dovecot's default is 10).
protocol imap {{
  mail_max_userip_connections = 200
}}
{delivery_conf}"""

# Dovecot's oauth2 passdb (args file).  Dovecot 2.3.19 POSTs `token=...` to the introspection URL
# (RFC 7662 style; the URL is not %-expanded, and an unexpanded %u in it makes the auth process
# panic) and never says who is logging in.  So the login name is checked in two steps:
# - username_format = %Ld: the answer's `username` must be in the login's domain;
# - the answer's `mailboxes` (",a@d,b@d,": the mailboxes this token may open: a user token its
#   own, an app-only token those the app was granted) must contain the login, else allow_nets
#   becomes a network no client has and the login fails like a bad token.  A missing `mailboxes`
#   fails too.
# `active` and `scope` (MAIL_SCOPE must be one of its words) come from the answer; Dovecot checks
# no expiry itself.  pass_attrs values may not contain spaces or a top-level ':'.
DOVECOT_OAUTH2_CONF = """\
# Generated by tools/mailstack.py.
introspection_mode = post
introspection_url = {oauth2_introspection_url}
tls_ca_cert_file = {ca_file}
username_attribute = username
username_format = %Ld
active_attribute = active
active_value = true
scope = {mail_scope}
pass_attrs = allow_nets=%{{if;%{{oauth2:mailboxes}};*;*,%Lu,*;127.0.0.0/8;192.0.2.0/32}}
timeout_msecs = {oauth2_timeout_ms}
"""

# Extensions of a certificate issued by the throwaway CA (Python 3.13's strict verification
# wants the key identifiers and a critical basicConstraints).
TLS_LEAF_EXTENSIONS = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = {san}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
"""

POLICY_RC_D_SCRIPT = """\
#!/bin/sh
# Temporary, written by tools/mailstack.py during apt-get install: start no services.
exit 101
"""


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _deliverystack() -> Any:
    """tools/deliverystack.py, only for stacks with delivery=True."""
    import importlib.util

    name = "tools_deliverystack"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("deliverystack.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _run(cmd: list[str], input_text: str = "", env: dict[str, str] | None = None) -> str:
    """Run a short command; raise with its output if it fails.

    Output goes to a temporary file, not a pipe: a daemon started underneath (a package's
    postinst, say) would inherit a pipe and keep it open, and reading it would never end.
    """
    with tempfile.TemporaryFile() as output:
        result = subprocess.run(cmd, input=input_text.encode(), stdout=output, stderr=output, env=env, check=False)
        output.seek(0)
        text = output.read().decode(errors="replace")
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}):\n{text}")
    return text


def _launch(cmd: list[str], log: Path) -> int:
    """Start a daemon that forks into the background; its stdout and stderr go to `log`."""
    with open(log, "ab") as output:
        return subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            check=False,
            start_new_session=True,
        ).returncode


def _mkdir(path: Path, mode: int = 0o755, owner: str | None = None) -> None:
    """Create a directory (if missing) with exactly this mode, whatever the umask."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)
    if owner:
        user = pwd.getpwnam(owner)
        os.chown(path, user.pw_uid, user.pw_gid)


def _write(path: Path, text: str, mode: int = 0o644, backdate: bool = False) -> None:
    """Replace a file's content; optionally make it look a minute old."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.chmod(mode)
    tmp.replace(path)
    if backdate:
        # Postfix only trusts a main.cf that is about a second old, and stalls until it is.
        old = time.time() - 60
        os.utime(path, (old, old))


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _proc_stat(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name: [state, ppid, ...]; [] if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _alive(pid: int) -> bool:
    stat = _proc_stat(pid)
    return bool(stat) and stat[0] != "Z"


def _all_pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _process_tree(roots: list[int]) -> set[int]:
    """The given pids and all their descendants, as they are now."""
    children: dict[int, list[int]] = {}
    for pid in _all_pids():
        stat = _proc_stat(pid)
        if len(stat) > 1:
            children.setdefault(int(stat[1]), []).append(pid)
    found: set[int] = set()
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return found


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _listening_ports(host: str) -> set[int]:
    """TCP ports in the LISTEN state on `host` (or on all addresses), from /proc/net/tcp."""
    any_address = "00000000"
    wanted = {f"{int.from_bytes(socket.inet_aton(host), sys.byteorder):08X}", any_address}
    ports = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        address, port = fields[1].split(":")
        if fields[3] == "0A" and address in wanted:  # 0A: TCP_LISTEN
            ports.add(int(port, 16))
    return ports


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no such file)"


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive flock, so that parallel callers take turns."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------------
# Certificates
# --------------------------------------------------------------------------------------------


def make_ca(tls_dir: Path) -> None:
    """A throwaway CA: tls_dir/ca.pem and its key tls_dir/ca.key."""
    _run([
        "openssl", "req", "-x509", *EC_KEY, "-sha256", "-days", "3650",
        "-keyout", str(tls_dir / "ca.key"), "-out", str(tls_dir / "ca.pem"),
        "-subj", "/O=prtg-roundtrip/CN=prtg-roundtrip throwaway test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    ])  # fmt: skip
    (tls_dir / "ca.key").chmod(0o600)
    (tls_dir / "ca.pem").chmod(0o644)


def issue_certificate(tls_dir: Path, name: str, san: str = SERVER_SAN, days: int = 825) -> Path:
    """Issue tls_dir/NAME.pem (key NAME.key) from the CA in tls_dir, e.g. san="DNS:wrong.test".

    The stack's own certificate is issue_certificate(tls_dir, "server"); tests may mint others
    (a wrong host name, a short life) the same way.  Returns the certificate's path.
    """
    key, csr, cert = (tls_dir / f"{name}.{ext}" for ext in ("key", "csr", "pem"))
    extensions = tls_dir / f"{name}.ext"
    first_name = san.split(",")[0].split(":", 1)[-1].strip()
    _run([
        "openssl", "req", "-new", *EC_KEY, "-keyout", str(key), "-out", str(csr),
        "-subj", f"/O=prtg-roundtrip/CN={first_name}",
    ])  # fmt: skip
    _write(extensions, TLS_LEAF_EXTENSIONS.format(san=san))
    _run([
        "openssl", "x509", "-req", "-sha256", "-days", str(days), "-in", str(csr),
        "-CA", str(tls_dir / "ca.pem"), "-CAkey", str(tls_dir / "ca.key"), "-CAcreateserial",
        "-extfile", str(extensions), "-out", str(cert),
    ])  # fmt: skip
    key.chmod(0o600)
    cert.chmod(0o644)
    return cert


# --------------------------------------------------------------------------------------------
# Installing the packages
# --------------------------------------------------------------------------------------------


def packages_installed(required: list[str] | None = None) -> bool:
    return all(os.path.exists(path) for path in (required or REQUIRED_FILES))


def install_packages(packages: list[str] | None = None, required: list[str] | None = None) -> None:
    """apt-get install the servers (once), leaving the system-wide instances unconfigured and down."""
    packages, required = packages or APT_PACKAGES, required or REQUIRED_FILES
    if packages_installed(required):
        return
    if os.geteuid() != 0:
        raise RuntimeError(f"Postfix/Dovecot are not installed and only root can install {packages}")
    with _file_lock(Path(INSTALL_LOCK)):
        if packages_installed(required):
            return
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        _run(["debconf-set-selections"], input_text=POSTFIX_PRESEED, env=env)
        apt = ["apt-get", "-q", "-y", "-o", "DPkg::Lock::Timeout=300"]
        _run([*apt, "update"], env=env)
        with _services_kept_down():
            _run([*apt, "install", "--no-install-recommends", *packages], env=env)
        _stop_system_services()
        missing = [path for path in required if not os.path.exists(path)]
        if missing:
            raise RuntimeError(f"apt-get install finished, but these are still missing: {missing}")


@contextlib.contextmanager
def _services_kept_down() -> Iterator[None]:
    """A temporary policy-rc.d, so that package scripts start no system-wide daemon."""
    if os.path.exists(POLICY_RC_D):
        yield  # the machine already has a policy: leave it alone
        return
    _write(Path(POLICY_RC_D), POLICY_RC_D_SCRIPT, mode=0o755)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(POLICY_RC_D)


def _stop_system_services() -> None:
    """If a package started the system-wide daemons anyway (ports 25, 143, 993), stop them."""
    for pid_file, command in [
        ("/run/dovecot/master.pid", ["dovecot", "stop"]),
        ("/var/spool/postfix/pid/master.pid", ["postfix", "stop"]),
    ]:
        pid = _read_pid(Path(pid_file))
        if pid and _alive(pid):
            with contextlib.suppress(RuntimeError):
                _run(command)


# --------------------------------------------------------------------------------------------
# The stack
# --------------------------------------------------------------------------------------------


class MailStack:
    """One private Postfix + Dovecot pair, living in ``base_dir`` on ports ``port_base + N``."""

    def __init__(
        self, base_dir: str | None = None, port_base: int | None = None, oauth2_url: str | None = None,
        delivery: bool = False,
    ) -> None:
        self.dir = Path(base_dir or os.environ.get(ENV_DIR) or DEFAULT_DIR).resolve()
        self.postfix_dir = self.dir / "postfix"  # main.cf, master.cf
        self.spool = self.dir / "spool"  # Postfix's queue; Dovecot's LMTP and auth sockets
        self.dovecot_conf = self.dir / "dovecot" / "dovecot.conf"
        self.dovecot_run = self.dir / "dovecot" / "run"  # Dovecot's base_dir
        self.users_file = self.dir / "dovecot" / "users"  # passdb: password users only
        self.userdb_file = self.dir / "dovecot" / "userdb"  # every mailbox, no passwords
        self.oauth2_conf = self.dir / "dovecot" / "oauth2.conf.ext"
        self.tls_dir = self.dir / "tls"
        self.log_dir = self.dir / "log"
        self.mail_root = self.dir / "mail"
        self.state_file = self.dir / "stack.json"
        self.port_base = self._choose_port_base(port_base)
        # delivery=True: Sieve, a \\Junk folder and SpamAssassin (tools/deliverystack.py), on ports
        # of its own, so that it runs beside an ordinary stack of the same port base.
        self.delivery = _deliverystack().DeliveryParts(self.dir, self.port_base, HOST) if delivery else None
        offsets = _deliverystack().DELIVERY_PORT_OFFSETS if delivery else PORT_OFFSETS
        self.ports = {name: self.port_base + offset for name, offset in offsets.items()}
        self.token_service_port = self.port_base + TOKEN_SERVICE_OFFSET
        # The token service's base URL: Dovecot introspects at <oauth2_url>/introspect.
        self.oauth2_url = (oauth2_url or f"https://{HOST}:{self.token_service_port}").rstrip("/")

    # ---- public API -----------------------------------------------------------------------

    def install(self) -> None:
        """Install the Debian packages if they are missing (fast no-op otherwise)."""
        install_packages()
        if self.delivery is not None:
            install_packages(_deliverystack().APT_PACKAGES, _deliverystack().REQUIRED_FILES)

    def start(self) -> dict[str, object]:
        """Start the stack, or find it running; return its info.  Idempotent."""
        self.install()
        self._check_dir()
        _mkdir(self.dir)
        with _file_lock(self.dir / ".lock"):
            if self.running():
                self._check_same_port_base()
                self._check_same_oauth2_url()
                return self.info()
            self._stop_locked()  # half a stack (one daemon died) is restarted whole
            self._check_ports_free()
            self._prepare()
            try:
                if self.delivery is not None:
                    self.delivery.start()  # spamd: Sieve hands it every delivered message
                self._start_dovecot()  # first: Postfix delivers into it at once
                self._start_postfix()
                self._wait_for_ports()
                if self.delivery is not None:
                    self.delivery.wait(_port_open)
            except BaseException:
                self._stop_locked()
                raise
        return self.info()

    def stop(self) -> None:
        """Stop both daemons and wait until none of their processes is left.  Idempotent."""
        if not self.dir.is_dir():
            self._stop_locked()  # DIR removed under a running stack: find it by /proc
            return
        with _file_lock(self.dir / ".lock"):
            self._stop_locked()

    def running(self) -> bool:
        daemons = self._postfix_pid() is not None and self._dovecot_pid() is not None
        return daemons and (self.delivery is None or self.delivery.running())

    def info(self) -> dict[str, object]:
        """Everything a client needs: ports, users, CA, where mail, config and logs are."""
        return {
            "dir": str(self.dir),
            "port_base": self.port_base,
            "running": self.running(),
            "ca_file": str(self.tls_dir / "ca.pem"),
            "ca_key": str(self.tls_dir / "ca.key"),
            "domain": DOMAIN,
            "host": HOST,
            "ports": {name: {"host": HOST, "port": port} for name, port in self.ports.items()},
            "users": {
                name: {"address": f"{name}@{DOMAIN}", "login": f"{name}@{DOMAIN}", "password": password}
                for name, password in USERS.items()
            },
            "maildir": {name: str(self.maildir(name)) for name in [*USERS, *OAUTH_USERS]},
            # other login names of existing mailboxes (LOGIN_ALIASES): UTF-8, a space, braces
            "aliases": {
                key: {"login": login, "password": password, "mailbox": mailbox}
                for key, (login, password, mailbox) in LOGIN_ALIASES.items()
            },
            "oauth2": {
                # Where Dovecot expects the token service (tools/tokenservice.py) to listen.
                "url": self.oauth2_url,
                "token_url": f"{self.oauth2_url}/token",
                "introspection_url": self._introspection_url(),
                "port": self.token_service_port,
                "scope": MAIL_SCOPE,
                "mechanisms": ["XOAUTH2", "OAUTHBEARER"],
                # Mailboxes without a password; every user above may log in with a token too.
                "users": {name: {"address": f"{name}@{DOMAIN}", "login": f"{name}@{DOMAIN}"} for name in OAUTH_USERS},
                "server_cert": str(self.tls_dir / "server.pem"),
                "server_key": str(self.tls_dir / "server.key"),
            },
            "delivery": self.delivery.info() if self.delivery is not None else None,
            "postfix_config": str(self.postfix_dir),
            "dovecot_config": str(self.dovecot_conf),
            "logs": {
                "postfix": str(self.log_dir / "postfix.log"),
                "dovecot": str(self.log_dir / "dovecot.log"),
                "postfix_stderr": str(self.log_dir / "postfix.stderr"),
                "dovecot_stderr": str(self.log_dir / "dovecot.stderr"),
            },
        }

    def flush_queue(self) -> None:
        """Make this Postfix retry deferred mail now (postqueue -f)."""
        _run(["postqueue", "-c", str(self.postfix_dir), "-f"])

    def maildir(self, user: str) -> Path:
        return self.mail_root / DOMAIN / user / "Maildir"

    # ---- port base --------------------------------------------------------------------------

    def _choose_port_base(self, port_base: int | None) -> int:
        """Argument, else environment, else what this directory last ran with, else 12000."""
        if port_base is not None:
            return int(port_base)
        if os.environ.get(ENV_PORT_BASE):
            return int(os.environ[ENV_PORT_BASE])
        saved = self._saved_port_base()
        return saved if saved is not None else DEFAULT_PORT_BASE

    def _saved_port_base(self) -> int | None:
        try:
            state = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None
        saved = state.get("port_base") if isinstance(state, dict) else None
        return saved if isinstance(saved, int) else None

    def _check_same_port_base(self) -> None:
        saved = self._saved_port_base()
        if saved != self.port_base:
            raise RuntimeError(
                f"the stack in {self.dir} is already running with port base {saved}, not "
                f"{self.port_base}: stop it first"
            )

    def _check_same_oauth2_url(self) -> None:
        try:
            saved = json.loads(self.state_file.read_text()).get("oauth2_url")
        except (OSError, ValueError, AttributeError):
            saved = None
        if saved is not None and saved != self.oauth2_url:
            raise RuntimeError(
                f"the stack in {self.dir} is already running with the token service at {saved}, not "
                f"{self.oauth2_url}: stop it first"
            )

    def _introspection_url(self) -> str:
        """Where Dovecot POSTs `token=...` (see DOVECOT_OAUTH2_CONF)."""
        return f"{self.oauth2_url}/introspect"

    def _check_ports_free(self) -> None:
        busy = {name: port for name, port in self.ports.items() if _port_open(HOST, port)}
        if busy:
            raise RuntimeError(
                f"ports already in use on {HOST}: {busy} (another stack with an overlapping "
                "port base?): choose another --port-base"
            )

    # ---- preparing the directory ----------------------------------------------------------

    def _check_dir(self) -> None:
        if os.geteuid() != 0:
            raise RuntimeError("the mail stack must be started as root")
        if len(str(self.dir)) > MAX_DIR_LENGTH:
            raise RuntimeError(
                f"{self.dir} is longer than {MAX_DIR_LENGTH} characters, too long for the unix "
                "sockets inside it: use a shorter directory"
            )
        for parent in self.dir.parents:
            if parent.exists() and not os.stat(parent).st_mode & 0o001:
                raise RuntimeError(
                    f"{parent} is not searchable by other users: Postfix, Dovecot and the `mail` "
                    f"user could not reach {self.dir}; use another directory or chmod o+x {parent}"
                )

    def _prepare(self) -> None:
        """Write every config file; make what is missing (CA, certificates, queue, Maildirs)."""
        for path in (self.postfix_dir, self.dovecot_conf.parent, self.tls_dir, self.log_dir):
            _mkdir(path)
        _mkdir(self.dir / "dovecot" / "state", 0o750)
        if not (self.tls_dir / "ca.pem").exists() or not (self.tls_dir / "ca.key").exists():
            make_ca(self.tls_dir)
            issue_certificate(self.tls_dir, "server")
        elif not (self.tls_dir / "server.pem").exists() or not (self.tls_dir / "server.key").exists():
            issue_certificate(self.tls_dir, "server")
        values = self._template_values()
        if self.delivery is not None:
            self.delivery.prepare(_write, _mkdir)
        self._write_dovecot_config(values)
        if self.delivery is not None:
            self.delivery.compile_sieve(self.dovecot_conf)
        self._write_postfix_config(values)
        self._make_mail_store()
        self._make_postfix_queue()
        _write(self.state_file, json.dumps({"port_base": self.port_base, "oauth2_url": self.oauth2_url}) + "\n")

    def _template_values(self) -> dict[str, object]:
        mail = pwd.getpwnam("mail")
        dh_file = Path("/usr/share/dovecot/dh.pem")
        return {
            **self.ports,
            "host": HOST,
            "domain": DOMAIN,
            "spool": self.spool,
            "postfix_data": self.dir / "postfix-data",
            "postfix_log": self.log_dir / "postfix.log",
            "log_dir": self.log_dir,
            "syslog_name": f"postfix-rt{self.port_base}",
            "mailbox_map": ", ".join(f"{user}@{DOMAIN}=ok" for user in [*USERS, *OAUTH_USERS]),
            "server_cert": self.tls_dir / "server.pem",
            "server_key": self.tls_dir / "server.key",
            "instance_name": f"dovecot-rt{self.port_base}",
            "dovecot_run": self.dovecot_run,
            "dovecot_state": self.dir / "dovecot" / "state",
            "dovecot_log": self.log_dir / "dovecot.log",
            "ssl_dh_line": f"ssl_dh = <{dh_file}" if dh_file.exists() else "",
            "users_file": self.users_file,
            "userdb_file": self.userdb_file,
            "oauth2_conf": self.oauth2_conf,
            "oauth2_introspection_url": self._introspection_url(),
            "ca_file": self.tls_dir / "ca.pem",
            "mail_scope": MAIL_SCOPE,
            "oauth2_timeout_ms": OAUTH2_TIMEOUT_MS,
            "mail_user": mail.pw_name,
            "mail_group": grp.getgrgid(mail.pw_gid).gr_name,
            "mail_uid": mail.pw_uid,
            "mail_root": self.mail_root,
            "lmtp_extra": "",
            "inbox_extra": "",
            "delivery_conf": "",
            "smtp_plain_extra": "",
            "master_extra": "",
            "main_extra": "",
            **(self.delivery.template_values(f"postfix-rt{self.port_base}") if self.delivery is not None else {}),
        }

    def _write_dovecot_config(self, values: dict[str, object]) -> None:
        # passwd-file lines: user:password:uid:gid:gecos:home:shell:extra (uid... from userdb)
        users = "".join(f"{name}@{DOMAIN}:{password}::::::\n" for name, password in USERS.items())
        users += "".join(f"{login}:{password}::::::user={mailbox}@{DOMAIN}\n"
                         for login, password, mailbox in LOGIN_ALIASES.values())
        userdb = "".join(f"{name}@{DOMAIN}:::::::\n" for name in [*USERS, *OAUTH_USERS])
        dovecot_gid = grp.getgrnam("dovecot").gr_gid
        for path, text in ((self.users_file, users), (self.userdb_file, userdb)):
            _write(path, text, mode=0o640)
            os.chown(path, 0, dovecot_gid)  # read by the auth process
        _write(self.oauth2_conf, DOVECOT_OAUTH2_CONF.format(**values))
        _write(self.dovecot_conf, DOVECOT_CONF.format(**values))

    def _write_postfix_config(self, values: dict[str, object]) -> None:
        _write(self.postfix_dir / "main.cf", POSTFIX_MAIN_CF.format(**values), backdate=True)
        _write(self.postfix_dir / "master.cf", POSTFIX_MASTER_CF.format(**values), backdate=True)

    def _make_mail_store(self) -> None:
        """DIR/mail/roundtrip.test/USER/Maildir/{cur,new,tmp}, all owned by `mail`."""
        _mkdir(self.mail_root, owner="mail")
        _mkdir(self.mail_root / DOMAIN, owner="mail")
        for user in [*USERS, *OAUTH_USERS]:
            maildir = self.maildir(user)
            if (maildir / "tmp").is_dir():
                continue
            _mkdir(maildir.parent, owner="mail")
            for path in (maildir, maildir / "cur", maildir / "new", maildir / "tmp"):
                _mkdir(path, 0o700, owner="mail")

    def _make_postfix_queue(self) -> None:
        """The queue must exist before Dovecot puts its sockets into spool/private."""
        _mkdir(self.dir / "postfix-data", 0o700, owner="postfix")
        if not (self.spool / "private").is_dir():
            _mkdir(self.spool)
            _run(["postfix", "-c", str(self.postfix_dir), "check"])  # creates the queue

    # ---- the daemons ----------------------------------------------------------------------

    def _start_dovecot(self) -> None:
        # A socket left over from an older config would make auth log an error.
        with contextlib.suppress(FileNotFoundError):
            (self.dovecot_run / "anvil-auth-penalty").unlink()
        # Dovecot's master keeps the stderr it was started with for its whole life: give it a
        # file, never a pipe (whoever read the pipe would wait forever).
        if _launch(["dovecot", "-c", str(self.dovecot_conf)], self.log_dir / "dovecot.stderr") != 0:
            raise RuntimeError("Dovecot did not start\n" + self._logs_excerpt())

    def _start_postfix(self) -> None:
        if _launch(["postfix", "-c", str(self.postfix_dir), "start"], self.log_dir / "postfix.stderr") != 0:
            raise RuntimeError("Postfix did not start\n" + self._logs_excerpt())

    def _wait_for_ports(self) -> None:
        """Until every port is listening, i.e. accepts connections.

        Asked of the kernel rather than by connecting: a test connection would start login
        processes, and one still starting when Dovecot is stopped holds the stop up for 6 s.
        """
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            listening = _listening_ports(HOST)
            waiting = {name: port for name, port in self.ports.items() if port not in listening}
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"not accepting connections after {START_TIMEOUT:.0f} s: {waiting}\n" + self._logs_excerpt()
                )
            time.sleep(0.01)

    def _stop_locked(self) -> None:
        """SIGTERM to both masters (what `postfix stop` and `dovecot stop` send), then wait.

        Leftovers are killed after STOP_TIMEOUT.  Dovecot's master needs about a second: it
        stops its log process last, from a timer.
        """
        if self.delivery is not None or (self.dir / "spamassassin" / "spamd.pid").exists():
            (self.delivery or _deliverystack().DeliveryParts(self.dir, self.port_base, HOST)).stop()
        masters = self._all_masters()
        processes = _process_tree(masters)
        for pid in masters:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while any(_alive(pid) for pid in processes) and time.monotonic() < deadline:
            time.sleep(0.01)
        for pid in processes:
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def _postfix_pid(self) -> int | None:
        pid = _read_pid(self.spool / "pid" / "master.pid")
        return pid if pid and self._is_postfix_master(pid) else None

    def _dovecot_pid(self) -> int | None:
        pid = _read_pid(self.dovecot_run / "master.pid")
        return pid if pid and self._is_dovecot_master(pid) else None

    def _all_masters(self) -> list[int]:
        """This stack's masters, found in /proc: also those whose pid files are gone."""
        return [pid for pid in _all_pids() if self._is_postfix_master(pid) or self._is_dovecot_master(pid)]

    def _is_postfix_master(self, pid: int) -> bool:
        """Postfix's `master` working in this stack's queue directory (a stale pid is not)."""
        try:
            command = Path(f"/proc/{pid}/comm").read_text().strip()
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            return False
        spool = str(self.spool)
        return command == "master" and cwd in (spool, f"{spool} (deleted)") and _alive(pid)

    def _is_dovecot_master(self, pid: int) -> bool:
        """Dovecot's master started as `dovecot -c <this stack's dovecot.conf>`."""
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        is_dovecot = os.path.basename(argv[0]) == b"dovecot"
        return is_dovecot and str(self.dovecot_conf).encode() in argv and _alive(pid)

    def _logs_excerpt(self) -> str:
        names = ("postfix.stderr", "postfix.log", "dovecot.stderr", "dovecot.log")
        return "\n".join(f"--- {self.log_dir / name}\n{_tail(self.log_dir / name)}" for name in names)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Run a private Postfix + Dovecot on loopback for the prtg-roundtrip tests and demo."
    )
    parser.add_argument("command", choices=["install", "start", "stop", "status", "info"])
    parser.add_argument("--dir", help=f"stack directory (default: ${ENV_DIR} or {DEFAULT_DIR})")
    parser.add_argument(
        "--port-base", type=int, help=f"ports are base + offset (default: ${ENV_PORT_BASE} or {DEFAULT_PORT_BASE})"
    )
    parser.add_argument(
        "--oauth2-url", help="the token service's base URL (default: https://127.0.0.1:<port base + 443>)"
    )
    parser.add_argument("--delivery", action="store_true",
                        help="with Sieve, a \\Junk folder and SpamAssassin (tools/deliverystack.py), on its own ports")
    args = parser.parse_args(argv)
    stack = MailStack(args.dir, args.port_base, args.oauth2_url, delivery=args.delivery)
    try:
        if args.command == "install":
            stack.install()
        elif args.command == "start":
            print(json.dumps(stack.start(), indent=2))
        elif args.command == "stop":
            stack.stop()
        elif args.command == "status":
            running = stack.running()
            print("running" if running else "stopped")
            return 0 if running else 1
        else:
            print(json.dumps(stack.info(), indent=2))
    except RuntimeError as error:
        print(f"mailstack: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
