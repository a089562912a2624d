"""The documents as PRTG documents them (issue 11): warning inside a result, integral limits as
integers, and no broken document ever leaving the process (prtg_roundtrip/outcheck.py)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from typing import List, Tuple

import pytest
from conftest import ROOT
from conftest import check_output as co

from prtg_roundtrip import cli, render
from prtg_roundtrip.report import Channel, Report, number_text
from prtg_roundtrip.settings import OutputFormat

CHANNELS = (
    Channel("Total", 12.5, 10, limit_max_warning=500.0, limit_max_error=1000.25),
    Channel("Response Time (SMTP)", 5.0, 11),
    Channel("Response Time (IMAP)", 7.5, 12),
)


def rendered(fmt: OutputFormat, warning: bool = True) -> str:
    return render.render(Report.success(CHANNELS, "a text", warning=warning), fmt)


@pytest.mark.parametrize("fmt", [OutputFormat.PRTG_XML, OutputFormat.PRTG_JSON])
def test_warning_is_a_result_element_of_the_primary_channel(fmt: OutputFormat) -> None:
    text = rendered(fmt)
    assert co.check(text, fmt.value) == []
    doc = co.parse(text, fmt.value)
    assert doc.warning
    assert [r.get("warning") for r in doc.results] == ["1", None, None]
    if fmt is OutputFormat.PRTG_JSON:
        assert "warning" not in json.loads(text)["prtg"]  # not at the top, where PRTG does not read it
    quiet = co.parse(rendered(fmt, warning=False), fmt.value)
    assert not quiet.warning and all("warning" not in r for r in quiet.results)


@pytest.mark.parametrize("fmt", [OutputFormat.PRTG_XML, OutputFormat.PRTG_JSON])
def test_integral_limits_are_written_as_integers(fmt: OutputFormat) -> None:
    text = rendered(fmt)
    total = co.parse(text, fmt.value).channel("Total")
    assert total["limitmaxwarning"] == "500" and total["limitmaxerror"] == "1000.25"
    if fmt is OutputFormat.PRTG_JSON:
        assert json.loads(text)["prtg"]["result"][0]["limitmaxwarning"] == 500
        assert isinstance(json.loads(text)["prtg"]["result"][0]["limitmaxwarning"], int)


@pytest.mark.parametrize("value, text", [(500.0, "500"), (0.001, "0.001"), (1e-05, "0.00001"), (60000.5, "60000.5"),
                                         (1e16, "10000000000000000")])
def test_number_text_is_plain_decimal(value: float, text: str) -> None:
    assert number_text(value) == text


def _main(argv: List[str]) -> Tuple[int, str]:
    out = io.BytesIO()
    code = cli.main(argv, environ={}, stdout=out, stdin=io.BytesIO(b""))
    return code, out.getvalue().decode("utf-8")


BROKEN = {
    "prtg-xml": "<prtg><error>1</error><text>a & b</text></prtg>",
    "prtg-json": '{"prtg": {"error": 1, "text": "unterminated}}',
    "script-v2": '{"prtg": {"error": 1, "text": "the wrong format"}}',
}


@pytest.mark.parametrize("fmt", sorted(BROKEN))
def test_a_broken_rendering_becomes_a_minimal_error_document(fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render, "render", lambda report, f, *args, **kwargs: BROKEN[f.value])
    code, text = _main(["--format", fmt, "--no-such-option"])
    assert code == 0
    assert co.check(text, fmt) == [], text
    doc = co.parse(text, fmt)
    assert doc.error and "document of this run was malformed and was not sent" in str(doc.text)
    assert ("XML does not parse" if fmt == "prtg-xml" else "JSON does not parse" if fmt == "prtg-json"
            else '"version": 2') in str(doc.text)


@pytest.mark.parametrize("fmt", sorted(BROKEN))
def test_a_template_that_raises_becomes_a_minimal_error_document(fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(report: Report, f: OutputFormat, *args: object, **kwargs: object) -> str:
        raise TypeError("a template bug & <more>")

    monkeypatch.setattr(render, "render", explode)
    code, text = _main(["--format", fmt, "--no-such-option"])
    assert code == 0 and co.check(text, fmt) == [], text
    assert "could not be rendered (TypeError: a template bug & <more>)" in str(co.parse(text, fmt).text)


@pytest.mark.parametrize("fmt", ["prtg-xml", "prtg-json", "script-v2"])
def test_sound_documents_go_out_unchanged(fmt: str) -> None:
    code, text = _main(["--format", fmt, "--no-such-option"])
    assert code == 0
    assert co.check(text, fmt) == [] and "unrecognized option --no-such-option" in str(co.parse(text, fmt).text)
    assert "malformed" not in text


@pytest.mark.parametrize("fmt, imported", [("prtg-xml", True), ("prtg-json", False), ("script-v2", False)])
def test_defusedxml_is_imported_only_for_xml(fmt: str, imported: bool) -> None:
    code = (
        "import io, sys\n"
        "from prtg_roundtrip import cli\n"
        f"cli.main(['--format', '{fmt}', '--no-such-option'], environ={{}}, stdout=io.BytesIO(), stdin=io.BytesIO())\n"
        "print('defusedxml' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT), check=True)
    assert proc.stdout.strip() == str(imported), proc
