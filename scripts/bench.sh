#!/usr/bin/env bash
# Runs one benchmark scenario of the service, Release build, as a separate process (see docs/performance.md).
#   scripts/bench.sh send|fanout|bridge|soak|synapse-bridge|noisy-neighbour [--db postgres|sqlite] [scenario options…]
# synapse-bridge runs a real Synapse from ../shared/synapse (its Debian packages are installed first).
# --db defaults to postgres: a private cluster is started (scripts/postgres.sh, fsync on) and removed afterwards.
# CHAT_BENCH_REF=<git ref> benchmarks that committed revision instead of the working tree (built in a temp dir
# from `git archive`; the harness itself is taken from the working tree). `… <scenario> --help` lists the options.
set -euo pipefail
cd "$(dirname "$0")/.."

scenario="${1:-}"
case "$scenario" in
  send|fanout|bridge|soak|synapse-bridge|noisy-neighbour) shift ;;
  *) echo "usage: scripts/bench.sh send|fanout|bridge|soak|synapse-bridge|noisy-neighbour [--db postgres|sqlite] [options]" >&2; exit 2 ;;
esac
db=postgres
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --db) db="$2"; shift 2 ;;
    --db=*) db="${1#--db=}"; shift ;;
    *) args+=("$1"); shift ;;
  esac
done

# 10,000 WebSockets need 10,000 descriptors in the service and as many in the client.
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"
echo "== open-file limit $(ulimit -n)"

root="$PWD"
# Which code the figures are of (recorded in the JSON line).
if [ -n "${CHAT_BENCH_REF:-}" ]; then
  CHAT_BENCH_COMMIT="$(git rev-parse --short "$CHAT_BENCH_REF")"
  root="$(mktemp -d /tmp/chat-bench-src.XXXXXX)"
  trap 'rm -rf "$root"' EXIT
  echo "== building $CHAT_BENCH_COMMIT in $root"
  git archive "$CHAT_BENCH_REF" src tests/MatrixEmulator Directory.Build.props Directory.Packages.props | tar -x -C "$root"
  cp -r bench "$root/"
  cp realtime-chat-service.slnx "$root/"
  rm -rf "$root"/bench/*/bin "$root"/bench/*/obj
else
  CHAT_BENCH_COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  git diff --quiet HEAD -- src 2>/dev/null || CHAT_BENCH_COMMIT="$CHAT_BENCH_COMMIT+working-tree"
fi
export CHAT_BENCH_COMMIT
dotnet build "$root/bench/RealtimeChat.Bench/RealtimeChat.Bench.csproj" -c Release -warnaserror -nologo -v q >/dev/null

if [ "$scenario" = "synapse-bridge" ]; then
  synapse_sh="${CHAT_BENCH_SYNAPSE_SH:-}"
  for candidate in ../shared/synapse/synapse.sh /work/shared/synapse/synapse.sh; do
    if [ -z "$synapse_sh" ] && [ -f "$candidate" ]; then synapse_sh="$(cd "$(dirname "$candidate")" && pwd)/synapse.sh"; fi
  done
  [ -n "$synapse_sh" ] || { echo "synapse-bridge needs Synapse: ../shared/synapse/synapse.sh or CHAT_BENCH_SYNAPSE_SH" >&2; exit 2; }
  bash "$synapse_sh" install
  export CHAT_BENCH_SYNAPSE_SH="$synapse_sh"
fi

if [ "$db" = "postgres" ]; then
  export CHAT_PG_DURABLE="${CHAT_PG_DURABLE:-1}"
  source scripts/postgres.sh
  if [ -n "${CHAT_BENCH_REF:-}" ]; then
    # postgres.sh sets its own EXIT trap; keep removing the temp tree too.
    trap 'chat_pg_stop; rm -rf "$root"' EXIT
  fi
fi

echo "== $scenario on $db ($(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GB); client and server share the machine"
dotnet "$root/bench/RealtimeChat.Bench/bin/Release/net10.0/RealtimeChat.Bench.dll" "$scenario" --db "$db" ${args[@]+"${args[@]}"}
