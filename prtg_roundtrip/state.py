"""What one run of a sensor leaves for the next: whether leftover probes may exist.

Sweeping for leftovers means a header search over the whole mailbox, which on a large mailbox
costs the server tens to hundreds of milliseconds. So a run sweeps only when one may be there:
a run of this sensor did not finish cleanly since the last sweep (it was killed, timed out, or
kept a probe still in flight), or the last sweep was a day ago (for other sensors' orphans),
or nothing is known (first run, state not writable). A small JSON file per sensor id, in
$PRTG_RT_STATE_DIR or the system's temporary folder, holds that.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from typing import Mapping

SWEEP_EVERY = 86400.0  # seconds: other sensors' orphans are removed once they are a day old


class SweepState:
    def __init__(self, sensor_id: str, environ: Mapping[str, str]):
        folder = environ.get("PRTG_RT_STATE_DIR") or os.path.join(tempfile.gettempdir(), "prtg-roundtrip")
        self.path = os.path.join(folder, re.sub(r"[^A-Za-z0-9._-]", "_", sensor_id) + ".json")
        self._saved = self._load()

    def _load(self) -> dict:
        try:
            with open(self.path, encoding="utf-8") as handle:
                data = json.load(handle)
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def _save(self, data: dict) -> None:
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            temporary = f"{self.path}.{os.getpid()}.tmp"
            with open(temporary, "w", encoding="utf-8") as handle:
                json.dump(data, handle)
            os.replace(temporary, self.path)
        except OSError:
            pass  # unknown state next time means: sweep

    def sweep_due(self) -> bool:
        """As the previous runs left it (read before this run marks itself)."""
        swept_at = self._saved.get("swept_at")
        if self._saved.get("unclean", True) or not isinstance(swept_at, (int, float)):
            return True
        return time.time() - swept_at > SWEEP_EVERY

    def probe_in_flight(self) -> None:
        """Written before sending: if this run never finishes, the next one sweeps."""
        self._save({**self._saved, "unclean": True})

    def finished(self, swept: bool, own_probes_left: bool) -> None:
        """This run removed its own probe. `swept`: it also swept; `own_probes_left`: the sweep
        kept probes of this sensor that were still in flight (they need a later sweep)."""
        data = dict(self._saved)
        if swept:
            data["swept_at"] = time.time()
        data["unclean"] = bool(own_probes_left) or (not swept and self._saved.get("unclean", True))
        self._save(data)
