#!/usr/bin/env bash
# CI cancellation (issue 16): how long `czctl service intercept ... -- CMD`
# takes from SIGTERM (a cancelled job) to its exit, with the session closed,
# when CMD exits at once on the signal; next to the baseline of the same
# round: `czctl session close` of the same kind of session alone. The
# design budget is GitHub Actions' 10 s from its first signal to SIGKILL, of
# which CMD gets --grace (5 s): what czctl itself needs must fit in the rest.
#
#   bench/ci-cancel.sh [ROUNDS]   (default 8; needs ./czctl built; prints a
#                                  RESULTS.md section on stdout)
set -euo pipefail
ROUNDS=${1:-8}
# shellcheck source=lib/demo-sandbox.sh
source "$(dirname "$0")/lib/demo-sandbox.sh"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
demo_sandbox ci-cancel

now() { date +%s.%N; }
cancel=() close=()
for r in $(seq "$ROUNDS"); do
  # a. SIGTERM to czctl while CMD runs: until czctl exits (CMD stopped, session closed)
  rm -f "$WORK/ready"
  "$CZCTL" service intercept demo -l "$PORT" --tunnel direct -q -- \
    sh -c "trap 'exit 0' TERM; touch '$WORK/ready'; while :; do sleep 0.05; done" 2>>"$WORK/cmd.err" &
  pid=$!
  while [ ! -e "$WORK/ready" ]; do sleep 0.02; done
  t0=$(now); kill -TERM "$pid"; rc=0; wait "$pid" || rc=$?; t1=$(now)
  [ "$rc" -eq 143 ] || { echo "round $r: czctl exited $rc, not 143" >&2; exit 1; }
  cancel+=("$t0:$t1")
  # b. baseline: the close alone, of the same kind of session
  "$CZCTL" service intercept demo -l "$PORT" --tunnel direct -q
  t0=$(now); "$CZCTL" session close -q; t1=$(now)
  close+=("$t0:$t1")
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

python3 - "$ROUNDS" "$LOAD_BEFORE" "$LOAD_AFTER" "${cancel[*]}" "${close[*]}" <<'PY'
import statistics, sys
rounds, before, after = sys.argv[1:4]
def spans(arg):
    return [float(b) - float(a) for a, b in (x.split(":") for x in arg.split())]
cancel, close = spans(sys.argv[4]), spans(sys.argv[5])
ratios = [a / b for a, b in zip(cancel, close)]
mc, mb, mr = statistics.median(cancel), statistics.median(close), statistics.median(ratios)
print("## CI cancellation: SIGTERM to `-- CMD` until czctl exits\n")
print(f"Command: `bench/ci-cancel.sh {rounds}` ({rounds} interleaved rounds on the sandbox, direct tunnel; "
      "CMD exits at once on SIGTERM). Load average (1/5/15 min) before: "
      f"{before}; after: {after}.\n")
print("| measure | median |")
print("|---|---|")
print(f"| SIGTERM to czctl's exit (CMD stopped, session closed, exit 143) | {mc:.3f} s |")
print(f"| baseline: `czctl session close` alone, same kind of session | {mb:.3f} s |")
print(f"\nMedian per-round ratio cancel/close: **{mr:.2f}**. Within GitHub Actions' 10 s "
      f"(SIGINT, 7.5 s, SIGTERM, 2.5 s, SIGKILL) with CMD's --grace of 5 s: czctl's own part "
      f"{mc:.3f} s of the 5 s left: {'met' if mc < 5 else 'not met'}.\n")
print("Raw (s): cancel " + " ".join(f"{x:.3f}" for x in cancel) + "; close " + " ".join(f"{x:.3f}" for x in close))
PY
