"""The directory in the store: what `dp2bridge tenant add` may and may not create."""

from __future__ import annotations

import pytest

from bridge.core.identities import classify
from bridge.errors import AlreadyExists
from tests.store.conftest import DIRECTORY, JOBCENTER, Demo, event


def test_a_cvr_number_belongs_to_one_tenant(demo: Demo) -> None:
    # A second tenant with Demo Kommune's CVR would share its party: its staff would send
    # as cvr:29190000, and a letter to that CVR could reach either tenant.
    store, clock = demo.store, demo.clock
    with pytest.raises(AlreadyExists, match="CVR 29190000 already belongs to tenant 'kommune'"):
        store.add_tenant("kopi", "Kopi A/S", "company", "29190000", ["kopi.dp2.test"], {},
                         event(clock, "kopi", "tenant.added"))
    assert "kopi" not in [t["name"] for t in store.tenants()]
    assert store.audit_events("kopi") == []
    assert "kopi.dp2.test" not in store.domain_kinds()
    target = store.resolve(classify(f"29190000@cvr.{DIRECTORY}", DIRECTORY, store.domain_kinds()))
    assert target is not None and target.address == JOBCENTER


def test_a_new_cvr_number_makes_a_tenant(demo: Demo) -> None:
    store, clock = demo.store, demo.clock
    store.add_tenant("kopi", "Kopi A/S", "company", "12345678", ["kopi.dp2.test"], {},
                     event(clock, "kopi", "tenant.added"))
    assert store.tenant("kopi")["cvr"] == "12345678"
