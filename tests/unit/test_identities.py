"""Addressing policy (DESIGN.md section 3) as pure functions: classify, precheck, check_target."""

from __future__ import annotations

import pytest

from bridge.core.identities import (NOT_A_CONTACT_POINT, Address, AddressKind, Principal, Target,
                                    check_sender,
                                    check_target, classify, precheck_recipient)
from bridge.errors import (BridgeError, ForeignDomain, RecipientNotAllowed, SenderNotAllowed,
                           UnknownRecipient)

DIRECTORY = "dp2.test"
DOMAINS = {"kommune.dp2.test": "authority", "advokat.dp2.test": "company",
           "forsikring.dp2.test": "company", "borger.dp2.test": "citizens"}


def principal(kind: str, login: str, *, may_address_cpr: bool | None = None,
              contact_points: frozenset[str] = frozenset()) -> Principal:
    party_kind = "cpr" if kind == "citizens" else "cvr"
    return Principal(
        account_id=hash(login) % 1000, login=login, display_name=login.split("@")[0],
        role="citizen" if kind == "citizens" else "staff", tenant_id={"authority": 1, "company": 2,
                                                                      "citizens": 3}[kind],
        tenant_name=login.split("@")[1].split(".")[0], tenant_kind=kind, party_id=10,
        party_kind=party_kind, party_identifier="0101701234" if kind == "citizens" else "29190000",
        may_address_cpr=kind == "authority" if may_address_cpr is None else may_address_cpr,
        contact_points=contact_points)


ANNA = principal("citizens", "anna@borger.dp2.test")
CASEWORKER = principal("authority", "sagsbehandler@kommune.dp2.test",
                       contact_points=frozenset({"jobcenter@kommune.dp2.test"}))
LAWYER = principal("company", "advokat@advokat.dp2.test")

JOBCENTER_T = Target("contact_point", 1, "jobcenter@kommune.dp2.test", 1, "authority", 20, False)
CASEWORKER_T = Target("account", 2, "sagsbehandler@kommune.dp2.test", 1, "authority", 20, False)
LAWYER_T = Target("account", 3, "advokat@advokat.dp2.test", 2, "company", 30, False)
INSURER_T = Target("account", 4, "skade@forsikring.dp2.test", 4, "company", 40, False)
FIRM_CP_T = Target("contact_point", 5, "post@forsikring.dp2.test", 4, "company", 40, False)
ANNA_T = Target("account", 6, "anna@borger.dp2.test", 3, "citizens", 50, True)
BO_T = Target("account", 7, "bo@borger.dp2.test", 3, "citizens", 51, True)


def addr(text: str) -> Address:
    return classify(text, DIRECTORY, DOMAINS)


def allowed(p: Principal, text: str, target: Target | None, corresponded: bool = False) -> Target:
    a = addr(text)
    precheck_recipient(p, a)
    return check_target(p, target, a, corresponded)


# --- classify ---------------------------------------------------------------------

@pytest.mark.parametrize("text, kind, domain_kind", [
    ("0101701234@cpr.dp2.test", AddressKind.CPR, None),
    ("29190000@CVR.dp2.test", AddressKind.CVR, None),
    ("Jobcenter@Kommune.DP2.test", AddressKind.LOCAL, "authority"),
    ("anna@borger.dp2.test.", AddressKind.LOCAL, "citizens"),
    ("someone@example.org", AddressKind.FOREIGN, None),
    ("x@cpr.dp2.test.example.org", AddressKind.FOREIGN, None),
])
def test_classify(text: str, kind: AddressKind, domain_kind: str | None) -> None:
    a = addr(text)
    assert a.kind is kind
    assert a.domain_tenant_kind == domain_kind
    assert a.text == a.text.lower() and a.text.endswith(a.domain)


def test_classify_normalises_local_addresses() -> None:
    a = addr(" Jobcenter@Kommune.DP2.test ")
    assert (a.text, a.local, a.domain) == ("jobcenter@kommune.dp2.test", "jobcenter", "kommune.dp2.test")


