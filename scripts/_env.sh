# Sourced by run.sh and test.sh: make .venv and install the package (with the given extras) when
# pyproject.toml changed since the last install.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)'; then
  echo "cognopt_ray needs Python >= 3.10; set PYTHON=/path/to/python3.x" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  echo ">> creating .venv" >&2
  "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip >&2
fi
install_package() {  # $1: extras spec, e.g. "" or "[test]"
  local stamp=".venv/.cognopt-installed$1"
  local want
  want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo ">> installing cognopt-ray$1 into .venv (first time takes a few minutes)" >&2
    .venv/bin/python -m pip install -q -e ".$1" >&2
    echo "$want" > "$stamp"
  fi
}
need_apt_package() {  # $1: command, $2: Debian package
  if ! command -v "$1" >/dev/null 2>&1; then
    echo ">> installing Debian package $2" >&2
    local SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$2" >&2
  fi
}
