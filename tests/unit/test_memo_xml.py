"""digitalpost.xml and digitalpost.model: MeMo 1.1/1.2 parsing, writing and validation."""

from __future__ import annotations

import dataclasses
import re
import time
from datetime import datetime
from typing import get_args, get_origin, get_type_hints

import pytest
from lxml import etree

from bridge.digitalpost import MemoInvalid, ValidationError, model, parse_memo, validate, write_memo
from bridge.digitalpost.model import MEMO_NS, NSMAP
from bridge.errors import BridgeError
from tests.helpers.memo import (
    ALL_BYTES, EXAMPLES, MEMO_REFERENCE, PDF, as_written_in_1_1, differences, example, full_memo, unfilled,
)

HEADER = "/memo:Message/memo:MessageHeader"
_XS = "{http://www.w3.org/2001/XMLSchema}"


def reference_xsd() -> etree.XMLSchema:
    """The 1.1 schema loaded straight from the reference folder, independent of the package's copy."""
    return etree.XMLSchema(etree.parse(str(MEMO_REFERENCE / "MeMo_core.xsd")))


def set_text(data: bytes, local: str, text: str) -> bytes:
    """`data` with the first memo:`local` element's text replaced."""
    root = etree.fromstring(data)
    root.find(f".//{{{MEMO_NS}}}{local}").text = text
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def paths(errors: list[ValidationError]) -> list[str]:
    return [e.path for e in errors]


# --- the 1.2 examples ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", EXAMPLES)
def test_example_parses_and_round_trips(name: str) -> None:
    msg = parse_memo(example(name))
    out = write_memo(msg)
    assert parse_memo(out) == msg
    assert differences(msg, parse_memo(out)) == []
    assert validate(out, "1.2") == []
    assert msg.memo_version == "1.2"
    assert b'memoVersion="1.2"' in out and b"memoSchVersion" not in out


def test_minimum_example_values() -> None:
    msg = parse_memo(example(EXAMPLES[0]))
    header = msg.message_header
    assert (header.message_type, header.message_uuid, header.label) == (
        "DIGITALPOST", "8C2EA15D-61FB-4BA9-9366-42F8B194C114", "Pladsanvisning")
    assert header.mandatory is None and header.legal_notification is None
    sender = header.sender
    assert (sender.sender_id, sender.id_type, sender.label) == ("12345678", "CVR", "Kommunen")
    assert (header.recipient.recipient_id, header.recipient.label) == ("2211771212", None)
    body = msg.message_body
    assert body is not None and body.created_date_time == datetime.fromisoformat("2024-05-03T12:00:00+00:00")
    (file,) = body.main_document.files
    assert (file.encoding_format, file.filename, file.language, file.content) == (
        "application/pdf", "Pladsanvisning.pdf", "da", b"This is a test")


def test_nemsms_example_has_no_body() -> None:
    msg = parse_memo(example(EXAMPLES[1]))
    assert msg.message_header.message_type == model.NEMSMS
    assert msg.message_header.notification == "Message Text"
    assert msg.message_body is None


@pytest.mark.parametrize("name", EXAMPLES)
def test_examples_are_not_1_1_documents(name: str) -> None:
    """As PROVENANCE.md says: 1.2 examples break the 1.1 schema (memoSchVersion, mandatory)."""
    errors = validate(example(name), "1.1")
    assert "/memo:Message" in paths(errors)
    assert any("memoSchVersion" in e.message for e in errors)


# --- the full message: every element of the schema ---------------------------------------------------

def schema_elements() -> set[str]:
    """Every element the 1.1 schema files declare, in Clark notation."""
    names = set()
    for xsd in MEMO_REFERENCE.glob("MeMo_*.xsd"):
        root = etree.parse(str(xsd)).getroot()
        for element in root.iter(f"{_XS}element"):
            if element.get("name"):
                # Global declarations are in the target namespace; local ones too (elementFormDefault
                # is qualified in the core schema, and the type schemas only declare globals).
                names.add(f"{{{root.get('targetNamespace')}}}{element.get('name')}")
    return names


def model_elements(cls: type = model.Message, seen: set[type] | None = None) -> set[str]:
    seen = seen if seen is not None else set()
    seen.add(cls)
    names = set()
    for f in dataclasses.fields(cls):
        if "xml" in f.metadata:
            names.add(f.metadata["xml"])
        for candidate in vars(model).values():
            if (isinstance(candidate, type) and dataclasses.is_dataclass(candidate) and candidate not in seen
                    and candidate.__name__ in str(f.type)):
                names |= model_elements(candidate, seen)
    return names


