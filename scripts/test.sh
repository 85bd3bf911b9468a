#!/usr/bin/env bash
# The test suite: installs the test extras and redis-server when missing, runs ruff check and
# ruff format --check, then pytest.
# Extra arguments go to pytest (e.g. scripts/test.sh tests/unit -x).
source "$(dirname "$0")/_env.sh"
install_package "[test]"
need_apt_package redis-server redis-server
need_apt_package chromium chromium  # the dashboard test drives headless Chromium
# lint and format are part of the test command
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest "$@"
