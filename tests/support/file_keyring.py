"""A keyring backend that keeps entries in a JSON file named by $PRTG_RT_TEST_KEYRING.

Tests select it with PYTHON_KEYRING_BACKEND=file_keyring.FileKeyring (this folder on
PYTHONPATH), because the machine's real stores (Secret Service, Windows Credential Manager) are
not available to a headless test process. It stands in for the store, not for any server.
"""

from __future__ import annotations

import json
import os
from typing import Dict, Optional

from keyring.backend import KeyringBackend
from keyring.errors import PasswordDeleteError


class FileKeyring(KeyringBackend):
    priority = 1

    def _load(self) -> Dict[str, str]:
        try:
            with open(os.environ["PRTG_RT_TEST_KEYRING"], encoding="utf-8") as handle:
                return dict(json.load(handle))
        except FileNotFoundError:
            return {}

    def _save(self, data: Dict[str, str]) -> None:
        with open(os.environ["PRTG_RT_TEST_KEYRING"], "w", encoding="utf-8") as handle:
            json.dump(data, handle)

    def get_password(self, service: str, username: str) -> Optional[str]:
        return self._load().get(f"{service}/{username}")

    def set_password(self, service: str, username: str, password: str) -> None:
        data = self._load()
        data[f"{service}/{username}"] = password
        self._save(data)

    def delete_password(self, service: str, username: str) -> None:
        data = self._load()
        if data.pop(f"{service}/{username}", None) is None:
            raise PasswordDeleteError("not stored")
        self._save(data)
