#!/usr/bin/env bash
# Several developers on one Service (issue 9, acceptance 1): three developers
# leave in the orders carol first, or bob then carol (lib/orders.sh; the
# others: test_shared_orders.sh).
set -u
source "$(dirname "$0")/lib/common.sh"
source "$E2E_LIB/orders.sh"
leave_orders "bob carol alice" "carol alice bob" "carol bob alice"
done_testing
