#!/usr/bin/env bash
# Create .venv (Python 3.11) and install bottleneck-probe into it.
#   bash scripts/setup.sh          runtime only (dashboard, CLI)
#   bash scripts/setup.sh --test   plus test tools and Debian's headless Chromium for the browser test
# Idempotent: re-running only installs what is missing. torch is pinned (pyproject.toml) so pip
# never pulls an unexpected multi-GB build.
set -euo pipefail
cd "$(dirname "$0")/.."
want_test=0
[ "${1:-}" = "--test" ] && want_test=1

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
"$PY" -c 'import sys; assert sys.version_info >= (3, 11), "bottleneck-probe needs Python >= 3.11"'
[ -x .venv/bin/python ] || "$PY" -m venv .venv
export PIP_DISABLE_PIP_VERSION_CHECK=1
target=.; [ $want_test = 1 ] && target=".[test]"
if ! .venv/bin/python -m pip install -q -e "$target" >.venv/pip-install.log 2>&1; then
  grep -v "is ignored: it is neither" .venv/pip-install.log >&2
  echo "setup failed: pip install -e $target (full log: .venv/pip-install.log)" >&2
  exit 1
fi
.venv/bin/python -c "import probes, analysis, torch" || { echo "setup failed: the package does not import" >&2; exit 1; }

if [ $want_test = 1 ] && ! command -v chromium >/dev/null; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium chromium-driver >/dev/null
fi
echo "setup done: $(.venv/bin/python -c 'import torch; print("torch", torch.__version__)')"
