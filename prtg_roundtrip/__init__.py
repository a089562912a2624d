"""prtg-roundtrip: an SMTP -> IMAP mail round trip sensor for PRTG Network Monitor."""

__version__ = "0.1.0"
