"""casbin's policy table (read by sqlalchemy-adapter) and a version counter for reloads."""

from __future__ import annotations

from sqlmodel import Field, SQLModel


class CasbinRule(SQLModel, table=True):
    __tablename__ = "casbin_rule"

    id: int | None = Field(default=None, primary_key=True)
    ptype: str = Field(max_length=8, index=True)
    v0: str | None = Field(default=None, max_length=128, index=True)
    v1: str | None = Field(default=None, max_length=128)
    v2: str | None = Field(default=None, max_length=128)
    v3: str | None = Field(default=None, max_length=128)
    v4: str | None = Field(default=None, max_length=128)
    v5: str | None = Field(default=None, max_length=128)

    def __str__(self) -> str:
        # sqlalchemy-adapter parses this line back into a rule.
        values = [self.ptype] + [v for v in (self.v0, self.v1, self.v2, self.v3, self.v4, self.v5) if v]
        return ", ".join(values)


class PolicyVersion(SQLModel, table=True):
    """Bumped in the same transaction as every policy change; processes reload when it moves."""

    __tablename__ = "policy_version"

    id: int = Field(default=1, primary_key=True)
    version: int = 0