def test_model_has_every_schema_element_and_only_those_plus_1_2() -> None:
    declared = schema_elements() - {f"{{{MEMO_NS}}}Message"}
    in_model = model_elements()
    assert declared - in_model == set()
    assert in_model - declared == {f"{{{MEMO_NS}}}Representative", f"{{{MEMO_NS}}}representativeID",
                                   f"{{{MEMO_NS}}}originalRepresentative"}


def model_classes() -> dict[str, tuple[type, list[tuple[str, str]]]]:
    """Element (Clark name) -> (model class, [(child element, cardinality)] in field order)."""
    found: dict[str, tuple[type, list[tuple[str, str]]]] = {}

    def visit(tag: str, cls: type) -> None:
        children = []
        for f in dataclasses.fields(cls):
            if "xml" not in f.metadata:
                continue
            hint = get_type_hints(cls)[f.name]
            if get_origin(hint) is tuple:
                kind, inner = "many", get_args(hint)[0]
            elif type(None) in get_args(hint):
                kind, inner = "opt", next(a for a in get_args(hint) if a is not type(None))
            else:
                kind, inner = "one", hint
            children.append((f.metadata["xml"], kind))
            if dataclasses.is_dataclass(inner):
                visit(f.metadata["xml"], inner)
        found[tag] = (cls, children)

    visit(f"{{{MEMO_NS}}}Message", model.Message)
    return found


def schema_sequences() -> dict[str, list[tuple[str, str]]]:
    """Complex element (Clark name) -> [(child element, cardinality)] in schema order, from the XSDs."""
    result = {}
    for xsd in MEMO_REFERENCE.glob("MeMo_*.xsd"):
        root = etree.parse(str(xsd)).getroot()
        target = root.get("targetNamespace")
        for declaration in root.findall(f"{_XS}element"):
            children = []
            for child in declaration.iter(f"{_XS}element"):
                if child is declaration:
                    continue
                if child.get("ref"):
                    prefix, _, local = child.get("ref").rpartition(":")
                    name = f"{{{child.nsmap[prefix or None]}}}{local}"
                else:
                    name = f"{{{target}}}{child.get('name')}"
                low, high = child.get("minOccurs", "1"), child.get("maxOccurs", "1")
                kind = "one" if (low, high) == ("1", "1") else "opt" if high == "1" else "many"
                children.append((name, kind))
            if children:
                result[f"{{{target}}}{declaration.get('name')}"] = children
    return result


def test_model_follows_the_schema_names_order_and_cardinality() -> None:
    classes = model_classes()
    relaxed_in_1_2 = {f"{{{MEMO_NS}}}mandatory", f"{{{MEMO_NS}}}legalNotification"}
    only_in_1_2 = {f"{{{MEMO_NS}}}Representative", f"{{{MEMO_NS}}}originalRepresentative"}
    for element, sequence in schema_sequences().items():
        assert element in classes, element
        in_model = [(name, "one" if name in relaxed_in_1_2 else kind)
                    for name, kind in classes[element][1] if name not in only_in_1_2]
        assert in_model == sequence, element
    assert set(classes) - set(schema_sequences()) == {f"{{{MEMO_NS}}}Representative"}


def test_full_memo_fills_every_field() -> None:
    assert unfilled(full_memo()) == []


def test_full_memo_written_as_1_1_validates_against_the_reference_xsd() -> None:
    out = write_memo(full_memo(), "1.1")
    root = etree.fromstring(out)
    schema = reference_xsd()
    assert schema.validate(etree.ElementTree(root)), schema.error_log
    written = {el.tag for el in root.iter()}
    assert schema_elements() - written == set()  # every element of the schema is in the document
    assert validate(out, "1.1") == []


def test_full_memo_round_trips_as_1_1_field_by_field() -> None:
    msg = full_memo()
    back = parse_memo(write_memo(msg, "1.1"))
    assert differences(as_written_in_1_1(msg), back) == []
    assert back.memo_version == "1.1" and back.memo_sch_version == "1.1.0"
    assert back.message_header.sender.representative is None


def test_full_memo_round_trips_as_1_2_field_by_field_documents_byte_exact() -> None:
    msg = full_memo()
    out = write_memo(msg, "1.2")
    back = parse_memo(out)
    assert differences(msg, back) == []
    assert back == msg
    assert back.message_body is not None
    contents = [f.content for f in back.message_body.main_document.files]
    assert contents == [PDF, ALL_BYTES + b"main"]
    assert back.message_header.sender.representative == msg.message_header.sender.representative
    assert validate(out) == []


