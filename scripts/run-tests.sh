#!/usr/bin/env bash
# Run pytest inside a private network namespace that has only the loopback interface, when
# the machine allows it (root, or unprivileged user namespaces): every byte of test traffic
# then provably stays on 127.0.0.0/8 (Chromium and aioice gather nothing else). Tests that need
# PostgreSQL or Redis start throwaway servers there. Otherwise pytest runs as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
pytest=(.venv/bin/pytest -q --durations=25 "$@")  # the slowest, to keep the suite under 15 min
if [ "${HUIZHEN_TEST_NO_NETNS:-}" != 1 ]; then
  if [ "$(id -u)" -eq 0 ] && unshare --net true 2>/dev/null; then
    exec unshare --net -- sh -c 'ip link set lo up && exec "$@"' _ "${pytest[@]}"
  elif unshare --user --map-root-user --net true 2>/dev/null; then
    exec unshare --user --map-root-user --net -- sh -c 'ip link set lo up && exec "$@"' _ "${pytest[@]}"
  fi
  echo "note: no private network namespace available; running tests in the host's" >&2
fi
exec "${pytest[@]}"
