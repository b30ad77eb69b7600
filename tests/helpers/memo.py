"""MeMo test data: `full_memo()` (every element of the schema filled), the reference examples, and
`differences()`, a field-by-field comparison of two model values that names where they differ."""

from __future__ import annotations

import dataclasses
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from bridge.digitalpost import model as m

# The reference MeMo 1.1 XSDs and 1.2 examples, copied byte for byte from the project's shared
# folder (shared/memo/, see PROVENANCE.md there), so a clean clone tests without it.
MEMO_REFERENCE = Path(__file__).resolve().parents[1] / "data" / "memo"
EXAMPLES = ("example_v1.2_MeMo_Minimum_Example.xml", "example_v1.2_MeMo_NemSMS.xml")


def example(name: str) -> bytes:
    return (MEMO_REFERENCE / name).read_bytes()


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


# Binary content that a text round trip would damage: every byte value, NUL and CR LF included.
ALL_BYTES = bytes(range(256)) * 2
PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj <</Type /Catalog>> endobj\ntrailer <</Root 1 0 R>>\n%%EOF\n"


def _address(tag: str) -> m.Address:
    return m.Address(
        id=f"adresse-{tag}", address_label="Bakketoppen", house_number="6A",
        door="th", floor="3", co=f"c/o {tag}", zip_code="9000", city="Aalborg", country="DK",
        address_point=m.AddressPoint(geographic_easting_measure="557501.23",
                                     geographic_northing_measure="6336248.89",
                                     geographic_height_measure="12.5"))


def _attention(tag: str) -> m.AttentionData:
    return m.AttentionData(
        attention_person=m.AttentionPerson(person_id=f"{tag}-person", label=f"Hans Hansen ({tag})"),
        production_unit=m.ProductionUnit(production_unit_number=1003388394, production_unit_name=f"P {tag}"),
        global_location_number=m.GlobalLocationNumber(global_location_number=5798000012345,
                                                      location=f"Lokation {tag}"),
        email=m.EMail(email_address=f"{tag}@kommune.example", related_agent=f"Agent {tag}"),
        se_number=m.SEnumber(se_number="29189854", company_name=f"SE-firma {tag}"),
        telephone=m.Telephone(telephone_number="+45 12 34 56 78", related_agent=f"Telefon {tag}"),
        eid=m.EID(eid="CVR:12345678-RID:1234567890123", label=f"eID {tag}"),
        content_responsible=m.ContentResponsible(content_responsible_id=f"{tag}-cr",
                                                 label="Børnehaven Tusindfryd"),
        generating_system=m.GeneratingSystem(generating_system_id=f"{tag}-sys", label="Sagssystem"),
        sor_data=m.SORdata(sor_identifier="468031000016004", entry_name=f"SOR {tag}"),
        address=_address(tag),
        unstructured_address=m.UnstructuredAddress(unstructured=f"Bakketoppen 6, 9000 Aalborg ({tag})"),
    )


def _contact_point(tag: str) -> m.ContactPoint:
    return m.ContactPoint(
        contact_group=f"{tag}.group", contact_point_id=f"{tag}-241d39f6", label=f"Kontakt {tag}",
        contact_info=(m.ContactInfo(label="Barnets CPR-nummer", value="2512169996"),
                      m.ContactInfo(label="Barnets navn", value="Emilie Hansen")))


def _files(tag: str) -> tuple[m.File, ...]:
    return (m.File(encoding_format="application/pdf", filename=f"{tag}.pdf", language="da", content=PDF),
            m.File(encoding_format="application/octet-stream", filename=f"{tag} æøå.bin", language="en",
                   content=ALL_BYTES + tag.encode()))


