#!/usr/bin/env bash
# Sourced by scripts that need an S3-compatible server: installs s3rver (the npm package @20minutes/s3rver, pinned with
# its dependencies in scripts/s3rver/package-lock.json) if missing, starts it on a free loopback port with a private
# data directory, exports CHAT_S3_ENDPOINT, CHAT_S3_ACCESS_KEY and CHAT_S3_SECRET_KEY, and stops it and removes the
# data when the calling script exits. Needs Node.js 20 or later (Debian's nodejs and npm are installed if node is
# missing; bookworm's is 18, which the package does not promise to support).

chat_s3_package="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/s3rver"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "== installing Node.js (Debian packages)"
  chat_sudo=""
  [ "$(id -u)" -ne 0 ] && chat_sudo="sudo"
  $chat_sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $chat_sudo apt-get install -y -qq nodejs npm >/dev/null
fi
# npm ci keeps a copy of the lock file it installed; a changed lock file installs again.
if ! cmp -s "$chat_s3_package/package-lock.json" "$chat_s3_package/node_modules/.package-lock.json.installed" 2>/dev/null; then
  echo "== installing s3rver (npm ci in $chat_s3_package)"
  (cd "$chat_s3_package" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  cp "$chat_s3_package/package-lock.json" "$chat_s3_package/node_modules/.package-lock.json.installed"
fi

CHAT_S3_DIR="$(mktemp -d /tmp/chat-s3.XXXXXX)"
# The server's continuation tokens (ListObjectsV2 paging) are DES-encrypted, which OpenSSL 3 only offers through its
# legacy provider: without it every listing longer than one page fails with InternalError.
node --openssl-legacy-provider "$chat_s3_package/run.js" 0 "$CHAT_S3_DIR/data" >"$CHAT_S3_DIR/server.log" 2>&1 &
CHAT_S3_PID=$!
# Out of the job table, so that a plain `wait` in the calling script waits for its own jobs, not for this server.
disown "$CHAT_S3_PID"

chat_s3_stop() {
  kill "$CHAT_S3_PID" 2>/dev/null || true
  for _ in $(seq 1 50); do
    kill -0 "$CHAT_S3_PID" 2>/dev/null || break
    sleep 0.1
  done
  rm -rf "$CHAT_S3_DIR"
}
# Keeps whatever the caller (or scripts/postgres.sh) already runs at exit.
chat_s3_previous_exit="$(trap -p EXIT | sed -E "s/^trap -- '(.*)' EXIT$/\1/")"
trap "chat_s3_stop${chat_s3_previous_exit:+; $chat_s3_previous_exit}" EXIT

CHAT_S3_PORT=""
for _ in $(seq 1 300); do
  CHAT_S3_PORT="$(sed -n 's/^listening on port \([0-9]*\)$/\1/p' "$CHAT_S3_DIR/server.log")"
  [ -n "$CHAT_S3_PORT" ] || ! kill -0 "$CHAT_S3_PID" 2>/dev/null && break
  sleep 0.1
done
if [ -z "$CHAT_S3_PORT" ]; then
  echo "s3rver did not start:" >&2
  cat "$CHAT_S3_DIR/server.log" >&2
  return 1 2>/dev/null || exit 1
fi
echo "== started a private S3 server (s3rver) on 127.0.0.1:$CHAT_S3_PORT ($CHAT_S3_DIR)"
export CHAT_S3_ENDPOINT="http://127.0.0.1:$CHAT_S3_PORT"
# s3rver's only account: it refuses any other access key.
export CHAT_S3_ACCESS_KEY=S3RVER CHAT_S3_SECRET_KEY=S3RVER
