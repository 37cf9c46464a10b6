#!/usr/bin/env bash
# Sourced by scripts that need PostgreSQL: installs it from Debian's packages if missing, starts a private
# cluster on a free loopback port in a temp directory, exports CHAT_PG_PORT and CHAT_PG_CONNECTION, and
# removes the cluster when the calling script exits. Set CHAT_PG_DURABLE=1 to keep fsync on (benchmarks), and
# CHAT_PG_OPTIONS to pass more server settings (e.g. "-c shared_preload_libraries=pg_stat_statements" to profile).

# The server's bin directory: the one with initdb (the client package alone also creates a bin directory).
chat_pg_bin() {
  ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1 | xargs -r dirname
}

if [ -z "$(chat_pg_bin)" ]; then
  echo "== installing PostgreSQL (Debian packages)"
  chat_sudo=""
  [ "$(id -u)" -ne 0 ] && chat_sudo="sudo"
  $chat_sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $chat_sudo apt-get install -y -qq postgresql >/dev/null
fi
CHAT_PG_BIN="$(chat_pg_bin)"
CHAT_PG_DIR="$(mktemp -d /tmp/chat-pg.XXXXXX)"
CHAT_PG_PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
chat_as_pg=()
if [ "$(id -u)" -eq 0 ]; then
  # initdb refuses to run as root; the Debian package created the postgres user.
  chown postgres "$CHAT_PG_DIR"
  chat_as_pg=(runuser -u postgres --)
fi

chat_pg_stop() {
  "${chat_as_pg[@]}" "$CHAT_PG_BIN/pg_ctl" -D "$CHAT_PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$CHAT_PG_DIR"
}
trap chat_pg_stop EXIT

chat_pg_options="-p $CHAT_PG_PORT -k $CHAT_PG_DIR -c listen_addresses=127.0.0.1 -c max_connections=300"
if [ "${CHAT_PG_DURABLE:-0}" != "1" ]; then
  # Tests need isolation, not durability.
  chat_pg_options="$chat_pg_options -c fsync=off -c synchronous_commit=off"
fi
chat_pg_options="$chat_pg_options ${CHAT_PG_OPTIONS:-}"
echo "== starting a private PostgreSQL on 127.0.0.1:$CHAT_PG_PORT ($CHAT_PG_DIR)"
"${chat_as_pg[@]}" "$CHAT_PG_BIN/initdb" -D "$CHAT_PG_DIR/data" -A trust -U postgres --no-sync >/dev/null
"${chat_as_pg[@]}" "$CHAT_PG_BIN/pg_ctl" -D "$CHAT_PG_DIR/data" -l "$CHAT_PG_DIR/server.log" -w -o "$chat_pg_options" start >/dev/null
export CHAT_PG_PORT
export CHAT_PG_CONNECTION="Host=127.0.0.1;Port=$CHAT_PG_PORT;Username=postgres"
