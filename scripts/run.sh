#!/usr/bin/env bash
# The main job: the optimisation API on a local Ray with embedded defaults.
# Prints the URL and an admin key; Ctrl-C stops it. Extra arguments go to `cognopt serve`.
source "$(dirname "$0")/_env.sh"
install_package ""
exec .venv/bin/cognopt serve "$@"
