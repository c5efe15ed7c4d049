"""Schemathesis hooks for the API contract test: plugin artifacts (`application/wasm`) are
sent as the raw bytes schemathesis generates for a binary body."""

import schemathesis

schemathesis.serializer.alias("application/wasm", "application/octet-stream")
# Import files (JSON Lines) and exports travel as text.
schemathesis.serializer.alias("application/x-ndjson", "text/plain")
