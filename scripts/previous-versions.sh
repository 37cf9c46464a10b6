# Sourced by scripts/test.sh. Builds the versions a rolling update may still have serving beside this one: the
# commit before each of the three newest migrations (each of them ran on the schema just before that migration).
# They come from this clone's history (git archive), are built in Release under $TMPDIR/chat-previous-<commit> (kept
# between runs) and are listed in CHAT_TEST_PREVIOUS_VERSIONS as "<commit>=<dll>" separated by ';' for
# tests/RealtimeChat.Tests/Deployment/RollingUpdateTests.cs. A clone without that history (shallow) cannot build them:
# the summary says NOT RUN and those tests are reported as skipped.
previous_versions=()
previous_missing=""
for migration in $(ls src/RealtimeChat/Storage/Migrations/postgres/*.sql | sort | tail -3); do
  added=$(git log --diff-filter=A --format=%H -1 -- "$migration" 2>/dev/null || true)
  # A migration not committed yet (being written) comes after the last commit.
  if [ -n "$added" ]; then before="$added~1"; else before=HEAD; fi
  commit=$(git rev-parse --short=7 --verify -q "$before" 2>/dev/null || true)
  if [ -z "$commit" ]; then previous_missing="$previous_missing $(basename "$migration")"; continue; fi
  dir="${TMPDIR:-/tmp}/chat-previous-$commit"
  dll="$dir/src/RealtimeChat/bin/Release/net10.0/RealtimeChat.dll"
  if [ ! -f "$dll" ]; then
    echo "== building the version before $(basename "$migration") ($commit) into $dir"
    rm -rf "$dir" && mkdir -p "$dir"
    git archive "$commit" | tar -x -C "$dir"
    dotnet build "$dir/src/RealtimeChat" -c Release -nologo -v quiet
  fi
  previous_versions+=("$commit=$dll")
done
if [ -z "$previous_missing" ]; then
  export CHAT_TEST_PREVIOUS_VERSIONS="$(IFS=';'; echo "${previous_versions[*]}")" CHAT_TEST_PREVIOUS=required
  previous_summary="rolling-update tests: RUN against ${#previous_versions[@]} previous versions (${previous_versions[*]%%=*})"
else
  unset CHAT_TEST_PREVIOUS_VERSIONS
  previous_summary="rolling-update tests: NOT RUN (no history for the version before$previous_missing: a shallow clone?) - reported as skipped"
fi
echo "== $previous_summary"