@pytest.mark.parametrize("text", ["", "no-at-sign", "@kommune.dp2.test", "jobcenter@"])
def test_classify_refuses_non_addresses(text: str) -> None:
    with pytest.raises(UnknownRecipient) as exc:
        addr(text)
    assert exc.value.public == "that is not a mail address"


# --- sender ----------------------------------------------------------------------

def test_sender_is_own_login_or_a_granted_contact_point() -> None:
    assert check_sender(CASEWORKER, "Sagsbehandler@Kommune.dp2.test") == CASEWORKER.login
    assert check_sender(CASEWORKER, "jobcenter@kommune.dp2.test") == "jobcenter@kommune.dp2.test"
    for other in ("anna@borger.dp2.test", "ydelse@kommune.dp2.test", "0101701234@cpr.dp2.test"):
        with pytest.raises(SenderNotAllowed):
            check_sender(CASEWORKER, other)
    with pytest.raises(SenderNotAllowed):
        check_sender(ANNA, "jobcenter@kommune.dp2.test")


# --- citizens ----------------------------------------------------------------------

def test_citizen_may_write_to_contact_points() -> None:
    assert allowed(ANNA, "jobcenter@kommune.dp2.test", JOBCENTER_T) == JOBCENTER_T
    assert allowed(ANNA, "post@forsikring.dp2.test", FIRM_CP_T) == FIRM_CP_T


def test_citizen_may_not_address_anyone_by_cpr() -> None:
    with pytest.raises(RecipientNotAllowed) as exc:
        precheck_recipient(ANNA, addr("0202802345@cpr.dp2.test"))
    assert exc.value.public == "you may not address citizens by CPR number"
    assert exc.value.enhanced == "5.7.1"


def test_citizen_probing_a_cpr_gets_the_same_refusal_whether_it_exists_or_not() -> None:
    # precheck runs before the store is asked, so existence cannot change the answer.
    refusals = []
    for cpr in ("0101701234", "0202802345", "9999999999", "12"):
        with pytest.raises(BridgeError) as exc:
            precheck_recipient(ANNA, addr(f"{cpr}@cpr.dp2.test"))
        refusals.append((type(exc.value), exc.value.public, exc.value.enhanced, str(exc.value)))
    assert len(set(refusals)) == 1
    assert refusals[0][0] is RecipientNotAllowed


def test_citizen_may_not_write_to_another_citizen_by_login() -> None:
    for login in ("bo@borger.dp2.test", "nobody@borger.dp2.test"):
        with pytest.raises(RecipientNotAllowed) as exc:
            precheck_recipient(ANNA, addr(login))
        assert "may not write directly to a citizen" in exc.value.public
    # Even if precheck were skipped, the resolved citizen is refused.
    with pytest.raises(RecipientNotAllowed):
        check_target(ANNA, BO_T, addr("bo@borger.dp2.test"), corresponded=True)


def test_citizen_probing_citizen_logins_gets_the_same_refusal() -> None:
    publics = set()
    for login in ("bo@borger.dp2.test", "nobody@borger.dp2.test"):
        with pytest.raises(RecipientNotAllowed) as exc:
            precheck_recipient(ANNA, addr(login))
        publics.add((exc.value.public, exc.value.enhanced))
    assert len(publics) == 1


def test_citizen_may_not_write_to_staff_without_correspondence() -> None:
    with pytest.raises(UnknownRecipient) as exc:
        allowed(ANNA, CASEWORKER_T.address, CASEWORKER_T, corresponded=False)
    assert "reply to a letter you received" in exc.value.public


def test_citizen_probing_staff_logins_gets_the_same_refusal() -> None:
    answers = set()
    for target in (CASEWORKER_T, None):
        with pytest.raises(UnknownRecipient) as exc:
            check_target(ANNA, target, addr(CASEWORKER_T.address), corresponded=False)
        answers.add((exc.value.public, exc.value.enhanced))
    assert len(answers) == 1


