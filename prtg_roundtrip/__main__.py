"""`python -m prtg_roundtrip`: the same as the `prtg-roundtrip` command."""

from .cli import run

run()
