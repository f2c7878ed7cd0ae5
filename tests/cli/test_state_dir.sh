#!/usr/bin/env bash
# The directory of the session files is trusted only when no one else could
# have written it (issue 14): as ssh refuses a ~/.ssh others may write, czctl
# refuses a sessions directory that is writable by group or others, is not
# the user's own, or is not a directory, with a one-line error saying what to
# do, before reading or writing anything there. A planted session file would
# otherwise make `session close` delete objects or signal processes.
set -u
cd "$(dirname "$0")/../.." || exit 1
ROOT=$(pwd)
source tests/lib/tap.sh
CZCTL="$ROOT/czctl"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export HOME="$WORK/home" XDG_STATE_HOME="$WORK/state"
unset KUBECONFIG
mkdir -p "$HOME"
DIR="$XDG_STATE_HOME/czctl/sessions"

# refused CMD...: exit 1, one line naming the directory and the fix
refused() {
  local what=$1 want=$2; shift 2
  local err rc
  "$CZCTL" "$@" >"$WORK/out" 2>"$WORK/err"; rc=$?
  err=$(cat "$WORK/err")
  is "$rc" 1 "$what: czctl $* exits 1"
  like "$err" "$want" "$what: czctl $* says what is wrong and what to do"
  is "$(wc -l <"$WORK/err")" 1 "$what: czctl $*: the error is one line"
}

# `session close ID --forget` works on this machine's records alone: with a
# directory it trusts, it looks there and finds no such session.
used() {
  like "$("$CZCTL" session close abc1234567 --forget 2>&1)" "no local record of session abc1234567" "$1"
}
used "no sessions directory: it is looked at"
[ ! -e "$DIR" ]; is "$?" 0 "and nothing is created"

mkdir -p "$DIR"; chmod 700 "$DIR"
used "a 0700 sessions directory is used"

chmod 777 "$DIR"
refused "mode 0777" "sessions directory $DIR is mode 777, writable by others; check its files, then run: chmod 700 $DIR" \
  session close abc1234567 --forget
is "$(stat -c %a "$DIR")" 777 "the directory is left for the user to check (not silently repaired)"

chmod 720 "$DIR"
refused "group-writable" "is mode 720, writable by others" session close abc1234567 --forget

chmod 700 "$DIR"
used "after chmod 700 it is used again"

rmdir "$DIR"; ln -s "$WORK" "$DIR"
refused "a symbolic link" "sessions directory $DIR is not a directory \\(a link\\); remove it and run again" session close abc1234567 --forget

if [ "$(id -u)" = 0 ] && id nobody >/dev/null 2>&1; then
  rm "$DIR"; mkdir -m 700 "$DIR"; chown nobody "$DIR"
  refused "another user's" "sessions directory $DIR belongs to user id $(id -u nobody), not to you" session close abc1234567 --forget
else
  ok "# SKIP another user's directory: needs root"
fi

done_testing
