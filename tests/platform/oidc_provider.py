"""A faithful local stand-in for the third-party sign-in providers that cannot run here
(Google or any OpenID Connect issuer, and GitHub's OAuth apps): real HTTP servers on
127.0.0.1 that speak the protocols the platform's Authlib client speaks, and check what
a real provider checks.

`OidcProvider`: discovery (/.well-known/openid-configuration), /authorize (consents at
once as `user`, or refuses when `deny` is set), /token (client secret by Basic or POST
auth, the code: once, for its client and redirect URI, the PKCE S256 verifier), /jwks (an
RS256 key made at start with joserfc), /userinfo (Bearer access token). Its ID tokens can
be made to misbehave one way at a time (`misbehave`): a wrong nonce, audience or issuer,
a signature by a key not in the JWKS, an expired token, no e-mail in the token (then
only /userinfo has it).

`GitHubProvider`: /login/oauth/authorize, /login/oauth/access_token (JSON when asked
with Accept: application/json, form-encoded otherwise; errors in a 200 body, as GitHub
does), /user and /user/emails (`emails`: primary, verified).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from joserfc import jwt
from joserfc.jwk import RSAKey

KEY_ID = "stand-in-1"


class _Server:
    """A ThreadingHTTPServer in a thread, routing (method, path) to `self.routes`."""

    routes: dict[tuple[str, str], Any]

    def __init__(self, client_id: str, client_secret: str) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uris: set[str] = set()  # registered; empty: set by the first use
        self.deny = False
        self.codes: dict[str, dict] = {}
        self.access_tokens: dict[str, dict] = {}
        self.requests: list[str] = []
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's names)
                owner._dispatch(self, "GET")

            def do_POST(self) -> None:  # noqa: N802
                owner._dispatch(self, "POST")

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- plumbing -----------------------------------------------------------------------
    def _dispatch(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(handler.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        length = int(handler.headers.get("Content-Length") or 0)
        form = {k: v[0] for k, v in parse_qs(handler.rfile.read(length).decode()).items()}
        self.requests.append(f"{method} {parts.path}")
        route = self.routes.get((method, parts.path))
        if route is None:
            return _send(handler, 404, {"error": "not_found"})
        route(handler, query, form)

    def _client_auth(self, handler, form: dict) -> tuple[str | None, str | None]:
        header = handler.headers.get("Authorization", "")
        if header.startswith("Basic "):
            client_id, _, secret = base64.b64decode(header[6:]).decode().partition(":")
            return client_id, secret
        return form.get("client_id"), form.get("client_secret")

    def _bearer(self, handler) -> dict | None:
        header = handler.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() not in ("bearer", "token"):
            return None
        return self.access_tokens.get(token)

    def _authorize(self, handler, query: dict, extra: dict) -> None:
        """Check the request, then consent (or refuse) and send the browser back."""
        redirect_uri = query.get("redirect_uri", "")
        if query.get("client_id") != self.client_id:
            return _send(handler, 400, {"error": "unknown client_id"})
        if self.redirect_uris and redirect_uri not in self.redirect_uris:
            return _send(handler, 400, {"error": "redirect_uri is not registered"})
        if query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
            return _send(handler, 400, {"error": "PKCE S256 is required"})
        back = {"state": query.get("state", "")}
        if self.deny:
            back["error"] = "access_denied"
        else:
            code = secrets.token_urlsafe(16)
            with self._lock:
                self.codes[code] = {
                    "redirect_uri": redirect_uri,
                    "challenge": query["code_challenge"],
                    **extra,
                }
            back["code"] = code
        _redirect(handler, f"{redirect_uri}?{urlencode(back)}")

    def _redeem(self, handler, form: dict) -> dict | str:
        """The grant behind the token request's code, or an OAuth error name."""
        client_id, secret = self._client_auth(handler, form)
        if client_id != self.client_id or secret != self.client_secret:
            return "invalid_client"
        with self._lock:
            grant = self.codes.pop(form.get("code", ""), None)  # once only
        if grant is None or form.get("redirect_uri") != grant["redirect_uri"]:
            return "invalid_grant"
        verifier = form.get("code_verifier", "")
        challenge = (
            base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            .rstrip(b"=")
            .decode()
        )
        if not verifier or challenge != grant["challenge"]:
            return "invalid_grant"
        token = secrets.token_urlsafe(24)
        self.access_tokens[token] = grant
        return {**grant, "access_token": token}


