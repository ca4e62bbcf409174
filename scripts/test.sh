#!/usr/bin/env bash
# The whole test suite: set up (pytest, hypothesis, playwright and ruff come with the [test] extra), lint, make
# sure the browser test has a Chromium, then pytest. Chromium is Debian's package, installed here when
# running as root with apt; never Playwright's own browser download. Without it the browser test skips.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing Debian's chromium for the browser test ..."
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
            || echo "could not install chromium: the browser test will be skipped"
    else
        echo "no chromium and no root apt: the browser test will be skipped (apt-get install chromium to run it)"
    fi
fi
.venv/bin/ruff check .  # the linter first: a lint error fails the run before the (long) tests
exec .venv/bin/python -m pytest tests "$@"
