"""Governance tables: calls, applications (cases) with their reviews, history and documents;
agreements and their electronic acceptances; operator facts; destruction certificates;
registered products; personal consent; notifications.

A *case* is any application that moves through a reviewed workflow: an operator application,
a partner application, a scenario application, a product registration, a tool deployment
request, a renewal, an exit. Its state only changes through `workflow.transition`, which
appends a `gov_transition` row and an audit event in the same transaction.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import BigInteger, JSON, Column, Date, DateTime, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from authops.core.types import json_field, timestamp_field


class Call(SQLModel, table=True):
    """A published invitation: the bureau's operator selection notice or the operator's call
    for partners in one industry (conditions, materials checklist, deadline)."""

    __tablename__ = "gov_call"

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=32, index=True)  # operator_selection | partner_recruitment
    number: str = Field(max_length=32, unique=True)
    publisher_org_id: int = Field(foreign_key="organisation.id", index=True)
    title: str = Field(max_length=300)
    industry: str = Field(default="", max_length=100)
    conditions: list[str] = json_field(list)
    materials: list[str] = json_field(list)  # the checklist: names every application must attach
    details: dict[str, Any] = json_field()
    opens_at: datetime = timestamp_field()
    deadline_at: datetime = Field(sa_column=Column(DateTime(), nullable=False))
    state: str = Field(default="open", max_length=16, index=True)  # open | closed | cancelled
    created_by: str = Field(default="system", max_length=64)
    created_at: datetime = timestamp_field()


class Case(SQLModel, table=True):
    """One application moving through its workflow (see workflow.MACHINES for the states)."""

    __tablename__ = "gov_case"

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=32, index=True)
    number: str = Field(max_length=32, unique=True)  # e.g. SC-2026-00003
    state: str = Field(max_length=32, index=True)
    applicant_org_id: int = Field(foreign_key="organisation.id", index=True)
    call_id: int | None = Field(default=None, foreign_key="gov_call.id", index=True)
    parent_case_id: int | None = Field(default=None, foreign_key="gov_case.id", index=True)
    title: str = Field(max_length=300)
    # What the applicant filed (the application form); versioned by `round` on return.
    payload: dict[str, Any] = json_field()
    # Workflow bookkeeping the domain services keep: e.g. the departments still to review.
    facts: dict[str, Any] = json_field()
    # Organisations that must act now (their to-do lists show the case) and by when.
    awaiting_orgs: list[int] = json_field(list)
    due_at: datetime | None = timestamp_field(nullable=True)
    round: int = 1  # increases each time an application is returned for revision
    created_by: str = Field(default="system", max_length=64)
    created_at: datetime = timestamp_field()
    updated_at: datetime = timestamp_field()
    decided_at: datetime | None = timestamp_field(nullable=True)


class CaseTransition(SQLModel, table=True):
    """The unalterable history of a case: every state change, who made it, why."""

    __tablename__ = "gov_transition"
    __table_args__ = (UniqueConstraint("case_id", "seq", name="uq_gov_transition_seq"),)

    id: int | None = Field(default=None, primary_key=True)
    case_id: int = Field(foreign_key="gov_case.id", index=True)
    seq: int
    action: str = Field(max_length=48)
    from_state: str = Field(max_length=32)
    to_state: str = Field(max_length=32)
    actor_kind: str = Field(max_length=16)
    actor_id: int | None = None
    actor_name: str = Field(default="", max_length=100)
    actor_org_id: int | None = None
    reason: str = Field(default="", sa_column=Column(Text, nullable=False))
    data: dict[str, Any] = json_field()
    at: datetime = timestamp_field()


class Review(SQLModel, table=True):
    """One reviewer's decision at one stage of one round: approve, reject, return, or a score."""

    __tablename__ = "gov_review"
    __table_args__ = (UniqueConstraint("case_id", "stage", "round", "reviewer_org_id", "reviewer_user_id",
                                       name="uq_gov_review_once"),)

    id: int | None = Field(default=None, primary_key=True)
    case_id: int = Field(foreign_key="gov_case.id", index=True)
    stage: str = Field(max_length=32)
    round: int = 1
    reviewer_org_id: int = Field(foreign_key="organisation.id")
    reviewer_user_id: int = 0  # 0 when the organisation decides as a whole (API key or system)
    reviewer_name: str = Field(default="", max_length=100)
    decision: str = Field(max_length=16)  # approve | reject | return | score
    score: int | None = None  # 0-100 where the stage scores
    reasons: str = Field(default="", sa_column=Column(Text, nullable=False))
    at: datetime = timestamp_field()