class OidcProvider(_Server):
    def __init__(self, client_id: str = "orchard-test", client_secret: str = "s3cret") -> None:
        self.key = RSAKey.generate_key(2048, parameters={"kid": KEY_ID}, private=True)
        self.misbehave: str | None = None
        self.user = {
            "sub": "oidc-user-1",
            "email": "ada@example.org",
            "email_verified": True,
            "name": "Ada",
        }
        self.routes = {
            ("GET", "/.well-known/openid-configuration"): self._discovery,
            ("GET", "/authorize"): self._authorize_endpoint,
            ("POST", "/token"): self._token,
            ("GET", "/jwks"): self._jwks,
            ("GET", "/userinfo"): self._userinfo,
        }
        super().__init__(client_id, client_secret)

    def _discovery(self, handler, query, form) -> None:
        _send(
            handler,
            200,
            {
                "issuer": self.url,
                "authorization_endpoint": f"{self.url}/authorize",
                "token_endpoint": f"{self.url}/token",
                "jwks_uri": f"{self.url}/jwks",
                "userinfo_endpoint": f"{self.url}/userinfo",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": [
                    "client_secret_basic",
                    "client_secret_post",
                ],
                "scopes_supported": ["openid", "email", "profile"],
            },
        )

    def _authorize_endpoint(self, handler, query, form) -> None:
        if query.get("response_type") != "code" or "openid" not in query.get("scope", "").split():
            return _send(handler, 400, {"error": "response_type code and scope openid needed"})
        self._authorize(handler, query, {"nonce": query.get("nonce"), "user": dict(self.user)})

    def _token(self, handler, form_query, form) -> None:
        if form.get("grant_type") != "authorization_code":
            return _send(handler, 400, {"error": "unsupported_grant_type"})
        grant = self._redeem(handler, form)
        if isinstance(grant, str):
            return _send(handler, 401 if grant == "invalid_client" else 400, {"error": grant})
        _send(
            handler,
            200,
            {
                "access_token": grant["access_token"],
                "token_type": "Bearer",
                "expires_in": 3600,
                "id_token": self._id_token(grant),
            },
        )

    def _id_token(self, grant: dict) -> str:
        now = int(time.time())
        user = grant["user"]
        claims = {
            "iss": self.url,
            "sub": user["sub"],
            "aud": self.client_id,
            "iat": now,
            "exp": now + 300,
            "nonce": grant["nonce"],
            "email": user["email"],
            "email_verified": user["email_verified"],
            "name": user["name"],
        }
        key = self.key
        if self.misbehave == "nonce":
            claims["nonce"] = "not-the-one-sent"
        elif self.misbehave == "audience":  # azp names the client: only `aud` is wrong
            claims["aud"], claims["azp"] = "another-client", self.client_id
        elif self.misbehave == "issuer":
            claims["iss"] = "https://impostor.example"
        elif self.misbehave == "expired":
            claims["iat"], claims["exp"] = now - 7200, now - 3600
        elif self.misbehave == "signature":  # same kid, a key the JWKS does not hold
            key = RSAKey.generate_key(2048, parameters={"kid": KEY_ID}, private=True)
        elif self.misbehave == "no_email_in_id_token":
            del claims["email"], claims["email_verified"]
        return jwt.encode({"alg": "RS256", "kid": KEY_ID}, claims, key)

    def _jwks(self, handler, query, form) -> None:
        public = self.key.as_dict(private=False)
        _send(handler, 200, {"keys": [{**public, "use": "sig", "alg": "RS256"}]})

    def _userinfo(self, handler, query, form) -> None:
        grant = self._bearer(handler)
        if grant is None:
            return _send(handler, 401, {"error": "invalid_token"})
        _send(handler, 200, grant["user"])


class GitHubProvider(_Server):
    def __init__(self, client_id: str = "gh-test", client_secret: str = "gh-s3cret") -> None:
        self.user = {"id": 4242, "login": "grace", "name": "Grace"}
        self.emails = [
            {"email": "grace@example.org", "primary": True, "verified": True},
            {"email": "old@example.org", "primary": False, "verified": False},
        ]
        self.routes = {
            ("GET", "/login/oauth/authorize"): self._authorize_endpoint,
            ("POST", "/login/oauth/access_token"): self._token,
            ("GET", "/user"): self._user,
            ("GET", "/user/emails"): self._emails,
        }
        super().__init__(client_id, client_secret)

    def _authorize_endpoint(self, handler, query, form) -> None:
        snapshot = {"user": dict(self.user), "emails": [dict(e) for e in self.emails]}
        self._authorize(handler, query, snapshot)

    def _token(self, handler, query, form) -> None:
        grant = self._redeem(handler, form)
        if isinstance(grant, str):
            body = {"error": "bad_verification_code" if grant == "invalid_grant" else grant}
        else:
            body = {"access_token": grant["access_token"], "token_type": "bearer", "scope": ""}
        if "application/json" in handler.headers.get("Accept", ""):
            return _send(handler, 200, body)
        _send(handler, 200, urlencode(body), "application/x-www-form-urlencoded")

    def _user(self, handler, query, form) -> None:
        grant = self._bearer(handler)
        if grant is None:
            return _send(handler, 401, {"message": "Bad credentials"})
        _send(handler, 200, {**grant["user"], "email": None})

    def _emails(self, handler, query, form) -> None:
        grant = self._bearer(handler)
        if grant is None:
            return _send(handler, 401, {"message": "Bad credentials"})
        _send(handler, 200, grant["emails"])


def _send(handler, status: int, body: Any, content_type: str = "application/json") -> None:
    data = (json.dumps(body) if content_type == "application/json" else body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def _redirect(handler, location: str) -> None:
    handler.send_response(302)
    handler.send_header("Location", location)
    handler.send_header("Content-Length", "0")
    handler.end_headers()
