#!/bin/sh
# prtg-roundtrip launcher for Linux and other POSIX systems: finds the Python that has the
# prtg_roundtrip package and runs `python -m prtg_roundtrip ARGS`, every argument passed through
# unchanged ("$@": spaces, quotes, %, !, ^, &, $, backslashes, empty and non-ASCII values).
#
# Where it looks, in this order (docs/launchers.md):
#   0. $PRTG_ROUNDTRIP_PYTHON: a Python interpreter; when set, it is the only candidate
#   1. a virtual environment in this launcher's folder: .venv/bin/python, then
#      prtg-roundtrip-venv/bin/python
#   2. an installed `prtg-roundtrip` command on PATH
#   3. python3 on PATH: the installed package if the prtg-roundtrip distribution is installed
#      in it (pip's metadata), else the single file prtg-roundtrip.pyz next to this launcher,
#      with `python3 -S` (it needs nothing from site-packages: their .pth files cost no time)
# If none is found it prints a PRTG error document naming the places it looked (XML; JSON with
# --format prtg-json; Script v2 JSON with --format script-v2 or when it runs as Script v2) and
# exits 0. Uses only shell builtins, so it works with an empty PATH too.

# UTF-8 on stdout whatever the locale; never import from the working directory (Python 3.11+).
PYTHONIOENCODING=utf-8
PYTHONUTF8=1
PYTHONSAFEPATH=1
export PYTHONIOENCODING PYTHONUTF8 PYTHONSAFEPATH

# This is the Script v2 launcher: PRTG's Script v2 sensor starts it without arguments and writes
# the Parameters field to stdin. Tell the sensor so explicitly (it never decides Script v2 from an
# empty command line alone, and does not wait on a stdin nobody writes to).
if [ $# -eq 0 ] && [ ! -t 0 ]; then
  PRTG_ROUNDTRIP_SCRIPT_V2=1
  export PRTG_ROUNDTRIP_SCRIPT_V2
fi

case $0 in
  */*) here=${0%/*} ;;
  *) here=. ;;
esac
here=$(cd -- "$here" 2>/dev/null && pwd) || here=${0%/*}

looked=
note() { looked="${looked:+$looked; }$1"; }

if [ -n "${PRTG_ROUNDTRIP_PYTHON:-}" ]; then
  if [ -f "$PRTG_ROUNDTRIP_PYTHON" ] && [ -x "$PRTG_ROUNDTRIP_PYTHON" ]; then
    exec "$PRTG_ROUNDTRIP_PYTHON" -m prtg_roundtrip "$@"
  fi
  note "PRTG_ROUNDTRIP_PYTHON=$PRTG_ROUNDTRIP_PYTHON (not an executable file; it overrides all other places)"
else
  for venv in "$here/.venv" "$here/prtg-roundtrip-venv"; do
    if [ -x "$venv/bin/python" ]; then
      exec "$venv/bin/python" -m prtg_roundtrip "$@"
    fi
    note "$venv/bin/python"
  done

  # A launcher installed as `prtg-roundtrip` must not find itself again.
  if [ -z "${PRTG_ROUNDTRIP_LAUNCHED:-}" ] && cmd=$(command -v prtg-roundtrip 2>/dev/null); then
    PRTG_ROUNDTRIP_LAUNCHED=1
    export PRTG_ROUNDTRIP_LAUNCHED
    exec "$cmd" "$@"
  fi
  note "prtg-roundtrip on PATH"

  if py=$(command -v python3 2>/dev/null); then
    if (cd / && exec "$py" -c 'import importlib.metadata as m; m.distribution("prtg-roundtrip")') >/dev/null 2>&1; then
      exec "$py" -m prtg_roundtrip "$@"
    fi
    if [ -f "$here/prtg-roundtrip.pyz" ]; then
      exec "$py" -S "$here/prtg-roundtrip.pyz" "$@"
    fi
    note "$py (prtg-roundtrip is not installed in it)"
  else
    note "python3 on PATH"
  fi
fi

# Nothing found: one PRTG error document, in the format the arguments ask for, read as the
# package reads it: the first known --format value; without one, the Script v2 format when this
# launcher runs as Script v2 (the marker set above; stdin is left unread here), else XML.
fmt=prtg-xml
[ "${PRTG_ROUNDTRIP_SCRIPT_V2:-}" = 1 ] && fmt=script-v2
prev=
for arg in "$@"; do
  value=
  if [ "$prev" = --format ]; then value=$arg; fi
  case $arg in --format=*) value=${arg#--format=} ;; esac
  case $value in
    prtg-xml | prtg-json | script-v2 | text) fmt=$value; break ;;
  esac
  prev=$arg
done

# replace TEXT FROM TO: every FROM in TEXT becomes TO; the result is in $out.
replace() {
  rest=$1 out=
  while :; do
    case $rest in
      *"$2"*) out=$out${rest%%"$2"*}$3; rest=${rest#*"$2"} ;;
      *) out=$out$rest; return 0 ;;
    esac
  done
}

nl='
'
tab='	'
message="prtg-roundtrip launcher: no Python found (looked in: $looked). Put prtg-roundtrip.pyz \
next to this launcher (it runs with any python3, 3.9 or later), or install prtg-roundtrip \
into a virtual environment next to this launcher ($here/prtg-roundtrip-venv, e.g. offline from \
the bundle: python3 -m venv prtg-roundtrip-venv && prtg-roundtrip-venv/bin/python -m pip install \
--no-index --find-links wheels prtg-roundtrip), or set PRTG_ROUNDTRIP_PYTHON. See docs/launchers.md."

case $fmt in
  prtg-json | script-v2)
    replace "$message" '\' '\\'; replace "$out" '"' '\"'; replace "$out" "$nl" '\n'; replace "$out" "$tab" '\t'
    if [ "$fmt" = script-v2 ]; then
      printf '{"version": 2, "status": "error", "message": "%s"}\n' "$out"
    else
      printf '{"prtg": {"error": 1, "text": "%s"}}\n' "$out"
    fi
    exit 0 ;;
  text)
    printf '%s\n' "$message"
    exit 1 ;;
  *)
    replace "$message" '&' '&amp;'; replace "$out" '<' '&lt;'; replace "$out" '>' '&gt;'
    printf '<?xml version="1.0" encoding="UTF-8"?><prtg><error>1</error><text>%s</text></prtg>\n' "$out"
    exit 0 ;;
esac
