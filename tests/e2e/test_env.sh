#!/usr/bin/env bash
# czctl service env (issue 15, acceptance 1 and 2): a Deployment whose
# container uses every env form (env value with $(VAR), $$ and undefined
# references, ConfigMap and Secret refs, optional refs that are missing,
# fieldRef, resourceFieldRef with divisors, envFrom with a prefix, keys that
# are not C-style names (kept by kubelets since 1.30), env overriding envFrom) gives exactly what the kubelet gives:
# the table below (written from the kubelet's rules) and the environment the
# pod's process really has (read with kubectl exec). Secret values appear
# only in a 0600 file, a command after -- sees them, and values with every
# awkward byte come back exactly through `set -a; . FILE` and python-dotenv.
source "$(dirname "$0")/lib/common.sh"

sandbox_up
B64() { python3 -c 'import base64,sys; print(base64.b64encode(sys.argv[1].encode("utf-8","surrogateescape")).decode())' "$1"; }

# The awkward values (acceptance 2), as Python literals: newline, both
# quotes, $, backslashes, =, non-ASCII (UTF-8 and a raw byte), and what a
# shell would run if it were not quoted. \udcff is the raw byte 0xff.
python3 - "$WORK/awkward.json" <<'PY'
import json, sys
values = {
    "NEWLINES": "line1\nline2\n\nline4",
    "QUOTES": "it's \"quoted\" 'twice'",
    "DOLLARS": "$HOME ${HOME} $(whoami) $$ $1 $",
    "BACKSLASHES": "C:\\path\\to \\n \\\\ \\' \\\"",
    "EQUALS": "a=b==c=",
    "UTF8": "grüße 日本 ✓",
    "RAW_BYTES": "caf\udce9 \udcff\udcfe end",
    "BACKTICK": "`touch /tmp/czctl-env-pwned` $(touch /tmp/czctl-env-pwned)",
    "SPACES": "  leading and trailing  ",
    "HASH": "value # not a comment",
    "EMPTYISH": "",
    "QUOTE_AND_DOLLAR": "it's $HOME",
    "TRAILING_BACKSLASH": "ends with \\",
    "CR": "carriage\rreturn",
}
json.dump(values, open(sys.argv[1], "w"), ensure_ascii=True)
PY

