"""The catalog's rules that a request can break, one class each (status and ``code`` fixed by
the class); ``command_api.problems`` answers them as problem responses."""

from __future__ import annotations

from command_api.problems import DomainError, Forbidden


class ReadOnlyProject(Forbidden):
    def __init__(self) -> None:
        super().__init__("the project is shared with you for reading only")


class NotProjectOwner(Forbidden):
    """An editor tried what only the owner may: change the project itself or its shares."""

    def __init__(self) -> None:
        super().__init__("only the project's owner may change the project or its shares")


class UnsupportedImage(DomainError):
    status, code = 415, "unsupported_media_type"

    def __init__(self) -> None:
        super().__init__("upload a PNG, JPEG or WebP image")


class InvalidImage(DomainError):
    status, code = 422, "invalid_image"


class TooManyProducts(DomainError):
    status, code = 409, "too_many_products"


class NoProducts(DomainError):
    status, code = 422, "no_products"

    def __init__(self) -> None:
        super().__init__("a job needs at least one product")


class WrongAssetType(DomainError):
    status, code = 422, "wrong_asset_type"


class CannotShareWithOwner(DomainError):
    status, code = 422, "cannot_share_with_owner"

    def __init__(self) -> None:
        super().__init__("the project already belongs to that user")


class ShareNotFound(DomainError):
    status, code = 404, "share_not_found"

    def __init__(self) -> None:
        super().__init__("the project is not shared with that user")


class InvitationNotFound(DomainError):
    status, code = 404, "invitation_not_found"

    def __init__(self) -> None:
        super().__init__("no open invitation with that id for you (accepted, declined, revoked or expired)")


class EmailUnverified(Forbidden):
    """Invitations go to an address: only the account that proved it holds the address sees
    and answers them (an unverified account may hold someone else's address)."""

    code = "email_unverified"

    def __init__(self) -> None:
        super().__init__("verify your email address to see and answer the invitations sent to it")


class TooManyInvitations(DomainError):
    status, code = 429, "too_many_invitations"

    def __init__(self, limit: int, window_s: int, retry_after_s: int) -> None:
        super().__init__(f"at most {limit} invitations in {window_s} s; retry after {retry_after_s} s")
        self.headers = {"Retry-After": str(retry_after_s)}


class TooManyOpenInvitations(DomainError):
    status, code = 409, "too_many_open_invitations"
