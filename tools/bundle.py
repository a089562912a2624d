#!/usr/bin/env python3
"""Build the offline bundle: dist/prtg-roundtrip-bundle-<version>.zip.

    python3 tools/bundle.py [--out-dir DIR] [--platforms windows,linux] [--python-versions 3.9,...]

For probes without internet access. The zip holds one folder, prtg-roundtrip-bundle-<version>/:

    wheels/     the package's wheel and wheels of all its dependencies (imapclient, jinja2,
                markupsafe, defusedxml, keyring and keyring's own), for Windows (win_amd64) and
                Linux (manylinux x86_64), CPython 3.9 to 3.13; pure-Python wheels once
    scripts/    the launchers (scripts/ of this repository)
    docs/       launchers.md
    INSTALL.md  how to install: python -m pip install --no-index --find-links wheels prtg-roundtrip

Needs the package index once, at build time (`pip download --only-binary=:all: --platform ...
--python-version ... --require-hashes -r requirements/runtime.txt`: the versions and hashes
pinned by tools/lock). pip evaluates dependency markers such as `sys_platform == "win32"`
against the machine it runs on, not the target (pip issue 10050), so every download runs pip
with the target's marker environment. Afterwards, unless --no-check, an offline resolution from
the wheels folder alone (`--no-index`, no pip configuration) for every target proves the bundle
complete.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent
PYTHON_VERSIONS = ("3.9", "3.10", "3.11", "3.12", "3.13")
PLATFORM_TAGS = {
    "windows": ["win_amd64"],
    # glibc 2.17 (RHEL/CentOS 7) and up; newer tags first so the best wheel wins.
    "linux": ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"],
}
RUNTIME_LOCK = ROOT / "requirements" / "runtime.txt"
SOURCE_ITEMS = ("setup.cfg", "pyproject.toml", "README.md", "LICENSE", "MANIFEST.in", "prtg_roundtrip")

# Runs pip with the target's PEP 508 marker environment (argv[1], JSON) instead of this machine's.
PIP_WITH_MARKERS = """
import json, sys
from pip._vendor.packaging import markers
_env = json.loads(sys.argv[1])
markers.default_environment = lambda: dict(_env)
from pip._internal.cli.main import main
sys.exit(main(sys.argv[2:]))
"""


def latest_patch(version: str) -> str:
    """A patch release above any excluded one: "3.9" alone means 3.9.0 to pip, which some pinned
    wheels exclude (cryptography: Requires-Python !=3.9.0,!=3.9.1)."""
    return version + ".99"


def marker_environment(platform: str, version: str) -> Dict[str, str]:
    full = latest_patch(version)
    common = {
        "implementation_name": "cpython",
        "implementation_version": full,
        "platform_python_implementation": "CPython",
        "python_full_version": full,
        "python_version": version,
    }
    if platform == "windows":
        return dict(common, os_name="nt", sys_platform="win32", platform_system="Windows",
                    platform_machine="AMD64", platform_release="10", platform_version="10.0.20348")
    return dict(common, os_name="posix", sys_platform="linux", platform_system="Linux",
                platform_machine="x86_64", platform_release="", platform_version="")


def target_options(platform: str, version: str) -> List[str]:
    options = ["--only-binary=:all:", "--implementation", "cp", "--python-version", latest_patch(version)]
    for tag in PLATFORM_TAGS[platform]:
        options += ["--platform", tag]
    return options


def pip_for(platform: str, version: str, *args: str, env: Optional[Dict[str, str]] = None) -> None:
    command = [sys.executable, "-c", PIP_WITH_MARKERS, json.dumps(marker_environment(platform, version)),
               "--disable-pip-version-check", *args]
    subprocess.run(command, check=True, env=env)


def offline_pip_env() -> Dict[str, str]:
    """No pip configuration at all: no extra index or find-links from this machine."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    return env


def build_wheel(work: Path) -> Path:
    source = work / "source"
    source.mkdir()
    for name in SOURCE_ITEMS:
        item = ROOT / name
        if item.is_dir():
            shutil.copytree(item, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif item.is_file():
            shutil.copy2(item, source / name)
    out = work / "package"
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "wheel", "--no-deps",
                    "--quiet", "--wheel-dir", str(out), str(source)], check=True)
    (wheel,) = out.glob("prtg_roundtrip-*.whl")
    return wheel


