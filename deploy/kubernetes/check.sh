#!/usr/bin/env bash
# Validates the Kubernetes manifests in this directory offline, against the
# Kubernetes API's own schemas (OpenAPI, as JSON Schema) bundled in the
# PyPI package kubernetes-validate: no cluster and no network but PyPI for
# the first install. Strict: unknown fields, wrong types and kinds with no
# schema fail. One line per file; exits non-zero on any error.
#   bash deploy/kubernetes/check.sh      (from the repository root, or anywhere)
# The venv is made once in .build/venv-k8s and reused.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

VALIDATOR_VERSION=1.37.0
# The oldest and newest Kubernetes whose schemas the manifests must pass
# (the package bundles 1.25 to 1.37).
K8S_VERSIONS=(1.25.0 1.37.0)

venv=.build/venv-k8s
stamp="$venv/.ready-kubernetes-validate-$VALIDATOR_VERSION"
mkdir -p .build
# One installer at a time (parallel test runs share the venv).
exec 9>.build/venv-k8s.lock
flock 9
if [[ ! -f "$stamp" ]]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$VALIDATOR_VERSION"
  touch "$stamp"
fi
flock -u 9

"$venv/bin/python" "$here/check.py" deploy/kubernetes "${K8S_VERSIONS[@]}"
