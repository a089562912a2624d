"""Property tests: whatever the command line and environment, one valid document, exit 0.

In-process, with every outgoing connection refused by a patched socket.create_connection (so
arbitrary host names never reach the network). What runs is the real parsing, validation,
error mapping and rendering.
"""

from __future__ import annotations

import io
import shlex
import socket
from typing import List
from unittest import mock

from conftest import check_output
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from prtg_roundtrip import cli

OPTIONS = [a for action in cli.build_parser()._actions for a in action.option_strings
           if a not in ("-h", "--help", "--version")]
HEADER_BOUND = ["--from", "--to", "--helo", "--subject-text"]
VALID = ["--smtp-host", "127.0.0.1", "--imap-host", "127.0.0.1", "--imap-user", "u", "--imap-password", "p",
         "--from", "a@example.com", "--to", "b@example.com", "--timeout", "5"]

values = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", "0", "-1", "901", "1e9", "nan", "inf", "25", "prtg-json", "script-v2", "text", "tls",
                     "password", "local", "env:", "file:/nonexistent", "keyring:", "literal:", "a@b.c", "x" * 300]),
)
tokens = st.one_of(
    st.sampled_from(OPTIONS), values, st.builds(lambda o, v: f"{o}={v}", st.sampled_from(OPTIONS), values)
)
argvs = st.lists(tokens, max_size=12).filter(lambda a: a[:1] != ["credentials"])
environments = st.dictionaries(
    st.sampled_from(["prtg_host", "prtg_sensorid", "prtg_linuxuser", "prtg_linuxpassword", "prtg_windowsuser",
                     "prtg_windowspassword", "prtg_windowsdomain", "LANG"]),
    st.text(max_size=30).filter(lambda s: "\0" not in s),
    max_size=5,
)


def run(argv: List[str], environ) -> tuple:
    out = io.BytesIO()
    attempts = []

    def refuse(address, *args, **kwargs):
        attempts.append(address)
        raise ConnectionRefusedError(111, "Connection refused (test)")

    with mock.patch.object(socket, "create_connection", refuse):
        code = cli.main(argv, environ=environ, stdout=out, stdin=io.BytesIO(b""))
    return code, out.getvalue().decode("utf-8"), attempts


def fmt_of(argv: List[str]) -> str:
    # stdin is empty here, so an empty command line is not Script v2 either (issue 11)
    return cli._sniff_format(argv, cli.OutputFormat.PRTG_XML).value


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(argv=argvs, environ=environments)
def test_any_arguments_give_one_valid_document(argv, environ):
    code, text, _ = run(argv, environ)
    fmt = fmt_of(argv)
    assert "Traceback" not in text
    if fmt == "text":
        assert code in (0, 1) and text.strip()
        return
    assert code == 0
    assert check_output.check(text, fmt) == [], text


@settings(max_examples=200, deadline=None)
@given(option=st.sampled_from(HEADER_BOUND), before=st.sampled_from(["", "a@example.com", "probe.example.com", "x"])
       | st.text(max_size=10), after=st.sampled_from(["", "Bcc: victim@example.com", "RCPT TO:<x@y.z>"])
       | st.text(max_size=10), brk=st.sampled_from(["\r", "\n", "\r\n"]))
@example(option="--from", before="a@example.com", after="", brk="\r\n")
@example(option="--subject-text", before="hello", after="Bcc: victim@example.com", brk="\r\n")
def test_line_breaks_in_header_bound_values_are_refused_before_connecting(option, before, after, brk):
    argv = list(VALID)
    value = f"{before}{brk}{after}"
    if option in argv:
        argv[argv.index(option) + 1] = value
    else:
        argv += [option, value]
    code, text, attempts = run(argv, {})
    doc = check_output.parse(text)
    assert code == 0 and doc.error and doc.text.startswith("Parameters")
    assert attempts == []


def test_the_property_harness_reaches_the_network_step():
    """Guard against a harness that only ever sees parameter errors."""
    code, text, attempts = run(list(VALID), {})
    assert code == 0 and attempts == [("127.0.0.1", 143)]
    assert check_output.parse(text).text.startswith("IMAP receive (127.0.0.1:143): connection refused")


@settings(max_examples=150, deadline=None)
@given(text=st.one_of(st.text(max_size=80), st.lists(tokens, max_size=8).map(" ".join)))
def test_any_parameters_on_stdin_give_one_script_v2_document(text):
    """Script v2's path: no arguments, the Parameters field on stdin (quotes may not balance); a
    blank first line is no parameters at all, answered in PRTG XML."""
    out = io.BytesIO()

    def refuse(address, *args, **kwargs):
        raise ConnectionRefusedError(111, "Connection refused (test)")

    with mock.patch.object(socket, "create_connection", refuse):
        code = cli.main([], environ={}, stdout=out, stdin=io.BytesIO(text.encode("utf-8", "surrogatepass")))
    document = out.getvalue().decode("utf-8")
    raw = text.encode("utf-8", "surrogatepass").split(b"\n", 1)[0].rstrip(b"\r")
    first = raw.decode("utf-8", "surrogateescape").strip()
    default = cli.OutputFormat.SCRIPT_V2 if first else cli.OutputFormat.PRTG_XML
    fmt = cli._sniff_format(_split(text), default)
    if fmt.value == "text":
        assert code in (0, 1)
        return
    assert code == 0 and check_output.check(document, fmt.value) == [], document


def _split(text: str) -> List[str]:
    try:
        return shlex.split(text)
    except ValueError:  # the sensor then answers with a Script v2 error document
        return []
