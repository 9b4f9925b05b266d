"""Live updates: committed audit events and presence pushed to signed-in browsers (GET /events)."""
