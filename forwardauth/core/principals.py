"""Who ``/auth`` says a request comes from: a user, or a client acting for itself.

A ``client_credentials`` token speaks for no user, so it never gets ``X-Auth-User`` (a client
``bob`` must not pass for the user ``bob``) nor ``X-Auth-Roles`` (a backend authorising by user
roles must not admit a client): it gets ``X-Auth-Client`` and ``X-Auth-Client-Roles`` instead, and
the access rules match it only by ``clients`` / ``client_roles``. How a user signed in
(``X-Auth-AMR``, and the step-up rules' view of it) is a user's alone: no user signed in for a client.
A personal access token speaks for its user, with ``X-Auth-AMR: pat`` and its scopes
(``X-Auth-Scopes``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from forwardauth.configparse import HeaderNames
from forwardauth.core.authn import Authentication
from forwardauth.core.policy import CLIENT, PAT, SESSION, Subject
from forwardauth.core.tokens import AccessClaims, Identity


def subject_of(
    identity: Identity, auth: Authentication | None = None, token_type: str = SESSION, scopes: tuple[str, ...] = ()
) -> Subject:
    """The access rules' view of a token's identity (and, for a user, of how they signed in), its
    kind (a client's own token is a client's whatever it is called) and its scopes."""
    if identity.client is not None:
        return Subject(user="", client=identity.client, client_roles=identity.roles, token_type=CLIENT, scopes=scopes)
    return Subject(identity.username, identity.roles, auth=auth, token_type=token_type, scopes=scopes)


def subject_of_claims(claims: AccessClaims) -> Subject:
    """A JWT's subject: a client's token when issued to one (``client_id``), else a session's."""
    scopes = tuple(claims.scope.split()) if claims.scope else ()
    return subject_of(claims.identity, claims.auth, SESSION if claims.client_id is None else CLIENT, scopes)


DEFAULT_NAMES = HeaderNames()
# Claims that describe a user: never read off a client's own token (which carries none of them).
_USER_CLAIMS = frozenset({"preferred_username", "email", "name", "amr", "acr", "auth_time"})


def identity_headers(
    identity: Identity,
    auth: Authentication | None = None,
    names: HeaderNames = DEFAULT_NAMES,
    payload: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """The headers ``/auth`` answers 200 with, for the proxy to hand to the application, under the
    configured ``names``; ``payload`` (the token's claims) feeds ``names.claims``."""
    if identity.client is not None:
        headers = {
            names.client: identity.client,
            names.client_roles: ",".join(identity.roles),
            names.subject: identity.subject,
        }
    else:
        headers = {
            names.user: identity.username,
            names.roles: ",".join(identity.roles),
            names.subject: identity.subject,
        }
        if names.name:  # users have no display name of their own: their username is the name
            headers[names.name] = identity.username
        if identity.email:
            headers[names.email] = identity.email
        if auth is not None:
            headers[names.amr] = ",".join(auth.amr)
    if names.claims and payload:
        headers.update(claim_headers(names.claims, payload, identity.client is not None))
    return headers


def pat_headers(identity: Identity, scopes: tuple[str, ...], names: HeaderNames = DEFAULT_NAMES) -> dict[str, str]:
    """A personal access token's answer: its user's headers, ``amr`` ``pat`` (no one signed in
    for this request: a token did) and its scopes, space-separated (as OAuth writes them)."""
    headers = identity_headers(identity, None, names)
    headers[names.amr] = PAT
    headers[names.scopes] = " ".join(scopes)
    return headers


def claim_headers(claims: tuple[tuple[str, str], ...], payload: Mapping[str, Any], client: bool) -> dict[str, str]:
    """The mapped claims the token carries as a string or a list of strings (joined with commas);
    any other shape, or a value a header cannot carry (control characters), is left out."""
    headers = {}
    for claim, header in claims:
        if client and claim in _USER_CLAIMS:
            continue
        value = payload.get(claim)
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            value = ",".join(value)
        if isinstance(value, str) and value.isprintable():
            headers[header] = value
    return headers
