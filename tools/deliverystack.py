#!/usr/bin/env python3
"""The deliverability parts of a test mail stack: Sieve, Junk, SpamAssassin, DKIM, DMARC, DNS.

``MailStack(DIR, BASE, delivery=True)`` (tools/mailstack.py) adds these to its Postfix and
Dovecot; a stack without ``delivery`` stays exactly as it was (and as fast to start).  Real
components, from Debian's packages (installed by ``install()``, called by the stack's install):

- Dovecot's LMTP runs Sieve (``dovecot-sieve``, ``mail_plugins = sieve``).  Every user has a
  ``Junk`` folder with ``special_use = \\Junk`` (created on first use), so IMAP offers
  SPECIAL-USE and LIST shows the attribute.
- A global ``sieve_before`` script pipes every delivered message through SpamAssassin
  (``vnd.dovecot.filter`` running ``spamc`` against a private ``spamd``) and files what comes
  back with ``X-Spam-Flag: YES`` into ``Junk``.  SpamAssassin runs with only this stack's own
  rules (no network tests, no Bayes): a message whose subject holds ``SPAM_WORD`` scores 20 and
  is spam; everything else scores 0.  SpamAssassin writes ``X-Spam-Status`` (with ``score=``) and
  ``X-Spam-Score`` into every message.
- DKIM, SPF and DMARC: a real DNS server (``nsd``) serves the zone ``roundtrip.test`` on port 53
  of a loopback address of this stack's own (``dns_address``: 127.53.x.y from the port base),
  with an SPF record (``v=spf1 ip4:127.0.0.0/8 -all``), a DMARC policy (``p=reject``) and the
  DKIM key made at first start (``opendkim-genkey``, selector ``test``).  Mail sent to the
  ``smtp_plain`` port is signed by OpenDKIM (milter; daemon name ``signer``) and handed by
  Postfix's ``content_filter`` to a second smtpd (``smtp_verify``), where OpenDKIM verifies the
  signature and OpenDMARC checks SPF itself and DMARC (milters), each adding an
  ``Authentication-Results: mail.roundtrip.test; ...`` field.  OpenDKIM (libunbound) is pointed
  at the DNS server by an unbound configuration (``ResolverConfiguration``); OpenDMARC (libspf2,
  the system resolver) runs under ``unshare --mount`` with this stack's resolv.conf bind-mounted
  on /etc/resolv.conf, so the machine's own resolver configuration is never touched.
- A message whose subject holds ``FORGE_WORD`` gets, from Sieve's ``editheader``, an
  ``Authentication-Results`` field with the foreign authserv-id ``FORGED_AUTHSERV_ID`` appended
  at the bottom of its header, where a forger's own field would sit (the receiving server's
  fields are added on top).

Ports (offsets from the stack's port base, none shared with mailstack.PORT_OFFSETS or the token
service's +443): the delivery stack's Postfix and Dovecot use ``DELIVERY_PORT_OFFSETS`` (with
``smtp_verify``, the second smtpd), spamd ``SPAMD_OFFSET``, the OpenDKIM and OpenDMARC milters
``DKIM_OFFSET`` and ``DMARC_OFFSET``.  Logs: ``DIR/log/{spamd,nsd,opendkim,opendmarc}.log``;
Sieve's in Dovecot's log, the milters' verdicts in the messages' headers.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

# The delivery stack's own ports: offsets in 600..799, which the ordinary stack does not use.
DELIVERY_PORT_OFFSETS = {
    "smtp_plain": 625,
    "smtp_starttls": 626,
    "smtps": 665,
    "submission": 687,
    "imap_plain": 643,
    "imap_starttls": 644,
    "imaps": 693,
    "smtp_verify": 627,  # the second smtpd: DKIM verified, SPF and DMARC checked (milters)
}
SPAMD_OFFSET = 783
DKIM_OFFSET = 781
DMARC_OFFSET = 782
AUTHSERV_ID = "mail.roundtrip.test"  # what OpenDKIM and OpenDMARC write as authserv-id
DOMAIN = "roundtrip.test"
DKIM_SELECTOR = "test"

SPAM_WORD = "PRTGSPAMTEST"  # in a subject: SpamAssassin scores the message as spam, Sieve files it in Junk
FORGE_WORD = "PRTGFORGEDAR"  # in a subject: Sieve appends a forged Authentication-Results field
FORGED_AUTHSERV_ID = "forged.example"
JUNK = "Junk"

APT_PACKAGES = ["dovecot-sieve", "spamassassin", "spamc", "spamd", "opendkim", "opendkim-tools", "opendmarc", "nsd"]
REQUIRED_FILES = [
    "/usr/lib/dovecot/modules/lib90_sieve_plugin.so",
    "/usr/lib/dovecot/modules/sieve/lib90_sieve_extprograms_plugin.so",
    "/usr/bin/sievec",
    "/usr/bin/spamc",
    "/usr/sbin/spamd",
    "/usr/sbin/opendkim",
    "/usr/sbin/opendkim-genkey",
    "/usr/sbin/opendmarc",
    "/usr/sbin/nsd",
    "/usr/bin/unshare",
]
START_TIMEOUT = 60.0  # spamd parses its rules before it listens: a few seconds
STOP_TIMEOUT = 10.0

# Inside `protocol lmtp { }` of the stack's dovecot.conf.
DOVECOT_LMTP = "  mail_plugins = $mail_plugins sieve\n"

# Inside `namespace inbox { }`.
DOVECOT_INBOX = """\
  mailbox {junk} {{
    special_use = \\Junk
    auto = create
  }}
