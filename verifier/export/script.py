"""The gate's shell script, shared by the DEP-8 and the tmt export.

It runs ``verifier verify --binary`` once per check and passes only when every check
meets its expectation. Pass is exit 0 with an empty stderr (autopkgtest fails a test that
writes to stderr unless it has ``allow-stderr``): the verifier's output, progress lines
included, goes to a log in the artifacts directory and to stdout; only a failure writes
to stderr. Overridable on the test machine: ``VERIFIER`` (the command), ``MEMCACHED``
(the binary), ``VERIFIER_DEBUG_DIR`` (separate debug info), ``VERIFIER_CACHE_DIR``.
"""

from __future__ import annotations

import shlex

from verifier.export.gate import ExportGate

_TEMPLATE = """#!/bin/bash
# memcached hang gate "{name}", written by `verifier export {flavour}`.
# Each check soaks memcached under a race scenario and must meet its expectation:
{check_list}
# Passes with exit 0 and nothing on stderr; the verifier's log goes to $out.
# Override: VERIFIER (verifier command, split at spaces), MEMCACHED (binary), VERIFIER_DEBUG_DIR,
# VERIFIER_CACHE_DIR.
set -u

verifier=({verifier})
if [ -n "${{VERIFIER:-}}" ]; then read -r -a verifier <<< "$VERIFIER"; fi
binary="${{MEMCACHED:-{binary}}}"
out="${{AUTOPKGTEST_ARTIFACTS:-${{TMT_TEST_DATA:-${{TMPDIR:-/tmp}}}}}}/verifier-{name}"
tmp="${{AUTOPKGTEST_TMP:-${{TMPDIR:-/tmp}}}}"
export VERIFIER_CACHE_DIR="${{VERIFIER_CACHE_DIR:-$tmp/verifier-cache}}"
extra=({extra})
if [ -n "${{VERIFIER_DEBUG_DIR:-}}" ]; then extra+=(--debug-dir "$VERIFIER_DEBUG_DIR"); fi

if [ ! -x "$binary" ]; then
  echo "{name}: no memcached binary at $binary (set MEMCACHED)" >&2
  exit 1
fi
mkdir -p "$out"
failed=0

check() {{  # SCENARIO EXPECTATION
  local scenario=$1 expect=$2
  local log="$out/$scenario.log" status=0
  echo "== $scenario (expect $expect): ${{verifier[*]}} verify --binary $binary"
  "${{verifier[@]}}" verify --binary "$binary" "${{extra[@]}}" --scenario "$scenario" \\
    --soak {soak} --trials {trials} --expect "$expect" --run-dir "$out/$scenario" \\
    >"$log" 2>&1 || status=$?
  cat "$log"
  if [ "$status" -eq 0 ]; then
    echo "== $scenario: expectation $expect met"
  else
    echo "{name}: $scenario did not meet 'expect $expect' (verifier exit $status; log $log)" >&2
    failed=1
  fi
}}

{checks}
exit "$failed"
"""


def gate_script(gate: ExportGate, *, flavour: str, binary: str) -> str:
    """The script text; ``binary`` is a shell expression for the default binary path."""
    extra = ["--amplify", gate.amplify] if gate.amplify else []
    return _TEMPLATE.format(
        name=gate.name,
        flavour=flavour,
        check_list="\n".join(f"#   {c.scenario}: {c.expect}" for c in gate.checks),
        verifier=" ".join(shlex.quote(word) for word in shlex.split(gate.verifier)),
        binary=binary,
        extra=" ".join(shlex.quote(e) for e in extra),
        soak=f"{gate.soak_s:g}",
        trials=gate.trials,
        checks="\n".join(
            f"check {shlex.quote(c.scenario)} {shlex.quote(c.expect)}" for c in gate.checks
        ),
    )
