#!/usr/bin/env bash
# Set up .venv from nothing (offline-capable: PyPI from this machine's registry) and install
# hashplug with its test tools and every adapter whose engine runs here.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPIP=".venv/bin/python -m pip"
$VPIP install -q --disable-pip-version-check --upgrade pip >/dev/null
pkgs=(-e ".[dev,bench]")
for a in adapters/*/; do
  [ -f "$a/pyproject.toml" ] && pkgs+=(-e "$a[test]")
done
log=$(mktemp)
if ! $VPIP install -q --disable-pip-version-check "${pkgs[@]}" >"$log" 2>&1; then
  cat "$log"; echo "setup: pip install failed" >&2; exit 1
fi
rm -f "$log"
.venv/bin/python -c "import hashplug; print('hashplug', hashplug.__version__, 'ready in .venv')"