"""

# Appended to dovecot.conf.
DOVECOT_PLUGIN = """\
# Deliverability (tools/deliverystack.py): Sieve before every delivery, SpamAssassin as a filter.
plugin {{
  sieve = file:{sieve_dir}/users/%n;active={sieve_dir}/users/%n.sieve
  sieve_before = {sieve_dir}/before.sieve
  sieve_plugins = sieve_extprograms
  sieve_global_extensions = +vnd.dovecot.filter
  sieve_extensions = +editheader
  sieve_filter_bin_dir = {sieve_dir}/bin
  sieve_filter_exec_timeout = 30s
}}
"""

SIEVE_BEFORE = """\
# Generated by tools/deliverystack.py.
require ["vnd.dovecot.filter", "fileinto", "editheader"];

filter "spamc";

if header :contains "Subject" "{forge_word}" {{
  addheader :last "Authentication-Results" "{forged_id}; spf=fail smtp.mailfrom=forged.example; dkim=fail; dmarc=fail";
}}

if header :is "X-Spam-Flag" "YES" {{
  fileinto "{junk}";
  stop;
}}
"""

SPAMC_FILTER = """\
#!/bin/sh
# Generated by tools/deliverystack.py: the message on stdin through this stack's spamd.
exec /usr/bin/spamc -d {host} -p {spamd_port} -t 30 -s 1048576
"""

# SpamAssassin's whole configuration (--configpath): no stock rules, no network, no Bayes.
SPAMASSASSIN_CF = """\
# Generated by tools/deliverystack.py.
loadplugin Mail::SpamAssassin::Plugin::Check
util_rb_tld test example com
required_score 5.0
report_safe 0
use_bayes 0
bayes_auto_learn 0
dns_available no
skip_rbl_checks 1
lock_method flock

header PRTG_RT_SPAM_WORD Subject =~ /\\b{spam_word}\\b/
describe PRTG_RT_SPAM_WORD The prtg-roundtrip test stack's spam word is in the subject
score PRTG_RT_SPAM_WORD 20.0

clear_headers
add_header spam Flag _YESNOCAPS_
add_header all Status _YESNO_, score=_SCORE_ required=_REQD_ tests=_TESTS_ autolearn=_AUTOLEARN_ version=_VERSION_
add_header all Score _SCORE_
"""


# Postfix (mailstack's POSTFIX_MAIN_CF {main_extra}, POSTFIX_MASTER_CF {smtp_plain_extra} and
# {master_extra}): the smtp_plain port signs and passes the mail on to smtp_verify, which checks.
POSTFIX_MAIN = """\
# Deliverability (tools/deliverystack.py): a milter that is down lets mail through unchecked.
milter_default_action = accept
milter_protocol = 6
"""
POSTFIX_SMTP_PLAIN = """\
  -o smtpd_milters=inet:{host}:{dkim_port}
  -o milter_macro_daemon_name=signer
  -o content_filter=smtp:[{host}]:{smtp_verify}
"""
POSTFIX_MASTER = """\
{host}:{smtp_verify} inet n       -      n      -      -       smtpd
  -o syslog_name={syslog_name}/smtp_verify
  -o smtpd_tls_security_level=none
  -o content_filter=
  -o smtpd_milters=inet:{host}:{dkim_port},inet:{host}:{dmarc_port}
  -o milter_macro_daemon_name=verifier
