#!/usr/bin/env bash
# Several developers on one Service (issue 9, acceptance 1): three developers
# leave in the orders alice first, or bob then alice (lib/orders.sh; the
# others: test_shared_orders_carol.sh; the routes, refusals and others'
# changes: test_shared.sh).
set -u
source "$(dirname "$0")/lib/common.sh"
source "$E2E_LIB/orders.sh"
leave_orders "alice bob carol" "alice carol bob" "bob alice carol"
done_testing
