#!/usr/bin/env bash
# Runs the whole test suite on SQLite and on PostgreSQL.
# On a fresh Debian machine it installs PostgreSQL from Debian's packages and starts a private cluster on a
# free port in a temporary directory, removed afterwards, and Chromium for the web client's browser tests.
# Extra arguments go to `dotnet test` (e.g. --filter).
# The real-Synapse suite (tests/RealtimeChat.Tests/Synapse) runs on both databases when synapse.sh is found
# (CHAT_TEST_SYNAPSE_SH, ../shared/synapse, /work/shared/synapse); its Debian packages are installed first.
# Without it those tests are reported as skipped and the last line says NOT RUN.
# The rolling-update tests run the versions before the newest migrations (built from git history by
# scripts/previous-versions.sh) beside this one on a migrated database; without that history they are reported as skipped.
# The S3 media tests run on both databases against the private S3 server scripts/s3.sh installs and starts.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/postgres.sh
source scripts/chromium.sh
source scripts/s3.sh
export CHAT_TEST_S3=required

synapse_sh=""
for candidate in "${CHAT_TEST_SYNAPSE_SH:-}" ../shared/synapse/synapse.sh /work/shared/synapse/synapse.sh; do
  if [ -n "$candidate" ] && [ -f "$candidate" ]; then synapse_sh="$(cd "$(dirname "$candidate")" && pwd)/$(basename "$candidate")"; break; fi
done
if [ -n "$synapse_sh" ]; then
  echo "== installing Synapse's Debian packages ($synapse_sh install)"
  bash "$synapse_sh" install
  export CHAT_TEST_SYNAPSE_SH="$synapse_sh" CHAT_TEST_SYNAPSE=required
  synapse_summary="real-Synapse suite: RUN on SQLite and PostgreSQL against $synapse_sh"
else
  # A path that does not exist: the tests skip themselves (with the reason) instead of searching further.
  export CHAT_TEST_SYNAPSE_SH=/nonexistent/synapse.sh
  synapse_summary="real-Synapse suite: NOT RUN (no ../shared/synapse; set CHAT_TEST_SYNAPSE_SH) - its tests are reported as skipped"
fi
echo "== $synapse_summary"
source scripts/previous-versions.sh

dotnet build realtime-chat-service.slnx -c Release -warnaserror
bash scripts/docker-publish-check.sh

# Both databases run even when the first has failures, so a failure says which database(s) it is on.
status=0
echo "== test suite on SQLite"
CHAT_TEST_DATABASE=sqlite dotnet test realtime-chat-service.slnx -c Release --no-build "$@" || status=1

echo "== test suite on PostgreSQL"
CHAT_TEST_DATABASE=postgres CHAT_TEST_POSTGRES="$CHAT_PG_CONNECTION;Pooling=true" \
  dotnet test realtime-chat-service.slnx -c Release --no-build "$@" || status=1

echo "== $synapse_summary"
echo "== $previous_summary"
exit $status