smtp       unix  -       -       n       -       -       smtp
"""

NSD_CONF = """\
# Generated by tools/deliverystack.py: the zone {domain} for this stack's milters only.
server:
    ip-address: {dns_address}
    port: 53
    do-ip6: no
    username: ""
    chroot: ""
    zonesdir: "{dns_dir}"
    pidfile: "{dns_dir}/nsd.pid"
    database: ""
    zonelistfile: "{dns_dir}/zone.list"
    xfrdfile: "{dns_dir}/xfrd.state"
    xfrdir: "{dns_dir}"
    logfile: "{log_dir}/nsd.log"
    verbosity: 1
    server-count: 1
    hide-version: yes
remote-control:
    control-enable: no
zone:
    name: {domain}
    zonefile: {domain}.zone
"""

ZONE = """\
; Generated by tools/deliverystack.py.
$ORIGIN {domain}.
$TTL 60
@        IN SOA ns.{domain}. hostmaster.{domain}. ( 1 60 60 600 60 )
@        IN NS  ns.{domain}.
ns       IN A   {dns_address}
@        IN A   127.0.0.1
mail     IN A   127.0.0.1
probe    IN A   127.0.0.1
@        IN MX  10 mail.{domain}.
@        IN TXT "v=spf1 ip4:127.0.0.0/8 -all"
_dmarc   IN TXT "v=DMARC1; p=reject; adkim=r; aspf=r"
{dkim_record}
"""

OPENDKIM_CONF = """\
# Generated by tools/deliverystack.py.  Signs for the MTA named "signer" (the smtp_plain port),
# verifies everything else (no host counts as internal).
Mode                    sv
Domain                  {domain}
Selector                {selector}
KeyFile                 {key_file}
Socket                  inet:{dkim_port}@{host}
PidFile                 {run_dir}/opendkim.pid
Syslog                  no
LogResults              no
AuthservID              {authserv_id}
InternalHosts           192.0.2.1
MTA                     signer
ResolverConfiguration   {run_dir}/unbound.conf
Canonicalization        relaxed/relaxed
SignatureAlgorithm      rsa-sha256
RequireSafeKeys         false
"""

# OpenDKIM resolves with libunbound: only the stack's DNS server, no DNSSEC validation.
UNBOUND_CONF = """\
server:
    do-ip6: no
    module-config: "iterator"
    do-not-query-localhost: no
    # unbound answers the RFC 6761 names (test., invalid., ...) itself with NXDOMAIN by default
    local-zone: "test." nodefault
    username: ""
    chroot: ""
forward-zone:
    name: "."
    forward-addr: {dns_address}@53
"""

OPENDMARC_CONF = """\
# Generated by tools/deliverystack.py.  SPF checked here (libspf2), DKIM taken from OpenDKIM's field.
AuthservID              {authserv_id}
TrustedAuthservIDs      {authserv_id}
Socket                  inet:{dmarc_port}@{host}
PidFile                 {run_dir}/opendmarc.pid
Syslog                  false
IgnoreHosts             {run_dir}/opendmarc.ignore
SPFSelfValidate         true
SPFIgnoreResults        true
RejectFailures          false
FailureReports          false
"""


def dns_address(port_base: int) -> str:
    """A loopback address of the stack's own for its DNS server (port 53 is not per stack)."""
    return f"127.53.{(port_base >> 8) & 255}.{port_base & 255}"


def packages_installed() -> bool:
    return all(os.path.exists(path) for path in REQUIRED_FILES)


