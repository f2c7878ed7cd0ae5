# Background processes started by a shell test or bench script: wait until
# one accepts connections, and stop every one on exit (also on INT/TERM), so
# nothing outlives the script. Source it with bash; it only defines functions
# and the PIDS array, it starts nothing.
# shellcheck shell=bash
PIDS=()

# wait_port HOST PORT: returns 0 once HOST:PORT accepts a connection, 1 after 10 s
wait_port() {
  local i
  for i in $(seq 200); do
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
    sleep 0.05
  done
  return 1
}

# stop_pids PID...: TERM each, wait up to 2.5 s for each to go, then KILL it,
# so a server that ignores TERM cannot hold the test's ports or files
stop_pids() {
  local p
  for p in "$@"; do kill -TERM "$p" 2>/dev/null; done
  for p in "$@"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$p" 2>/dev/null
  done
  return 0
}

# on_exit FUNCTION: run FUNCTION once when the script ends; INT and TERM end it
# through the same EXIT trap with the usual status (130, 143)
on_exit() {
  trap "$1" EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

# stop_all_on_exit DIR: on exit stop PIDS and every ngrok stand-in agent the
# script started (tests/fake-ngrok writes their pids to FAKE_NGROK_PIDFILE,
# DIR/agent.pids, exported), then remove DIR
stop_all_on_exit() {
  export FAKE_NGROK_PIDFILE=$1/agent.pids
  : >"$FAKE_NGROK_PIDFILE"
  STOP_ALL_DIR=$1
  # shellcheck disable=SC2046  # one pid a line
  on_exit 'stop_pids "${PIDS[@]}" $(cat "$FAKE_NGROK_PIDFILE" 2>/dev/null); rm -rf "$STOP_ALL_DIR"'
}
