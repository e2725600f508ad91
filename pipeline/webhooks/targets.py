"""Where a webhook may go: no server-side request forgery.

A webhook URL is http or https, names a host, and carries no user name or password (it is
recorded in the ledger for good, and the signature already authenticates us). Unless the
operator allows private networks (``VTO_WEBHOOK_ALLOW_PRIVATE_NETWORKS=true``), every address
the host is or resolves to must be a public one: loopback, private, shared, link-local
(169.254.169.254, the cloud metadata service, included), unique-local, multicast, unspecified,
reserved and documentation addresses are refused, in their IPv4, IPv6 and IPv4-in-IPv6 forms
(mapped, 6to4, Teredo, NAT64). The check runs when the job is created (``TargetPolicy.check``)
and again for every connection the sender opens (``CheckedBackend``): the name is resolved
there, each address checked, and the connection made to an address that was checked, so a
name whose DNS changes after the job was accepted (DNS rebinding) reaches nothing private.
TLS is still verified against the URL's host name.

The sender's HTTP stack is httpx over httpcore; ``CheckedTransport`` is an httpx transport
on an httpcore connection pool whose network backend is ``CheckedBackend`` (the extension
points both libraries publish for this)."""

from __future__ import annotations

import ipaddress
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpcore
import httpx

log = logging.getLogger(__name__)

SCHEMES = ("http", "https")
DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_URL_LENGTH = 2048

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolve = Callable[[str, int], Sequence[str]]
AsyncResolve = Callable[[str, int], Awaitable[Sequence[str]]]

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_SHARED = ipaddress.IPv4Network("100.64.0.0/10")
_UNIQUE_LOCAL = ipaddress.IPv6Network("fc00::/7")


class TargetNotAllowed(ValueError):
    """A webhook URL, or an address it resolves to, that webhooks may not go to; the message
    says why (shown to the client, and in the delivery log)."""


def parse(url: str) -> httpx.URL:
    """The URL, if a webhook may name it (scheme, host, no credentials); ``TargetNotAllowed``
    otherwise. Says nothing yet of the addresses."""
    if len(url) > MAX_URL_LENGTH:
        raise TargetNotAllowed(f"the webhook URL is longer than {MAX_URL_LENGTH} characters")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise TargetNotAllowed(f"the webhook URL is not a valid URL: {exc}") from None
    if parsed.scheme not in SCHEMES:
        raise TargetNotAllowed("a webhook URL must be http or https")
    if not parsed.host:
        raise TargetNotAllowed("a webhook URL must name a host")
    if parsed.userinfo:
        raise TargetNotAllowed("a webhook URL may not carry a user name or password")
    return parsed


def port_of(url: httpx.URL) -> int:
    return url.port or DEFAULT_PORTS[url.scheme]


def ip_literal(host: str) -> IPAddress | None:
    """The address ``host`` spells in the standard notation (an IPv6 zone dropped), else None
    (a name: it must be resolved; the resolver also reads the legacy spellings such as
    ``2130706433`` or ``0x7f.1``, and their addresses are checked like any other)."""
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def refusal(address: IPAddress) -> str | None:
    """Why webhooks may not go to ``address`` (None: a public address they may go to)."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = _embedded_ipv4(address)
        if inner is not None:
            reason = refusal(inner)
            return None if reason is None else f"{reason} (inside an IPv6 address)"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if isinstance(address, ipaddress.IPv6Address) and address in _UNIQUE_LOCAL:
        return "a unique-local address"
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return "a site-local address"
    if address.is_private or (isinstance(address, ipaddress.IPv4Address) and address in _SHARED):
        return "a private address"
    if address.is_reserved or not address.is_global:
        return "a reserved address"
    return None


def check_addresses(host: str, addresses: Iterable[str]) -> list[str]:
    """The addresses, if every one is public; ``TargetNotAllowed`` otherwise (a name with one
    private address among public ones is refused: which one a connection would use is not
    ours to choose). For an address the client wrote, the refusal says what it is; for a
    name, only that it does not resolve to public addresses (the same words whether it
    resolves to a private address or not at all: the API is no oracle of internal DNS), the
    address found being logged for the operator."""
    found: list[str] = list(dict.fromkeys(addresses))
    literal = ip_literal(host) is not None
    checked: list[str | None] = list(found) or [None]
    for text in checked:
        address = None if text is None else ip_literal(text)
        reason = (
            "no address" if text is None else "not an IP address" if address is None else refusal(address)
        )
        if reason is None:
            continue
        if literal:
            raise TargetNotAllowed(f"webhooks may not go to {host}: {reason}")
        log.info("webhook host %s refused: %s (%s)", host, text, reason)
        raise TargetNotAllowed(f"webhooks may not go to {host}: it does not resolve to public addresses only")
    return found


def resolve(host: str, port: int) -> list[str]:
    """The host's addresses (the system resolver), in its order of preference."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    return [str(info[4][0]) for info in infos]


async def resolve_async(host: str, port: int) -> list[str]:
    try:
        infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True)
class TargetPolicy:
    """The check of a webhook URL when a job names it: ``check(url)`` raises
    ``TargetNotAllowed`` (the API answers 422 ``webhook_url_not_allowed``). Blocks while the
    host is resolved: call it off the event loop."""

    allow_private: bool
    resolver: Resolve = field(default=resolve)

    def check(self, url: str) -> None:
        parsed = parse(url)
        if self.allow_private:
            return
        host = parsed.host
        if ip_literal(host) is not None:
            check_addresses(host, [host])
        else:
            check_addresses(host, self.resolver(host, port_of(parsed)))


class CheckedBackend(httpcore.AnyIOBackend):
    """httpcore's network backend, resolving and checking each host itself and connecting to
    the checked addresses only (the first that answers)."""

    def __init__(self, allow_private: bool, resolver: AsyncResolve = resolve_async) -> None:
        self.allow_private = allow_private
        self.resolver = resolver

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = [host] if ip_literal(host) is not None else list(await self.resolver(host, port))
        if not self.allow_private:
            addresses = check_addresses(host, addresses)
        elif not addresses:
            raise TargetNotAllowed(f"webhooks may not go to {host}: it does not resolve")
        failure: Exception | None = None
        for address in addresses:
            try:
                return await super().connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, stream: Any) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for part in self._stream:
                yield part
        except httpcore.TimeoutException as exc:
            raise httpx.ReadTimeout(str(exc)) from exc
        except (httpcore.NetworkError, httpcore.ProtocolError) as exc:
            raise httpx.ReadError(str(exc)) from exc

    async def aclose(self) -> None:
        if hasattr(self._stream, "aclose"):
            await self._stream.aclose()


class CheckedTransport(httpx.AsyncBaseTransport):
    """An httpx transport on an httpcore pool that connects through ``CheckedBackend``."""

    def __init__(
        self,
        allow_private: bool,
        *,
        resolver: AsyncResolve = resolve_async,
        max_connections: int = 256,
        keepalive_expiry: float = 5.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context or httpx.create_ssl_context(),
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=keepalive_expiry,
            network_backend=CheckedBackend(allow_private, resolver),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        try:
            response = await self._pool.handle_async_request(core)
        except httpcore.TimeoutException as exc:
            raise httpx.TimeoutException(str(exc), request=request) from exc
        except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol) as exc:
            raise httpx.TransportError(str(exc) or type(exc).__name__, request=request) from exc
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response.stream),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()
