# Headless Chromium for tests/e2e/test_report_render.py, which renders a job's report page
# (docs/report.md) and screenshots it. Included by the main Makefile; `make test` depends on it.
# Debian's own package, installed only when /usr/bin/chromium is missing: as root, or with sudo
# when not root. A machine that can do neither stops here, saying so, rather than later in a test.

CHROMIUM := /usr/bin/chromium
BROWSER_INSTALL := apt-get update && apt-get install -y --no-install-recommends chromium

.PHONY: browser

browser:
	@if [ -x "$(CHROMIUM)" ]; then exit 0; fi; \
	echo "$(CHROMIUM) is missing: installing Debian's chromium (the report's browser test needs it)"; \
	if [ "$$(id -u)" = 0 ]; then sh -c '$(BROWSER_INSTALL)' || { echo "error: installing chromium failed" >&2; exit 1; }; \
	elif command -v sudo >/dev/null 2>&1; then sudo sh -c '$(BROWSER_INSTALL)' || { echo "error: installing chromium failed" >&2; exit 1; }; \
	else echo "error: cannot install chromium: not root and no sudo; install it (as root: $(BROWSER_INSTALL))" >&2; exit 1; fi; \
	test -x "$(CHROMIUM)" || { echo "error: chromium was installed but $(CHROMIUM) is still missing" >&2; exit 1; }