def test_round_trip_keeps_instants_given_in_other_zones() -> None:
    from datetime import timedelta, timezone
    cet = timezone(timedelta(hours=1))
    msg = full_memo()
    header = dataclasses.replace(msg.message_header,
                                 reply_by_date_time=datetime(2026, 12, 30, 13, 0, tzinfo=cet))
    out = write_memo(dataclasses.replace(msg, message_header=header))
    assert b"<memo:replyByDateTime>2026-12-30T12:00:00Z</memo:replyByDateTime>" in out
    assert parse_memo(out).message_header.reply_by_date_time == header.reply_by_date_time


# --- output form -------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_output_uses_the_memo_prefix_and_schema_order(version: str) -> None:
    out = write_memo(full_memo(), version)
    assert out.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<memo:Message ')
    root = etree.fromstring(out)
    assert None not in root.nsmap  # no default namespace
    for element in root.iter():
        namespace = etree.QName(element).namespace
        assert element.prefix == {v: k for k, v in NSMAP.items()}[namespace]
    header = [etree.QName(c).localname for c in root[0]]
    assert header[:5] == ["messageType", "messageUUID", "messageID", "messageCode", "label"]
    assert header[-5:] == ["Recipient", "ContentData", "ForwardData", "ReplyData", "ReplyData"]

    def children(local: str) -> list[str]:
        return [etree.QName(c).localname for c in root.find(f".//{{{MEMO_NS}}}{local}")]

    # 1.2 as in Digital Post's full example: Representative ends Sender, originalRepresentative
    # follows originalContentResponsible; 1.1 has neither.
    sender = ["senderID", "idType", "idTypeLabel", "label", "AttentionData", "ContactPoint"]
    forward = ["messageUUID", "originalMessageDateTime", "originalSender", "originalContentResponsible",
               "contactPointID", "comment"]
    if version == "1.2":
        sender.append("Representative")
        forward.insert(4, "originalRepresentative")
    assert children("Sender") == sender
    assert children("ForwardData") == forward


def test_parse_accepts_any_prefix_or_the_default_namespace() -> None:
    original = example(EXAMPLES[0])
    unprefixed = original.replace(b"memo:", b"").replace(b"xmlns:memo=", b"xmlns=")
    other_prefix = original.replace(b"memo:", b"m:").replace(b"xmlns:memo=", b"xmlns:m=")
    assert b"<Message" in unprefixed and b"<m:Message" in other_prefix
    assert parse_memo(unprefixed) == parse_memo(original) == parse_memo(other_prefix)
    assert b"<memo:Message" in write_memo(parse_memo(unprefixed))


def test_1_1_output_writes_required_defaults() -> None:
    msg = parse_memo(example(EXAMPLES[0]))
    out = write_memo(msg, "1.1")
    assert b"<memo:mandatory>false</memo:mandatory>" in out
    assert b"<memo:legalNotification>false</memo:legalNotification>" in out
    assert b'memoVersion="1.1" memoSchVersion="1.1.0"' in out
    assert reference_xsd().validate(etree.fromstring(out))


def test_memo_version_is_kept_when_no_version_is_asked_for() -> None:
    msg = dataclasses.replace(parse_memo(example(EXAMPLES[0])), memo_version="1.20")
    out = write_memo(msg)
    assert b'memoVersion="1.20"' in out
    assert parse_memo(out).memo_version == "1.20"


# --- refusals, each naming the element path -----------------------------------------------------------

@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_label_too_long(version: str) -> None:
    data = set_text(write_memo(full_memo(), version), "label", "x" * 257)
    errors = validate(data)
    assert paths(errors) == [f"{HEADER}/memo:label"]
    assert errors[0].message == "too long: 257 characters, at most 256 allowed"
    assert "højst 256" in errors[0].message_da
    with pytest.raises(MemoInvalid) as caught:
        parse_memo(data)
    assert caught.value.errors == tuple(errors)


def test_label_of_256_is_fine_and_notification_over_150_is_not() -> None:
    data = set_text(example(EXAMPLES[1]), "label", "æ" * 256)
    assert validate(data) == []
    errors = validate(set_text(data, "notification", "n" * 151))
    assert paths(errors) == [f"{HEADER}/memo:notification"]
    assert "at most 150" in errors[0].message


