# TAP-style check helpers shared by the servers' self-tests (sourced).
# ok/bad count results; expect and expect_match compare; tap_summary prints the
# totals and returns non-zero when anything failed.
PASSED=0
FAILED=0
ok() { echo "ok - $*"; PASSED=$((PASSED + 1)); }
bad() { echo "not ok - $*"; FAILED=$((FAILED + 1)); }
# expect DESCRIPTION ACTUAL EXPECTED
expect() { if [ "$2" = "$3" ]; then ok "$1"; else bad "$1 (got '$2', want '$3')"; fi; }
# expect_match DESCRIPTION ACTUAL REGEX
expect_match() { if [[ "$2" =~ $3 ]]; then ok "$1"; else bad "$1 (got '$2', want /$3/)"; fi; }
