"""Issue 10, hardening of the sensor's edges: state folder, parameters, files, output, signals.

Fast in-process tests through cli.main(argv, environ, stdout, stdin) where possible; a few real
processes where real bytes in argv/environ or signals matter. None needs the mail stack.
"""

from __future__ import annotations

import io
import json
import os
import pwd
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from prtg_roundtrip import state
from prtg_roundtrip.state import UnsafeStateFolder, private_folder, read_private, write_private

ROOT = Path(__file__).resolve().parent.parent
posix_only = pytest.mark.skipif(os.name == "nt", reason="POSIX ownership and modes")
root_only = pytest.mark.skipif(os.name == "nt" or os.geteuid() != 0, reason="chown to another user needs root")


def _nobody() -> int:
    return pwd.getpwnam("nobody").pw_uid


# ---------------------------------------------------------------- 1. the private state folder


@posix_only
def test_private_folder_default_is_per_user_and_0700(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    folder = private_folder({"HOME": str(home)})
    assert folder == str(home / ".local" / "state" / "prtg-roundtrip")
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    xdg = tmp_path / "xdg"
    xdg.mkdir(mode=0o700)
    assert private_folder({"HOME": str(home), "XDG_STATE_HOME": str(xdg)}) == str(xdg / "prtg-roundtrip")


@posix_only
def test_private_folder_refuses_group_or_world_writable(tmp_path: Path) -> None:
    folder = tmp_path / "shared"
    folder.mkdir()
    for mode in (0o770, 0o777, 0o1777):
        os.chmod(folder, mode)
        with pytest.raises(UnsafeStateFolder, match="writable by other users"):
            private_folder({"PRTG_RT_STATE_DIR": str(folder)})
    os.chmod(folder, 0o700)
    assert private_folder({"PRTG_RT_STATE_DIR": str(folder)}) == str(folder)


@root_only
def test_private_folder_refuses_a_folder_of_another_user(tmp_path: Path) -> None:
    folder = tmp_path / "theirs"
    folder.mkdir(mode=0o700)
    os.chown(folder, _nobody(), -1)
    with pytest.raises(UnsafeStateFolder, match="another user"):
        private_folder({"PRTG_RT_STATE_DIR": str(folder)})
    # ... also as a parent on the way (their folder, our subfolder inside)
    os.chown(folder, 0, -1)
    inner = folder / "inner"
    inner.mkdir(mode=0o700)
    os.chown(folder, _nobody(), -1)
    with pytest.raises(UnsafeStateFolder, match="another user"):
        private_folder({"PRTG_RT_STATE_DIR": str(inner)})


@root_only
def test_private_folder_refuses_a_link_of_another_user(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o1777)  # like /tmp: others may create entries
    target = tmp_path / "target"
    target.mkdir(mode=0o700)
    link = tmp_path / "prtg-roundtrip"
    link.symlink_to(target)
    os.lchown(link, _nobody(), -1)
    with pytest.raises(UnsafeStateFolder, match="link of another user"):
        private_folder({"PRTG_RT_STATE_DIR": str(link)})
    os.lchown(link, 0, -1)  # our own link to our own folder is fine
    assert private_folder({"PRTG_RT_STATE_DIR": str(link)}) == str(link)


@posix_only
def test_write_private_replaces_a_planted_link_and_never_follows_it(tmp_path: Path) -> None:
    folder = tmp_path / "state"
    folder.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    planted = folder / "sensor.json"
    planted.symlink_to(victim)
    with pytest.raises(UnsafeStateFolder, match="link"):
        read_private(str(planted))
    write_private(str(planted), b"{}")
    assert victim.read_bytes() == b"precious"
    assert not planted.is_symlink() and planted.read_bytes() == b"{}"
    assert stat.S_IMODE(os.stat(planted).st_mode) == 0o600
    assert sorted(p.name for p in folder.iterdir()) == ["sensor.json"]  # no temporary left
    assert read_private(str(folder / "missing.json")) is None


@posix_only
def test_write_private_refuses_an_unsafe_folder(tmp_path: Path) -> None:
    folder = tmp_path / "open"
    folder.mkdir()
    os.chmod(folder, 0o777)
    with pytest.raises(UnsafeStateFolder):
        write_private(str(folder / "x.json"), b"{}")
    assert not (folder / "x.json").exists()


@root_only
def test_read_private_refuses_a_file_of_another_user(tmp_path: Path) -> None:
    folder = tmp_path / "state"
    folder.mkdir(mode=0o700)
    theirs = folder / "sensor.json"
    theirs.write_bytes(b'{"unclean": false}')
    os.chown(theirs, _nobody(), -1)
    with pytest.raises(UnsafeStateFolder, match="another user"):
        read_private(str(theirs))


@posix_only
def test_sweep_state_in_an_unsafe_folder_is_a_note_and_never_follows_a_link(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (shared / "s1.json").symlink_to(victim)
    sweep = state.SweepState("s1", {"PRTG_RT_STATE_DIR": str(shared)})
    assert sweep.sweep_due()
    sweep.probe_in_flight()
    sweep.finished(swept=True, own_probes_left=False)
    assert victim.read_bytes() == b"precious"
    assert sweep.note and "writable by other users" in sweep.note


@posix_only
def test_sweep_state_round_trip_in_a_private_folder(tmp_path: Path) -> None:
    env = {"PRTG_RT_STATE_DIR": str(tmp_path / "private")}
    first = state.SweepState("s1", env)
    assert first.sweep_due() and first.note is None
    first.finished(swept=True, own_probes_left=False)
    assert not state.SweepState("s1", env).sweep_due()
    assert stat.S_IMODE(os.stat(tmp_path / "private").st_mode) == 0o700
