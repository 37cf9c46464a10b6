#!/usr/bin/env bash
# Replays the Dockerfile's build stage without a container runtime: its COPY steps into an empty build context
# (minus what .dockerignore leaves out) and its `dotnet` steps with their exact arguments, then checks the published
# service starts far enough to print its commands. Run by scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
context="$(mktemp -d /tmp/chat-docker-build.XXXXXX)"
trap 'rm -rf "$context"' EXIT
out="$context/app"

# The build stage: from the first FROM up to the next one.
stage="$(awk '/^FROM /{n++} n==1' Dockerfile)"
while IFS= read -r line; do
  case "$line" in
    "COPY --from"*) ;;
    "COPY "*)
      read -r -a parts <<< "${line#COPY }"
      destination="${parts[-1]}"
      unset 'parts[-1]'
      mkdir -p "$context/src/$destination"
      for source in "${parts[@]}"; do
        if [ -d "$source" ]; then
          # A directory's contents, without what .dockerignore keeps out of the context.
          tar -C "$source" --exclude=bin --exclude=obj --exclude=data -cf - . | tar -C "$context/src/$destination" -xf -
        else
          cp "$source" "$context/src/$destination"
        fi
      done
      ;;
    "RUN dotnet "*)
      command="${line#RUN }"
      # The stage publishes to /app; here, to the temporary directory.
      command="${command/ -o \/app/ -o $out}"
      echo "== Dockerfile: $command"
      # shellcheck disable=SC2086
      (cd "$context/src" && $command >"$context/log" 2>&1) || { cat "$context/log"; exit 1; }
      ;;
  esac
done <<< "$stage"

test -f "$out/RealtimeChat.dll"
dotnet "$out/RealtimeChat.dll" --help >/dev/null
echo "== Dockerfile build stage: published and starts ($(du -sh "$out" | cut -f1))"
