"""casbin RBAC with domains: deny by default, domains isolate, changes reach every process."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from authops.core.db import get_engine
from authops.core.identity import OrgKind, Principal
from authops.policies import enforcer as authz
from authops.policies import permissions
from tests.support.builders import make_org, make_user


def _principal(user, org, kind="user", scopes=()) -> Principal:
    return Principal(kind=kind, id=user.id, org_id=org.id, org_kind=OrgKind(org.kind), name=user.username,
                     scopes=frozenset(scopes))


def _ready(session):
    authz.sync_role_policies(session)
    session.commit()
    return authz.Authorizer(get_engine())


def test_matrix_is_consistent_and_rendered():
    permissions.validate()
    table = permissions.render_markdown()
    assert table.count("\n") == len(permissions.ACTIONS) + 1
    for kind in OrgKind:
        assert permissions.roles_for_kind(kind), f"no role for {kind}"


def test_sync_is_idempotent(session):
    authz.sync_role_policies(session)
    assert authz.sync_role_policies(session) == 0


def test_deny_by_default_and_unknown_actions(session, db_settings):
    a = _ready(session)
    org = make_org(session, OrgKind.CUSTOMER)
    user = make_user(session, org, "customer_integrator")
    authz.revoke_all_roles(session, user_id=user.id)
    session.commit()
    a.refresh()
    p = _principal(user, org)
    assert not any(a.allowed(p, action) for action in permissions.ACTIONS)
    assert not a.allowed(p, "no.such.action")


def test_a_role_applies_only_in_its_own_organisation(session, db_settings):
    a = _ready(session)
    bank, other = make_org(session, OrgKind.CUSTOMER), make_org(session, OrgKind.CUSTOMER)
    user = make_user(session, bank, "customer_admin")
    session.commit()
    a.refresh()
    assert a.allowed(_principal(user, bank), "apikey.manage")
    # The same user id presented in another organisation's domain holds nothing there.
    assert not a.allowed(_principal(user, other), "apikey.manage")


def test_a_user_named_like_a_role_does_not_inherit_it(session, db_settings):
    a = _ready(session)
    org = make_org(session, OrgKind.CUSTOMER)
    user = make_user(session, org, "customer_integrator", username="bureau_admin")
    session.commit()
    a.refresh()
    assert not a.allowed(_principal(user, org), "org.manage")
    assert authz.roles_of(session, user_id=user.id, org_id=org.id) == ["customer_integrator"]


def test_a_policy_change_in_one_process_is_seen_by_another(session, db_settings):
    first, second = _ready(session), authz.Authorizer(get_engine())
    org = make_org(session, OrgKind.PARTNER)
    user = make_user(session, org, "partner_engineer")
    session.commit()
    p = _principal(user, org)
    for a in (first, second):
        a.refresh()
        assert not a.allowed(p, "scenario.submit")
    authz.assign_role(session, user_id=user.id, org_id=org.id, org_kind=OrgKind.PARTNER, role="partner_admin")
    session.commit()
    assert second.refresh() is True  # what every request does before deciding
    assert second.allowed(p, "scenario.submit")


def test_api_keys_are_bounded_by_scopes_and_org_kind(session, db_settings):
    a = _ready(session)
    org = make_org(session, OrgKind.CUSTOMER)
    user = make_user(session, org)
    key = _principal(user, org, kind="key", scopes=("product.call", "org.manage"))
    assert a.allowed(key, "product.call")
    assert not a.allowed(key, "billing.read")  # not in scopes
    assert not a.allowed(key, "org.manage")  # in scopes but beyond any customer role


def test_role_of_another_org_kind_is_refused(session):
    org = make_org(session, OrgKind.CUSTOMER)
    import pytest

    from authops.core.errors import InvalidInput

    with pytest.raises(InvalidInput, match="customer_admin"):
        make_user(session, org, "bureau_admin")


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_decisions_equal_the_matrix(session, db_settings, data):
    """Whatever roles a user holds, casbin allows exactly the union of their matrix rows."""
    a = _ready(session)
    kind = data.draw(st.sampled_from(list(OrgKind)))
    org = make_org(session, kind)
    names = [r.name for r in permissions.roles_for_kind(kind)]
    roles = data.draw(st.lists(st.sampled_from(names), min_size=1, max_size=len(names), unique=True))
    user = make_user(session, org, *roles)
    session.commit()
    a.refresh()
    p = _principal(user, org)
    expected = {act for r in roles for act in permissions.ROLES[r].actions}
    assert {act for act in permissions.ACTIONS if a.allowed(p, act)} == expected


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fast_path_agrees_with_casbins_matcher(session, db_settings, data):
    """The indexed decision equals casbin's rule-by-rule matcher, with domain-specific rules too."""
    from authops.policies.models import CasbinRule

    actions = list(permissions.ACTIONS)
    rules = data.draw(st.lists(st.tuples(st.sampled_from(["role:a", "role:b", "role:customer_admin"]),
                                         st.sampled_from(["*", "org:1", "org:2"]),
                                         st.sampled_from(actions[:6])), max_size=15))
    grants = data.draw(st.lists(st.tuples(st.sampled_from(["user:1", "user:2", "role:a"]),
                                          st.sampled_from(["role:a", "role:b", "role:customer_admin"]),
                                          st.sampled_from(["org:1", "org:2"])), max_size=6))
    for sub, dom, act in rules:
        session.add(CasbinRule(ptype="p", v0=sub, v1=dom, v2=act))
    for sub, role, dom in grants:
        session.add(CasbinRule(ptype="g", v0=sub, v1=role, v2=dom))
    authz.bump_version(session)
    session.commit()
    try:
        a = authz.Authorizer(get_engine())
        for sub in ("user:1", "user:2", "role:a"):
            for dom in ("org:1", "org:2"):
                for act in actions[:6]:
                    assert a.enforce(sub, dom, act) == a.enforce_exact(sub, dom, act), (sub, dom, act)
    finally:
        session.rollback()
        session.execute(CasbinRule.__table__.delete())
        session.commit()
