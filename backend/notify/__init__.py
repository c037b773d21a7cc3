"""After an order changes: its receipt, rendered, stored and mailed once per event."""
