# Sourced by scripts/test.sh: system tools some tests drive. Debian's `chromium` (the serve page
# test runs it headless) and `curl` (docs/serving.md's commands) are installed with apt-get when
# missing and possible; where they cannot be, those tests skip and say why.
_f5app_missing=""
command -v chromium >/dev/null 2>&1 || _f5app_missing="$_f5app_missing chromium"
command -v curl >/dev/null 2>&1 || _f5app_missing="$_f5app_missing curl"
if [ -n "$_f5app_missing" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[f5app] installing$_f5app_missing for the tests (apt-get)" >&2
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $_f5app_missing; } >/dev/null 2>&1; then
      echo "[f5app] could not install$_f5app_missing; the tests that need them will be skipped" >&2
    fi
  else
    echo "[f5app] missing$_f5app_missing (needs root and apt-get to install); the tests that need them will be skipped" >&2
  fi
fi
unset _f5app_missing