class CaseDocument(SQLModel, table=True):
    """A material attached to a case; the bytes are encrypted in the object store."""

    __tablename__ = "gov_document"

    id: int | None = Field(default=None, primary_key=True)
    case_id: int = Field(foreign_key="gov_case.id", index=True)
    material: str = Field(max_length=100)  # the checklist item it answers
    filename: str = Field(max_length=255)
    content_type: str = Field(default="application/octet-stream", max_length=100)
    size: int = 0
    sha256: str = Field(max_length=64)
    object_key: str = Field(max_length=300)
    uploaded_by: str = Field(default="system", max_length=64)
    uploaded_at: datetime = timestamp_field()


class Agreement(SQLModel, table=True):
    """An operator authorization, a partner agreement or a usage agreement.

    `text` is the exact wording both sides accept; `text_sha256` is what each acceptance signs.
    """

    __tablename__ = "gov_agreement"

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=32, index=True)  # operator_authorization | partner | usage
    number: str = Field(max_length=32, unique=True)
    case_id: int | None = Field(default=None, foreign_key="gov_case.id", index=True)
    party_a_org_id: int = Field(foreign_key="organisation.id", index=True)  # grantor / seller
    party_b_org_id: int = Field(foreign_key="organisation.id", index=True)  # grantee / buyer
    product_id: int | None = Field(default=None, foreign_key="gov_product.id", index=True)
    terms: dict[str, Any] = json_field()
    text: str = Field(sa_column=Column(Text, nullable=False))
    text_sha256: str = Field(max_length=64)
    starts_on: date = Field(sa_column=Column(Date(), nullable=False))
    ends_on: date = Field(sa_column=Column(Date(), nullable=False))
    # pending (awaiting acceptances) | active | expired | terminated | exited
    state: str = Field(default="pending", max_length=16, index=True)
    liability_until: date | None = Field(default=None, sa_column=Column(Date(), nullable=True))
    created_by: str = Field(default="system", max_length=64)
    created_at: datetime = timestamp_field()
    ended_at: datetime | None = timestamp_field(nullable=True)
    end_reason: str = Field(default="", max_length=500)


class Acceptance(SQLModel, table=True):
    """One side's electronic acceptance of an agreement's exact text."""

    __tablename__ = "gov_acceptance"
    __table_args__ = (UniqueConstraint("agreement_id", "org_id", name="uq_gov_acceptance"),)

    id: int | None = Field(default=None, primary_key=True)
    agreement_id: int = Field(foreign_key="gov_agreement.id", index=True)
    org_id: int = Field(foreign_key="organisation.id")
    actor_kind: str = Field(max_length=16)
    actor_id: int | None = None
    actor_name: str = Field(default="", max_length=100)
    text_sha256: str = Field(max_length=64)
    ip: str | None = Field(default=None, max_length=64)
    at: datetime = timestamp_field()


class OperatorFact(SQLModel, table=True):
    """A fact on record about an operator that the renewal vetoes and forced exit read:
    major_security_incident | assessment_unqualified | assessment_qualified | assessment_excellent |
    unapproved_transfer | fraud | serious_violation | targets_missed."""

    __tablename__ = "gov_operator_fact"

    id: int | None = Field(default=None, primary_key=True)
    operator_org_id: int = Field(foreign_key="organisation.id", index=True)
    kind: str = Field(max_length=40, index=True)
    year: int | None = None
    summary: str = Field(default="", max_length=500)
    details: dict[str, Any] = json_field()
    recorded_by: str = Field(default="system", max_length=64)
    recorded_at: datetime = timestamp_field()


class DestructionCertificate(SQLModel, table=True):
    """After exit: every object of the operation listed, its data key destroyed, signed by the
    platform's key; the bureau verifies it."""

    __tablename__ = "gov_destruction_certificate"

    id: int | None = Field(default=None, primary_key=True)
    number: str = Field(max_length=32, unique=True)
    agreement_id: int = Field(foreign_key="gov_agreement.id", index=True)
    operator_org_id: int = Field(foreign_key="organisation.id", index=True)
    body: str = Field(sa_column=Column(Text, nullable=False))  # canonical JSON that is signed
    signature: str = Field(max_length=200)  # base64 Ed25519 signature of `body`
    key_id: str = Field(default="", max_length=64)
    objects: int = 0
    due_on: date = Field(sa_column=Column(Date(), nullable=False))  # exit + 30 days
    issued_at: datetime = timestamp_field()
    verified_at: datetime | None = timestamp_field(nullable=True)
    verified_by: str = Field(default="", max_length=64)


