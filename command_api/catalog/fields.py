"""Field types and the PATCH rule shared by catalog request bodies."""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import StringConstraints, model_validator

from command_api.inputs import InputModel, NoControls

# No control characters (checked after the constraints), also where these are form fields.
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), NoControls]
Description = Annotated[str, StringConstraints(max_length=2000), NoControls]
MarketingCopy = Annotated[str, StringConstraints(max_length=20_000), NoControls]


class PatchBody(InputModel):
    """A PATCH body: only the fields given change (``null`` clears an optional one); at least
    one field, and never ``name: null``."""

    @model_validator(mode="after")
    def _something(self) -> Self:
        if not self.model_fields_set:
            raise ValueError(f"give {' and/or '.join(type(self).model_fields)}")
        if "name" in self.model_fields_set and getattr(self, "name", None) is None:
            raise ValueError("name cannot be null")
        return self
