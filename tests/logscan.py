"""What must never be logged — tokens, SDP credentials, patient names — checked over the logs
of the whole test suite.

tests/conftest.py installs a ``LogScan`` handler for the session: every record a logger lets
through (the project's loggers at INFO, as in production; the others at WARNING) is formatted
as production formats it (huizhen/logs.py ``JsonFormatter``) and checked as it is written. At
the session's end the logs of the servers run in their own process (``server-*.log`` under the
session's temporary folder) are checked too, and the session fails naming the lines.

A line fails if it holds a JWT, an ``a=ice-pwd`` / ``a=ice-ufrag`` / ``a=fingerprint`` value, the
formatter's ``[redacted]`` (something tried to log a secret), or a patient's name: the fixed
names the tests use, and every name the harness puts in a patient's or guardian's token
(``watch_name``).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from huizhen.logs import REDACTED, JsonFormatter

#: the patients' and relatives' names the tests use (tests/harness.py adds the others it mints)
PATIENT_NAMES = {"王芳", "Wang Fang", "王女士", "张女士", "王安娜", "王小明", "Li Hua",
                 "Zhang San"}
PATIENT_ROLES = frozenset({"patient", "guardian"})
_SECRETS = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.|a=ice-pwd:|a=ice-ufrag:"
                      r"|a=fingerprint:")


def watch_name(role: str, name: str | None) -> None:
    """A patient's (or guardian's) name, to be found in no log line. Names too short or too
    common to tell apart from other text (``"P"``, ``"Pat"``) are left out."""
    if role in PATIENT_ROLES and name and len(name) >= 2 and (not name.isascii()
                                                              or len(name) >= 6):
        PATIENT_NAMES.add(name)


def leak(line: str) -> str | None:
    """What ``line`` must not hold, named; None if it is clean."""
    if REDACTED in line:
        return "a secret (the formatter blanked it: the code logged it)"
    found = _SECRETS.search(line)
    if found:
        return f"a token or SDP credential ({found.group(0)[:12]}…)"
    for name in PATIENT_NAMES:
        if name in line:
            return f"the patient name {name!r}"
    return None


class LogScan(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.setFormatter(JsonFormatter())
        self.lines = 0
        self.found: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # a record that cannot be formatted is logging's own problem
            return
        self.lines += 1
        problem = leak(line)
        if problem is not None:
            self.found.append(f"{problem}: {line[:400]}")

    def scan_files(self, folder: Path, pattern: str = "server-*.log") -> None:
        for path in sorted(folder.rglob(pattern)):
            for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                self.lines += 1
                problem = leak(line)
                if problem is not None:
                    self.found.append(f"{problem}: {path.name}:{number}: {line[:400]}")

    def report(self) -> str:
        shown = "\n  ".join(self.found[:20])
        more = f"\n  … and {len(self.found) - 20} more" if len(self.found) > 20 else ""
        return (f"{len(self.found)} of {self.lines} log lines of this test session hold what "
                f"must never be logged:\n  {shown}{more}")
