"""Domain errors of the ledger. The API maps each ``code`` to a problem response."""

from __future__ import annotations

from uuid import UUID


class LedgerError(Exception):
    """Base class of every domain error the ledger raises."""

    code = "ledger_error"


class InsufficientEntitlement(LedgerError):
    """No subscription, ticket or credit balance can pay for the job (HTTP 402)."""

    code = "insufficient_entitlement"

    def __init__(self, kind: str, cost: int, credits: int) -> None:
        super().__init__(
            f"nothing pays for this {kind} job: no active subscription or ticket for it, and "
            f"{credits} credits are fewer than the {cost} it costs"
        )
        self.kind, self.cost, self.credits = kind, cost, credits


class IdempotencyKeyReused(LedgerError):
    """The idempotency key was used before for a different request (HTTP 409)."""

    code = "idempotency_key_reused"

    def __init__(self, key: str, job_id: UUID) -> None:
        super().__init__(f"idempotency key {key!r} was used for another request (job {job_id})")
        self.key, self.job_id = key, job_id


class JobNotFound(LedgerError):
    """The account holds no (retained) reservation for this job (HTTP 404)."""

    code = "job_not_found"

    def __init__(self, job_id: UUID) -> None:
        super().__init__(f"job {job_id} is not known to this account")
        self.job_id = job_id


class JobAlreadyRefunded(LedgerError):
    """An admin refund of a job whose charge was already given back (HTTP 409)."""

    code = "job_already_refunded"

    def __init__(self, job_id: UUID) -> None:
        super().__init__(f"job {job_id} was already refunded")
        self.job_id = job_id


class JobIdConflict(LedgerError):
    """A job id was reused for a request of a different user or body (HTTP 409)."""

    code = "job_id_conflict"

    def __init__(self, job_id: UUID) -> None:
        super().__init__(f"job id {job_id} is already reserved for another request")
        self.job_id = job_id


class AccountNotFound(LedgerError):
    code = "account_not_found"

    def __init__(self, user_id: UUID) -> None:
        super().__init__(f"no ledger account for user {user_id}")
        self.user_id = user_id


class InvalidAmount(LedgerError):
    code = "invalid_amount"


class BalanceWouldBeNegative(LedgerError):
    code = "balance_would_be_negative"

    def __init__(self, source: str, balance: int, delta: int) -> None:
        super().__init__(f"{source} balance {balance} cannot change by {delta}")
        self.source, self.balance, self.delta = source, balance, delta


class UnknownJobKind(LedgerError):
    code = "unknown_job_kind"

    def __init__(self, kind: str, known: tuple[str, ...]) -> None:
        super().__init__(f"unknown job kind {kind!r}; known kinds: {', '.join(known)}")
        self.kind = kind


class UnknownTicketType(LedgerError):
    code = "unknown_ticket_type"

    def __init__(self, ticket_type: str, known: tuple[str, ...]) -> None:
        super().__init__(f"unknown ticket type {ticket_type!r}; known: {', '.join(known)}")
        self.ticket_type = ticket_type


class UnknownSource(LedgerError):
    code = "unknown_source"

    def __init__(self, source: str) -> None:
        super().__init__(f"unknown source {source!r}")
        self.source = source


class ConcurrencyRetriesExhausted(LedgerError):
    """The account kept changing under a command past the retry limit (HTTP 503)."""

    code = "ledger_busy"
