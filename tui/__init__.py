"""freight.tui: the terminal inspector."""
