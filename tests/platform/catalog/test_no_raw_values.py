"""Load linked synthetic data into all 53 resources, then read every catalogue response as
every kind of reader and look for any identifier, person name or phone number that was loaded.
"""

from __future__ import annotations

import re

import pyarrow.compute as pc
import pytest

from authops.core.data.schema import Kind
from authops.core.identity import OrgKind
from authops.platform import synth
from authops.platform.catalog import csvload, flows, service
from authops.platform.identity.models import Organisation
from tests.support.builders import login, make_org, make_user
from tests.support.catalog import ACTOR

WATCHED = {Kind.IDENTIFIER_PERSON, Kind.NAME_PERSON, Kind.PHONE, Kind.BANK_ACCOUNT}
TOKEN = re.compile(r"[\u4e00-\u9fff]+|[0-9A-Za-z]+")


def found_in(secrets: set[str], text: str) -> set[str]:
    """The secrets occurring in `text` (every substring of each word/CJK run, not 10k scans of megabytes)."""
    simple = {s for s in secrets if TOKEN.fullmatch(s)}
    lengths = {len(s) for s in simple}
    seen: set[str] = set()
    for tok in set(TOKEN.findall(text)):
        for n in lengths:
            seen.update(tok[i:i + n] for i in range(len(tok) - n + 1))
    return (simple & seen) | {s for s in secrets - simple if s in text}


@pytest.mark.slow
def test_no_catalogue_response_carries_a_loaded_value(client, session, db_settings):
    service.load_catalog(session, csvload.BUILTIN, actor=ACTOR)
    session.commit()
    defs = csvload.load_definitions(csvload.BUILTIN)
    tables = dict(synth.generate(defs, scale=0.002, seed=11))
    flows.bulk_load(db_settings, tables.items())
    flows.store_mocks(db_settings, ((d.code, synth.mock(d, seed=3)) for d in defs))
    secrets: set[str] = set()
    for d in defs:
        for f in d.schema.fields:
            if f.kind in WATCHED or f.check is not None and f.check.value == "gb11643":
                col = tables[d.code].column(f.name)
                secrets.update(v for v in pc.unique(col).to_pylist() if v and len(v) >= 2)
    assert len(secrets) > 1000
    assert found_in(secrets, "x" + next(iter(secrets)) + "y")  # the scanner does find a planted value

    dept = service.get_resource(session, "household_population").org_id
    readers = {"provider": make_user(session, session.get(Organisation, dept)),
               "partner": make_user(session, make_org(session, OrgKind.PARTNER), "partner_engineer")}
    session.commit()
    bodies, mocks = [], []
    for who, user in readers.items():
        headers = login(client, user.username)
        bodies.append(client.get("/api/v1/catalog/resources", headers=headers).text)
        for d in defs:
            for path in ("", "/versions", "/sample?rows=20", "/mock?rows=50"):
                r = client.get(f"/api/v1/catalog/resources/{d.code}{path}", headers=headers)
                assert r.status_code == 200, (who, d.code, path, r.status_code)
                (mocks if path.startswith("/mock") else bodies).append(r.text)
    text = "\n".join(bodies)
    leaked = sorted(found_in(secrets, text))
    assert not leaked, f"{len(leaked)} loaded values appear in responses, e.g. {leaked[:3]!r}"
    assert text.count('"masked":true') == len(readers) * len(defs)  # every sample is masked
    # Mock datasets are shown in full: they are generated apart from the real data, so no
    # identifier or phone number is shared (two-character names may coincide by chance).
    mock_text = "\n".join(mocks)
    assert '"rows":[]' not in mock_text
    shared = sorted(found_in({s for s in secrets if len(s) >= 7}, mock_text))
    assert not shared, f"mock data repeats loaded identifiers, e.g. {shared[:3]!r}"
