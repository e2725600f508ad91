"""A user's model photos and backgrounds."""
