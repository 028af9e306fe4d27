#!/usr/bin/env bash
# Headless Chromium for the crystal database web page tests (tests/test_db_web.py): Debian's
# chromium and chromium-driver, driven through selenium (the `test` extra). Sourced by .ci/run
# (as root, under set -euo pipefail); idempotent: installed packages are reused.
# Exports LAMKIT_TEST_CHROMIUM and LAMKIT_TEST_CHROMEDRIVER.
# Everything runs in a subshell so that a failure here cannot abort the caller's shell; the
# caller's tests then fail loudly (CI=true) because LAMKIT_TEST_CHROMIUM stays unset.
_lamkit_browser_setup() (
    set -eu
    have() { [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; }
    if ! have; then
        echo "browser.sh: installing Debian's chromium and chromium-driver" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null || true
        apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null ||
            echo "browser.sh: apt-get install chromium chromium-driver failed" >&2
    fi
    if ! have; then
        echo "browser.sh: /usr/bin/chromium or /usr/bin/chromedriver missing after install" >&2
        return 1
    fi
    # both must start here (a missing shared library shows now, not inside the tests); each
    # step checks its status itself: set -e does not apply inside an `if` condition
    /usr/bin/chromedriver --version >&2 || return 1
    /usr/bin/chromium --headless --no-sandbox --disable-gpu --version >&2 || return 1
)

if _lamkit_browser_setup; then
    export LAMKIT_TEST_CHROMIUM=/usr/bin/chromium LAMKIT_TEST_CHROMEDRIVER=/usr/bin/chromedriver
    echo "browser.sh: LAMKIT_TEST_CHROMIUM=$LAMKIT_TEST_CHROMIUM" >&2
else
    echo "browser.sh: Chromium setup failed; the web page tests will report it" >&2
fi
unset -f _lamkit_browser_setup
