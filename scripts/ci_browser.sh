#!/usr/bin/env bash
# The browser suite: JupyterLab + ipywidgets driven by headless Chromium (tests/test_browser.py).
#
# Installs what it needs on a fresh machine, idempotently: Debian's chromium (never a browser
# download: Playwright is only the driver) and Python playwright in the project venv (make setup).
# Screenshots and the server log go to artifacts/browser/ (git-ignored).
#   bash scripts/ci_browser.sh              # extra args go to pytest, e.g. -k forward
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
BIN="$VENV/bin"

if ! command -v chromium >/dev/null 2>&1 && [ -z "${SDEXPLAIN_CHROMIUM:-}" ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq chromium >/dev/null
fi
chromium --version 2>/dev/null || true

mkdir -p artifacts/browser
# the project venv (a no-op when it is up to date); its pip output goes to a log, shown if it fails
make setup VENV="$VENV" >artifacts/browser/setup.log 2>&1 || { cat artifacts/browser/setup.log; exit 1; }
# only the driver: Playwright's own browser download ("playwright install") is never run
"$BIN/python" -c "import playwright" 2>/dev/null || "$BIN/pip" install -q "playwright>=1.40"

# here a missing browser or driver fails the run instead of skipping the tests
SDEXPLAIN_BROWSER_REQUIRED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} \
    "$BIN/python" -m pytest -q -p no:cacheprovider -m browser tests/test_browser.py -rs --durations=10 "$@"
