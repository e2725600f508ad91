"""/files/{key}: local-storage objects by signed link; the signature is the credential."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.api_factories import make_user
from tests.catalog_factories import API, assert_problem, create_project, image_bytes, upload_product


def test_signed_links(client: Any, services: Any) -> None:
    owner = make_user(services)
    product = upload_product(client, owner, create_project(client, owner)["id"])
    key = f"products/{product['id']}.png"
    storage = services.storage

    fetched = client.get(product["url"])  # no Authorization header
    assert fetched.status_code == 200 and fetched.content == image_bytes()
    assert fetched.headers["content-type"] == "image/png"
    assert fetched.headers["x-content-type-options"] == "nosniff"
    assert fetched.headers["cache-control"].startswith("private, max-age=")

    query = parse_qs(urlsplit(product["url"]).query)
    expires, signature = query["expires"][0], query["signature"][0]
    tampered = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    past = int(time.time()) - 10
    other_key = f"products/{product['id']}.png.type"
    for url in (
        f"{API}/files/{key}?expires={expires}&signature={tampered}",
        f"{API}/files/{key}?expires={int(expires) + 1}&signature={signature}",  # a longer life is not signed
        f"{API}/files/{key}?expires={past}&signature={storage.signature(key, past)}",  # expired
        f"{API}/files/{other_key}?expires={expires}&signature={signature}",  # signed for another key
        f"{API}/files/{key}?expires={expires}",
        f"{API}/files/{key}?signature={signature}",
        f"{API}/files/{key}",
        f"{API}/files/{key}?expires=soon&signature={signature}",
    ):
        assert_problem(client.get(url), 403, "invalid_signature")

    # A valid signature for an object that is not there; keys that would escape the store.
    missing = "products/nothing.png"
    later = int(time.time()) + 60
    assert_problem(
        client.get(f"{API}/files/{missing}?expires={later}&signature={storage.signature(missing, later)}"),
        404,
    )
    assert_problem(client.get(f"{API}/files/products/%2e%2e/%2e%2e/secret?expires={later}&signature=x"), 404)

    # Only the local storage is served here (S3 links point at S3).
    local, services.storage = services.storage, object()
    try:
        assert_problem(client.get(product["url"]), 404)
    finally:
        services.storage = local


def test_malformed_signed_links_are_403_never_500(client: Any, services: Any) -> None:
    """Without a token: non-ASCII digits in ``expires``, non-ASCII or non-hex signatures, huge
    expiries and control characters in the key are links this API did not sign."""
    owner = make_user(services)
    product = upload_product(client, owner, create_project(client, owner)["id"])
    key = f"products/{product['id']}.png"
    query = parse_qs(urlsplit(product["url"]).query)
    expires, signature = query["expires"][0], query["signature"][0]
    for raw_query in (
        "expires=%C2%B2&signature=a",  # superscript two: str.isdigit() says yes, int() says no
        f"expires=%D9%A3&signature={signature}",  # an Arabic-Indic digit
        "signature=%C3%A9",
        f"expires={expires}&signature=%C3%A9",
        f"expires={expires}&signature={'%C3%A9' * 32}",
        f"expires={expires}&signature={signature.upper()}",
        f"expires={'9' * 20}&signature={signature}",
        f"expires=-1&signature={signature}",
        f"expires={expires}&signature={signature}%00",
    ):
        assert_problem(client.get(f"{API}/files/{key}?{raw_query}"), 403, "invalid_signature")
    too_long = client.get(f"{API}/files/{key}?expires={10**30}&signature={signature}")
    assert_problem(too_long, 422, "validation_error")
    later = int(time.time()) + 60
    nul_signature = services.storage.signature(key + chr(0), later)
    assert_problem(client.get(f"{API}/files/{key}%00?expires={later}&signature={nul_signature}"), 404)
    assert client.get(f"{API}/files/{key}?expires={expires}&signature={signature}").status_code == 200
