"""A1111-style UI settings, saved as `<data-dir>/settings.json`."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

DEFAULTS = {"language": "en"}


class Settings:
    def __init__(self, data_dir: Path):
        self.path = Path(data_dir) / "settings.json"
        self.values = dict(DEFAULTS)
        try:
            self.values.update(json.loads(self.path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            pass
        except (json.JSONDecodeError, OSError) as e:  # a broken file must not stop the studio
            print(f"[settings] ignoring unreadable {self.path}: {e}")

    def get(self, key: str):
        return self.values.get(key, DEFAULTS.get(key))

    def set(self, key: str, value) -> None:
        self.values[key] = value
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".settings-")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(self.values, f, indent=2, ensure_ascii=False)
        os.replace(tmp, self.path)  # atomic: a crash never leaves half a file