# --- the app ------------------------------------------------------------------
python3 - "$WORK/awkward.json" >"$WORK/app.yaml" <<'PY'
import base64, json, sys
awkward = json.load(open(sys.argv[1]))
b64 = lambda s: base64.b64encode(s.encode("utf-8", "surrogateescape")).decode()
items = [
  {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app-config"},
   "data": {"LOG_LEVEL": "debug", "GREETING": "hello from the ConfigMap", "1BAD": "valid with the prefix",
            "with.dot": "kept by the kubelet"}},
  {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "app-secret"},
   "data": {"DB_PASSWORD": b64("s3cr3t-pw"), "API_TOKEN": b64("tok-123"), "1BAD": b64("kept since 1.30")}},
  {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "awkward"},
   "data": {k: b64(v) for k, v in awkward.items()}},
  {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "envtest"},
   "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "envtest"}},
    "template": {"metadata": {"labels": {"app": "envtest"}, "annotations": {"team": "blue"}},
     "spec": {"volumes": [
       {"name": "config", "configMap": {"name": "app-config", "items": [
         {"key": "GREETING", "path": "greeting.txt", "mode": 0o400},
         {"key": "LOG_LEVEL", "path": "nested/level"}]}},
       {"name": "secrets", "secret": {"secretName": "awkward", "defaultMode": 0o640}},
       {"name": "scratch", "emptyDir": {}}],
      "containers": [{
       "name": "app", "image": "sandbox/echo", "ports": [{"containerPort": 8080}],
       "volumeMounts": [{"name": "config", "mountPath": "/etc/app"},
                        {"name": "secrets", "mountPath": "/var/run/secrets/app"},
                        {"name": "secrets", "mountPath": "/etc/one-secret.txt", "subPath": "QUOTES"},
                        {"name": "scratch", "mountPath": "/tmp/scratch"}],
       "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "1500m", "memory": "1Gi"}},
       "envFrom": [{"configMapRef": {"name": "app-config"}, "prefix": "CFG_"},
                   {"secretRef": {"name": "app-secret"}},
                   {"secretRef": {"name": "awkward"}},
                   {"configMapRef": {"name": "does-not-exist", "optional": True}}],
       "env": [
         {"name": "PLAIN", "value": "plain value"},
         {"name": "EMPTY", "value": ""},
         {"name": "LATER", "value": "<$(EARLY)>"},
         {"name": "EARLY", "value": "early"},
         {"name": "EXPANDED", "value": "$(CFG_LOG_LEVEL)/$(PLAIN)/$$(PLAIN)/$(UNDEFINED)/$(EARLY)/$x/$("},
         {"name": "DOLLAR_UTF8", "value": "price: $\u00e9"},
         {"name": "CFG_GREETING", "value": "env overrides envFrom"},
         {"name": "DB_URL", "value": "postgres://app:$(DB_PASSWORD)@db:5432/app"},
         {"name": "FROM_CM", "valueFrom": {"configMapKeyRef": {"name": "app-config", "key": "GREETING"}}},
         {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "app-secret", "key": "API_TOKEN"}}},
         {"name": "NOT_EXPANDED", "valueFrom": {"configMapKeyRef": {"name": "refs", "key": "ref"}}},
         {"name": "OPT_NO_KEY", "valueFrom": {"configMapKeyRef": {"name": "app-config", "key": "nope", "optional": True}}},
         {"name": "OPT_NO_CM", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "x", "optional": True}}},
         {"name": "OPT_NO_SECRET", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "x", "optional": True}}},
         {"name": "MY_POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
         {"name": "MY_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
         {"name": "MY_UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
         {"name": "MY_LABEL", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
         {"name": "MY_ANNOTATION", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['team']"}}},
         {"name": "MY_MISSING_LABEL", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['none']"}}},
         {"name": "MY_NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
         {"name": "MY_SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
         {"name": "MY_POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
         {"name": "MY_POD_IPS", "valueFrom": {"fieldRef": {"fieldPath": "status.podIPs"}}},
         {"name": "MY_HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
         {"name": "CPU_LIMIT_M", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1m"}}},
         {"name": "CPU_LIMIT", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
         {"name": "CPU_REQUEST", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu"}}},
         {"name": "MEM_LIMIT_MI", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
         {"name": "MEM_REQUEST_K", "valueFrom": {"resourceFieldRef": {"resource": "requests.memory", "divisor": "1k"}}},
         {"name": "EPHEMERAL_LIMIT", "valueFrom": {"resourceFieldRef": {"resource": "limits.ephemeral-storage",
                                                                          "divisor": "1Mi"}}},
       ]}]}}}},
  {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "refs"}, "data": {"ref": "$(PLAIN) stays"}},
  {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "envtest"},
   "spec": {"selector": {"app": "envtest"}, "ports": [{"port": 80, "targetPort": 8080}]}},
]
import yaml; print(yaml.safe_dump_all(items))
PY
deploy "$WORK/app.yaml" envtest || { fail "the env test app deploys"; exit 1; }
POD=$(kubectl get pods -l app=envtest -o jsonpath='{.items[0].metadata.name}')

# --- acceptance 1: exactly the kubelet's environment ---------------------------
"$CZCTL" service env envtest -o json --show-secrets >"$WORK/env.json" 2>"$WORK/env.err"; rc=$?
is "$rc" 0 "service env -o json --show-secrets exits 0"
like "$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["pod"], d["container"])' "$WORK/env.json")" \
  "^$POD app$" "the document says which pod and container it used"
"$CZCTL" service env envtest --file "$WORK/text.env" 2>"$WORK/text.err"
like "$(cat "$WORK/text.err")" "Environment of pod default/$POD, container app" "in text mode it says which pod and container on stderr"
kubectl exec "$POD" -- env -0 >"$WORK/pod.env"; is "$?" 0 "kubectl exec reads the pod's real environment"
kubectl get pod "$POD" -o json >"$WORK/pod.json"
kubectl get node sandbox -o json >"$WORK/node.json"

python3 - "$WORK/env.json" "$WORK/pod.env" "$WORK/pod.json" "$WORK/node.json" "$WORK/awkward.json" >"$WORK/compare.out" <<'PY'
import json, math, sys
doc = json.load(open(sys.argv[1]))
import base64
got = {v["name"]: v["value"] if "value" in v else base64.b64decode(v["valueBase64"]).decode("utf-8", "surrogateescape")
       for v in doc["variables"]}
secret = {v["name"] for v in doc["variables"] if v["secret"]}
raw = open(sys.argv[2], "rb").read().split(b"\0")
pod_env = {}
for entry in raw:
    if entry:
        k, _, v = entry.partition(b"=")
        pod_env[k.decode()] = v.decode("utf-8", "surrogateescape")
# the image's and the runtime's own variables are not the container spec's (runc sets HOME from the image's passwd)
for k in ("PATH", "HOSTNAME", "HOME", "POD_NAME", "POD_NAMESPACE"):
    pod_env.pop(k, None)
pod = json.load(open(sys.argv[3]))
node = json.load(open(sys.argv[4]))
awkward = json.load(open(sys.argv[5]))
mi = lambda q: q  # quantities below are computed by hand from the spec
eph = node["status"]["allocatable"]["ephemeral-storage"]
def value_of(q):
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 10**3, "M": 10**6, "G": 10**9}
    for u, m in units.items():
        if q.endswith(u): return int(q[:-len(u)]) * m
    return int(q)
want = dict(awkward)
want.update({
    "CFG_LOG_LEVEL": "debug", "CFG_GREETING": "env overrides envFrom", "CFG_with.dot": "kept by the kubelet",
    "CFG_1BAD": "valid with the prefix",
    "DB_PASSWORD": "s3cr3t-pw", "API_TOKEN": "tok-123", "1BAD": "kept since 1.30",
    "PLAIN": "plain value", "EMPTY": "", "LATER": "<$(EARLY)>", "EARLY": "early",
    "EXPANDED": "debug/plain value/$(PLAIN)/$(UNDEFINED)/early/$x/$(",
    # Go's expansion turns the byte after $ into the code point of its value:
    # e-acute (c3 a9) comes out as c3 83 a9
    "DOLLAR_UTF8": "price: $\u00c3\udca9",
    "DB_URL": "postgres://app:s3cr3t-pw@db:5432/app",
    "FROM_CM": "hello from the ConfigMap", "FROM_SECRET": "tok-123", "NOT_EXPANDED": "$(PLAIN) stays",
    "MY_POD": pod["metadata"]["name"], "MY_NS": "default", "MY_UID": pod["metadata"]["uid"], "MY_LABEL": "envtest",
    "MY_ANNOTATION": "blue", "MY_MISSING_LABEL": "", "MY_NODE": pod["spec"]["nodeName"],
    "MY_SA": "default", "MY_POD_IP": pod["status"]["podIP"],
    "MY_POD_IPS": ",".join(i["ip"] for i in pod["status"]["podIPs"]), "MY_HOST_IP": pod["status"]["hostIP"],
    "CPU_LIMIT_M": "1500", "CPU_LIMIT": "2", "CPU_REQUEST": "1", "MEM_LIMIT_MI": "1024", "MEM_REQUEST_K": "67109",
    "EPHEMERAL_LIMIT": str(math.ceil(value_of(eph) / 2**20)),
})
want_secret = set(awkward) | {"DB_PASSWORD", "API_TOKEN", "DB_URL", "FROM_SECRET", "1BAD"}
def diff(a, b):
    out = []
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k): out.append("%s: %r != %r" % (k, a.get(k), b.get(k)))
    return "; ".join(out) or "same"
print("spec", diff(got, want))
print("pod", diff(got, pod_env))
print("secret", "same" if secret == want_secret else "%s != %s" % (sorted(secret), sorted(want_secret)))
PY
is "$(sed -n 's/^spec //p' "$WORK/compare.out")" same "service env gives exactly the kubelet's values (optional refs unset, \$(VAR), \$\$, order, overrides, fieldRef, resourceFieldRef)"
is "$(sed -n 's/^pod //p' "$WORK/compare.out")" same "service env gives exactly the environment the pod's process has"
is "$(sed -n 's/^secret //p' "$WORK/compare.out")" same "values from Secrets are marked secret (also DB_URL, which expands one)"

# --- Secret values: only in a 0600 file, or given to a command ----------------
out=$("$CZCTL" service env envtest 2>/dev/null); rc=$?
is "$rc" 0 "service env (dotenv on stdout) exits 0"
like "$out" "^PLAIN='plain value'" "the dotenv output has the plain values"
check "no Secret value is printed without --show-secrets" \
  bash -c '! grep -qE "s3cr3t|tok-123|grüße" <<<"$1"' _ "$out"
like "$out" "# DB_PASSWORD: from a Secret, not shown" "hidden Secret values are named in a comment"
json=$("$CZCTL" service env envtest -o json 2>/dev/null)
check "-o json without --show-secrets has no Secret value" bash -c '! grep -qE "s3cr3t|tok-123" <<<"$1"' _ "$json"
like "$json" '"hidden": true' "-o json marks hidden values"
umask 022
"$CZCTL" service env envtest --file "$WORK/app.env" 2>"$WORK/file.err"; is "$?" 0 "service env --file exits 0"
is "$(stat -c %a "$WORK/app.env")" 600 "the file is created with mode 0600 (whatever the umask)"
like "$(cat "$WORK/app.env")" "DB_PASSWORD='s3cr3t-pw'" "the file holds the Secret values"
echo old >"$WORK/existing.env"; chmod 644 "$WORK/existing.env"
"$CZCTL" service env envtest --file "$WORK/existing.env" -q
is "$(stat -c %a "$WORK/existing.env")" 600 "an existing file is replaced by a 0600 one"

out=$("$CZCTL" service env envtest -- python3 -c 'import os; print(os.environ["DB_URL"], os.environ["FROM_SECRET"], os.environ["CFG_LOG_LEVEL"], os.environ.get("OPT_NO_KEY", "unset"))' 2>/dev/null)
is "$out" "postgres://app:s3cr3t-pw@db:5432/app tok-123 debug unset" "a command after -- sees the environment, secrets included"
"$CZCTL" service env envtest -- sh -c 'exit 7' 2>/dev/null; is "$?" 7 "czctl exits with the command's exit code"
"$CZCTL" service env envtest -- sh -c 'echo $$ >"$1"; exec sleep 30' _ "$WORK/child.pid" 2>/dev/null &
czpid=$!; E2E_PIDS+=("$czpid")
wait_for_cmd 20 test -s "$WORK/child.pid"
kill -TERM "$czpid"; wait "$czpid"; rc=$?
is "$rc" 143 "a SIGTERM to czctl is passed on to the command, and czctl exits as it did (143)"
check "the command is gone" bash -c '! kill -0 "$(cat "$1")" 2>/dev/null' _ "$WORK/child.pid"
out=$("$CZCTL" service env envtest -- python3 -c 'import os,sys; sys.stdout.buffer.write(os.environb[b"RAW_BYTES"])' 2>/dev/null | od -An -tx1 | tr -d ' \n')
is "$out" "636166e920fffe20656e64" "the command gets non-UTF-8 Secret bytes exactly"
out=$("$CZCTL" service env envtest extra 2>&1); rc=$?
is "$rc" 2 "a command without -- is a usage error (exit 2)"
mkfifo "$WORK/fifo"
out=$("$CZCTL" service env envtest --file "$WORK/fifo" 2>&1); rc=$?
like "$rc $out" "^2 .*fifo is a fifo; give the path of a regular file" "--file refuses to replace anything but a regular file"
check "the fifo is still there" test -p "$WORK/fifo"
out=$("$CZCTL" service env nope 2>&1); rc=$?
is "$rc:$(echo "$out" | wc -l)" "1:1" "an unknown Service is a one-line error, exit 1"
out=$("$CZCTL" service env envtest -c nope 2>&1); rc=$?
like "$rc $out" '^1 .*no container "nope" \(it has: app\)' "an unknown container is named with the ones there are"

# --- while czctl intercepts the Service: still the app's pod, not the proxy's --------
PORT=$(local_server laptop)
"$CZCTL" service intercept envtest -l "$PORT" --tunnel direct --env-file "$WORK/intercept.env" -q
is "$?" 0 "service intercept --env-file exits 0"
cmp -s "$WORK/intercept.env" "$WORK/app.env"; is "$?" 0 "--env-file writes the same file as service env --file"
is "$(stat -c %a "$WORK/intercept.env")" 600 "--env-file's file is 0600"
like "$("$CZCTL" service env envtest -o json 2>/dev/null)" "\"pod\": \"$POD\"" \
  "during the intercept, service env still uses the app's pod (the original selector)"
"$CZCTL" session close -q; is "$?" 0 "the session closes"
rm -f "$WORK/never.env"
"$CZCTL" service intercept envtest -l "$PORT" --tunnel direct --env-file "$WORK/never.env" --image no-such/image:1 -q \
  2>/dev/null; is "$?" 1 "an intercept whose proxy cannot start fails"
check "and its rollback removes the env file it wrote" test ! -e "$WORK/never.env"

# --- --mount: the ConfigMap and Secret volumes as files ------------------------
"$CZCTL" service env envtest --mount "$WORK/mnt" --file "$WORK/mnt.env" 2>"$WORK/mount.err"; is "$?" 0 "--mount exits 0"
like "$(cat "$WORK/mount.err")" "Wrote 19 files of 4 volumes under" \
  "it says what it wrote (2 + 14 + 1 subPath + the service account volume's ca.crt and namespace, not its token)"
is "$(cat "$WORK/mnt/var/run/secrets/kubernetes.io/serviceaccount/namespace")" default "a downwardAPI item is written"
check "no token is written" test ! -e "$WORK/mnt/var/run/secrets/kubernetes.io/serviceaccount/token"
like "$(cat "$WORK/mount.err")" "volumes not written .*: scratch" "an emptyDir is named as not written"
is "$(find "$WORK/mnt" -type f -printf '%P %m\n' | sort | head -4 | tr '\n' ' ')" \
  "etc/app/greeting.txt 400 etc/app/nested/level 644 etc/one-secret.txt 600 var/run/secrets/app/BACKSLASHES 600 " \
  "files at their mount paths with items, subPath and modes (Secret files owner-only)"
python3 - "$WORK/mnt" "$WORK/awkward.json" "$WORK/pod-files.txt" >"$WORK/mount.out" <<'PY'
import json, os, sys
root, awkward = sys.argv[1], json.load(open(sys.argv[2]))
bad = [k for k, v in awkward.items()
       if open(os.path.join(root, "var/run/secrets/app", k), "rb").read() != v.encode("utf-8", "surrogateescape")]
print(", ".join(bad) or "exact")
PY
is "$(cat "$WORK/mount.out")" exact "every Secret file holds its exact bytes"
is "$(cat "$WORK/mnt/etc/app/greeting.txt")" "$(kubectl exec "$POD" -- cat etc/app/greeting.txt)" \
  "a ConfigMap file is what the pod reads at that path"
is "$(cat "$WORK/mnt/etc/one-secret.txt")" "$(kubectl exec "$POD" -- cat etc/one-secret.txt)" \
  "a subPath file is what the pod reads at that path"

# --- acceptance 2: the dotenv file round-trips every byte ---------------------
like "$(cat "$WORK/file.err")" "left out of the dotenv output .*: CFG_with.dot, 1BAD$" \
  "names a shell cannot assign are left out of the dotenv file, and named"
like "$(cat "$WORK/file.err")" "python-dotenv reads these differently from a shell.*: (.*)$" \
  "the variables python-dotenv cannot read like a shell are named"
conflicts=$(sed -n 's/.*differently from a shell[^:]*: //p' "$WORK/file.err")
is "$conflicts" "CR, QUOTE_AND_DOLLAR, TRAILING_BACKSLASH" \
  "exactly the values no quoting can give both readers (see docs/env.md)"
rm -f /tmp/czctl-env-pwned
env -i bash -c 'set -a; . "$1"; exec python3 -c "import os,json,sys; json.dump({k.decode(): v.decode(\"utf-8\",\"surrogateescape\") for k, v in os.environb.items()}, sys.stdout)"' \
  _ "$WORK/app.env" >"$WORK/bash.json"; is "$?" 0 "bash sources the file without an error"
check "sourcing the file runs nothing (no command substitution)" test ! -e /tmp/czctl-env-pwned
python3 - "$WORK/app.env" "$WORK/awkward.json" "$WORK/bash.json" "$conflicts" >"$WORK/roundtrip.out" <<'PY'
import io, json, sys
from dotenv import dotenv_values
path, awkward, shell, conflicts = sys.argv[1], json.load(open(sys.argv[2])), json.load(open(sys.argv[3])), sys.argv[4]
conflicts = set(conflicts.split(", "))
exact = dotenv_values(stream=io.open(path, encoding="utf-8", errors="surrogateescape", newline=""), interpolate=False)
bad_shell = [k for k, v in awkward.items() if shell.get(k) != v]
bad_py = [k for k, v in awkward.items() if k not in conflicts and exact.get(k) != v]
print("bash", ", ".join(bad_shell) or "exact")
print("python", ", ".join(bad_py) or "exact")
print("count", len([k for k in awkward if k not in conflicts]))
PY
is "$(sed -n 's/^bash //p' "$WORK/roundtrip.out")" exact "bash 'set -a; . FILE' reads back every value exactly (newlines, quotes, \$, \\, =, UTF-8, raw bytes, CR)"
is "$(sed -n 's/^python //p' "$WORK/roundtrip.out")" exact "python-dotenv reads back exactly every value not named as a conflict"
is "$(sed -n 's/^count //p' "$WORK/roundtrip.out")" 11 "those are 11 of the 14 awkward values (all but a ' with an expandable \$, a final \\, a CR)"

done_testing
