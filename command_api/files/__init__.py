"""Signed links to locally stored objects."""
