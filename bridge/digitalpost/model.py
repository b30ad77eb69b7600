"""The MeMo message as frozen dataclasses: every element of the MeMo 1.1 schema, plus 1.2's additions.

One class per complex element of `schema/1.1/MeMo_core.xsd` and the type schemas it imports
(grd, kle, form, dmv, gln, sor, udd).  Fields are in schema order, and each field's metadata
names the XML element (or attribute) it stands for, in Clark notation: `xml.py` reads and writes
MeMo XML from this metadata alone, so this module is the single statement of names, order and
cardinality.

Cardinality is in the annotation:
- `X`             required, exactly one (no default);
- `X | None`      optional (minOccurs=0);
- `tuple[X, ...]` repeated, in document order (maxOccurs > 1; the schema's upper bounds, e.g. at most
                  2 ContactInfo, are checked by validation, not here).

Value types: memoTextType and other strings are `str` (UUIDs too, kept exactly as written);
xs:boolean is `bool`; xs:long is `int`; xs:base64Binary is `bytes` (the decoded content);
memoDateTimeType is a timezone-aware `datetime` in UTC; xs:date is `date`; the `memoVersion`
attribute is the decimal's text (`"1.1"`, `"1.2"`).

MeMo 1.2 (no public schema; see schema/PROVENANCE.md) adds `Sender/Representative` and
`ForwardData/originalRepresentative`, drops the `memoSchVersion` attribute, and makes
`mandatory` and `legalNotification` optional.  Those fields are marked "1.2" below; they are
left out when a message is written as 1.1.

Imports nothing from the project.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

# Namespaces, with the prefixes Digital Post's own examples use.
MEMO_NS = "https://DigitalPost.dk/MeMo-1"
GRD_NS = "https://data.gov.dk/model/core/"
KLE_NS = "http://kle-online.dk/"
FORM_NS = "http://www.form-online.dk/"
DMV_NS = "https://motorregister.skat.dk/"
GLN_NS = "https://www.gs1.dk/gs1-standarder/identifikation/gln-global-location-number/"
SOR_NS = "https://services.nsi.dk/en/Services/SOR"
UDD_NS = ("https://www.dst.dk/da/TilSalg/Forskningsservice/Dokumentation/"
          "hoejkvalitetsvariable/elevregister-2/udd#")
NSMAP: dict[str, str] = {
    "memo": MEMO_NS, "grd": GRD_NS, "kle": KLE_NS, "form": FORM_NS,
    "dmv": DMV_NS, "gln": GLN_NS, "sor": SOR_NS, "udd": UDD_NS,
}

# memoMessageType, the one enumeration in the schema.
DIGITALPOST = "DIGITALPOST"
NEMSMS = "NEMSMS"
MESSAGE_TYPES = (DIGITALPOST, NEMSMS)

# Code values seen in public client libraries; the schema does not enumerate them.
ID_TYPES = ("CPR", "CVR", "MyndighedsID")
ACTION_CODES = ("AFTALE", "BETALING", "SELVBETJENING", "INFORMATION", "UNDERSKRIV",
                "BEKRAEFT", "FORBEREDELSE", "TILMELDING")


def _el(local: str, ns: str = MEMO_NS, *, since: str | None = None,
        v11_default: Any = None) -> dict[str, Any]:
    """Field metadata: the element this field is written as; `since="1.2"` for 1.2-only ones;
    `v11_default`: the value written as 1.1 when None (the element is required there)."""
    return {"xml": f"{{{ns}}}{local}", "since": since, "v11_default": v11_default}


def _attr(name: str) -> dict[str, Any]:
    return {"xml_attr": name}


def one(local: str, ns: str = MEMO_NS, *, since: str | None = None) -> Any:
    """A required element."""
    return field(metadata=_el(local, ns, since=since))


def opt(local: str, ns: str = MEMO_NS, *, since: str | None = None, v11_default: Any = None) -> Any:
    """An optional element (None when absent)."""
    return field(default=None, metadata=_el(local, ns, since=since, v11_default=v11_default))


def many(local: str, ns: str = MEMO_NS) -> Any:
    """A repeated element (empty tuple when absent)."""
    return field(default=(), metadata=_el(local, ns))


_model = dataclass(frozen=True, kw_only=True)


# --- grd: https://data.gov.dk/model/core/ ---------------------------------------------------

@_model
class AddressPoint:
    geographic_easting_measure: str | None = opt("geographicEastingMeasure", GRD_NS)
    geographic_northing_measure: str | None = opt("geographicNorthingMeasure", GRD_NS)
    geographic_height_measure: str | None = opt("geographicHeightMeasure", GRD_NS)


@_model
class Address:
    id: str | None = opt("id", GRD_NS)
    address_label: str | None = opt("addressLabel", GRD_NS)
    house_number: str | None = opt("houseNumber", GRD_NS)
    door: str | None = opt("door", GRD_NS)
    floor: str | None = opt("floor", GRD_NS)
    co: str | None = opt("co", GRD_NS)
    zip_code: str | None = opt("zipCode", GRD_NS)
    city: str | None = opt("city", GRD_NS)
    country: str | None = opt("country", GRD_NS)
    address_point: AddressPoint | None = opt("AddressPoint", GRD_NS)


@_model
class UnstructuredAddress:
    unstructured: str = one("unstructured", GRD_NS)


@_model
class CPRdata:
    cpr_number: str = one("cprNumber", GRD_NS)
    name: str | None = opt("name", GRD_NS)


@_model
class CVRdata:
    cvr_number: str = one("cvrNumber", GRD_NS)
    company_name: str | None = opt("companyName", GRD_NS)


@_model
class EID:
    eid: str = one("eID", GRD_NS)
    label: str | None = opt("label", GRD_NS)


@_model
class ProductionUnit:
    production_unit_number: int = one("productionUnitNumber", GRD_NS)  # memoPNumberType
    production_unit_name: str | None = opt("productionUnitName", GRD_NS)


@_model
class SEnumber:
    se_number: str = one("seNumber", GRD_NS)
    company_name: str | None = opt("companyName", GRD_NS)


@_model
class PropertyNumber:
    property_number: str = one("propertyNumber", GRD_NS)


# --- the small type schemas: dmv, kle, form, gln, sor, udd -------------------------------------

@_model
class MotorVehicle:
    license_number: str = one("licenseNumber", DMV_NS)  # at most 7 characters
    chassis_number: str | None = opt("chassisNumber", DMV_NS)


@_model
class KLEdata:
    subject_key: str = one("subjectKey", KLE_NS)
    version: str = one("version", KLE_NS)
    activity_facet: str | None = opt("activityFacet", KLE_NS)
    label: str = one("label", KLE_NS)


@_model
class FORMdata:
    task_key: str = one("taskKey", FORM_NS)
    version: str = one("version", FORM_NS)
    activity_facet: str | None = opt("activityFacet", FORM_NS)
    label: str = one("label", FORM_NS)


@_model
class GlobalLocationNumber:
    global_location_number: int = one("globalLocationNumber", GLN_NS)  # memoGLNType
    location: str | None = opt("location", GLN_NS)


@_model
class SORdata:
    sor_identifier: str = one("sorIdentifier", SOR_NS)
    entry_name: str | None = opt("entryName", SOR_NS)


@_model
class Education:
    education_code: str = one("educationCode", UDD_NS)
    education_name: str | None = opt("educationName", UDD_NS)


# --- memo: parties ------------------------------------------------------------------------------

@_model
class AttentionPerson:
    person_id: str | None = opt("personID")
    label: str | None = opt("label")


@_model
class EMail:
    email_address: str = one("emailAddress")
    related_agent: str | None = opt("relatedAgent")


@_model
class Telephone:
    telephone_number: str = one("telephoneNumber")
    related_agent: str | None = opt("relatedAgent")


@_model
class ContentResponsible:
    content_responsible_id: str | None = opt("contentResponsibleID")
    label: str | None = opt("label")


@_model
class GeneratingSystem:
    generating_system_id: str = one("generatingSystemID")
    label: str | None = opt("label")


@_model
class AttentionData:
    attention_person: AttentionPerson | None = opt("AttentionPerson")
    production_unit: ProductionUnit | None = opt("ProductionUnit", GRD_NS)
    global_location_number: GlobalLocationNumber | None = opt("GlobalLocationNumber", GLN_NS)
    email: EMail | None = opt("EMail")
    se_number: SEnumber | None = opt("SEnumber", GRD_NS)
    telephone: Telephone | None = opt("Telephone")
    eid: EID | None = opt("EID", GRD_NS)
    content_responsible: ContentResponsible | None = opt("ContentResponsible")
    generating_system: GeneratingSystem | None = opt("GeneratingSystem")
    sor_data: SORdata | None = opt("SORdata", SOR_NS)
    address: Address | None = opt("Address", GRD_NS)
    unstructured_address: UnstructuredAddress | None = opt("UnstructuredAddress", GRD_NS)


@_model
class ContactInfo:
    label: str = one("label")
    value: str = one("value")


@_model
class ContactPoint:
    contact_group: str | None = opt("contactGroup")
    contact_point_id: str = one("contactPointID")
    label: str | None = opt("label")
    contact_info: tuple[ContactInfo, ...] = many("ContactInfo")  # at most 2


@_model
class Representative:
    """MeMo 1.2: who sends on the sender's behalf (structure as in Digital Post's 1.2 full example)."""

    representative_id: str = one("representativeID")
    id_type: str = one("idType")
    label: str | None = opt("label")


@_model
class Sender:
    sender_id: str = one("senderID")
    id_type: str = one("idType")
    id_type_label: str | None = opt("idTypeLabel")
    label: str = one("label")
    attention_data: AttentionData | None = opt("AttentionData")
    contact_point: ContactPoint | None = opt("ContactPoint")
    representative: Representative | None = opt("Representative", since="1.2")


@_model
class Recipient:
    recipient_id: str = one("recipientID")
    id_type: str = one("idType")
    id_type_label: str | None = opt("idTypeLabel")
    label: str | None = opt("label")
    attention_data: AttentionData | None = opt("AttentionData")
    contact_point: ContactPoint | None = opt("ContactPoint")


# --- memo: content data, forwarding, replies ------------------------------------------------------

@_model
class CaseID:
    case_id: str = one("caseID")
    case_system: str = one("caseSystem")


@_model
class AdditionalContentData:
    content_data_type: str | None = opt("contentDataType")
    content_data_name: str = one("contentDataName")
    content_data_value: str = one("contentDataValue")


@_model
class ContentData:
    cpr_data: CPRdata | None = opt("CPRdata", GRD_NS)
    cvr_data: CVRdata | None = opt("CVRdata", GRD_NS)
    motor_vehicle: MotorVehicle | None = opt("MotorVehicle", DMV_NS)
    property_number: PropertyNumber | None = opt("PropertyNumber", GRD_NS)
    case_id: CaseID | None = opt("CaseID")
    kle_data: KLEdata | None = opt("KLEdata", KLE_NS)
    form_data: FORMdata | None = opt("FORMdata", FORM_NS)
    production_unit: ProductionUnit | None = opt("ProductionUnit", GRD_NS)
    education: Education | None = opt("Education", UDD_NS)
    address: Address | None = opt("Address", GRD_NS)
    unstructured_address: UnstructuredAddress | None = opt("UnstructuredAddress", GRD_NS)
    additional_content_data: tuple[AdditionalContentData, ...] = many("AdditionalContentData")  # <= 10


@_model
class ForwardData:
    message_uuid: str = one("messageUUID")
    original_message_date_time: datetime = one("originalMessageDateTime")
    original_sender: str = one("originalSender")
    original_content_responsible: str | None = opt("originalContentResponsible")
    original_representative: str | None = opt("originalRepresentative", since="1.2")
    contact_point_id: str | None = opt("contactPointID")
    comment: str | None = opt("comment")  # memoCommentType: at most 512 characters


@_model
class AdditionalReplyData:
    label: str = one("label")
    value: str = one("value")


@_model
class ReplyData:
    message_id: str | None = opt("messageID")
    message_uuid: str = one("messageUUID")
    reply_uuid: str | None = opt("replyUUID")
    sender_id: str | None = opt("senderID")
    recipient_id: str | None = opt("recipientID")
    case_id: str | None = opt("caseID")
    contact_point_id: str | None = opt("contactPointID")
    generating_system_id: str | None = opt("generatingSystemID")
    comment: str | None = opt("comment")
    additional_reply_data: tuple[AdditionalReplyData, ...] = many("AdditionalReplyData")  # <= 4


@_model
class MessageHeader:
    message_type: str = one("messageType")  # DIGITALPOST or NEMSMS
    message_uuid: str = one("messageUUID")
    message_id: str | None = opt("messageID")
    message_code: str | None = opt("messageCode")
    label: str = one("label")
    notification: str | None = opt("notification")  # at most 150 characters
    additional_notification: str | None = opt("additionalNotification")
    reply: bool | None = opt("reply")
    reply_by_date_time: datetime | None = opt("replyByDateTime")
    do_not_deliver_until_date: date | None = opt("doNotDeliverUntilDate")
    # Required in 1.1 (written as false when None), optional in 1.2.
    mandatory: bool | None = opt("mandatory", v11_default=False)
    legal_notification: bool | None = opt("legalNotification", v11_default=False)
    post_type: str | None = opt("postType")
    sender: Sender = one("Sender")
    recipient: Recipient = one("Recipient")
    content_data: ContentData | None = opt("ContentData")
    forward_data: ForwardData | None = opt("ForwardData")
    reply_data: tuple[ReplyData, ...] = many("ReplyData")


# --- memo: body ------------------------------------------------------------------------------------

@_model
class File:
    encoding_format: str = one("encodingFormat")  # a media type, e.g. application/pdf
    filename: str = one("filename")
    language: str = one("language")  # two letters, e.g. da
    content: bytes = one("content")


@_model
class EntryPoint:
    url: str = one("url")


@_model
class Reservation:
    description: str = one("description")
    reservation_uuid: str = one("reservationUUID")
    abstract: str = one("abstract")
    location: str = one("location")
    start_date_time: datetime = one("startDateTime")
    end_date_time: datetime = one("endDateTime")
    organizer_mail: str | None = opt("organizerMail")
    organizer_name: str | None = opt("organizerName")


@_model
class Action:
    """An action; the schema allows a Reservation or an EntryPoint, not both."""

    label: str = one("label")
    action_code: str = one("actionCode")
    start_date_time: datetime | None = opt("startDateTime")
    end_date_time: datetime | None = opt("endDateTime")
    reservation: Reservation | None = opt("Reservation")
    entry_point: EntryPoint | None = opt("EntryPoint")


@_model
class MainDocument:
    main_document_id: str | None = opt("mainDocumentID")
    label: str | None = opt("label")
    files: tuple[File, ...] = many("File")  # at least one
    actions: tuple[Action, ...] = many("Action")


@_model
class AdditionalDocument:
    additional_document_id: str | None = opt("additionalDocumentID")
    label: str | None = opt("label")
    files: tuple[File, ...] = many("File")  # at least one
    actions: tuple[Action, ...] = many("Action")


@_model
class TechnicalDocument:
    technical_document_id: str | None = opt("technicalDocumentID")
    label: str | None = opt("label")
    files: tuple[File, ...] = many("File")  # at least one


@_model
class MessageBody:
    created_date_time: datetime = one("createdDateTime")
    main_document: MainDocument = one("MainDocument")
    additional_documents: tuple[AdditionalDocument, ...] = many("AdditionalDocument")
    technical_documents: tuple[TechnicalDocument, ...] = many("TechnicalDocument")


@_model
class Message:
    """The root element, memo:Message."""

    memo_version: str = field(default="1.2", metadata=_attr("memoVersion"))
    # 1.1 only; required there (written as "1.1.0" when None), gone in 1.2.
    memo_sch_version: str | None = field(default=None, metadata=_attr("memoSchVersion"))
    message_header: MessageHeader = one("MessageHeader")
    message_body: MessageBody | None = opt("MessageBody")