def _actions(tag: str) -> tuple[m.Action, ...]:
    return (
        m.Action(label=f"Møde {tag}", action_code="AFTALE",
                 start_date_time=utc("2026-12-01T09:00:00"), end_date_time=utc("2026-12-01T10:30:00"),
                 reservation=m.Reservation(
                     description=f"Opstartsmøde {tag}",
                     reservation_uuid="1b4e28ba-2fa1-41d2-883f-0016d3cca427",
                     abstract="Opstart", location="Gl. Landevej 61, 9000 Aalborg, Rød stue",
                     start_date_time=utc("2026-12-01T09:00:00"), end_date_time=utc("2026-12-01T10:30:00"),
                     organizer_mail="info@tusindfryd.example", organizer_name="Jette Hansen")),
        m.Action(label=f"Spørgeskema {tag}", action_code="SELVBETJENING",
                 start_date_time=utc("2026-11-09T12:00:00"), end_date_time=utc("2026-12-09T12:00:00.250000"),
                 entry_point=m.EntryPoint(url=f"https://selvbetjening.example/{tag}?a=1&b=2")),
    )


def full_memo() -> m.Message:
    """A MeMo 1.2 message with every element of the schema filled, 2 entries wherever many are allowed.

    An Action holds a Reservation or an EntryPoint (the schema's choice), so each document has one
    action of each kind.  Documents carry binary content that only a byte-exact round trip keeps.
    """
    header = m.MessageHeader(
        message_type=m.DIGITALPOST,
        message_uuid="8c2ea15d-61fb-4ba9-9366-42f8b194c114",
        message_id="MSG-12345",
        message_code="Pladsanvisning",
        label="Besked fra Børneforvaltningen <&> \"citat\"",
        notification="Du har fået digital post fra Kommunen.",
        additional_notification="Vedr. din ansøgning om børnehaveplads til Emilie Hansen",
        reply=True,
        reply_by_date_time=utc("2026-12-30T12:00:00"),
        do_not_deliver_until_date=date(2026, 12, 1),
        mandatory=True,
        legal_notification=True,
        post_type="MYNDIGHEDSPOST",
        sender=m.Sender(
            sender_id="12345678", id_type="CVR", id_type_label="CVR-nummer", label="Kommunen",
            attention_data=_attention("sender"), contact_point=_contact_point("sender"),
            representative=m.Representative(representative_id="87654321", id_type="CVR",
                                            label="Repræsentant ApS")),
        recipient=m.Recipient(
            recipient_id="2211771212", id_type="CPR", id_type_label="CPR-nummer", label="Mette Hansen",
            attention_data=_attention("recipient"), contact_point=_contact_point("recipient")),
        content_data=m.ContentData(
            cpr_data=m.CPRdata(cpr_number="2512169996", name="Emilie Hansen"),
            cvr_data=m.CVRdata(cvr_number="12345678", company_name="Virksomhed A/S"),
            motor_vehicle=m.MotorVehicle(license_number="AB12345", chassis_number="WFR18ZZ67W094959"),
            property_number=m.PropertyNumber(property_number="ABC1234"),
            case_id=m.CaseID(case_id="SAG-12345", case_system="Sagssystem 1234"),
            kle_data=m.KLEdata(subject_key="28.03.04", version="Maj 2018", activity_facet="G01",
                               label="Pladsanvisning"),
            form_data=m.FORMdata(task_key="28.03.04.00", version="Opgavenøglen v2.12", activity_facet="A",
                                 label="FORM-tekst"),
            production_unit=m.ProductionUnit(production_unit_number=1234567890,
                                             production_unit_name="P-enhed"),
            education=m.Education(education_code="123ABC", education_name="Pædagog"),
            address=_address("content"),
            unstructured_address=m.UnstructuredAddress(unstructured="Gl. Landevej 61, 9000 Aalborg"),
            additional_content_data=(
                m.AdditionalContentData(content_data_type="Liste A", content_data_name="Navn 1",
                                        content_data_value="Værdi 1"),
                m.AdditionalContentData(content_data_type="Liste B", content_data_name="Navn 2",
                                        content_data_value="Værdi 2"))),
        forward_data=m.ForwardData(
            message_uuid="0f8fad5b-d9cb-469f-a165-70867728950e",
            original_message_date_time=utc("2026-03-15T12:00:00"), original_sender="Kommunen",
            original_content_responsible="Børnehaven Tusindfryd",
            original_representative="Repræsentant ApS",
            contact_point_id="241d39f6-998e-4929-b198-ccacbbf4b330", comment="Kommentar til modtageren"),
        reply_data=tuple(
            m.ReplyData(message_id=f"MSG-{n}", message_uuid=f"7c9e6679-7425-40de-944b-e07fc1f90ae{n}",
                        reply_uuid=f"16fd2706-8baf-433b-82eb-8c7fada847d{n}", sender_id="12345678",
                        recipient_id="2211771212", case_id=f"SAG-{n}", contact_point_id=f"cp-{n}",
                        generating_system_id=f"sys-{n}", comment=f"Svar nummer {n}",
                        additional_reply_data=(m.AdditionalReplyData(label="Intern note", value=f"note {n}"),
                                               m.AdditionalReplyData(label="Intern ref", value=f"ref {n}")))
            for n in (1, 2)),
    )
    body = m.MessageBody(
        created_date_time=utc("2026-11-27T12:00:00"),
        main_document=m.MainDocument(main_document_id="main-1", label="Tilbud om børnehaveplads",
                                     files=_files("main"), actions=_actions("main")),
        additional_documents=tuple(
            m.AdditionalDocument(additional_document_id=f"add-{n}", label=f"Bilag {n}",
                                 files=_files(f"add{n}"), actions=_actions(f"add{n}"))
            for n in (1, 2)),
        technical_documents=tuple(
            m.TechnicalDocument(technical_document_id=f"tech-{n}", label=f"Teknisk dokument {n}",
                                files=_files(f"tech{n}"))
            for n in (1, 2)),
    )
    return m.Message(memo_version="1.2", message_header=header, message_body=body)


