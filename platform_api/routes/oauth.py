"""Sign-in with an OAuth2/OIDC provider (see `platform_api/oauth.py` for the flow).

The UI's contract: the providers at GET /auth/oauth/providers; a button navigates to
/auth/oauth/<name>/login; the browser comes back to /oauth/callback#code=<code>, which the
UI POSTs to /auth/oauth/exchange for a TokenPair (answered like /auth/login, `totp_required`
included); a failure comes back as /login#oauth_error=<code>.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse
from sqlmodel import Session

from platform_api import sessions
from platform_api.deps import KeysDep, SessionDep, ensure_active
from platform_api.oauth import (
    OAuthFailure,
    ProviderAccount,
    Providers,
    log,
    pending_user,
    sign_in,
    spend_code,
)
from platform_api.ratelimit import limit_auth_ip
from platform_api.schemas import OAuthExchange, OAuthProviderPublic, TokenPair
from platform_api.second_factor import check_second_factor

router = APIRouter(prefix="/auth/oauth", tags=["auth"])

# Headers of the redirects that carry a code: not cached, not sent on as a referrer.
_PRIVATE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


def _providers(request: Request) -> Providers:
    return request.app.state.oauth


def _to_login_page(providers: Providers, failure: OAuthFailure) -> RedirectResponse:
    log.info("oauth sign-in failed: %s (%s)", failure.code, failure)
    url = providers.ui_url("/login", f"oauth_error={failure.code}")
    return RedirectResponse(url, status_code=302, headers=_PRIVATE)


@router.get("/providers", response_model=list[OAuthProviderPublic])
def list_providers(request: Request) -> list[dict[str, str]]:
    return _providers(request).listing()


@router.get("/{name}/login", status_code=302)
async def oauth_login(name: str, request: Request):
    """Send the browser to the provider's consent page (state, nonce, PKCE kept in the
    signed state cookie)."""
    providers = _providers(request)
    try:
        return await providers.authorize_redirect(request, name)
    except OAuthFailure as failure:
        return _to_login_page(providers, failure)


@router.get("/{name}/callback", status_code=302)
async def oauth_callback(name: str, request: Request):
    providers = _providers(request)
    try:
        account = await providers.account(request, name)
        code = await run_in_threadpool(_sign_in, request, name, account)
    except OAuthFailure as failure:
        return _to_login_page(providers, failure)
    url = providers.ui_url("/oauth/callback", f"code={code}")
    return RedirectResponse(url, status_code=302, headers=_PRIVATE)


def _sign_in(request: Request, name: str, account: ProviderAccount) -> str:
    with Session(request.app.state.engine, expire_on_commit=False) as session:
        return sign_in(session, name, account)


@router.post("/exchange", response_model=TokenPair, dependencies=[Depends(limit_auth_ip)])
def oauth_exchange(
    body: OAuthExchange, request: Request, session: SessionDep, keys: KeysDep
) -> TokenPair:
    """The one-time code for a login session. With 2FA on, a missing TOTP code answers
    `totp_required` and leaves the sign-in code unspent, so the UI can ask and resend. A
    spent code revokes the session it opened (`oauth_code_reused`)."""
    user = pending_user(session, body.code)
    ensure_active(user)  # banned since the callback
    check_second_factor(session, keys, user, body.totp_code)
    login_id, tokens = sessions.open_session(
        session, keys, user, request.headers.get("user-agent", "")
    )
    spend_code(session, body.code, login_id)
    session.commit()
    return tokens
