#!/usr/bin/env bash
# The operator commands of the Operations page, run by the tests against a local server.
# The CLI takes its endpoint from AIOLEASE_ENDPOINT_URL (the tests set it); against AWS,
# leave it unset: the usual AWS environment or profile applies.
set -euo pipefail

# --8<-- [start:commands]
aiolease create-table --table my-leases
aiolease add shard-1 --attr region=eu-west-1 --table my-leases
aiolease add shard-2 --table my-leases
aiolease ls --table my-leases           # id, holder, expires in, fencing token, attributes
aiolease ls --json --table my-leases    # the same, for scripts
aiolease release shard-1 --yes --table my-leases   # an operator's release of a stuck item
# --8<-- [end:commands]
