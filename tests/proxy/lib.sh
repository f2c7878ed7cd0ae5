# The start of every tests/proxy/test_*.sh, sourced as
# `source "$(dirname "$0")/lib.sh"`: strict mode, the repository's root as the
# working directory (ROOT), TAP, and the binaries under test (CZCTL, NGINX).
set -u
cd "$(dirname "$0")/../.." || exit 1
ROOT=$(pwd)
source tests/lib/tap.sh
CZCTL=${CZCTL:-$ROOT/czctl}
NGINX=${NGINX:-/usr/sbin/nginx}
