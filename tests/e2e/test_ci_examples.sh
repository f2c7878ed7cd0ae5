#!/usr/bin/env bash
# Issue 16, acceptance 4: the examples/ci/ scripts do on the sandbox what a
# CI job does (start a local build, intercept with a header derived from the
# job id, run a test command that sends the header through the cluster and
# checks it reached the local build, close), as a shell script and as a
# `czctl run` Lua script; a failing test command fails the job and still
# closes the session; a cancelled job (SIGTERM to the script) rolls back;
# the GitHub Actions workflow is syntax-checked (YAML, its shape, bash -n of
# every run block, the scripts it names exist).
source "$(dirname "$0")/lib/common.sh"
EX="$E2E_ROOT/examples/ci"

demo_cluster
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# after NAME PORT: the job left nothing behind
after() {
  is "$(session_ids)" "" "$1: no local session is left"
  snapshot "$WORK/after.json"
  same_snapshot "$WORK/before.json" "$WORK/after.json" "$1: the cluster equals its start"
  check "$1: the local build was stopped" wait_for_cmd 10 sh -c "! curl -s --max-time 1 http://127.0.0.1:$2/"
}

# Run each example as a CI job would, on the sandbox: its test command
# reaches the cluster network through `sandbox exec` (CLUSTER_EXEC), as a
# runner inside the cluster would directly.
export CLUSTER_EXEC="$SANDBOX exec $CLUSTER --"
n=0
for example in "shell:bash $EX/ci-job.sh" "lua:$CZCTL run $EX/ci-job.lua demo default"; do
  kind=${example%%:*}; cmd=${example#*:}
  n=$((n + 1)); port=$(free_port); job="pr-17-run-$n"
  CZCTL="$CZCTL" LOCAL_PORT=$port CI_JOB_ID="$job" SESSION_FILE="$WORK/session-$n" \
    $cmd >"$WORK/job.out" 2>"$WORK/job.err"
  rc=$?
  is "$rc" 0 "$kind example: the job passes"
  [ "$rc" -eq 0 ] || { sed 's/^/# /' "$WORK/job.out" "$WORK/job.err" | tail -20; }
  like "$(cat "$WORK/job.out")" "ok - a request with 'X-CI-Job: $job' reached the local build" \
    "$kind example: its request with the job's header reached the local build through the cluster"
  like "$(cat "$WORK/job.out")" "ok - a request without the header reached the in-cluster version" \
    "$kind example: a request without it reached the in-cluster version"
  like "$(cat "$WORK/session-$n" 2>/dev/null)" '^[a-z0-9]{10}$' "$kind example: the session id is kept for the cleanup step"
  after "$kind example" "$port"
done

# A failing test command fails the job (its code), and the session is still
# closed: here another server already holds the job's port, so the build
# cannot start there and the request with the header reaches the wrong one.
port=$(local_server impostor)
CZCTL="$CZCTL" LOCAL_PORT=$port CI_JOB_ID=broken \
  bash "$EX/ci-job.sh" >"$WORK/job.out" 2>"$WORK/job.err"
is "$?" 1 "a failing test command: the job fails with its code"
like "$(cat "$WORK/job.err")" "FAIL: a request with 'X-CI-Job: broken' got" "a failing test command: it says why"
like "$(cat "$WORK/job.err")" '"pod": "impostor"' "a failing test command: ... the server that answered instead"
like "$(cat "$WORK/job.err")" "Delete proxy Deployment" "a failing test command: the session is closed anyway"
is "$(session_ids)" "" "a failing test command: no local session is left"
snapshot "$WORK/after.json"
same_snapshot "$WORK/before.json" "$WORK/after.json" "a failing test command: the cluster equals its start"

# A cancelled job: SIGTERM to the script (as a runner sends it) while czctl
# sets up (a sandbox fault holds the proxy Deployment's creation): the
# script passes it on, czctl rolls back, exit 143.
port=$(free_port)
stall_next "ci-cancel-$RANDOM" POST "^$APPS/deployments\$" "" 3
rule=$(sed -n 's/.*"name":"\([^"]*\)".*/\1/p' "$CLUSTER/faults.json")
CZCTL="$CZCTL" LOCAL_PORT=$port CI_JOB_ID=cancelled \
  bash "$EX/ci-job.sh" >"$WORK/job.out" 2>"$WORK/job.err" &
pid=$!
if wait_for_cmd 30 fault_fired "$rule"; then
  kill -TERM "$pid"; wait "$pid"; rc=$?
  is "$rc" 143 "a cancelled job (SIGTERM to the script): exit 143"
  like "$(tail -1 "$WORK/job.err")" "interrupted \\(SIGTERM\\), rolled back" "a cancelled job: czctl got it and rolled back"
else
  fail "a cancelled job: the setup reached the stalled request"; kill -KILL "$pid"
fi
faults '[]'
after "a cancelled job" "$port"

# --- the workflow file: syntax only ---------------------------------------------
python3 - "$EX/github-actions.yml" "$WORK/run-blocks" "$E2E_ROOT" >"$WORK/wf.out" 2>&1 <<'PY'
import os, sys, yaml
path, outdir, root = sys.argv[1:4]
doc = yaml.safe_load(open(path))
# PyYAML reads the key `on` as YAML 1.1's boolean true
triggers = doc.get("on", doc.get(True))
assert triggers, "no `on:` triggers"
assert doc.get("jobs"), "no jobs"
os.makedirs(outdir, exist_ok=True)
n = 0
for name, job in doc["jobs"].items():
    assert job.get("runs-on"), f"job {name}: no runs-on"
    assert job.get("steps"), f"job {name}: no steps"
    for i, step in enumerate(job["steps"]):
        assert ("run" in step) != ("uses" in step), f"job {name} step {i}: needs exactly one of run and uses"
        if "run" in step:
            n += 1
            open(f"{outdir}/{n}.sh", "w").write(step["run"])
            for word in step["run"].split():
                if word.startswith("examples/"):
                    assert os.path.exists(os.path.join(root, word)), f"{word} does not exist"
print(n)
PY
rc=$?
is "$rc" 0 "the GitHub Actions workflow is valid YAML with jobs, runs-on and steps, naming scripts that exist"
[ "$rc" -eq 0 ] && blocks=$(cat "$WORK/wf.out") || { sed 's/^/# /' "$WORK/wf.out"; blocks=0; }
bad=""
for f in "$WORK"/run-blocks/*.sh; do [ -e "$f" ] && { bash -n "$f" 2>>"$WORK/bashn.err" || bad="$bad $(basename "$f")"; }; done
is "$bad" "" "every run block of the workflow ($blocks) passes bash -n"
[ -z "$bad" ] || sed 's/^/# /' "$WORK/bashn.err"

done_testing
