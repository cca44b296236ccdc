"""Credential files that point google-auth at the fake's token endpoint.

Owns: `write_service_account_file` (a real service-account JSON with a
freshly generated RSA key, so google-auth signs a real JWT and runs its real
refresh path against `POST /token`) and `write_authorized_user_file`
(refresh-token credentials). Note: google-auth's
`Credentials.from_authorized_user_file` always replaces `token_uri` with
Google's; build `google.oauth2.credentials.Credentials(...,
token_uri=...)` from the file's fields to use the fake (see
docs/fake-gemini.md).
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def write_service_account_file(
    path: str | Path,
    token_uri: str,
    project_id: str = "fake-project",
    client_email: str | None = None,
) -> Path:
    """Write a service-account key file whose `token_uri` is the fake's `/token`."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
    email = client_email or f"fake-gemini@{project_id}.iam.gserviceaccount.com"
    info = {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": secrets.token_hex(20),
        "private_key": pem,
        "client_email": email,
        "client_id": str(secrets.randbelow(10**20)),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": f"https://www.googleapis.com/robot/v1/metadata/x509/{email}",
        "universe_domain": "googleapis.com",
    }
    target = Path(path)
    target.write_text(json.dumps(info, indent=2))
    target.chmod(0o600)
    return target


def write_authorized_user_file(
    path: str | Path,
    token_uri: str,
    client_id: str = "fake-client-id.apps.googleusercontent.com",
    client_secret: str = "fake-client-secret",
    refresh_token: str = "fake-refresh-token",
    quota_project_id: str | None = None,
) -> Path:
    """Write `authorized_user` credentials (as `gcloud auth application-default login` does)."""
    info: dict[str, str] = {
        "type": "authorized_user",
        "client_id": client_id,
        "client_secret": client_secret,
        "refresh_token": refresh_token,
        "token_uri": token_uri,
    }
    if quota_project_id:
        info["quota_project_id"] = quota_project_id
    target = Path(path)
    target.write_text(json.dumps(info, indent=2))
    target.chmod(0o600)
    return target
