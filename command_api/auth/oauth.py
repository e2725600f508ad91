"""Social login (Google, Kakao): the provider registry, the authorization-code exchange with
PKCE (authlib's httpx ``OAuth2Client``) and the signed, expiring ``state``.

The registry holds each provider's endpoints (defaults below) and takes the client id and
secret from the settings. Its ``transport`` is the HTTP boundary: ``None`` is the real
network; tests put an ``httpx2.MockTransport`` there to play the providers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import authlib.deprecate  # noqa: F401  (its warning filter first, so ours below wins)
import httpx2

# authlib's httpx integration runs on the ``httpx2`` package (a direct dependency: the
# transport and errors below are its classes).
from authlib.common.errors import AuthlibBaseError
from authlib.common.security import generate_token
from authlib.integrations.httpx_client import OAuth2Client
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from itsdangerous import BadData, URLSafeTimedSerializer

from command_api.auth.errors import (
    InvalidState,
    OAuthCodeRejected,
    OAuthNotConfigured,
    OAuthProviderError,
    UnknownProvider,
)
from command_api.inputs import has_control, without_controls
from infra.settings import Settings

STATE_MAX_AGE_S = 600
VERIFIER_LENGTH = 64  # PKCE allows 43..128 characters
HTTP_TIMEOUT_S = 10.0
_STATE_SALT = "vto.oauth.state"


@dataclass(frozen=True)
class ProviderIdentity:
    """Who the provider says the user is, under the text rule of every input
    (``command_api.inputs``): ``email`` is None when the provider sent something that is not
    text or holds a refused character (NUL, U+0085, ...); ``name`` is None when it is not text,
    and has each refused character replaced by a space (a provider's profile cannot be answered
    422, and its user cannot fix it here). The subject is checked by ``exchange``."""

    provider: str
    subject: str
    email: str | None
    email_verified: bool
    name: str | None

    @classmethod
    def of(
        cls, provider: str, subject: object, email: object, verified: bool, name: object
    ) -> ProviderIdentity:
        return cls(
            provider=provider,
            # Text or a number (Kakao's ids); anything else (null, true, an object) is no
            # subject: ``exchange`` refuses an empty one.
            subject=str(subject) if isinstance(subject, str | int) and not isinstance(subject, bool) else "",
            email=email if isinstance(email, str) and not has_control(email) else None,
            email_verified=verified,
            name=without_controls(name) if isinstance(name, str) else None,
        )


def _google_identity(info: Mapping[str, Any]) -> ProviderIdentity:
    # OpenID Connect userinfo: sub, email, email_verified, name.
    verified = info.get("email_verified")
    return ProviderIdentity.of(
        "google", info["sub"], info.get("email"), verified is True or verified == "true", info.get("name")
    )


def _kakao_identity(info: Mapping[str, Any]) -> ProviderIdentity:
    # https://kapi.kakao.com/v2/user/me: id, kakao_account.{email, is_email_valid,
    # is_email_verified, profile.nickname}.
    account = info.get("kakao_account") or {}
    profile = account.get("profile") or {}
    verified = account.get("is_email_valid") is True and account.get("is_email_verified") is True
    return ProviderIdentity.of("kakao", info["id"], account.get("email"), verified, profile.get("nickname"))


@dataclass(frozen=True)
class Provider:
    name: str
    authorize_url: str
    token_url: str
    userinfo_url: str
    scope: str
    identity: Callable[[Mapping[str, Any]], ProviderIdentity]


DEFAULT_PROVIDERS: dict[str, Provider] = {
    "google": Provider(
        name="google",
        authorize_url="https://accounts.google.com/o/oauth2/v2/auth",
        token_url="https://oauth2.googleapis.com/token",  # noqa: S106  (a URL, not a password)
        userinfo_url="https://openidconnect.googleapis.com/v1/userinfo",
        scope="openid email profile",
        identity=_google_identity,
    ),
    "kakao": Provider(
        name="kakao",
        authorize_url="https://kauth.kakao.com/oauth/authorize",
        token_url="https://kauth.kakao.com/oauth/token",  # noqa: S106
        userinfo_url="https://kapi.kakao.com/v2/user/me",
        scope="account_email profile_nickname",
        identity=_kakao_identity,
    ),
}


@dataclass(frozen=True)
class Authorization:
    url: str
    state: str
    code_verifier: str


@dataclass
class OAuthProviders:
    """The providers this deployment knows, with their credentials and the HTTP transport."""

    settings: Settings
    secret: str
    providers: dict[str, Provider] = field(default_factory=lambda: dict(DEFAULT_PROVIDERS))
    transport: httpx2.BaseTransport | None = None
    timeout_s: float = HTTP_TIMEOUT_S

    # --- lookup ----------------------------------------------------------------------------
    def provider(self, name: str) -> Provider:
        """The provider, or 404 ``unknown_provider``; 503 ``oauth_not_configured`` when it is
        known but this deployment has no client id for it."""
        provider = self.providers.get(name)
        if provider is None:
            raise UnknownProvider(name)
        if self._credentials(name)[0] is None:
            raise OAuthNotConfigured(name)
        return provider

    def _credentials(self, name: str) -> tuple[str | None, str | None]:
        client_id = getattr(self.settings, f"{name}_client_id", None)
        secret = getattr(self.settings, f"{name}_client_secret", None)
        return client_id or None, secret.get_secret_value() if secret is not None else None

    def _client(self, provider: Provider, **kwargs: Any) -> OAuth2Client:
        client_id, client_secret = self._credentials(provider.name)
        return OAuth2Client(
            client_id=client_id,
            client_secret=client_secret,
            token_endpoint_auth_method="client_secret_post",  # noqa: S106
            scope=provider.scope,
            code_challenge_method="S256",
            transport=self.transport,
            timeout=self.timeout_s,
            trust_env=False,
            **kwargs,
        )

    # --- start of the flow -----------------------------------------------------------------
    def authorize(self, name: str, redirect_uri: str) -> Authorization:
        """The provider URL to send the browser to, a signed state and the PKCE verifier."""
        provider = self.provider(name)
        verifier = generate_token(VERIFIER_LENGTH)
        challenge = create_s256_code_challenge(verifier)
        state = self._serializer().dumps(
            {"p": name, "r": redirect_uri, "c": challenge, "n": generate_token(11)}
        )
        with self._client(provider, redirect_uri=redirect_uri) as client:
            url, _ = client.create_authorization_url(
                provider.authorize_url, state=state, code_verifier=verifier
            )
        return Authorization(url=url, state=state, code_verifier=verifier)

    def check_state(self, state: str, name: str, redirect_uri: str, code_verifier: str) -> None:
        """Raise 400 ``invalid_state`` unless ``state`` is ours, fresh, for this provider and
        redirect_uri, and ``code_verifier`` matches the challenge it was issued with."""
        try:
            data = self._serializer().loads(state, max_age=STATE_MAX_AGE_S)
        except BadData as exc:
            raise InvalidState("the state is invalid or expired") from exc
        if not isinstance(data, dict) or data.get("p") != name or data.get("r") != redirect_uri:
            raise InvalidState("the state was issued for another provider or redirect_uri")
        if create_s256_code_challenge(code_verifier) != data.get("c"):
            raise InvalidState("the code_verifier does not match the state")

    def _serializer(self) -> URLSafeTimedSerializer:
        return URLSafeTimedSerializer(self.secret, salt=_STATE_SALT)

    # --- end of the flow -------------------------------------------------------------------
    def exchange(self, name: str, code: str, redirect_uri: str, code_verifier: str) -> ProviderIdentity:
        """Trade the authorization code (with its PKCE verifier, after ``check_state``) for a
        provider token, then read the user's info.

        400 ``oauth_code_rejected`` when the provider refuses the code (an OAuth error answer,
        e.g. ``invalid_grant``); 502 ``oauth_provider_error`` when the provider cannot be
        reached or answers with something unusable."""
        provider = self.provider(name)
        try:
            with self._client(provider, redirect_uri=redirect_uri) as client:
                token = client.fetch_token(
                    provider.token_url,
                    grant_type="authorization_code",
                    code=code,
                    redirect_uri=redirect_uri,
                    code_verifier=code_verifier,
                )
                if not token.get("access_token"):
                    raise OAuthProviderError(name, "the token answer has no access_token")
                response = client.get(provider.userinfo_url)
                response.raise_for_status()
                info = response.json()
        except AuthlibBaseError as exc:
            raise OAuthCodeRejected(f"{name} refused the authorization code: {exc.error}") from exc
        except httpx2.HTTPStatusError as exc:
            if 400 <= exc.response.status_code < 500 and exc.request.url == httpx2.URL(provider.token_url):
                raise OAuthCodeRejected(f"{name} refused the authorization code") from exc
            raise OAuthProviderError(name, f"HTTP {exc.response.status_code}") from exc
        except (httpx2.HTTPError, ValueError) as exc:
            raise OAuthProviderError(name, type(exc).__name__) from exc
        try:
            if not isinstance(info, dict):
                raise TypeError("not an object")
            identity = provider.identity(info)
        except (KeyError, TypeError, AttributeError) as exc:
            raise OAuthProviderError(name, "the user info has no subject") from exc
        if not identity.subject or len(identity.subject) > 255 or has_control(identity.subject):
            raise OAuthProviderError(name, "the user info subject is unusable")
        return identity
