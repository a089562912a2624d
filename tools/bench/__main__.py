"""``python3 tools/bench [ARGS]``: this folder imports as the package ``bench`` from tools/.

Python puts the script's folder (this one) first on sys.path; it comes off again, or its
modules would hide the standard library's of the same name (``concurrent``).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

from bench.cli import main  # noqa: E402 - needs the path above

if __name__ == "__main__":
    sys.exit(main())
