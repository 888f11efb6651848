"""A software WebAuthn authenticator for the in-process passkey tests: ES256 keys from
``cryptography``, CBOR from ``cbor2``, attestation "none". It answers the options our server
hands out with what a browser would post (the JSON form of a PublicKeyCredential), and can be
told to misbehave (no user verification, a counter gone back, another origin or rp id).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import struct
from dataclasses import dataclass, field
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

UP, UV, BE, BS, AT = 0x01, 0x04, 0x08, 0x10, 0x40


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _cose_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    numbers = key.public_key().public_numbers()
    return bytes(
        cbor2.dumps({1: 2, 3: -7, -1: 1, -2: numbers.x.to_bytes(32, "big"), -3: numbers.y.to_bytes(32, "big")})
    )


@dataclass
class Credential:
    """One key pair the authenticator holds, with its own counter."""

    credential_id: bytes
    rp_id: str
    user_handle: bytes
    key: ec.EllipticCurvePrivateKey
    sign_count: int = 0


@dataclass
class SoftAuthenticator:
    """A platform authenticator: discoverable credentials, user verification, ``backup`` for a
    synced passkey (BE and BS set), ``count`` whether it keeps a sign counter (else always 0)."""

    origin: str
    backup: bool = False
    count: bool = True
    credentials: list[Credential] = field(default_factory=list)

    def _flags(self, uv: bool, attested: bool = False) -> int:
        flags = UP | (UV if uv else 0) | ((BE | BS) if self.backup else 0)
        return flags | (AT if attested else 0)

    def _client_data(self, kind: str, challenge: str, origin: str | None) -> bytes:
        data = {"type": kind, "challenge": challenge, "origin": origin or self.origin, "crossOrigin": False}
        return json.dumps(data, separators=(",", ":")).encode()

    def create(
        self, options: dict[str, Any], uv: bool = True, origin: str | None = None, rp_id: str | None = None
    ) -> dict[str, Any]:
        """navigator.credentials.create(): a new credential for ``options`` (the server's JSON)."""
        rp = rp_id or options["rp"]["id"]
        cred = Credential(
            secrets.token_bytes(32), rp, unb64url(options["user"]["id"]), ec.generate_private_key(ec.SECP256R1())
        )
        self.credentials.append(cred)
        attested = b"\x00" * 16 + struct.pack(">H", len(cred.credential_id)) + cred.credential_id + _cose_key(cred.key)
        auth_data = hashlib.sha256(rp.encode()).digest() + bytes([self._flags(uv, True)]) + struct.pack(">I", 0)
        auth_data += attested
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        client_data = self._client_data("webauthn.create", options["challenge"], origin)
        return {
            "id": b64url(cred.credential_id),
            "rawId": b64url(cred.credential_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url(client_data),
                "attestationObject": b64url(attestation),
                "transports": ["internal", "hybrid"],
            },
            "authenticatorAttachment": "platform",
            "clientExtensionResults": {},
        }

    def get(
        self,
        options: dict[str, Any],
        uv: bool = True,
        origin: str | None = None,
        credential: Credential | None = None,
        counter: int | None = None,
        user_handle: bytes | None = None,
    ) -> dict[str, Any]:
        """navigator.credentials.get(): an assertion by ``credential`` (else the first one the
        options allow); ``counter`` forces the sign count it reports."""
        allowed = {unb64url(c["id"]) for c in options.get("allowCredentials") or []}
        if credential is None:
            usable = [
                c
                for c in self.credentials
                if c.rp_id == options["rpId"] and (not allowed or c.credential_id in allowed)
            ]
            assert usable, "no credential for these options"
            credential = usable[0]
        if counter is not None:
            credential.sign_count = counter
        elif self.count:
            credential.sign_count += 1
        auth_data = (
            hashlib.sha256(credential.rp_id.encode()).digest()
            + bytes([self._flags(uv)])
            + struct.pack(">I", credential.sign_count)
        )
        client_data = self._client_data("webauthn.get", options["challenge"], origin)
        signature = credential.key.sign(auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256()))
        handle = credential.user_handle if user_handle is None else user_handle
        return {
            "id": b64url(credential.credential_id),
            "rawId": b64url(credential.credential_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url(client_data),
                "authenticatorData": b64url(auth_data),
                "signature": b64url(signature),
                "userHandle": b64url(handle),
            },
            "authenticatorAttachment": "platform",
            "clientExtensionResults": {},
        }
