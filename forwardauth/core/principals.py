"""Who ``/auth`` says a request comes from: a user, or a client acting for itself.

A ``client_credentials`` token speaks for no user, so it never gets ``X-Auth-User`` (a client
``bob`` must not pass for the user ``bob``) nor ``X-Auth-Roles`` (a backend authorising by user
roles must not admit a client): it gets ``X-Auth-Client`` and ``X-Auth-Client-Roles`` instead, and
the access rules match it only by ``clients`` / ``client_roles``. How a user signed in
(``X-Auth-AMR``, and the step-up rules' view of it) is a user's alone: no user signed in for a client.
"""

from __future__ import annotations

from forwardauth.constants import (
    HEADER_AMR,
    HEADER_CLIENT,
    HEADER_CLIENT_ROLES,
    HEADER_EMAIL,
    HEADER_ROLES,
    HEADER_SUBJECT,
    HEADER_USER,
)
from forwardauth.core.authn import Authentication
from forwardauth.core.policy import Subject
from forwardauth.core.tokens import Identity


def subject_of(identity: Identity, auth: Authentication | None = None) -> Subject:
    """The access rules' view of a token's identity (and, for a user, of how they signed in)."""
    if identity.client is not None:
        return Subject(user="", client=identity.client, client_roles=identity.roles)
    return Subject(identity.username, identity.roles, auth=auth)


def identity_headers(identity: Identity, auth: Authentication | None = None) -> dict[str, str]:
    """The headers ``/auth`` answers 200 with, for the proxy to hand to the application."""
    if identity.client is not None:
        return {
            HEADER_CLIENT: identity.client,
            HEADER_CLIENT_ROLES: ",".join(identity.roles),
            HEADER_SUBJECT: identity.subject,
        }
    headers = {HEADER_USER: identity.username, HEADER_ROLES: ",".join(identity.roles), HEADER_SUBJECT: identity.subject}
    if identity.email:
        headers[HEADER_EMAIL] = identity.email
    if auth is not None:
        headers[HEADER_AMR] = ",".join(auth.amr)
    return headers
