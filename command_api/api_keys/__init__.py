"""API keys for servers (``vto_sk_...``): created, listed and revoked by a signed-in person,
used as ``Authorization: Bearer`` on the seller routes; docs/api-keys.md."""
