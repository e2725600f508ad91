"""Projects, their sharing and their statistics."""
