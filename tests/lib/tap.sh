# TAP helpers for shell tests: source this file, call ok/fail/is/like, then done_testing.
# shellcheck shell=bash
_tap_n=0 _tap_failed=0
ok()   { _tap_n=$((_tap_n+1)); echo "ok $_tap_n - $*"; }
# (a name ending in "# TODO reason" is a known failure: reported, not counted)
fail() {
  _tap_n=$((_tap_n+1))
  case "$*" in *"# TODO"*) ;; *) _tap_failed=$((_tap_failed+1)) ;; esac
  echo "not ok $_tap_n - $*"
}
# check NAME CMD...: ok when CMD succeeds
check() { local name=$1; shift; if "$@"; then ok "$name"; else fail "$name"; fi; }
# is GOT WANT NAME
is() { if [ "$1" = "$2" ]; then ok "$3"; else fail "$3"; echo "#   got:  $1"; echo "#   want: $2"; fi; }
# like GOT REGEX NAME
like() { if printf '%s' "$1" | grep -qE -- "$2"; then ok "$3"; else fail "$3"; echo "#   got:  $1"; echo "#   want match: $2"; fi; }
done_testing() { echo "1..$_tap_n"; [ "$_tap_failed" -eq 0 ]; }