class Product(SQLModel, table=True):
    """A data product as registered and filed: what the public catalogue lists."""

    __tablename__ = "gov_product"

    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=64, unique=True)
    registration_number: str | None = Field(default=None, max_length=40, unique=True)
    case_id: int | None = Field(default=None, foreign_key="gov_case.id", index=True)
    partner_org_id: int = Field(foreign_key="organisation.id", index=True)
    operator_org_id: int | None = Field(default=None, foreign_key="organisation.id", index=True)
    workspace_id: int | None = Field(default=None, foreign_key="workspace.id")
    scenario_case_id: int | None = Field(default=None, foreign_key="gov_case.id")
    name_zh: str = Field(max_length=200)
    name_en: str = Field(default="", max_length=200)
    category: str = Field(default="industry", max_length=32)  # industry | public_governance | public_welfare
    share_mode: str = Field(default="query", max_length=16)
    release_policy: str = Field(default="", max_length=16)
    personal_information: bool = False
    # Every call needs the subject's signed consent: set for personal information, and for products
    # the plan sells only with the subject's authorization (e.g. an enterprise's, for bank credit).
    consent_required: bool = False

    @property
    def needs_consent(self) -> bool:
        return bool(self.personal_information or self.consent_required)
    spec: dict[str, Any] = json_field()
    pricing_basis: str = Field(default="", sa_column=Column(Text, nullable=False))
    price_fen: int = Field(default=0, sa_type=BigInteger)
    price_unit: str = Field(default="call", max_length=16)  # call | record | month | batch
    scope_of_use: str = Field(default="", sa_column=Column(Text, nullable=False))
    manner_of_use: str = Field(default="", sa_column=Column(Text, nullable=False))
    self_review: dict[str, Any] = json_field()
    state: str = Field(default="draft", max_length=16, index=True)  # draft | registered | withdrawn
    registered_at: datetime | None = timestamp_field(nullable=True)
    created_at: datetime = timestamp_field()


class Consent(SQLModel, table=True):
    """A subject's authorization for one customer to use one product about them.

    The subject is a keyed pseudonym (HMAC of the ID under a platform key), never the raw ID.
    """

    __tablename__ = "gov_consent"

    id: int | None = Field(default=None, primary_key=True)
    subject_key: str = Field(max_length=64, index=True)
    subject_kind: str = Field(default="person", max_length=16)  # person | enterprise
    product_id: int = Field(foreign_key="gov_product.id", index=True)
    customer_org_id: int = Field(foreign_key="organisation.id", index=True)
    purpose: str = Field(max_length=500)
    scope: list[str] = json_field(list)
    valid_from: datetime = Field(sa_column=Column(DateTime(), nullable=False))
    valid_until: datetime = Field(sa_column=Column(DateTime(), nullable=False))
    method: str = Field(max_length=16)  # ed25519 | document
    public_key: str = Field(default="", max_length=200)  # the subject's key (base64 raw Ed25519)
    signed_text: str = Field(sa_column=Column(Text, nullable=False))  # what the subject signed
    signature: str = Field(default="", max_length=200)
    document_sha256: str = Field(default="", max_length=64)
    state: str = Field(default="active", max_length=16, index=True)  # active | revoked
    revoked_at: datetime | None = timestamp_field(nullable=True)
    revoked_by: str = Field(default="", max_length=64)
    created_by: str = Field(default="system", max_length=64)
    created_at: datetime = timestamp_field()


class Notification(SQLModel, table=True):
    """An entry in an organisation's to-do list or inbox."""

    __tablename__ = "gov_notification"

    id: int | None = Field(default=None, primary_key=True)
    org_id: int = Field(foreign_key="organisation.id", index=True)
    kind: str = Field(max_length=48)
    title: str = Field(max_length=300)
    body: str = Field(default="", sa_column=Column(Text, nullable=False))
    case_id: int | None = Field(default=None, foreign_key="gov_case.id", index=True)
    agreement_id: int | None = Field(default=None, foreign_key="gov_agreement.id")
    due_at: datetime | None = timestamp_field(nullable=True)
    created_at: datetime = timestamp_field()
    read_at: datetime | None = timestamp_field(nullable=True)


class Webhook(SQLModel, table=True):
    __tablename__ = "gov_webhook"

    id: int | None = Field(default=None, primary_key=True)
    org_id: int = Field(foreign_key="organisation.id", index=True)
    url: str = Field(max_length=500)
    secret: str = Field(max_length=200)  # HMAC key for the X-Authops-Signature header (sealed)
    active: bool = True
    created_at: datetime = timestamp_field()


class Outbox(SQLModel, table=True):
    """A message to deliver (email or webhook), written in the transaction that caused it."""

    __tablename__ = "gov_outbox"

    id: int | None = Field(default=None, primary_key=True)
    channel: str = Field(max_length=16)  # email | webhook
    target: str = Field(max_length=500)  # address or webhook id
    org_id: int | None = Field(default=None, index=True)
    subject: str = Field(default="", max_length=300)
    payload: dict[str, Any] = json_field()
    state: str = Field(default="pending", max_length=16, index=True)  # pending | sent | failed
    attempts: int = 0
    last_error: str = Field(default="", max_length=500)
    next_at: datetime = timestamp_field()
    sent_at: datetime | None = timestamp_field(nullable=True)
    created_at: datetime = timestamp_field()
