"""The HTTP API (FastAPI): one folder per area with ``endpoints`` (HTTP), ``service`` (rules),
``repository`` (queries) and ``schemas`` (shapes); ``deps`` (``Annotated`` dependencies),
``problems`` (the one handler mapping domain errors to problem responses), ``services`` (what
one API process holds), ``serve`` (uvicorn).

The top layer: may import ``ledger``, ``infra``, ``projections``, ``pipeline`` and
``generator_worker``; nothing imports it but the composition root (``infra.cli``)."""
