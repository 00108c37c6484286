"""Imported first by every bench script: the repository goes before bench/ on ``sys.path``.

``python bench/fanout.py`` puts bench/ first, where bench/recording.py would stand in for the
project's ``recording`` package; with the repository first, project packages are the
project's, and the scripts still import each other (bench/ comes right after).
"""

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent

for _path in (str(BENCH), str(REPO)):
    while _path in sys.path:
        sys.path.remove(_path)
    sys.path.insert(0, _path)
