#!/usr/bin/env bash
# Install the project with its test extras (torch and torchvision are dependencies: have them installed
# first where a plain `pip install torch` would fetch a large build), and Debian's chromium for the
# browser test when root; then run the whole suite. Extra arguments go to pytest (e.g. -m "not slow").
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -e ".[test]"
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
        || echo "warning: could not install chromium; the browser test will fail" >&2
fi
python -m pytest -q "$@"
