"""Statements of a seller's points (``GET /points/statement``) and the operator's usage report
(``GET /admin/usage``, ``vto ledger report``), read from ``point_usage``."""
