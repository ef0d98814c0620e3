#!/usr/bin/env bash
# Install Debian's `chromium` and `chromium-driver` for the service's browser test when missing.
#
# Run as root on a fresh Debian 12 machine (CI); scripts/test.sh calls it. A browser that
# downloads its own build (Playwright's, Selenium Manager's) cannot be installed where the
# tests run, so the test drives these packages' /usr/bin/chromium through /usr/bin/chromedriver.
set -euo pipefail

if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "chromium.sh: chromium and chromium-driver are missing and installing them needs root" >&2
    exit 1
fi
echo "chromium.sh: installing chromium and chromium-driver" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update >&2
apt-get install -y chromium chromium-driver >&2
