"""The receiving server's verdicts and the Junk folder choice: pure functions, no servers.

Tables of real-world and hostile Authentication-Results fields (RFC 8601: comments, quoted
strings, versions, several fields, folded lines, a forged field with a foreign authserv-id) and
of LIST answers; then hypothesis feeds any bytes to the parser, which must never raise (the
inner function is fuzzed, without the catch-all that guards the run).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prtg_roundtrip import verdicts
from prtg_roundtrip.verdicts import (
    AUTH_RESULTS,
    NOT_REPORTED,
    Verdicts,
    find_junk_folder,
    header_fields,
    junk_exists,
    parse_authentication_results,
    parse_verdicts,
    strip_comments,
)

MX = b"Authentication-Results: mx.roundtrip.test;\r\n\tspf=pass smtp.mailfrom=example.org;\r\n" \
     b"\tdkim=pass header.d=example.org header.s=test;\r\n\tdmarc=pass header.from=example.org\r\n"


@pytest.mark.parametrize("raw, expected", [
    # the usual three, folded over lines
    (MX, ("mx.roundtrip.test", "pass", "pass", "pass")),
    # comments (nested, with a quoted pair and a ';' inside), and a version after the authserv-id
    (b"Authentication-Results: mx.example.com 1; (a (nested; \\) comment)) spf=softfail (sender not "
     b"permitted; see x) smtp.mailfrom=a@b.c; dkim=fail (bad sig) header.i=@b.c\r\n",
     ("mx.example.com", "softfail", "fail", NOT_REPORTED)),
    # a quoted-string value holding ';' and '=' must not split the field or fake a result
    (b'Authentication-Results: mx.example.com; spf=neutral reason="x; dkim=pass; dmarc=pass"; '
     b"dmarc=fail\r\n", ("mx.example.com", "neutral", NOT_REPORTED, "fail")),
    # method and result versions and case
    (b"Authentication-Results: MX.Example.COM; SPF/1=PermError; DKIM = TempError; dmarc=None\r\n",
     ("MX.Example.COM", "permerror", "temperror", "none")),
    # "none" as the whole result set (RFC 8601 2.2): nothing reported
    (b"Authentication-Results: mx.example.com; none\r\n", ("mx.example.com", NOT_REPORTED, NOT_REPORTED,
                                                           NOT_REPORTED)),
    # two DKIM signatures: a pass wins; older spelling hardfail is fail
    (b"Authentication-Results: mx.example.com; dkim=fail header.d=x; dkim=pass header.d=y; spf=hardfail\r\n",
     ("mx.example.com", "fail", "pass", NOT_REPORTED)),
    # a quoted authserv-id
    (b'Authentication-Results: "mx.example.com"; spf=pass\r\n', ("mx.example.com", "pass", NOT_REPORTED,
                                                                 NOT_REPORTED)),
    # an unknown result word is not reported; an unknown method is ignored
    (b"Authentication-Results: mx.example.com; spf=weird; iprev=pass; auth=pass\r\n",
     ("mx.example.com", NOT_REPORTED, NOT_REPORTED, NOT_REPORTED)),
    # no Authentication-Results at all
    (b"Subject: hello\r\nMessage-ID: <a@b>\r\n\r\n", (None, NOT_REPORTED, NOT_REPORTED, NOT_REPORTED)),
    # junk: an unreadable first field is skipped, the next one counts
    (b"Authentication-Results: ;;;\r\nAuthentication-Results: mx.example.com; spf=pass\r\n",
     ("mx.example.com", "pass", NOT_REPORTED, NOT_REPORTED)),
])
def test_authentication_results_table(raw, expected):
    v = parse_verdicts(raw)
    assert (v.authserv_id, v.spf, v.dkim, v.dmarc) == expected


def test_only_the_receiving_servers_fields_count():
    """The topmost field is the receiving server's; a forged one further down (another id) is
    ignored, and one naming the same id as the receiver is only trusted by id."""
    raw = (MX + b"Authentication-Results: forged.example; spf=fail; dkim=fail; dmarc=fail\r\n")
    v = parse_verdicts(raw)
    assert (v.authserv_id, v.spf, v.dkim, v.dmarc, v.ignored) == ("mx.roundtrip.test", "pass", "pass", "pass", 1)
    # --authserv-id chooses, whatever the order; case does not matter
    v = parse_verdicts(raw, "FORGED.example")
    assert (v.spf, v.dkim, v.dmarc, v.ignored) == ("fail", "fail", "fail", 1)
    # an id nobody wrote: nothing reported
    v = parse_verdicts(raw, "other.example")
    assert (v.authserv_id, v.spf, v.ignored) == (None, NOT_REPORTED, 2)


def test_several_fields_of_the_receiver_are_merged():
    raw = (b"Authentication-Results: mx.example.com; dmarc=pass\r\n"
           b"Authentication-Results: mx.example.com; spf=pass\r\n"
           b"Authentication-Results: mx.example.com; dkim=pass; spf=fail\r\n")
    v = parse_verdicts(raw)
    assert (v.spf, v.dkim, v.dmarc, v.ignored) == ("pass", "pass", "pass", 0)


@pytest.mark.parametrize("raw, score", [
    (b"X-Spam-Score: 5.3\r\n", 5.3),
    (b"X-Spam-Score: -1.2 (-)\r\n", -1.2),
    (b"X-Spam-Status: Yes, score=7.1 required=5.0 tests=PRTG_TEST autolearn=no\r\n", 7.1),
    (b"X-Spam-Status: No, hits=0.4 required=5.0\r\n", None),  # (hits= is not score=)
    (b"X-Spam-Status: No,\r\n score=-0.1 required=5.0\r\n", -0.1),  # folded
    (b"X-Rspamd-Score: 12.50\r\n", 12.5),
    (b"X-Spam-Score: nan\r\n", None),
    (b"X-Spam-Score: 1e999\r\n", None),
    (b"X-Spam-Score: 99999999999\r\n", None),
    (b"X-Spam-Score: ++++\r\nX-Rspamd-Score: 2\r\n", 2.0),
    (b"Subject: score=3\r\n", None),
])
def test_spam_score_table(raw, score):
    assert parse_verdicts(raw).spam_score == score


def test_strip_comments():
    assert strip_comments('a (b (c) d) e "f (g)" h').split() == ["a", "e", '"f', '(g)"', "h"]
    assert strip_comments("a (unclosed ( comment") == "a "
    assert strip_comments(r"a (x \) y) b") .split() == ["a", "b"]


def test_header_fields_unfold_and_skip_junk():
    raw = b"X: 1\r\n\tcontinued\r\nnot a header line\r\n\r\nY:2\n Z\rW: 3"
    assert header_fields(raw) == [("x", " 1 \tcontinued"), ("y", "2  Z"), ("w", " 3")]
    assert header_fields("text, not bytes") == []  # type: ignore[arg-type]


def test_work_is_bounded():
    many = b"".join(b"Authentication-Results: a%d.example; spf=fail\r\n" % i for i in range(100))
    v = parse_verdicts(many + b"Authentication-Results: late.example; spf=pass\r\n", "late.example")
    assert v.spf == NOT_REPORTED  # beyond MAX_FIELDS (within MAX_HEADER_BYTES): not read
    v = parse_verdicts(b"X: " + b"x" * verdicts.MAX_HEADER_BYTES + b"\r\nAuthentication-Results: mx; spf=pass\r\n")
    assert v.spf == NOT_REPORTED  # beyond MAX_HEADER_BYTES: not read
    assert len(header_fields(b"X: " + b"a" * 10**6)[0][1]) <= verdicts.MAX_FIELD_CHARS
    huge = b"Authentication-Results: mx.example.com; spf=pass\r\n" + b" ((((((((((\r\n" * 20000
    assert parse_verdicts(huge).spf == "pass"


def test_describe_and_lookup_values():
    v = Verdicts("mx.example.com", "pass", "fail", NOT_REPORTED, 4.5)
    assert v.describe() == "SPF pass, DKIM fail (by mx.example.com), spam score 4.5"
    assert [v.lookup_value(m) for m in verdicts.METHODS] == [1, 2, 0]
    assert Verdicts().describe() == ""
    assert sorted(AUTH_RESULTS.values()) == list(range(len(AUTH_RESULTS)))


def test_parse_authentication_results_refuses_what_has_no_id():
    assert parse_authentication_results("") is None
    assert parse_authentication_results("two words; spf=pass") is None
    r = parse_authentication_results("mx; spf=pass")
    assert r is not None and r.results == (("spf", "pass"),)


@settings(max_examples=400, deadline=None)
@given(raw=st.one_of(
    st.binary(max_size=3000),
    st.lists(st.sampled_from([
        b"Authentication-Results:", b" mx.example.com", b";", b" spf=pass", b" dkim=", b"fail", b"(", b")",
        b'"', b"\\", b"\r\n", b"\n", b"\r", b"\t", b" ", b"X-Spam-Score: ", b"X-Spam-Status: score=", b"1.5",
        b"\xff\xfe", b"\x00", b"=", b"/1", b"\xef\xbf\xbe", b"X-Rspamd-Score:", b"-", b"e9",
    ]), max_size=80).map(b"".join),
), authserv_id=st.one_of(st.none(), st.text(max_size=20)))
def test_any_bytes_give_verdicts_never_an_exception(raw, authserv_id):
    v = verdicts._parse_verdicts(raw, authserv_id)  # the inner function: no catch-all
    for method in verdicts.METHODS:
        assert getattr(v, method) in AUTH_RESULTS
    assert v.spam_score is None or abs(v.spam_score) <= verdicts.MAX_SCORE
    v.describe()


# -- the Junk folder -----------------------------------------------------------------------
def entry(name, *flags, delimiter=b"/"):
    return (tuple(flags), delimiter, name)


@pytest.mark.parametrize("entries, mailbox, expected", [
    # the \Junk special-use attribute wins over any name
    ([entry("INBOX"), entry("Spam"), entry("Quarantine", b"\\Junk")], "INBOX", "Quarantine"),
    ([entry("INBOX"), entry("Spam", b"\\HasNoChildren")], "INBOX", "Spam"),
    # names without case, in order of preference
    ([entry("INBOX"), entry("spam"), entry("JUNK E-MAIL")], "INBOX", "JUNK E-MAIL"),
    ([entry("INBOX"), entry("[Gmail]/Spam"), entry("[Gmail]", b"\\Noselect")], "INBOX", "[Gmail]/Spam"),
    ([entry("INBOX", delimiter=b"."), entry("INBOX.Junk", delimiter=b".")], "INBOX", "INBOX.Junk"),
    ([entry("INBOX"), entry("INBOX/Bulk Mail")], "INBOX", "INBOX/Bulk Mail"),
    ([entry("INBOX"), entry("Courrier indésirable")], "INBOX", "Courrier indésirable"),
    # none there; not selectable; the watched mailbox itself is never the Junk folder
    ([entry("INBOX"), entry("Sent", b"\\Sent"), entry("Junkyard")], "INBOX", None),
    ([entry("INBOX"), entry("Junk", b"\\Junk", b"\\Noselect")], "INBOX", None),
    ([entry("INBOX"), entry("Spam", b"\\Junk")], "Spam", None),
    ([], "INBOX", None),
    # junk entries from a hostile server are skipped
    ([(None, None, None), ("x",), entry(b"Junk")], "INBOX", "Junk"),
])
def test_find_junk_folder(entries, mailbox, expected):
    assert find_junk_folder(entries, mailbox) == expected


def test_junk_exists():
    entries = [entry("INBOX"), entry("Spam"), entry("Folder", b"\\Noselect")]
    assert junk_exists(entries, "Spam") and junk_exists(entries, "inbox")
    assert not junk_exists(entries, "spam") and not junk_exists(entries, "Folder")


# -- the lookups shipped for PRTG ------------------------------------------------------------
def test_shipped_lookups_cover_every_value_the_channels_send():
    """Each .ovl parses, has the id the channels name, and a SingleInt for every value sent."""
    from pathlib import Path

    from defusedxml import ElementTree

    from prtg_roundtrip import measurement

    folder = Path(verdicts.__file__).parent / "lookups"
    wanted = {measurement.LANDED_LOOKUP: set(measurement.LANDED.values()),
              measurement.AUTH_LOOKUP: set(AUTH_RESULTS.values())}
    for lookup, values in wanted.items():
        root = ElementTree.parse(str(folder / f"{lookup}.ovl")).getroot()
        assert root.tag == "ValueLookup" and root.get("id") == lookup
        singles = root.findall("./Lookups/SingleInt")
        assert {int(s.get("value")) for s in singles} == values
        assert {s.get("state") for s in singles} <= {"Ok", "Warning", "Error", "None"}


# -- the options, refused before any connection ----------------------------------------------
_BASE = ["--from", "a@example.com", "--to", "b@example.com", "--smtp-host", "192.0.2.1", "--imap-host",
         "192.0.2.1", "--imap-user", "u", "--imap-password", "p", "--format", "prtg-json"]


@pytest.mark.parametrize("extra, words", [
    (["--junk-folder", "Spam\nFolder"], "--junk-folder contains a line break"),
    (["--junk-folder", "INBOX"], "is the watched --mailbox"),
    (["--junk-folder", "inbox"], "is the watched --mailbox"),
    (["--junk-folder", "Archive", "--mailbox", "Archive"], "is the watched --mailbox"),
    (["--junk-folder", "   "], "--junk-folder is empty"),
    (["--authserv-id", "mx example.com"], "is not an authserv-id"),
    (["--authserv-id", "mx;example"], "is not an authserv-id"),
    (["--junk-is", "ok"], "--junk-is"),
])
def test_bad_deliverability_options_are_refused_before_connecting(extra, words):
    import io

    from conftest import check_output

    from prtg_roundtrip import cli

    out = io.BytesIO()
    code = cli.main([*_BASE, *extra], environ={}, stdout=out, stdin=io.BytesIO(b""))
    doc = check_output.parse(out.getvalue().decode("utf-8"), "prtg-json")
    assert code == 0 and doc.error and doc.text.startswith("Parameters") and words in doc.text, doc.text


def test_deliverability_options_parse():
    from prtg_roundtrip.settings import JunkIs, delivery_settings

    d = delivery_settings({"junk_folder": "OFF", "junk_is": "warning", "authserv_id": "mx.example.com"}, "INBOX")
    assert (d.watch_junk, d.junk_folder, d.junk_is, d.authserv_id) == (False, None, JunkIs.WARNING, "mx.example.com")
    d = delivery_settings({}, "INBOX")
    assert (d.watch_junk, d.junk_folder, d.junk_is, d.authserv_id) == (True, None, JunkIs.ERROR, None)
    assert delivery_settings({"junk_folder": "Spam"}, "INBOX").junk_folder == "Spam"


def test_the_checker_takes_script_v2_lookup_channels():
    import json

    from conftest import check_output

    lookup = {"id": 30, "name": "Landed", "type": "lookup", "lookup_name": "prtg.roundtrip.landed", "value": 1}
    doc = {"version": 2, "status": "ok", "message": "m", "channels": [lookup]}
    assert check_output.check(json.dumps(doc), "script-v2") == []
    for broken in ({**lookup, "lookup_name": ""}, {**lookup, "value": 1.5}, {k: v for k, v in lookup.items()
                                                                            if k != "lookup_name"}):
        assert check_output.check(json.dumps({**doc, "channels": [broken]}), "script-v2"), broken
