#!/usr/bin/env bash
# Install Debian's `chromium` and `chromium-driver` for the service's browser test when missing.
#
# Run as root on a fresh Debian 12 machine (CI); scripts/test.sh calls it. A browser that
# downloads its own build (Playwright's, Selenium Manager's) cannot be installed where the
# tests run, so the test drives these packages' /usr/bin/chromium through /usr/bin/chromedriver.
#
# Exit status: 0 when both are there; 2 when they cannot be installed on this machine (not root,
# or no apt-get); anything else when the installation failed.
set -euo pipefail

if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "chromium.sh: chromium and chromium-driver are missing and installing them needs root" >&2
    exit 2
fi
if ! command -v apt-get >/dev/null; then
    echo "chromium.sh: chromium and chromium-driver are missing and this is no Debian (no apt-get)" >&2
    exit 2
fi
echo "chromium.sh: installing chromium and chromium-driver" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update >&2
apt-get install -y chromium chromium-driver >&2
