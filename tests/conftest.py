"""Suite-wide settings: every cluster the tests start checks its state machines as it runs."""

import os

# Lifecycle state machines validate themselves after every transition (DESIGN: Scheduling).
os.environ.setdefault("FREIGHT_VALIDATE_STATE", "1")