def test_citizen_may_reply_to_staff_who_wrote_to_them() -> None:
    assert allowed(ANNA, CASEWORKER_T.address, CASEWORKER_T, corresponded=True) == CASEWORKER_T


def test_citizen_may_not_address_by_cvr() -> None:
    with pytest.raises(RecipientNotAllowed):
        precheck_recipient(ANNA, addr("29190000@cvr.dp2.test"))


# --- companies ---------------------------------------------------------------------

def test_company_may_write_to_contact_points_and_firms() -> None:
    assert allowed(LAWYER, "jobcenter@kommune.dp2.test", JOBCENTER_T) == JOBCENTER_T
    assert allowed(LAWYER, "post@forsikring.dp2.test", FIRM_CP_T) == FIRM_CP_T
    assert allowed(LAWYER, INSURER_T.address, INSURER_T) == INSURER_T
    assert allowed(LAWYER, "30000001@cvr.dp2.test", FIRM_CP_T) == FIRM_CP_T


def test_company_may_not_write_to_citizens() -> None:
    with pytest.raises(RecipientNotAllowed):
        precheck_recipient(LAWYER, addr("0101701234@cpr.dp2.test"))
    with pytest.raises(RecipientNotAllowed):
        precheck_recipient(LAWYER, addr("anna@borger.dp2.test"))
    with pytest.raises(RecipientNotAllowed):
        check_target(LAWYER, ANNA_T, addr("anna@borger.dp2.test"), corresponded=True)


def test_company_allowed_by_policy_may_address_cpr() -> None:
    insurer = principal("company", "skade@forsikring.dp2.test", may_address_cpr=True)
    assert allowed(insurer, "0101701234@cpr.dp2.test", ANNA_T) == ANNA_T


def test_company_writes_to_an_authority_through_its_contact_point() -> None:
    answers = set()
    for target in (CASEWORKER_T, None):
        with pytest.raises(UnknownRecipient) as exc:
            check_target(LAWYER, target, addr(CASEWORKER_T.address), corresponded=False)
        answers.add(exc.value.public)
    assert answers == {NOT_A_CONTACT_POINT}
    assert allowed(LAWYER, CASEWORKER_T.address, CASEWORKER_T, corresponded=True) == CASEWORKER_T


# --- authorities ----------------------------------------------------------------------

def test_authority_may_write_to_cpr_cvr_and_contact_points() -> None:
    assert allowed(CASEWORKER, "0101701234@cpr.dp2.test", ANNA_T) == ANNA_T
    assert allowed(CASEWORKER, "30000000@cvr.dp2.test", FIRM_CP_T) == FIRM_CP_T
    assert allowed(CASEWORKER, "jobcenter@kommune.dp2.test", JOBCENTER_T) == JOBCENTER_T
    assert allowed(CASEWORKER, "anna@borger.dp2.test", ANNA_T) == ANNA_T


def test_malformed_directory_numbers_are_unknown_for_those_allowed_to_use_them() -> None:
    with pytest.raises(UnknownRecipient) as exc:
        precheck_recipient(CASEWORKER, addr("01017012@cpr.dp2.test"))
    assert "10-digit" in exc.value.public
    with pytest.raises(UnknownRecipient) as exc:
        precheck_recipient(CASEWORKER, addr("2919000x@cvr.dp2.test"))
    assert "8-digit" in exc.value.public


def test_unknown_recipient_is_5_1_1() -> None:
    with pytest.raises(UnknownRecipient) as exc:
        allowed(CASEWORKER, "0202802345@cpr.dp2.test", None)
    assert exc.value.enhanced == "5.1.1"


@pytest.mark.parametrize("p", [ANNA, LAWYER, CASEWORKER], ids=["citizen", "company", "authority"])
def test_foreign_domains_are_refused_for_everyone(p: Principal) -> None:
    with pytest.raises(ForeignDomain) as exc:
        precheck_recipient(p, addr("someone@example.org"))
    assert exc.value.enhanced == "5.1.2"

