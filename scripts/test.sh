#!/usr/bin/env bash
# Runs the whole test suite on SQLite and on PostgreSQL.
# On a fresh Debian machine it installs PostgreSQL from Debian's packages and starts a private cluster on a
# free port in a temporary directory, removed afterwards, and Chromium for the web client's browser tests.
# Extra arguments go to `dotnet test` (e.g. --filter).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/postgres.sh
source scripts/chromium.sh

dotnet build realtime-chat-service.slnx -c Release -warnaserror
bash scripts/docker-publish-check.sh

echo "== test suite on SQLite"
CHAT_TEST_DATABASE=sqlite dotnet test realtime-chat-service.slnx -c Release --no-build "$@"

echo "== test suite on PostgreSQL"
CHAT_TEST_DATABASE=postgres CHAT_TEST_POSTGRES="$CHAT_PG_CONNECTION;Pooling=true" \
  dotnet test realtime-chat-service.slnx -c Release --no-build "$@"
