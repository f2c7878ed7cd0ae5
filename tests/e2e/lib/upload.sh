# upload_sha URL [curl args...]: POST 5 MiB of random data; prints
# "<sha256 sent> <sha256 the server saw> <pod>". Sourced by tests.
# shellcheck shell=bash
upload_check() {
  local url=$1; shift
  local f="$WORK/upload.bin"
  [ -f "$f" ] || head -c $((5 * 1024 * 1024)) /dev/urandom >"$f"
  local sent
  sent=$(sha256sum "$f" | cut -d' ' -f1)
  in_cluster curl -s --max-time 30 -X POST --data-binary @"$f" -H 'Content-Type: application/octet-stream' "$@" "$url" |
    python3 -c 'import json,sys
try:
    o=json.load(sys.stdin); print(sys.argv[1], o["body"]["sha256"], o["body"]["length"], o["pod"])
except Exception as e: print(sys.argv[1], "none", 0, "(no answer)")' "$sent"
}
