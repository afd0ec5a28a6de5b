#!/usr/bin/env bash
# Start dockerd if none answers and build the local images (cached): docker/up.sh [milvus] [hashplug]
# Stop what it started: docker/up.sh down
set -euo pipefail
cd "$(dirname "$0")"
if [ "${1:-}" = down ]; then exec python3 hashplug_docker.py down; fi
exec python3 hashplug_docker.py up "$@"
