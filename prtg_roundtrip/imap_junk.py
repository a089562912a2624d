"""Watch the account's Junk folder while waiting for the probe, on the same IMAP connection.

Arming (after the mailbox is selected, before the send; in no timing channel): find the folder
(`LIST (SPECIAL-USE)` where the server has SPECIAL-USE, else a plain `LIST`; verdicts.
find_junk_folder chooses) and note its UIDNEXT with `STATUS`. Watching: `STATUS junk (UIDNEXT)`
after the mailbox checks that search anyway (once per --interval, see imap_wait), never after the
first one, so the normal case (the probe in the mailbox within the first --interval) costs no
round trip at all, and a later one costs one STATUS per --interval. Only when the Junk folder's
UIDNEXT grew is it selected and searched, with the mailbox's own check (the probe's GUID in
the subject, its Message-ID among the new UIDs); if the probe is not there, the mailbox is
selected again. A probe found there is deleted by the same code as in the mailbox
(Mailbox.delete: only the probe, UID EXPUNGE).

Every answer of a server that does not know LIST or STATUS (BAD, NO) ends the watch for this
run with a transcript note; a broken connection is the IMAP leg's failure as everywhere else.
"""

from __future__ import annotations

from typing import Any, List, Optional

from imapclient.exceptions import IMAPClientAbortError, IMAPClientError

from .errors import ImapError
from .imap_mailbox import Check, Mailbox
from .imap_session import IMAP_FAILURES, ImapSession, server_text
from .probe import ProbeMail
from .settings import DeliverySettings, SearchMethod
from .verdicts import ListEntry, find_junk_folder, junk_exists


class JunkWatch:
    """The Junk folder of the session's account, if there is one and it is watched."""

    def __init__(self, session: ImapSession, delivery: DeliverySettings, search: SearchMethod):
        self.session = session
        self.delivery = delivery
        self.search = search
        self.name: Optional[str] = None  # None: not watched (off, none found, or the server refused)
        self.uidnext: Optional[int] = None  # as armed: only UIDs from here on can be the probe
        self.seen_uidnext: Optional[int] = None  # at the last look
        self.looks = 0  # times the Junk folder was selected and searched
        self.box: Optional[Mailbox] = None  # the Junk folder, selected, once the probe was found there

    @property
    def client(self) -> Any:
        assert self.session.client is not None
        return self.session.client

    def note(self, text: str) -> None:
        self.session.transcript.note("IMAP", text)

    # -- arming ---------------------------------------------------------------------------
    def arm(self) -> None:
        if not self.delivery.watch_junk:
            return
        session = self.session
        session.phase = "finding the Junk folder (LIST)"
        session.arm_timeout()
        try:
            name = self._find()
            if name is None:
                return
            session.phase = f"STATUS {name}"
            uidnext = self._status(name)
        except IMAPClientAbortError as exc:
            raise session.network_failure(exc) from exc
        except IMAPClientError as exc:  # BAD/NO: the server cannot do this; the run goes on
            self.note(f"the Junk folder cannot be watched ({server_text(exc)}): not watching it")
            return
        except IMAP_FAILURES as exc:
            raise session.network_failure(exc) from exc
        if uidnext is None:
            self.note(f"STATUS {name!r} gave no UIDNEXT: not watching the Junk folder")
            return
        self.name, self.uidnext, self.seen_uidnext = name, uidnext, uidnext
        self.note(f"watching the Junk folder {name!r} from UID {uidnext} on")

    def _find(self) -> Optional[str]:
        configured = self.delivery.junk_folder
        mailbox = self.session.settings.mailbox
        client = self.client
        entries: List[ListEntry] = []
        if configured is None and client.has_capability("SPECIAL-USE"):
            entries = self._list_special_use()
            name = find_junk_folder([e for e in entries if _has_junk_flag(e)], mailbox)
            if name is not None:
                return name
        entries = list(client.list_folders())
        if configured is not None:
            if not junk_exists(entries, configured):
                raise ImapError(
                    f"the Junk folder {configured!r} (--junk-folder) does not exist",
                    server=self.session.settings.server,
                    hint="Name an existing folder (names other than INBOX are case-sensitive), leave "
                    "--junk-folder out to find it by its \\Junk attribute or name, or give --junk-folder off",
                )
            return configured
        name = find_junk_folder(entries, mailbox)
        if name is None:
            self.note("no Junk folder found (no \\Junk attribute, no common name): not watching one")
        return name

    def _list_special_use(self) -> List[ListEntry]:
        """RFC 6154's extended LIST: only the folders with a special use."""
        client = self.client
        imap = client._imap
        typ, data = imap._simple_command("LIST", "(SPECIAL-USE)", client._normalise_folder(""),
                                         client._normalise_folder("*"))
        client._checkok("list", typ, data)
        typ, data = imap._untagged_response(typ, data, "LIST")
        return list(client._proc_folder_list(data))

    def _status(self, name: str) -> Optional[int]:
        status = self.client.folder_status(name, ["UIDNEXT"])
        value = status.get(b"UIDNEXT")
        return value if isinstance(value, int) and value > 0 else None

    # -- watching -------------------------------------------------------------------------
    def look(self, probe: ProbeMail) -> Optional[Check]:
        """STATUS; if the Junk folder got mail since the last look, search it for the probe.
        A Check with the probe's UID leaves the Junk folder selected (self.box); otherwise the
        mailbox is selected again."""
        if self.name is None:
            return None
        session = self.session
        session.phase = f"STATUS {self.name}"
        session.arm_timeout()
        try:
            uidnext = self._status(self.name)
        except IMAPClientAbortError:
            raise
        except IMAPClientError as exc:
            self.note(f"STATUS {self.name!r} refused ({server_text(exc)}): no longer watching the Junk folder")
            self.name = None
            return None
        if uidnext is None or self.seen_uidnext is None or uidnext <= self.seen_uidnext:
            return None
        self.seen_uidnext = uidnext
        self.looks += 1
        try:
            junk = self._select(self.name)
        except IMAPClientAbortError:
            raise
        except IMAPClientError as exc:  # (deleted or renamed meanwhile): no mailbox is selected now
            self.note(f"SELECT {self.name!r} refused ({server_text(exc)}): no longer watching the Junk folder")
            self.name = None
            self.reselect_mailbox()
            return None
        check = junk.check(probe, force=True)
        if check.uid is not None:
            self.box = junk
            return check
        self.reselect_mailbox()
        return None

    def _select(self, name: str) -> Mailbox:
        session = self.session
        session.phase = f"SELECT {name}"
        session.arm_timeout()
        status = self.client.select_folder(name)
        box = Mailbox(session, self.search, name)
        box.uidvalidity = _int(status.get(b"UIDVALIDITY"))
        box.uidnext = self.uidnext  # the new UIDs since the watch was armed
        return box

    def reselect_mailbox(self) -> None:
        """Back to --mailbox (for the wait, or the leftover sweep after a probe in Junk)."""
        session = self.session
        session.phase = f"SELECT {session.settings.mailbox}"
        session.arm_timeout()
        self.client.select_folder(session.settings.mailbox)


def _has_junk_flag(entry: ListEntry) -> bool:
    flags = entry[0] if isinstance(entry[0], (list, tuple)) else ()
    return any(bytes(f).lower() == b"\\junk" if isinstance(f, bytes) else str(f).lower() == "\\junk" for f in flags)


def _int(value: object) -> Optional[int]:
    return value if isinstance(value, int) else None

