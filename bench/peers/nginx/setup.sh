#!/usr/bin/env bash
# Install nginx from Debian if it is missing (the download peer for bench 5).
# Idempotent; needs root (CI and the dev machines run as root).
set -euo pipefail
if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then
    echo "nginx already installed: $(/usr/sbin/nginx -v 2>&1)"
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends nginx-light || \
    apt-get install -y -qq --no-install-recommends nginx
# The Debian package starts a system nginx on port 80; the benchmark runs its own.
if command -v systemctl >/dev/null 2>&1; then systemctl stop nginx 2>/dev/null || true; fi
if [ -f /run/nginx.pid ]; then kill "$(cat /run/nginx.pid)" 2>/dev/null || true; fi
echo "nginx installed: $(/usr/sbin/nginx -v 2>&1)"
