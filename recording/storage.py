"""The local recordings folder: checked at start so a bad folder fails loudly, not mid-session."""

from __future__ import annotations

import tempfile
from pathlib import Path

from huizhen.config import ConfigError


class RecordingStorage:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def check(self) -> None:
        """Create the folder if needed and prove it is writable; ConfigError names the fix."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.folder, prefix=".write-check-"):
                pass
        except OSError as exc:
            raise ConfigError(
                f"recording.folder {self.folder} is not a writable folder ({exc.strerror}); "
                "set recording.folder or HUIZHEN_RECORDING__FOLDER to one the service can "
                "write") from exc
