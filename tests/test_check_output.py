"""tools/check_output.py, rule by rule (R1-R15 in its docstring), and a fuzz: it never crashes.

Each rule has a document that follows it (accepted) next to one that breaks it (refused), so a
checker that drops the rule fails here.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List

import pytest
from conftest import check_output as co
from hypothesis import given, settings
from hypothesis import strategies as st

GOOD_XML = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<prtg>\n  <result><channel>Total</channel><value>12.5</value>'
    "<unit>TimeResponse</unit><float>1</float><decimalmode>All</decimalmode></result>\n"
    "  <text>ok</text>\n</prtg>\n"
)


def xml(result: str = "", top: str = "<text>ok</text>") -> str:
    result = result or "<channel>Total</channel><value>12</value><unit>TimeResponse</unit>"
    return f"<prtg><result>{result}</result>{top}</prtg>"


def js(**result: Any) -> str:
    channel: Dict[str, Any] = {"channel": "Total", "value": 12, "unit": "TimeResponse"}
    channel.update(result)
    return json.dumps({"prtg": {"result": [{k: v for k, v in channel.items() if v is not None}], "text": "ok"}})


def v2(channels: List[Dict[str, Any]], **top: Any) -> str:
    document: Dict[str, Any] = {"version": 2, "status": "ok", "message": "ok", "channels": channels}
    document.update(top)
    return json.dumps({k: v for k, v in document.items() if v is not None})


def ch(**fields: Any) -> Dict[str, Any]:
    channel: Dict[str, Any] = {"id": 10, "name": "Total", "type": "float", "kind": "time_milliseconds", "value": 1.5}
    channel.update(fields)
    return {k: v for k, v in channel.items() if v is not None}


def ok(text: str, fmt: str) -> None:
    assert co.check(text, fmt) == [], co.check(text, fmt)


def bad(text: str, fmt: str, words: str) -> None:
    problems = co.check(text, fmt)
    assert problems and any(words in p for p in problems), problems


# ---------------------------------------------------------------- every format


def test_r1_nothing_around_the_document() -> None:
    ok(GOOD_XML, "prtg-xml")
    bad("\ufeff" + GOOD_XML, "prtg-xml", "byte order mark")
    bad("debug line\n" + GOOD_XML, "prtg-xml", "does not parse")
    bad(js() + "\nTraceback", "prtg-json", "does not parse")
    bad(v2([ch()]) + " {}", "script-v2", "does not parse")


def test_r2_text_is_a_string_within_2000_characters() -> None:
    ok(xml(top="<text>" + "x" * 2000 + "</text>"), "prtg-xml")
    bad(xml(top="<text>" + "x" * 2001 + "</text>"), "prtg-xml", "2001 characters")
    bad(json.dumps({"prtg": {"error": 1, "text": 123}}), "prtg-json", "text must be a string")
    bad(json.dumps({"prtg": {"error": 1, "text": ["a"]}}), "prtg-json", "text must be a string")
    bad(v2([], status="error", message=5), "script-v2", "message must be a string")
    bad(v2([ch()], message="m" * 2001), "script-v2", "2001 characters")


def test_r3_an_error_needs_a_text() -> None:
    ok("<prtg><error>1</error><text>why</text></prtg>", "prtg-xml")
    bad("<prtg><error>1</error></prtg>", "prtg-xml", "needs a text")
    bad(json.dumps({"prtg": {"error": 1, "text": " "}}), "prtg-json", "needs a text")
    bad(v2([], status="error", message=""), "script-v2", "needs a message")


# ---------------------------------------------------------------- EXE/Script Advanced, Python


def test_r4_root_and_top_level_elements() -> None:
    bad("<sensor><text>x</text></sensor>", "prtg-xml", "not <prtg>")
    bad(json.dumps({"prtg": {"text": "x"}, "extra": 1}), "prtg-json", 'one object {"prtg"')
    # warning is a result element (R7), not a top-level one
    bad(xml(top="<text>ok</text><warning>1</warning>"), "prtg-xml", "warning belongs inside a result")
    bad(json.dumps({"prtg": {"result": [{"channel": "T", "value": 1}], "warning": 1, "text": "x"}}),
        "prtg-json", "warning belongs inside a result")


def test_r5_error_is_zero_or_one() -> None:
    ok(xml(top="<text>ok</text><error>0</error>"), "prtg-xml")
    bad("<prtg><error>2</error><text>x</text></prtg>", "prtg-xml", "error must be 0 or 1")
    bad(json.dumps({"prtg": {"error": True, "text": "x"}}), "prtg-json", "error must be 0 or 1")


def test_r6_results_named_unique_at_most_50() -> None:
    bad("<prtg><text>nothing</text></prtg>", "prtg-xml", "no channel results")
    two = "<channel>A</channel><value>1</value></result><result><channel>A</channel><value>2</value>"
    bad(xml(two), "prtg-xml", "not unique")
    bad(xml("<value>1</value>"), "prtg-xml", "without a channel name")
    many = "".join(f"<result><channel>c{i}</channel><value>1</value></result>" for i in range(51))
    bad(f"<prtg>{many}<text>x</text></prtg>", "prtg-xml", "at most 50")


def test_r7_only_documented_result_elements() -> None:
    every = ("<channel>T</channel><value>1</value><unit>Custom</unit><customunit>mails</customunit>"
             "<speedsize>KiloBit</speedsize><volumesize>MegaByte</volumesize><speedtime>Second</speedtime>"
             "<mode>Absolute</mode><float>0</float><decimalmode>Auto</decimalmode><warning>0</warning>"
             "<showchart>1</showchart><showtable>1</showtable><limitmaxerror>10</limitmaxerror>"
             "<limitmaxwarning>5</limitmaxwarning><limitminwarning>1</limitminwarning>"
             "<limitminerror>0</limitminerror><limiterrormsg>high</limiterrormsg>"
             "<limitwarningmsg>rising</limitwarningmsg><limitmode>1</limitmode>"
             "<valuelookup>prtg.standardlookups.yesno.stateyesok</valuelookup><notifychanged></notifychanged>")
    ok(xml(every), "prtg-xml")
    ok(xml("<Channel>T</Channel><Value>1</Value><Unit>Count</Unit>"), "prtg-xml")  # PRTG ignores case
    bad(xml("<channel>T</channel><value>1</value><colour>red</colour>"), "prtg-xml", "unknown elements in the result")
    bad(js(colour="red"), "prtg-json", "unknown elements in the result")


def test_r8_values() -> None:
    ok(xml("<channel>T</channel><value>-3</value>"), "prtg-xml")
    bad(xml("<channel>T</channel><value>1,5</value><float>1</float>"), "prtg-xml", "'.' as decimal separator")
    bad(xml("<channel>T</channel><value>1.5</value>"), "prtg-xml", "without float=1")
    bad(xml("<channel>T</channel><value>abc</value>"), "prtg-xml", "is not a number")
    ok(xml(f"<channel>T</channel><value>{2**63 - 1}</value>"), "prtg-xml")
    bad(xml(f"<channel>T</channel><value>{2**63}</value>"), "prtg-xml", "outside the supported range")
    ok(js(value=2**62), "prtg-json")
    bad(js(value=2**62 + 1), "prtg-json", "outside the supported range")
    bad(js(value="12"), "prtg-json", "not a JSON number")
    bad(js(value=[1]), "prtg-json", "not a JSON number")


def test_r9_units_flags_and_choices() -> None:
    bad(js(unit="Milliseconds"), "prtg-json", "unknown unit")
    bad(js(float=2), "prtg-json", "float must be 0 or 1")
    bad(js(warning="yes"), "prtg-json", "warning must be 0 or 1")
    bad(js(showchart=3), "prtg-json", "showchart must be 0 or 1")
    ok(js(decimalmode="Auto"), "prtg-json")
    bad(js(decimalmode="3"), "prtg-json", "decimalmode")
    bad(js(mode="Delta"), "prtg-json", "mode 'Delta'")
    bad(js(speedsize="Huge"), "prtg-json", "speedsize")
    bad(js(speedtime="Week"), "prtg-json", "speedtime")


def test_r10_limits() -> None:
    ok(js(limitmode=1, limitmaxwarning=500, limitmaxerror="1000.5"), "prtg-json")
    ok(js(limitmode=0), "prtg-json")
    bad(js(limitmode=7), "prtg-json", "limitmode must be 0 or 1")
    bad(js(limitmode=1, limitmaxerror="high"), "prtg-json", "limitmaxerror 'high' is not a number")
    bad(xml("<channel>T</channel><value>1</value><limitminerror>1,5</limitminerror>"), "prtg-xml", "not a number")


def test_r11_value_lookups() -> None:
    ok(js(valuelookup="prtg.standardlookups.yesno.stateyesok"), "prtg-json")
    ok(xml("<channel>T</channel><value>1</value><ValueLookup>my.lookup</ValueLookup>"), "prtg-xml")
    bad(js(valuelookup=""), "prtg-json", "valuelookup is empty")


def test_warning_is_read_from_the_results() -> None:
    doc = co.parse(xml("<channel>T</channel><value>1</value><warning>1</warning>"), "prtg-xml")
    assert doc.warning and not doc.error
    assert not co.parse(js(), "prtg-json").warning
    assert co.parse(js(warning=1), "prtg-json").warning


# ---------------------------------------------------------------- Script v2


def test_r12_script_v2_top_level() -> None:
    ok(v2([ch()]), "script-v2")
    ok(json.dumps({"version": 2, "status": "ok"}), "script-v2")
    bad(json.dumps({"version": "2", "status": "ok"}), "script-v2", '"version": 2')
    bad(json.dumps({"version": True, "status": "ok"}), "script-v2", '"version": 2')
    bad('{"version": 2.0, "status": "ok"}', "script-v2", '"version": 2')
    bad(v2([ch()], status="fine"), "script-v2", "status 'fine'")
    bad(v2([ch()], extra=1), "script-v2", "unknown keys")
    bad(json.dumps({"version": 2, "status": "ok", "channels": {"id": 10}}), "script-v2", "must be a list of objects")


def test_r13_script_v2_ids_and_names() -> None:
    ok(v2([ch(id=2_147_483_647)]), "script-v2")
    bad(v2([ch(id=9)]), "script-v2", "from 10 to 2^31-1")
    bad(v2([ch(id=2_147_483_648)]), "script-v2", "from 10 to 2^31-1")
    bad(v2([ch(id="10")]), "script-v2", "from 10 to 2^31-1")
    bad(v2([ch(), ch(name="Other")]), "script-v2", "unique")
    bad(v2([ch(), ch(id=11)]), "script-v2", "unique")
    bad(v2([ch(name="")]), "script-v2", "no name")
    bad(v2([ch(id=10 + i, name=f"c{i}") for i in range(51)]), "script-v2", "at most 50")


def test_r14_script_v2_types_and_values() -> None:
    ok(v2([ch(type="integer", kind="count", value=3)]), "script-v2")
    ok(v2([ch(type="counter", kind="count", value=123456)]), "script-v2")
    ok(v2([ch(type="lookup", kind=None, value=1, lookup_name="prtg.standardlookups.yesno.stateyesok")]), "script-v2")
    bad(v2([ch(type="gauge")]), "script-v2", "type 'gauge'")
    bad(v2([ch(type="integer", kind="count", value=1.5)]), "script-v2", "not an integer")
    bad(v2([ch(type="counter", kind="count", value=-1)]), "script-v2", "cannot be negative")
    bad(v2([ch(type="integer", kind="count", value=2**63)]), "script-v2", "64-bit")
    bad(v2([ch(value="1.5")]), "script-v2", "not a number")
    bad(v2([ch(type="lookup", kind=None, value=1)]), "script-v2", "needs a lookup_name")


def test_r15_script_v2_kinds_and_keys() -> None:
    ok(v2([ch(kind="custom", display_unit="mails")]), "script-v2")
    bad(v2([ch(kind="milliseconds")]), "script-v2", "kind 'milliseconds'")
    bad(v2([ch(kind=None)]), "script-v2", "kind None")
    bad(v2([ch(unit="ms")]), "script-v2", "unknown keys")
    bad(v2([ch(display_unit="ms")]), "script-v2", "display_unit")


# ---------------------------------------------------------------- never crash

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=30,
)
KEYS = ["prtg", "result", "text", "error", "channel", "value", "unit", "float", "limitmode", "warning",
        "version", "status", "message", "channels", "id", "name", "type", "kind", "lookup_name", "decimalmode"]
shaped = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10) | st.sampled_from(KEYS),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(KEYS), children, max_size=6),
    max_leaves=40,
)


def _never_raises(text: str) -> None:
    for fmt in ("auto", "prtg-xml", "prtg-json", "script-v2"):
        problems = co.check(text, fmt)
        assert isinstance(problems, list) and all(isinstance(p, str) for p in problems)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_fuzz_any_text(text: str) -> None:
    _never_raises(text)


@settings(max_examples=300, deadline=None)
@given(st.one_of(json_values, shaped, shaped.map(lambda v: {"prtg": v}), shaped.map(lambda v: {"version": 2, **(
    v if isinstance(v, dict) else {"channels": v})})))
def test_fuzz_any_json_value(value: Any) -> None:
    _never_raises(json.dumps(value))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(["<prtg>", "</prtg>", "<result>", "</result>", "<channel>", "</channel>",
                                 "<value>", "</value>", "1.5", "x", "<text>", "</text>", "<error>", "</error>",
                                 "<!DOCTYPE x [<!ENTITY a 'b'>]>", "&a;", "<float>", "</float>"]), max_size=20))
def test_fuzz_xml_shapes(parts: List[str]) -> None:
    _never_raises("".join(parts))


def test_deep_nesting_and_huge_numbers_are_findings() -> None:
    assert co.check("[" * 100000 + "]" * 100000, "prtg-json")
    assert co.check('{"prtg": {"result": [{"channel": "T", "value": 1' + "0" * 5000 + "}]}}", "prtg-json")


@pytest.mark.parametrize("fmt", ["prtg-xml", "prtg-json", "script-v2", "nagios"])
def test_unknown_format_or_garbage_is_a_problem_list(fmt: str) -> None:
    assert co.check("", fmt)
