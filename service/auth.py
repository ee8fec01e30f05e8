"""API keys and roles. A key reads `isk_<prefix>_<secret>`: the prefix finds the row, and only
an HMAC-SHA256 of the secret under a per-key random salt is stored, compared in constant time.
Roles grant fixed permissions (`PERMISSIONS`); every route names the permission it needs."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from .models import ROLES, ApiKey, AuditEntry

KEY_PREFIX = "isk"

# What each role may do. Uploaders see only their own scans.
PERMISSIONS: dict[str, frozenset[str]] = {
    "uploader": frozenset({"scans:submit", "scans:read_own"}),
    "reviewer": frozenset({"scans:read_all", "scans:decide", "audit:read"}),
    "admin": frozenset({"scans:read_all", "audit:read", "keys:manage"}),
}


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller of a request."""

    key_id: str
    role: str
    name: str

    def can(self, permission: str) -> bool:
        """Whether this caller's role grants `permission`."""
        return permission in PERMISSIONS[self.role]


def _digest(salt: str, secret: str) -> str:
    return hmac.new(bytes.fromhex(salt), secret.encode(), hashlib.sha256).hexdigest()


def create_key(session: Session, role: str, name: str = "", *, actor: str = "system"
               ) -> tuple[ApiKey, str]:
    """Create an API key with `role`; returns the row and the key text, which is never stored
    and cannot be shown again. The creation is written to the audit log."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_hex(16)
    row = ApiKey(id=secrets.token_hex(8), prefix=prefix, salt=salt,
                 secret_hash=_digest(salt, secret), role=role, name=name[:200])
    session.add(row)
    session.add(AuditEntry(actor=actor, action="key.create", target=f"key:{row.id}",
                           details={"role": role, "name": row.name, "prefix": prefix}))
    return row, f"{KEY_PREFIX}_{prefix}_{secret}"


def authenticate(session: Session, key: str) -> Principal | None:
    """The principal of `key`, or None when it is malformed, unknown, revoked or wrong."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or not parts[1] or not parts[2]:
        return None
    _, prefix, secret = parts
    row = session.scalars(select(ApiKey).where(ApiKey.prefix == prefix)).first()
    if row is None:
        # Spend the same work as for a known prefix, so timing does not reveal valid prefixes.
        hmac.compare_digest(_digest("00" * 16, secret), "0" * 64)
        return None
    if not hmac.compare_digest(_digest(row.salt, secret), row.secret_hash):
        return None
    if row.revoked_at is not None:
        return None
    return Principal(key_id=row.id, role=row.role, name=row.name)