def test_write_refuses_a_model_that_breaks_the_schema() -> None:
    msg = full_memo()
    header = dataclasses.replace(msg.message_header, label="x" * 300)
    long_label = dataclasses.replace(msg, message_header=header)
    with pytest.raises(MemoInvalid) as caught:
        write_memo(long_label)
    assert paths(list(caught.value.errors)) == [f"{HEADER}/memo:label"]


@pytest.mark.parametrize("uuid", ["c232ab00-9414-11ec-b3c8-9f6bdeced846",  # version 1
                                  "8c2ea15d-61fb-4ba9-c366-42f8b194c114",  # wrong variant
                                  "not-a-uuid"])
def test_bad_uuid(uuid: str) -> None:
    errors = validate(set_text(example(EXAMPLES[0]), "messageUUID", uuid))
    assert paths(errors) == [f"{HEADER}/memo:messageUUID"]
    assert errors[0].message == f"not a version 4 UUID: '{uuid}'"


def test_bad_uuid_in_a_repeated_element_names_its_position() -> None:
    msg = full_memo()
    replies = msg.message_header.reply_data
    bad = dataclasses.replace(replies[1], message_uuid="00000000-0000-1000-8000-000000000000")
    header = dataclasses.replace(msg.message_header, reply_data=(replies[0], bad))
    with pytest.raises(MemoInvalid) as caught:
        write_memo(dataclasses.replace(msg, message_header=header))
    assert paths(list(caught.value.errors)) == [f"{HEADER}/memo:ReplyData[2]/memo:messageUUID"]


@pytest.mark.parametrize("value", ["2024-05-03T12:00:00", "2024-05-03T14:00:00+02:00", "yesterday Z"])
def test_date_time_must_be_utc_with_z(value: str) -> None:
    errors = validate(set_text(example(EXAMPLES[0]), "createdDateTime", value))
    assert "/memo:Message/memo:MessageBody/memo:createdDateTime" in paths(errors)


@pytest.mark.parametrize("value, words", [("2024-02-30T12:00:00Z", "is not a valid memoDateTimeType"),
                                          ("10000-01-01T00:00:00Z", "unusable value")])
def test_impossible_date_times_are_refused_by_validate_and_parse_alike(value: str, words: str) -> None:
    data = set_text(example(EXAMPLES[0]), "createdDateTime", value)
    errors = validate(data)
    assert paths(errors) == ["/memo:Message/memo:MessageBody/memo:createdDateTime"]
    assert words in errors[0].message and value in errors[0].message_da
    with pytest.raises(MemoInvalid) as caught:
        parse_memo(data)
    assert caught.value.errors == tuple(errors)


def test_naive_datetime_is_refused_on_write() -> None:
    msg = full_memo()
    assert msg.message_body is not None
    body = dataclasses.replace(msg.message_body, created_date_time=datetime(2026, 1, 1, 12, 0))
    with pytest.raises(MemoInvalid) as caught:
        write_memo(dataclasses.replace(msg, message_body=body))
    assert paths(list(caught.value.errors)) == ["/memo:Message/memo:MessageBody/memo:createdDateTime"]


def test_write_names_model_values_of_the_wrong_type() -> None:
    msg = full_memo()
    assert msg.message_body is not None
    main = msg.message_body.main_document
    wrong = dataclasses.replace(main, files=main.files[0], label=42)  # type: ignore[arg-type]
    body = dataclasses.replace(msg.message_body, main_document=wrong)
    with pytest.raises(MemoInvalid) as caught:
        write_memo(dataclasses.replace(msg, message_body=body))
    main_path = "/memo:Message/memo:MessageBody/memo:MainDocument"
    assert paths(list(caught.value.errors)) == [f"{main_path}/memo:label", f"{main_path}/memo:File"]
    assert [e.message for e in caught.value.errors] == ["expected str, got int", "expected a tuple, got File"]


def test_missing_required_element() -> None:
    root = etree.fromstring(example(EXAMPLES[0]))
    sender = root.find(f".//{{{MEMO_NS}}}Sender")
    sender.remove(sender.find(f"{{{MEMO_NS}}}label"))
    errors = validate(etree.tostring(root))
    assert paths(errors) == [f"{HEADER}/memo:Sender"]
    assert errors[0].message == "required element missing: memo:idTypeLabel, memo:label"
    assert errors[0].message_da.startswith("påkrævet element mangler")


