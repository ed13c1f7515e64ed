#!/usr/bin/env bash
# Install, from the npm registry, what the reference Node.js socket.io server
# (server.js: socket.io) and the Node fleet worker (fleet_worker.js: socket.io-client)
# need.
# Idempotent: does nothing when node_modules matches package-lock.json.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v npm >/dev/null 2>&1; then
    echo "npm not found: install Node.js 20 (Debian: apt-get install nodejs npm)" >&2
    exit 1
fi
if [ -f package-lock.json ]; then
    npm ci --no-audit --no-fund --loglevel=error
else
    npm install --no-audit --no-fund --loglevel=error
fi
echo "node peer ready: $(node --version)," \
    "socket.io $(node -p 'require("socket.io/package.json").version')," \
    "socket.io-client $(node -p 'require("socket.io-client/package.json").version')"
