// Package e2e runs the demo page and the browser client library in a real
// headless Chromium against an in-process bridge and demo backend. The tests
// need Debian's chromium at /usr/bin/chromium; without it they skip, unless
// BRIDGE_E2E=1 is set, as in CI, where they fail.
package e2e
