#!/usr/bin/env bash
# Runs one split load test on the current kubectl context and merges it.
#
#   deploy/kubernetes/run-test.sh [--json]      (LEAD=60 to start later,
#                                                TIMEOUT=1200 to wait longer)
#
# A Job that fails (a pod exits non-zero) ends the script at once, with
# every pod's log on stderr and exit 1.
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

# Until the Job completes or fails, whichever comes first: with
# backoffLimit 0 one failed pod fails the Job, and waiting on for
# "complete" would only wait out the timeout.
deadline=$(( $(date +%s) + ${TIMEOUT:-600} ))
while :; do
    state=$(kubectl get job echo-load \
        -o jsonpath='{range .status.conditions[?(@.status=="True")]}{.type}{" "}{end}')
    case " $state " in
        *" Complete "*) break ;;
        *" Failed "*) why="the Job failed" ;;
        *) [ "$(date +%s)" -lt "$deadline" ] && { sleep 2; continue; }
           why="the Job did not finish within ${TIMEOUT:-600} s" ;;
    esac
    echo "run-test.sh: $why; the pods' logs:" >&2
    kubectl logs --selector=job-name=echo-load --tail=-1 --prefix >&2 || true
    exit 1
done

# Each pod printed one JSON object; merge skips the log lines around them.
kubectl logs --selector=job-name=echo-load --tail=-1 --prefix=false \
    | echo-reactor merge - "$@"
