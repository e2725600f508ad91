"""Field types shared by catalog request bodies."""

from __future__ import annotations

from typing import Annotated

from pydantic import StringConstraints

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Description = Annotated[str, StringConstraints(max_length=2000)]
MarketingCopy = Annotated[str, StringConstraints(max_length=20_000)]
