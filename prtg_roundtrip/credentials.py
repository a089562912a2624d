"""`prtg-roundtrip credentials set|get|delete SERVICE USER`: keyring entries for the sensor.

The sensor reads such an entry with `--imap-password keyring:SERVICE/USER`. The store is per
account: on Windows the probe service runs as LocalSystem, so store the secret as that account
(see the README: `psexec -s -i cmd`, then this command).
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import List, Optional


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="prtg-roundtrip credentials",
        description="Manage passwords in the system credential store (keyring) for this account.",
    )
    actions = p.add_subparsers(dest="action", required=True)
    for name, text in (
        ("set", "store a password (asked for, or read from stdin when it is not a terminal)"),
        ("get", "tell whether a password is stored (--reveal prints it)"),
        ("delete", "remove a stored password"),
    ):
        action = actions.add_parser(name, help=text, description=text)
        action.add_argument("service", help="e.g. prtg-roundtrip")
        action.add_argument("user", help="e.g. the IMAP login")
        if name == "get":
            action.add_argument("--reveal", action="store_true", help="print the password itself")
    return p


def _read_password() -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Again: "):
        raise SystemExit("prtg-roundtrip credentials: the passwords differ; nothing stored")
    return first


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    import keyring
    from keyring.errors import KeyringError, PasswordDeleteError

    reference = f"keyring:{args.service}/{args.user}"
    backend = type(keyring.get_keyring()).__name__
    try:
        if args.action == "set":
            password = _read_password()
            if not password:
                print("prtg-roundtrip credentials: empty password; nothing stored", file=sys.stderr)
                return 2
            keyring.set_password(args.service, args.user, password)
            print(f"stored in {backend} for {getpass.getuser()}; use --imap-password {reference}")
            return 0
        if args.action == "get":
            secret = keyring.get_password(args.service, args.user)
            if secret is None:
                print(f"not stored in {backend} for {getpass.getuser()}: {reference}")
                return 1
            print(secret if args.reveal else f"stored in {backend} ({len(secret)} characters): {reference}")
            return 0
        try:
            keyring.delete_password(args.service, args.user)
        except PasswordDeleteError:
            print(f"not stored: {reference}")
            return 1
        print(f"deleted: {reference}")
        return 0
    except KeyringError as exc:
        print(f"prtg-roundtrip credentials: the credential store {backend} failed: {exc}", file=sys.stderr)
        return 2
