"""Request and response bodies of /projects, /projects/{id}/shares, /projects/{id}/invitations
and /invitations."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict

from command_api.catalog.fields import MarketingCopy, Name, PatchBody
from command_api.catalog.models import ProjectInvitation, ShareRole
from command_api.inputs import InputModel
from command_api.products.schemas import EXAMPLE as PRODUCT_EXAMPLE
from command_api.products.schemas import ProductOut
from command_api.users.emails import EmailAddress

EXAMPLE: JsonDict = {
    "id": "9a3e5f10-4c2d-4e8b-a1f7-3b6c9d0e2f44",
    "collection_id": "0b6f3c52-8d5c-4f7e-9a54-2f1f0c8e7d11",
    "owner_id": "2c8f4e1a-7b3d-4a6e-9c0f-1d2e3f4a5b6c",
    "name": "Linen shirt lookbook",
    "marketing_copy": "Breathable linen for warm days.",
    "shared_user_ids": ["7e1d2c3b-4a5f-4e6d-8c9b-0a1f2e3d4c5b"],
    "shares": [{"user_id": "7e1d2c3b-4a5f-4e6d-8c9b-0a1f2e3d4c5b", "role": "viewer"}],
    "image_count": 12,
    "video_count": 1,
    "products": [PRODUCT_EXAMPLE],
    "created_at": "2026-11-27T09:01:00Z",
    "updated_at": "2026-11-27T09:01:00Z",
}


class ProjectIn(InputModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {
                "collection_id": "0b6f3c52-8d5c-4f7e-9a54-2f1f0c8e7d11",
                "name": "Linen shirt lookbook",
                "marketing_copy": "Breathable linen for warm days.",
            }
        },
    )
    collection_id: uuid.UUID
    name: Name
    marketing_copy: MarketingCopy | None = None


class ProjectPatch(PatchBody):
    """Only the fields given change; ``marketing_copy: null`` clears it."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"example": {"marketing_copy": "Now in three colours."}}
    )
    name: Name | None = None
    marketing_copy: MarketingCopy | None = None


class ShareOut(BaseModel):
    user_id: uuid.UUID
    role: ShareRole = Field(description="viewer: reads; editor: also adds products and orders jobs")


class ProjectOut(BaseModel):
    """A project. ``image_count`` and ``video_count`` count its generated results (the
    ``project_stats`` read model); ``products`` are all its product images, in upload order."""

    model_config = ConfigDict(json_schema_extra={"example": EXAMPLE})
    id: uuid.UUID
    collection_id: uuid.UUID
    owner_id: uuid.UUID
    name: str
    marketing_copy: str | None
    shared_user_ids: list[uuid.UUID]
    shares: list[ShareOut] = Field(description="the users it is shared with and their roles")
    image_count: int
    video_count: int
    products: list[ProductOut]
    created_at: datetime
    updated_at: datetime


class ShareIn(InputModel):
    """An invitation to the address: the account holding it (verified) accepts it on
    ``POST /invitations/{id}/accept``. Every address gets the same answer, known or not."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"example": {"email": "colleague@example.com", "role": "editor"}},
    )
    email: EmailAddress = Field(description="stored in its canonical form, as account addresses are")
    role: ShareRole = Field(
        default=ShareRole.VIEWER,
        description="viewer (default): reads the project, its products and results; editor: also "
        "adds products and orders jobs in it (charged to the editor). Inviting an address again renews "
        "its open invitation with the role given.",
    )


class ShareRoleIn(InputModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": {"role": "viewer"}})
    role: ShareRole = Field(description="the member's new role")


INVITATION_EXAMPLE: JsonDict = {
    "id": "3b9d7c1e-5f2a-4d8b-9e6c-1a2b3c4d5e6f",
    "project_id": "9a3e5f10-4c2d-4e8b-a1f7-3b6c9d0e2f44",
    "email": "colleague@example.com",
    "role": "editor",
    "status": "pending",
    "created_at": "2026-11-28T09:00:00Z",
    "expires_at": "2026-12-12T09:00:00Z",
}


class InvitationStatusOut(StrEnum):
    pending = "pending"
    expired = "expired"  # pending, past ``expires_at``: inviting the address again renews it


class InvitationOut(BaseModel):
    """An open invitation, as its project's owner sees it. The same fields for every address:
    nothing says whether an account holds it."""

    model_config = ConfigDict(json_schema_extra={"example": INVITATION_EXAMPLE})
    id: uuid.UUID
    project_id: uuid.UUID
    email: str
    role: ShareRole
    status: InvitationStatusOut
    created_at: datetime
    expires_at: datetime

    @classmethod
    def of(cls, invitation: ProjectInvitation) -> InvitationOut:
        expired = invitation.expires_at <= datetime.now(UTC)
        return cls(
            id=invitation.id,
            project_id=invitation.project_id,
            email=invitation.email,
            role=ShareRole(invitation.role),
            status=InvitationStatusOut.expired if expired else InvitationStatusOut.pending,
            created_at=invitation.created_at,
            expires_at=invitation.expires_at,
        )


class InvitedProject(BaseModel):
    id: uuid.UUID
    name: str


class Inviter(BaseModel):
    name: str | None
    email: str


class ReceivedInvitationOut(BaseModel):
    """An open invitation to the caller's (verified) address."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "id": INVITATION_EXAMPLE["id"],
                "role": "editor",
                "project": {"id": INVITATION_EXAMPLE["project_id"], "name": "Linen shirt lookbook"},
                "invited_by": {"name": "Kim Seller", "email": "seller@example.com"},
                "created_at": "2026-11-28T09:00:00Z",
                "expires_at": "2026-12-12T09:00:00Z",
            }
        }
    )
    id: uuid.UUID
    role: ShareRole
    project: InvitedProject
    invited_by: Inviter
    created_at: datetime
    expires_at: datetime
