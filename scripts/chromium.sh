#!/usr/bin/env bash
# Sourced by scripts/test.sh: installs Debian's Chromium for the web client's browser tests if it is missing
# (Playwright's own browser download needs the internet). The colour emoji font makes reactions legible in the
# screenshots the tests save under tests/artifacts/web-client/.
if [ -z "${CHAT_TEST_CHROMIUM:-}" ] && [ ! -x /usr/bin/chromium ]; then
  echo "== installing Chromium (Debian packages)"
  chat_sudo=""
  [ "$(id -u)" -ne 0 ] && chat_sudo="sudo"
  $chat_sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $chat_sudo apt-get install -y -qq chromium fonts-noto-color-emoji >/dev/null
fi
