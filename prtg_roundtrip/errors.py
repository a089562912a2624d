"""The sensor's failures: one small hierarchy, turned into a PRTG error in one place (cli.main).

Every error knows the step that failed, the server it talked to (if any), the cause in words an
administrator can act on, and what to try. Nothing here formats output: render.py does that.
"""

from __future__ import annotations

from typing import List, Optional


class RoundTripError(Exception):
    """A failure of one step of the round trip."""

    step = "Sensor"

    def __init__(self, cause: str, *, server: Optional[str] = None, hint: Optional[str] = None,
                 token_refused: bool = False):
        super().__init__(cause)
        self.cause = cause
        self.server = server
        self.hint = hint
        self.token_refused = token_refused  # the mail server refused an OAuth2 access token
        self.notes: List[str] = []  # said on every outcome, e.g. a password sent without TLS

    def message(self) -> str:
        """One line: step, server, cause, what to try, and any notes."""
        where = f"{self.step} ({self.server})" if self.server else self.step
        text = f"{where}: {self.cause}"
        if self.hint:
            text += f". {self.hint}"
        text = text.rstrip(".") + "."
        if self.notes:
            text += " Note: " + "; ".join(self.notes) + "."
        return text


class ParameterError(RoundTripError):
    """The sensor's parameters are wrong; raised before any connection is made."""

    step = "Parameters"


class SmtpError(RoundTripError):
    """Step 1, sending the probe mail, failed."""

    step = "SMTP send"


class SendUncertain(SmtpError):
    """The whole message went out, then the connection broke before the server answered DATA.

    The server may or may not have taken the mail: the run still watches the mailbox.
    """

    def __init__(self, cause: str, *, server: str, sent_at: float):
        super().__init__(cause, server=server)
        self.sent_at = sent_at


class ImapError(RoundTripError):
    """Step 2, watching the mailbox, failed."""

    step = "IMAP receive"


class DeliveryTimeout(ImapError):
    """The probe mail was accepted by SMTP but did not arrive in time."""

    step = "Delivery"


class LandedInJunk(RoundTripError):
    """The probe arrived, in the Junk folder: the receiving server's spam filter classified it
    (an error unless --junk-is warning)."""

    step = "Delivery"


class TokenError(RoundTripError):
    """Getting an OAuth2 access token failed (before any mail was sent)."""

    step = "OAuth2 token"
