#!/usr/bin/env bash
# The test suite: installs the test extras, redis-server, chromium and prometheus when missing, runs ruff check and
# ruff format --check, then pytest.
# Extra arguments go to pytest (e.g. scripts/test.sh tests/unit -x).
source "$(dirname "$0")/_env.sh"
install_package "[test]"
need_apt_package redis-server redis-server
need_apt_package chromium chromium  # the dashboard test drives headless Chromium
need_apt_package prometheus prometheus  # tests/integration/test_prometheus.py scrapes the test's Ray
# lint and format are part of the test command
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest "$@"