def test_wrong_order() -> None:
    root = etree.fromstring(example(EXAMPLES[0]))
    header = root[0]
    header.insert(1, header.find(f"{{{MEMO_NS}}}label"))  # label before messageUUID
    errors = validate(etree.tostring(root))
    assert paths(errors)[0] == f"{HEADER}/memo:label"
    assert "expected memo:messageUUID" in errors[0].message
    assert errors[0].line is not None


def test_reservation_and_entry_point_together_are_refused() -> None:
    msg = full_memo()
    assert msg.message_body is not None
    main = msg.message_body.main_document
    both = dataclasses.replace(main.actions[0], entry_point=model.EntryPoint(url="https://x.example/"))
    body = dataclasses.replace(msg.message_body, main_document=dataclasses.replace(main, actions=(both,)))
    with pytest.raises(MemoInvalid) as caught:
        write_memo(dataclasses.replace(msg, message_body=body))
    assert paths(list(caught.value.errors)) == [
        "/memo:Message/memo:MessageBody/memo:MainDocument/memo:Action/memo:EntryPoint"]


def test_1_2_elements_are_refused_in_a_1_1_document() -> None:
    out = write_memo(full_memo(), "1.2").replace(b'memoVersion="1.2"',
                                                 b'memoVersion="1.1" memoSchVersion="1.1.0"')
    assert f"{HEADER}/memo:Sender/memo:Representative" in paths(validate(out))
    assert f"{HEADER}/memo:ForwardData/memo:originalRepresentative" in paths(validate(out))
    assert validate(out, "1.2") == []


def test_not_a_memo_and_not_xml() -> None:
    assert paths(validate(b"<html/>")) == ["/html"]
    assert "root element must be memo:Message" in validate(b"<html/>")[0].message
    errors = validate(b"<memo:Message xmlns:memo='https://DigitalPost.dk/MeMo-1'>")
    assert paths(errors) == ["/"] and "not well-formed" in errors[0].message
    with pytest.raises(MemoInvalid):
        parse_memo(b"")


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<memo:Message xmlns:memo="https://DigitalPost.dk/MeMo-1" memoVersion="1.2"><memo:MessageHeader>
<memo:messageType>DIGITALPOST</memo:messageType>
<memo:messageUUID>fcdcf318-59b6-427c-9879-4f0af833d593</memo:messageUUID>
<memo:label>&lol9;</memo:label>
</memo:MessageHeader></memo:Message>"""


def external_entity(path: str) -> bytes:
    return (f'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY xxe SYSTEM "file://{path}">]>'
            f'<memo:Message xmlns:memo="https://DigitalPost.dk/MeMo-1" memoVersion="1.2">'
            f'<memo:MessageHeader><memo:label>&xxe;</memo:label></memo:MessageHeader>'
            f'</memo:Message>').encode()


@pytest.mark.parametrize("data", [BILLION_LAUGHS, external_entity("/etc/hostname"),
                                  BILLION_LAUGHS.decode().replace('"1.0"?>', '"1.0" encoding="UTF-16"?>')
                                  .encode("utf-16")],
                         ids=["billion-laughs", "external-entity", "utf-16-doctype"])
def test_dtds_and_entities_are_refused(data: bytes) -> None:
    started = time.monotonic()
    errors = validate(data)
    assert paths(errors) == ["/"]
    assert "DTD" in errors[0].message and "DTD" in errors[0].message_da
    with pytest.raises(MemoInvalid) as caught:
        parse_memo(data)
    assert "DTD" in str(caught.value)
    assert time.monotonic() - started < 2


def test_deep_nesting_is_refused_without_recursion_errors() -> None:
    deep = (b'<memo:Message xmlns:memo="https://DigitalPost.dk/MeMo-1" memoVersion="1.2">'
            + b"<memo:MessageHeader>" * 2000 + b"</memo:MessageHeader>" * 2000 + b"</memo:Message>")
    errors = validate(deep)
    assert errors and errors[0].path.startswith(f"{HEADER}/memo:MessageHeader")
    too_deep = b"<a>" * 100_000 + b"</a>" * 100_000
    assert paths(validate(too_deep)) == ["/"]


def test_memo_invalid_is_a_client_safe_bridge_error() -> None:
    with pytest.raises(MemoInvalid) as caught:
        parse_memo(set_text(example(EXAMPLES[0]), "label", "x" * 300))
    error = caught.value
    assert isinstance(error, BridgeError) and not error.temporary
    assert "MeMo" in error.public and "x" * 300 not in error.public
    assert str(error.errors[0]) == f"{HEADER}/memo:label: too long: 300 characters, at most 256 allowed"
    assert re.search(r"MeMo-meddelelsen", error.public)
