"""The shared vocabulary of who acts: organisation kinds and the authenticated principal."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class OrgKind(str, Enum):
    BUREAU = "bureau"
    SUPERVISOR = "supervisor"
    PROVIDER = "provider"
    EXPERT = "expert"
    OPERATOR = "operator"
    PARTNER = "partner"
    CUSTOMER = "customer"
    AUDITOR = "auditor"


@dataclass(frozen=True)
class Principal:
    """Who is making a request: a person (user) or a machine (API key), in one organisation."""

    kind: str  # "user" | "key" | "system" (CLI operations)
    id: int
    org_id: int
    org_kind: OrgKind
    name: str
    roles: frozenset[str] = field(default_factory=frozenset)
    scopes: frozenset[str] = field(default_factory=frozenset)
    ip: str | None = None
    region: str | None = None

    @property
    def subject(self) -> str:
        """The casbin subject; prefixed so a user named like a role never inherits it."""
        return f"{self.kind}:{self.id}"

    @property
    def domain(self) -> str:
        return f"org:{self.org_id}"

    @property
    def user_id(self) -> int | None:
        return self.id if self.kind == "user" else None