def install_text(version: str, targets: Sequence[str]) -> str:
    return f"""# prtg-roundtrip {version}: offline bundle

Wheels for: {", ".join(targets)}. Run the commands in this folder (the one holding `wheels`).
Full guide: docs/launchers.md.

## Windows probe (EXE/Script Advanced sensor)

Needs a Python 3.9 or later installed for all users. In an administrator prompt, in this folder:

    set "BUNDLE=%CD%"
    cd /d "%ProgramFiles(x86)%\\PRTG Network Monitor\\Custom Sensors\\EXEXML"
    py -3 -m venv prtg-roundtrip-venv
    prtg-roundtrip-venv\\Scripts\\python.exe -m pip install --no-index --find-links "%BUNDLE%\\wheels" prtg-roundtrip
    copy "%BUNDLE%\\scripts\\prtg-roundtrip.bat" .

Then add an EXE/Script Advanced sensor with `prtg-roundtrip.bat` and the parameters.

## Linux (multi-platform probe, or by hand)

    D=/opt/paessler/share/scripts
    python3 -m venv $D/prtg-roundtrip-venv
    $D/prtg-roundtrip-venv/bin/python -m pip install --no-index --find-links wheels prtg-roundtrip
    install -m 755 scripts/prtg-roundtrip.sh $D/

## Into an existing Python (e.g. PRTG's own, for the Python Script Advanced sensor)

    python -m pip install --no-index --find-links wheels prtg-roundtrip

and copy `scripts/prtg_roundtrip_python.py` into `Custom Sensors\\python`.
"""


def build(out_dir: Path, platforms: Sequence[str], versions: Sequence[str], check: bool = True) -> Path:
    with tempfile.TemporaryDirectory(prefix="prtg-roundtrip-bundle-") as tmp:
        work = Path(tmp)
        package = build_wheel(work)
        version = package.name.split("-")[1]
        name = f"prtg-roundtrip-bundle-{version}"
        tree = work / name
        wheels = tree / "wheels"
        wheels.mkdir(parents=True)
        shutil.copy2(package, wheels / package.name)

        targets = []
        for platform in platforms:
            for python in versions:
                targets.append(f"{platform} CPython {python}")
                print(f"bundle: wheels for {platform}, CPython {python}", file=sys.stderr)
                # The pinned versions with their hashes (requirements/runtime.txt, from tools/lock);
                # its markers are evaluated for the target.
                pip_for(platform, python, "download", "--quiet", *target_options(platform, python),
                        "--require-hashes", "--no-deps", "--dest", str(wheels), "-r", str(RUNTIME_LOCK))

        if check:
            # Resolve again from the wheels folder alone, as `pip install --no-index` on the target
            # would. (`pip download`, not `pip install --dry-run --target`: older pip checks
            # Requires-Python against the running interpreter there, not --python-version.)
            for platform in platforms:
                for python in versions:
                    print(f"bundle: offline resolution check for {platform}, CPython {python}", file=sys.stderr)
                    check_dir = work / "check"
                    pip_for(platform, python, "download", "--quiet", "--no-index", "--find-links", str(wheels),
                            *target_options(platform, python), "--dest", str(check_dir), "prtg-roundtrip",
                            env=offline_pip_env())
                    shutil.rmtree(check_dir)

        shutil.copytree(ROOT / "scripts", tree / "scripts",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".gitattributes"))
        if (ROOT / "docs" / "launchers.md").is_file():
            (tree / "docs").mkdir()
            shutil.copy2(ROOT / "docs" / "launchers.md", tree / "docs" / "launchers.md")
        (tree / "INSTALL.md").write_text(install_text(version, targets), encoding="utf-8")

        out_dir.mkdir(parents=True, exist_ok=True)
        archive = out_dir / f"{name}.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(tree.rglob("*")):
                relative = path.relative_to(work).as_posix()
                if path.is_dir():
                    continue
                info = zipfile.ZipInfo(relative, date_time=(2020, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = (0o755 if os.access(path, os.X_OK) else 0o644) << 16
                zf.writestr(info, path.read_bytes())
        return archive


def _csv(text: str) -> List[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out-dir", type=Path, default=ROOT / "dist", help="where the zip goes (default dist/)")
    parser.add_argument("--platforms", type=_csv, default=list(PLATFORM_TAGS),
                        help="comma-separated: windows,linux (default both)")
    parser.add_argument("--python-versions", type=_csv, default=list(PYTHON_VERSIONS),
                        help="comma-separated CPython versions (default 3.9 to 3.13)")
    parser.add_argument("--no-check", action="store_true", help="skip the offline resolution check per target")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.platforms) - set(PLATFORM_TAGS))
    if unknown:
        parser.error(f"unknown platform(s): {', '.join(unknown)}")
    archive = build(args.out_dir, args.platforms, args.python_versions, check=not args.no_check)
    print(archive)
    return 0


if __name__ == "__main__":
    sys.exit(main())
