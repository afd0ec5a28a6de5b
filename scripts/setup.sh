#!/usr/bin/env bash
# Set up .venv from nothing (offline-capable: PyPI from this machine's registry) and install
# hashplug with its test tools, the encoder extras, and every adapter whose engine runs here.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPIP=".venv/bin/python -m pip"
$VPIP install -q --disable-pip-version-check --upgrade pip >/dev/null

# Labelled images for the main job (Debian's Fashion-MNIST); optional when not root.
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
    || echo "setup: could not install dataset-fashion-mnist; the main job will say what to provide" >&2
fi

# Docker for the containerised suites (no registry needed: images are built locally, docker/up.sh).
if ! command -v apt-get >/dev/null; then
  echo "setup: no apt-get; Docker suites skip unless a Docker engine is already there"
elif [ "$(id -u)" != 0 ]; then
  echo "setup: not root; Docker suites skip unless a Docker engine is already there"
elif ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null \
    || ! command -v docker-compose >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io debootstrap docker-compose \
    >/dev/null 2>&1 || echo "setup: could not install docker.io/debootstrap/docker-compose; Docker suites skip" >&2
fi

# torch + torchvision that work together (see OFFLINE_ASSETS.md); laion-clap needs numpy<2,
# and numpy 1.x needs pyarrow<23 for LanceDB.
case "$(uname -m)" in
  aarch64|arm64) torch_pins=(torch==2.9.1 torchvision==0.24.1) ;;
  *) torch_pins=(torch==2.14.1 torchvision==0.29.1) ;;
esac
pkgs=(-e ".[dev,bench,image,audio,text,offline-models,distributed]" "${torch_pins[@]}" "pyarrow<23")
for a in adapters/*/; do
  [ -f "$a/pyproject.toml" ] && pkgs+=(-e "$a[test]")
done
log=$(mktemp)
if ! $VPIP install -q --disable-pip-version-check "${pkgs[@]}" >"$log" 2>&1; then
  cat "$log"; echo "setup: pip install failed" >&2; exit 1
fi
rm -f "$log"
.venv/bin/python -c "import hashplug; print('hashplug', hashplug.__version__, 'ready in .venv')"
