"""freight.chaos: fault injection and game days."""
