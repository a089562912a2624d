"""Where passwords come from, so that none has to be typed into PRTG's Parameters field.

A password option takes a value or a reference:
- `env:NAME`            the environment variable NAME
- `file:PATH`           the first line of a file (readable only by the probe's account)
- `keyring:SERVICE/USER` the system credential store (Windows Credential Manager, Secret Service)
- `placeholder:N`       PRTG's "Credentials for Script Sensors" placeholder N (1-5), passed as
                        prtg_scriptplaceholderN (the Python Script Advanced entry maps PRTG's
                        scriptplaceholderN there; set it for EXE/Script Advanced or Script v2)
- `literal:TEXT`        TEXT itself, for a password that starts with one of these prefixes
`--imap-credentials` / `--smtp-credentials linux|windows` take user and password from the
parent device's credentials, which PRTG passes as prtg_linuxuser/prtg_linuxpassword or
prtg_windowsuser/prtg_windowspassword (with "Set placeholders as environment values").
"""

from __future__ import annotations

import sys
from typing import Mapping, Optional, Set, Tuple

from .auth import SecretValue
from .errors import ParameterError

PREFIXES = ("env:", "file:", "keyring:", "placeholder:", "literal:")
REFERENCES = ("env:", "file:", "keyring:", "placeholder:")  # what errors may name: not secret
PLACEHOLDERS = range(1, 6)  # PRTG's Credentials for Script Sensors: placeholders 1 to 5

# Every secret value this process has seen (passwords, tokens, client secrets, refresh tokens,
# assertions): whatever resolves or fetches one registers it, and every output path redacts
# what is registered here, so redaction works on the values, not on option names.
_REGISTERED: Set[str] = set()


def register(*values: Optional[str]) -> None:
    """Add secret values to the redaction registry (empty values are ignored)."""
    _REGISTERED.update(v for v in values if v)


def registered() -> Tuple[str, ...]:
    """Every registered secret value."""
    return tuple(_REGISTERED)


def secret_value(value: Optional[str], option: str, environ: Mapping[str, str],
                 whole_file: bool = False) -> Optional[SecretValue]:
    """A secret option's value resolved, with the reference it came from (None for a literal)."""
    if not value:
        return None
    secret = resolve(value, option, environ, whole_file=whole_file)
    if secret is None:
        return None
    reference = value if value.startswith(REFERENCES) else None
    return SecretValue(secret, reference)


def resolve(value: Optional[str], option: str, environ: Mapping[str, str], whole_file: bool = False) -> Optional[str]:
    """The secret a value or reference stands for, registered for redaction; ParameterError if
    the reference is empty. Errors name the reference (variable, path, keyring entry), never a
    value. `whole_file`: a file: reference means the whole file (a JSON key), not its first line."""
    secret = _resolve(value, option, environ, whole_file)
    register(secret)
    return secret


def _resolve(value: Optional[str], option: str, environ: Mapping[str, str], whole_file: bool) -> Optional[str]:
    if value is None:
        return None
    if value.startswith("literal:"):
        return value[len("literal:"):]
    if value.startswith("env:"):
        name = value[len("env:"):]
        secret = environ.get(name)
        if not secret:
            raise ParameterError(
                f"{option} env:{name}: the environment variable is not set or empty",
                hint="Set it for the account the probe service runs as, or use file: or keyring:",
            )
        return secret
    if value.startswith("file:"):
        path = value[len("file:"):]
        try:
            with open(path, encoding="utf-8") as handle:
                secret = handle.read().strip() if whole_file else handle.readline().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ParameterError(
                f"{option} file:{path} cannot be read ({reason})",
                hint="Give a file the probe's account (LocalSystem on Windows) may read",
            ) from None
        if not secret:
            raise ParameterError(f"{option} file:{path} is empty", hint="Write the secret on its first line")
        return secret
    if value.startswith("placeholder:"):
        return _from_placeholder(value[len("placeholder:"):], option, environ)
    if value.startswith("keyring:"):
        service, user = split_keyring_reference(value[len("keyring:"):], option)
        return _from_keyring(service, user, option)
    return value


def _from_placeholder(number: str, option: str, environ: Mapping[str, str]) -> str:
    if number not in [str(n) for n in PLACEHOLDERS]:
        raise ParameterError(
            f"{option} placeholder:{number} is not a placeholder number", hint="PRTG has placeholders 1 to 5"
        )
    name = f"prtg_scriptplaceholder{number}"
    secret = environ.get(name, "")
    if not secret:
        raise ParameterError(
            f"{option} placeholder:{number}: {name} is not set or empty",
            hint=f"Enter Placeholder {number} under 'Credentials for Script Sensors' on the device (or a "
            "parent); Python Script Advanced passes it by itself, otherwise put it into the environment as "
            f"{name} (see the README)",
        )
    return secret


def split_keyring_reference(reference: str, option: str) -> Tuple[str, str]:
    service, _, user = reference.rpartition("/")
    if not service or not user:
        raise ParameterError(
            f"{option} keyring:{reference} is not SERVICE/USER", hint="Write it as keyring:prtg-roundtrip/imap-user"
        )
    return service, user


def _from_keyring(service: str, user: str, option: str) -> str:
    try:
        import keyring
        from keyring.errors import KeyringError
    except ImportError:  # pragma: no cover - keyring is a dependency
        raise ParameterError(f"{option}: the keyring package is not installed", hint="pip install keyring") from None
    try:
        secret = keyring.get_password(service, user)
    except KeyringError as exc:
        raise ParameterError(
            f"{option} keyring:{service}/{user}: the credential store is not usable ({exc})",
            hint=_keyring_hint(exc),
        ) from None
    if not secret:
        raise ParameterError(
            f"{option} keyring:{service}/{user} is not stored for this account",
            hint="Store it with 'prtg-roundtrip credentials set' run as the probe's account "
            "(LocalSystem on Windows: see the README)",
        )
    return secret


def _keyring_hint(exc: Exception) -> str:
    if type(exc).__name__ == "NoKeyringError" and "prtg_roundtrip_pyz" in sys.modules:
        # Run from prtg-roundtrip.pyz, which holds no compiled code (README, "Single file").
        return ("prtg-roundtrip.pyz carries no compiled code, so keyring has no backend here (on Linux the "
                "Secret Service backend needs secretstorage and cryptography): use an env: or file: "
                "reference, or install the package with pip instead of the .pyz")
    return "See the README on keyring backends and the LocalSystem account"


def device_credentials(kind: str, environ: Mapping[str, str], option: str) -> Tuple[str, str]:
    """(user, password) of the parent device's Linux or Windows credentials from PRTG's environment."""
    user = environ.get(f"prtg_{kind}user", "")
    password = environ.get(f"prtg_{kind}password", "")
    if not user or not password:
        raise ParameterError(
            f"{option} {kind}: prtg_{kind}user/prtg_{kind}password are not set",
            hint=f"Enter the {kind.capitalize()} credentials on the device and set the sensor's Environment "
            "to 'Set placeholders as environment values'",
        )
    domain = environ.get("prtg_windowsdomain", "") if kind == "windows" else ""
    if domain and "@" not in user and "\\" not in user:
        user = f"{domain}\\{user}"
    return user, password



def environment_secrets(environ: Mapping[str, str]) -> Tuple[str, ...]:
    """PRTG's password and script placeholders: never echoed, whether this run used them or not."""
    return tuple(
        v for k, v in environ.items()
        if k.startswith("prtg_") and (k.endswith("password") or k.startswith("prtg_scriptplaceholder")) and v
    )

