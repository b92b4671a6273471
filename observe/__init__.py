"""freight.observe: instrumentation (metrics catalogue, tracing, logging, events)."""