def as_written_in_1_1(msg: m.Message) -> m.Message:
    """What `msg` becomes when written as 1.1 and read back: the 1.2-only fields are gone."""
    header = msg.message_header
    forward = header.forward_data
    header = dataclasses.replace(
        header,
        sender=dataclasses.replace(header.sender, representative=None),
        forward_data=forward and dataclasses.replace(forward, original_representative=None),
        mandatory=bool(header.mandatory), legal_notification=bool(header.legal_notification))
    return dataclasses.replace(msg, memo_version="1.1", memo_sch_version=msg.memo_sch_version or "1.1.0",
                               message_header=header)


def differences(a: Any, b: Any, path: str = "Message") -> list[str]:
    """Every field path where two model values differ (empty when equal), compared field by field."""
    if dataclasses.is_dataclass(a) and type(a) is type(b):
        found: list[str] = []
        for f in dataclasses.fields(a):
            found += differences(getattr(a, f.name), getattr(b, f.name), f"{path}.{f.name}")
        return found
    if isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b):
        found = []
        for i, (x, y) in enumerate(zip(a, b)):
            found += differences(x, y, f"{path}[{i}]")
        return found
    return [] if a == b and type(a) is type(b) else [f"{path}: {a!r} != {b!r}"]


def unfilled(value: Any, path: str = "Message") -> list[str]:
    """Fields left None or empty anywhere in a model value.

    Not counted: memo_sch_version (gone in 1.2) and the unchosen branch of Action's choice
    (Reservation or EntryPoint).
    """
    if dataclasses.is_dataclass(value):
        skip = {"memo_sch_version"}
        if isinstance(value, m.Action):
            skip.add("entry_point" if value.reservation is not None else "reservation")
        found: list[str] = []
        for f in dataclasses.fields(value):
            if f.name not in skip:
                found += unfilled(getattr(value, f.name), f"{path}.{f.name}")
        return found
    if value is None or value == ():
        return [path]
    if isinstance(value, tuple):
        return [p for i, item in enumerate(value) for p in unfilled(item, f"{path}[{i}]")]
    return []
