"""--store-result next to PRTG's own "Write EXE result to disk" (issue 11): both write into
Logs\\sensors, so the sensor's files have names of their own and never touch PRTG's."""

from __future__ import annotations

import io
import socket
from pathlib import Path

from conftest import check_output

from prtg_roundtrip import cli, resultfile


def test_store_result_never_overwrites_prtgs_own_files(tmp_path: Path) -> None:
    prtg_txt = tmp_path / "Result of Sensor 4711.txt"
    prtg_data = tmp_path / "Result of Sensor 4711.Data.txt"
    prtg_txt.write_text("PRTG's own capture", encoding="utf-8")
    prtg_data.write_text("Data['host'] := 'x';", encoding="utf-8")
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = str(closed.getsockname()[1])  # bound, not listening: connections are refused
    try:
        out = io.BytesIO()
        code = cli.main(["--from", "a@b.c", "--to", "x@y.z", "--smtp-host", "127.0.0.1", "--imap-host", "127.0.0.1",
                         "--imap-port", port, "--imap-tls", "off", "--imap-user", "u", "--imap-password", "Pw-9x",
                         "--sensor-id", "4711", "--store-result", "--result-dir", str(tmp_path)],
                        environ={}, stdout=out, stdin=io.BytesIO(b""))
    finally:
        closed.close()
    document = out.getvalue().decode("utf-8")
    assert code == 0 and check_output.parse(document, "prtg-xml").error
    assert prtg_txt.read_text(encoding="utf-8") == "PRTG's own capture"
    assert prtg_data.read_text(encoding="utf-8") == "Data['host'] := 'x';"
    ours, data = (Path(p) for p in resultfile.result_paths(str(tmp_path), "4711"))
    assert ours.name == "Result of Sensor 4711.prtg-roundtrip.txt"
    assert data.name == "Result of Sensor 4711.prtg-roundtrip.Data.txt"
    assert ours.read_text(encoding="utf-8") == document
    assert "Data['imap_password'] := '***';" in data.read_text(encoding="utf-8")
    assert "Pw-9x" not in data.read_text(encoding="utf-8")
