#!/usr/bin/env bash
# Runs one split load test on the current kubectl context and merges it.
#
#   deploy/kubernetes/run-test.sh [--json]      (LEAD=60 to start later)
#
# Needs the image `echo-reactor:latest` where the cluster can pull it
# (docker build -t echo-reactor . ; kind load docker-image echo-reactor, or
# push it to your registry and edit the manifests), and `echo-reactor` on
# this machine's PATH for the merge.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
lead=${LEAD:-30}

kubectl apply -f "$here/server.yaml"
kubectl rollout status deployment/echo-reactor --timeout=120s

# One start time for every pod, far enough ahead for all to be scheduled.
start_at=$(( $(date +%s) + lead ))
kubectl delete job echo-load --ignore-not-found
sed "s/START_AT_PLACEHOLDER/$start_at/" "$here/load-job.yaml" | kubectl apply -f -
kubectl wait --for=condition=complete job/echo-load --timeout=600s || true

# Each pod printed one JSON object; merge skips the log lines around them.
kubectl logs --selector=job-name=echo-load --tail=-1 --prefix=false \
    | echo-reactor merge - "$@"
