"""schemathesis hooks for scripts/conformance: a tus PATCH body is bytes, sent as any binary is."""

import schemathesis

schemathesis.serializer.alias("application/offset+octet-stream", "application/octet-stream")