class DeliveryParts:
    """Sieve, the Junk folder and SpamAssassin for one MailStack (its dir and port base)."""

    def __init__(self, base_dir: Path, port_base: int, host: str) -> None:
        self.dir = base_dir
        self.host = host
        self.sieve_dir = base_dir / "sieve"
        self.sa_dir = base_dir / "spamassassin"
        self.log_dir = base_dir / "log"
        self.spamd_port = port_base + SPAMD_OFFSET
        self.spamd_pid_file = self.sa_dir / "spamd.pid"
        self.port_base = port_base
        self.dkim_port = port_base + DKIM_OFFSET
        self.dmarc_port = port_base + DMARC_OFFSET
        self.smtp_verify = port_base + DELIVERY_PORT_OFFSETS["smtp_verify"]
        self.dns_address = dns_address(port_base)
        self.dns_dir = base_dir / "dns"
        self.dkim_dir = base_dir / "dkim"
        self.run_dir = base_dir / "milters"
        # name, pid file, what /proc/PID/comm says
        self.daemons = [
            ("nsd", self.dns_dir / "nsd.pid", "nsd"),
            ("opendkim", self.run_dir / "opendkim.pid", "opendkim"),
            ("opendmarc", self.run_dir / "opendmarc.pid", "opendmarc"),
        ]

    # -- configuration ----------------------------------------------------------------------
    def template_values(self, syslog_name: str) -> dict[str, str]:
        """What mailstack's templates get in their {..._extra} and {delivery_conf} places."""
        ports = {"host": self.host, "dkim_port": self.dkim_port, "dmarc_port": self.dmarc_port,
                 "smtp_verify": self.smtp_verify, "syslog_name": syslog_name}
        return {
            "lmtp_extra": DOVECOT_LMTP,
            "inbox_extra": DOVECOT_INBOX.format(junk=JUNK),
            "delivery_conf": DOVECOT_PLUGIN.format(sieve_dir=self.sieve_dir),
            "main_extra": POSTFIX_MAIN,
            "smtp_plain_extra": POSTFIX_SMTP_PLAIN.format(**ports),
            "master_extra": POSTFIX_MASTER.format(**ports),
        }

    def prepare(self, write: Callable[..., None], mkdir: Callable[..., None]) -> None:
        """Write the Sieve script, its filter program and SpamAssassin's rules (mailstack's
        _write and _mkdir, so modes and owners follow the stack's rules)."""
        mkdir(self.sieve_dir, owner="mail")
        mkdir(self.sieve_dir / "bin")
        mkdir(self.sieve_dir / "users", owner="mail")
        write(self.sieve_dir / "before.sieve",
              SIEVE_BEFORE.format(junk=JUNK, forge_word=FORGE_WORD, forged_id=FORGED_AUTHSERV_ID))
        write(self.sieve_dir / "bin" / "spamc", SPAMC_FILTER.format(host=self.host, spamd_port=self.spamd_port),
              mode=0o755)
        mkdir(self.sa_dir)
        mkdir(self.sa_dir / "rules")
        mkdir(self.sa_dir / "site")
        mkdir(self.sa_dir / "home", 0o700, owner="mail")
        write(self.sa_dir / "rules" / "10_prtg_roundtrip.cf", SPAMASSASSIN_CF.format(spam_word=SPAM_WORD))
        for stale in self.sieve_dir.glob("*.svbin"):  # compiled from an older script
            stale.unlink()
        # DNS, DKIM, DMARC
        mkdir(self.dns_dir)
        mkdir(self.dkim_dir, 0o700)
        mkdir(self.run_dir)
        key = self.dkim_dir / f"{DKIM_SELECTOR}.private"
        record = self.dkim_dir / f"{DKIM_SELECTOR}.txt"
        if not key.exists() or not record.exists():
            subprocess.run(["opendkim-genkey", "-b", "2048", "-h", "sha256", "-d", DOMAIN, "-s", DKIM_SELECTOR,
                            "-D", str(self.dkim_dir)], check=True, capture_output=True, timeout=60)
        os.chmod(key, 0o600)
        values = {
            "domain": DOMAIN, "dns_address": self.dns_address, "dns_dir": self.dns_dir, "log_dir": self.log_dir,
            "dkim_record": _record(record.read_text()),
            "selector": DKIM_SELECTOR, "key_file": key, "host": self.host, "dkim_port": self.dkim_port,
            "dmarc_port": self.dmarc_port, "run_dir": self.run_dir, "authserv_id": AUTHSERV_ID,
        }
        write(self.dns_dir / "nsd.conf", NSD_CONF.format(**values))
        write(self.dns_dir / f"{DOMAIN}.zone", ZONE.format(**values))
        write(self.run_dir / "opendkim.conf", OPENDKIM_CONF.format(**values))
        write(self.run_dir / "unbound.conf", UNBOUND_CONF.format(**values))
        write(self.run_dir / "opendmarc.conf", OPENDMARC_CONF.format(**values))
        write(self.run_dir / "opendmarc.ignore", "192.0.2.1\n")  # (its default would ignore 127.0.0.1)
        write(self.run_dir / "resolv.conf", f"nameserver {self.dns_address}\noptions timeout:2 attempts:2\n")

    def compile_sieve(self, dovecot_conf: Path) -> None:
        """Compile the global script now (as `mail`, who may write the binary next to it)."""
        mail = pwd.getpwnam("mail")
        subprocess.run(
            ["sievec", "-c", str(dovecot_conf), str(self.sieve_dir / "before.sieve")],
            check=True, capture_output=True, timeout=30, user=mail.pw_uid, group=mail.pw_gid,
        )

    # -- the daemons ------------------------------------------------------------------------
    def start(self) -> None:
        self._start_daemon("nsd", ["nsd", "-c", str(self.dns_dir / "nsd.conf")])
        self._start_daemon("opendkim", ["opendkim", "-x", str(self.run_dir / "opendkim.conf")])
        # OpenDMARC's SPF library asks the system resolver: in a mount namespace of its own, its
        # /etc/resolv.conf is this stack's (the machine's file stays as it is).
        resolv = self.run_dir / "resolv.conf"
        self._start_daemon("opendmarc", [
            "unshare", "--mount", "--propagation", "private", "sh", "-c",
            f'mount --bind "{resolv}" /etc/resolv.conf && exec opendmarc -c "{self.run_dir / "opendmarc.conf"}"',
        ])
        self._start_spamd()

    def _start_daemon(self, name: str, command: list[str]) -> None:
        if self._daemon_pid(name) is not None:
            return
        pid_file = next(p for n, p, _ in self.daemons if n == name)
        with contextlib.suppress(FileNotFoundError):
            pid_file.unlink()
        log = self.log_dir / f"{name}.log"
        with open(log, "ab") as output:
            result = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=output, stderr=output, check=False,
                                    start_new_session=True, timeout=30)
        if result.returncode != 0:
            raise RuntimeError(f"{name} did not start ({result.returncode}); see {log}")

    def _daemon_pid(self, name: str) -> int | None:
        for daemon, pid_file, comm in self.daemons:
            if daemon != name:
                continue
            try:
                pid = int(pid_file.read_text().split()[0])
                running = Path(f"/proc/{pid}/comm").read_text().strip()
            except (OSError, ValueError, IndexError):
                return None
            # ("nsd: main": nsd names its processes; a stale pid file may name a zombie)
            return pid if running.startswith(comm) and _alive(pid) else None
        return None

    def _start_spamd(self) -> None:
        if self.pid() is not None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.spamd_pid_file.unlink()
        log = self.log_dir / "spamd.log"
        command = [
            "spamd", "--daemonize", f"--listen={self.host}:{self.spamd_port}", f"--allowed-ips={self.host}",
            f"--pidfile={self.spamd_pid_file}", f"--configpath={self.sa_dir / 'rules'}",
            f"--siteconfigpath={self.sa_dir / 'site'}", "--nouser-config", "--username=mail",
            f"--helper-home-dir={self.sa_dir / 'home'}", "--max-children=2", "--min-children=1",
            f"--syslog={log}",
        ]
        with open(log, "ab") as output:
            result = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=output, stderr=output, check=False,
                                    start_new_session=True)
        if result.returncode != 0:
            raise RuntimeError(f"spamd did not start ({result.returncode}); see {log}")

    def wait(self, port_open: Callable[[str, int], bool]) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        for name, host, port in (("spamd", self.host, self.spamd_port), ("opendkim", self.host, self.dkim_port),
                                 ("opendmarc", self.host, self.dmarc_port), ("nsd", self.dns_address, 53)):
            while not port_open(host, port):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} is not listening on {host}:{port} after {START_TIMEOUT:.0f} s; "
                                       f"see {self.log_dir / (name + '.log')}")
                time.sleep(0.05)

    def pid(self) -> int | None:
        try:
            pid = int(self.spamd_pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        return pid if cmdline.startswith(b"spamd") and _alive(pid) else None  # (spamd's title: "spamd")

    def running(self) -> bool:
        return self.pid() is not None and all(self._daemon_pid(name) is not None for name, _, _ in self.daemons)

    def stop(self) -> None:
        pids = [pid for pid in [self.pid(), *(self._daemon_pid(name) for name, _, _ in self.daemons)] if pid]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.02)
        for pid in pids:
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def info(self) -> dict[str, object]:
        return {
            "junk_folder": JUNK,
            "spam_word": SPAM_WORD,
            "forge_word": FORGE_WORD,
            "forged_authserv_id": FORGED_AUTHSERV_ID,
            "spamd_port": self.spamd_port,
            "sieve_before": str(self.sieve_dir / "before.sieve"),
            "spamd_log": str(self.log_dir / "spamd.log"),
            "authserv_id": AUTHSERV_ID,
            "dns_address": self.dns_address,
            "dkim_selector": DKIM_SELECTOR,
            "dkim_port": self.dkim_port,
            "dmarc_port": self.dmarc_port,
        }


def _record(text: str) -> str:
    """opendkim-genkey's TXT record file, without its trailing comment."""
    return text.split(" ; -----")[0].strip()


def _alive(pid: int) -> bool:
    """Any of its threads still running (a milter's main thread may end before its others, which
    still hold the listening socket; a zombie nobody reaps is not running)."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return False
    for task in tasks:
        try:
            if (task / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                return True
        except (OSError, IndexError):
            continue
    return False
