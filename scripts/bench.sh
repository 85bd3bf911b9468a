#!/usr/bin/env bash
# The benchmarks: installs the bench extra (the baselines: requests-cache), redis-server, restic and
# borgbackup when missing, then runs benchmarks/run_all.py (which regenerates docs/benchmarks.md).
# Extra arguments go to run_all.py (e.g. scripts/bench.sh --quick --only memory,network).
# Run it alone on the machine: every figure is a ratio measured side by side.
source "$(dirname "$0")/_env.sh"
install_package "[test,bench]"
need_apt_package redis-server redis-server
need_apt_package restic restic          # storage.py's backup peer
need_apt_package borg borgbackup        # storage.py's backup peers (lz4 and zstd,3)
exec .venv/bin/python benchmarks/run_all.py "$@"
