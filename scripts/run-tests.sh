#!/usr/bin/env bash
# Run pytest inside a private network namespace that has only the loopback interface, when
# the machine allows it (root, or unprivileged user namespaces): every byte of test traffic
# then provably stays on 127.0.0.0/8 (Chromium and aioice gather nothing else). Tests that need
# PostgreSQL or Redis start throwaway servers there. Otherwise pytest runs as it is.
#
# With no arguments, the whole suite in two runs, to keep it under 15 min on 2 cores: the tests
# marked `parallel` (tests/conftest.py: modules that time nothing real-time), three modules at
# a time (pytest-xdist; they wait on servers and sockets much of the time), and the rest one at
# a time (media rates, latencies, browsers). With arguments, one pytest run with them.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${HUIZHEN_TEST_NO_NETNS:-}" != 1 ] && [ "${HUIZHEN_TEST_IN_NETNS:-}" != 1 ]; then
  export HUIZHEN_TEST_IN_NETNS=1
  if [ "$(id -u)" -eq 0 ] && unshare --net true 2>/dev/null; then
    exec unshare --net -- sh -c 'ip link set lo up && exec "$@"' _ "$0" "$@"
  elif unshare --user --map-root-user --net true 2>/dev/null; then
    exec unshare --user --map-root-user --net -- sh -c 'ip link set lo up && exec "$@"' _ "$0" "$@"
  fi
  echo "note: no private network namespace available; running tests in the host's" >&2
fi
pytest=(.venv/bin/pytest -q --durations=25)  # the slowest, to keep the suite under 15 min
if [ $# -gt 0 ]; then
  exec "${pytest[@]}" "$@"
fi
# Both phases at once: the real-time tests one at a time at normal priority, and beside them
# the `parallel` ones at the lowest priority (nice 19), so they take only the CPU time the
# real-time tests leave (a browser test mostly waits on the clock).
log=$(mktemp)
# Starved that way, a test process (server and clients in one event loop) can miss a 1.5 s
# pong deadline: its servers get a lenient heartbeat (tests/harness.py make_settings).
HUIZHEN_TEST_STARVED=1 nice -n 19 "${pytest[@]}" -n 3 --dist loadfile -m parallel >"$log" 2>&1 &
background=$!
status=0
"${pytest[@]}" -m "not parallel" || status=$?
wait $background || status=$((status ? status : $?))
echo "---- the tests marked parallel (run beside the others) ----"
cat "$log"
rm -f "$log"
exit $status
