#!/usr/bin/env bash
# Install the Debian packages Huizhen needs, only those that are missing.
#   install-system-deps.sh run    python3-venv (to make the virtualenv), a C compiler and
#                                 Python's headers (media/_fastpath, the send path's C part,
#                                 is built at install), a small CJK font (names in Chinese
#                                 burned into recordings' composites)
#   install-system-deps.sh test   + chromium (browser tests; the font also makes Chinese
#                                 readable in screenshots), iproute2 (the tests' private
#                                 network namespace), postgresql (persistence tests),
#                                 redis-server (cluster state tests), coturn + nftables +
#                                 libnss3-tools (TURN tests: relay, firewall, test CA)
set -euo pipefail
what=${1:-run}

need=()
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
command -v cc >/dev/null 2>&1 || need+=(gcc libc6-dev)
python3 -c 'import os, sysconfig; assert os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))' \
  2>/dev/null || need+=(python3-dev)
[ -e /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || need+=(fonts-wqy-microhei)
if [ "$what" = test ]; then
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  command -v ip >/dev/null 2>&1 || need+=(iproute2)
  command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
  command -v turnserver >/dev/null 2>&1 || need+=(coturn)       # TURN relay tests
  command -v nft >/dev/null 2>&1 || need+=(nftables)            # their UDP-blocking firewall
  command -v certutil >/dev/null 2>&1 || need+=(libnss3-tools)  # a test CA Chromium trusts
  if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    need+=(postgresql)
  fi
fi
[ ${#need[@]} -eq 0 ] && exit 0

echo "installing Debian packages: ${need[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
