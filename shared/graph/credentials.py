"""The bot's identity towards Microsoft Graph, chosen by ``GRAPH_CREDENTIAL_MODE``.

- ``managedIdentity`` (default): the Function App's managed identity (``AZURE_CLIENT_ID`` names a
  user-assigned one) holds the Graph app role itself.
- ``federated``: the bot is an Entra app registration (``GRAPH_APP_CLIENT_ID`` in
  ``GRAPH_TENANT_ID``) with a federated credential that trusts the managed identity; the
  managed identity's token for ``api://AzureADTokenExchange`` is the client assertion. No secret
  or certificate exists anywhere.
- ``localAppRegistration``: a developer's machine only (refused in Azure): the same app
  registration with its own client secret or certificate from ``local.settings.json``. Graph's
  calls API takes application tokens of the bot's app only, so a developer's own login
  (``az login``) cannot work.

Every credential caches its tokens; the caller keeps one instance per event loop and asks it for
a token on every request (cheap when cached).
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from azure.core.credentials import AccessToken
    from azure.core.credentials_async import AsyncTokenCredential

    from shared.settings import Settings

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
TOKEN_EXCHANGE_SCOPE = "api://AzureADTokenExchange/.default"  # noqa: S105 - a scope, not a secret


class FederatedCredential:
    """``ClientAssertionCredential`` fed by the managed identity, without blocking the loop.

    ``ClientAssertionCredential``'s ``func`` is synchronous and is called on the event loop
    whenever the credential needs a new Graph token. Fetching the managed-identity token inside
    it would block the loop on HTTP (or need a sync credential and its own session). Instead,
    each ``get_token`` first awaits the async managed-identity credential (a cache hit almost
    always) and keeps the assertion; ``func`` only returns that kept value.
    """

    def __init__(
        self,
        *,
        tenant_id: str,
        client_id: str,
        managed_identity: AsyncTokenCredential,
        **client_assertion_options: Any,
    ) -> None:
        from azure.identity.aio import ClientAssertionCredential

        self._managed_identity = managed_identity
        self._assertion: str | None = None
        self._inner = ClientAssertionCredential(
            tenant_id, client_id, self._current_assertion, **client_assertion_options
        )

    def _current_assertion(self) -> str:
        if self._assertion is None:
            # get_token always refreshes the assertion before the inner credential can call us.
            raise RuntimeError("no managed-identity assertion fetched yet")
        return self._assertion

    async def refresh_assertion(self) -> None:
        """Keep the managed identity's current exchange token (cached by that credential)."""
        assertion = await self._managed_identity.get_token(TOKEN_EXCHANGE_SCOPE)
        self._assertion = assertion.token

    async def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        await self.refresh_assertion()
        return await self._inner.get_token(
            *scopes, claims=claims, tenant_id=tenant_id, enable_cae=enable_cae, **kwargs
        )

    async def close(self) -> None:
        await self._inner.close()
        await self._managed_identity.close()

    async def __aenter__(self) -> FederatedCredential:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self.close()


def graph_credential(settings: Settings) -> AsyncTokenCredential:
    """A new async credential for Graph, as the settings ask; the caller owns and closes it."""
    mode = settings.graph_credential_mode
    if mode == "managedIdentity":
        from azure.identity.aio import ManagedIdentityCredential

        return ManagedIdentityCredential(client_id=settings.managed_identity_client_id)
    if mode == "federated":
        from azure.identity.aio import ManagedIdentityCredential

        # Settings guarantee both ids in federated mode; the asserts narrow the types.
        assert settings.graph_tenant_id
        assert settings.graph_app_client_id
        # Only the local simulator's token endpoint needs a CA of its own.
        options = {"connection_verify": ca} if (ca := settings.graph_authority_ca_file) else {}
        return FederatedCredential(
            tenant_id=settings.graph_tenant_id,
            client_id=settings.graph_app_client_id,
            managed_identity=ManagedIdentityCredential(
                client_id=settings.managed_identity_client_id
            ),
            **options,
        )
    assert settings.graph_tenant_id
    assert settings.graph_app_client_id
    if settings.graph_client_certificate_path:
        from azure.identity.aio import CertificateCredential

        password = settings.graph_client_certificate_password
        return CertificateCredential(
            settings.graph_tenant_id,
            settings.graph_app_client_id,
            settings.graph_client_certificate_path,
            password=password.get_secret_value() if password else None,
        )
    from azure.identity.aio import ClientSecretCredential

    assert settings.graph_client_secret
    return ClientSecretCredential(
        settings.graph_tenant_id,
        settings.graph_app_client_id,
        settings.graph_client_secret.get_secret_value(),
    )
