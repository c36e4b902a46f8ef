"""The subscriber SDK: deliveries signed by the `standardwebhooks` package, verified and parsed."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook

from leadhook import receiver
from leadhook.receiver import (
    TEST_EVENT_TYPE,
    BadSignatureError,
    Deduplicator,
    Gap,
    GapDetector,
    InvalidPayload,
    LeadEvent,
    MalformedHeaderError,
    MissingHeaderError,
    ObjectChangeOwner,
    ObjectCreate,
    SignatureError,
    StaleTimestampError,
    UnknownEventReceived,
    WebhookTestReceived,
    parse,
    verify_and_parse,
)
from leadhook.services import subscriptions

GOLDEN = Path(__file__).parents[1] / "golden"
SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"\xaa" * 24).decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"\x01" * 32).decode()
NOW = 1_700_000_000


def golden(event_type: str) -> bytes:
    return json.dumps(json.loads((GOLDEN / f"{event_type}.json").read_text())).encode()


def signed(
    body: bytes, secrets: list[str], *, ts: int = NOW, msg_id: str | None = None
) -> dict[str, str]:
    """Sign as a Standard Webhooks sender does, with the reference implementation."""
    msg_id = msg_id or json.loads(body)["event_id"]
    when = datetime.fromtimestamp(ts, tz=UTC)
    signature = " ".join(Webhook(s).sign(msg_id, when, body.decode()) for s in secrets)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": signature,
        "content-type": "application/json",
    }


BODY = golden("object_create")
HEADERS = signed(BODY, [SECRET])


# --- verify_and_parse ------------------------------------------------------------------------


@pytest.mark.parametrize("event_type", receiver.EVENT_TYPES)
def test_every_event_type_verifies_into_its_model(event_type: str) -> None:
    body = golden(event_type)
    event = verify_and_parse(body, signed(body, [SECRET]), SECRET, now=NOW)
    assert event.event_type == event_type
    assert type(event).__name__ == "".join(p.title() for p in event_type.split("_"))


def test_typed_model_and_header_case() -> None:
    upper = {k.upper(): v for k, v in HEADERS.items()}
    event = verify_and_parse(BODY, upper, SECRET, now=NOW)
    assert isinstance(event, ObjectCreate)
    assert event.extra_data.mapping_data_text["name"] == "赵拥晨"


def test_owner_change_has_its_own_keys() -> None:
    body = golden("object_change_owner")
    event = verify_and_parse(body, signed(body, [SECRET]), SECRET, now=NOW)
    assert isinstance(event, ObjectChangeOwner)
    assert event.extra_data.scene_type in range(1, 7)


def test_keys_added_by_a_newer_leadhook_are_ignored_not_refused() -> None:
    data = json.loads(golden("object_change_owner"))
    data["added_later"] = {"x": 1}
    data["extra_data"]["added_later_too"] = [1, 2]
    data["extra_data"]["entity_change_mapping"]["owner"]["after"]["added"] = "y"
    body = json.dumps(data).encode()
    event = verify_and_parse(body, signed(body, [SECRET]), SECRET, now=NOW)
    assert isinstance(event, ObjectChangeOwner)
    assert event.extra_data.former_owner_name == data["extra_data"]["former_owner_name"]
    # A new key may be named like an event type: only the union's own tag is skipped.
    data["object_create"] = 1
    data["extra_data"]["object_change_owner"] = {"x": 1}
    body = json.dumps(data).encode()
    event = verify_and_parse(body, signed(body, [SECRET]), SECRET, now=NOW)
    assert isinstance(event, ObjectChangeOwner)
    assert event.extra_data.former_owner_name == data["extra_data"]["former_owner_name"]
    del data["extra_data"]["scene_type"]  # a missing key is still an invalid event
    body = json.dumps(data).encode()
    with pytest.raises(InvalidPayload):
        verify_and_parse(body, signed(body, [SECRET]), SECRET, now=NOW)


@pytest.mark.parametrize(
    ("data", "said"),
    [
        ({}, "not a lead event: it has no event_type"),
        ({"event_type": "nope"}, "not a lead event: event_type 'nope' is not one of"),
        ({"event_type": "object_create"}, "not a lead event: object_create.mid: Field required"),
    ],
)
def test_a_body_that_is_no_lead_event_is_refused_in_the_contracts_words(
    data: dict[str, Any], said: str
) -> None:
    with pytest.raises(InvalidPayload) as caught:
        receiver.parse(json.dumps(data).encode())
    assert str(caught.value).startswith(said)
    assert "discriminator" not in str(caught.value)


def test_wrong_secret_is_a_bad_signature() -> None:
    with pytest.raises(BadSignatureError):
        verify_and_parse(BODY, HEADERS, OTHER_SECRET, now=NOW)


def test_tampered_body_is_a_bad_signature() -> None:
    body = BODY.replace(b"baby_lead", b"customer")
    with pytest.raises(BadSignatureError):
        verify_and_parse(body, HEADERS, SECRET, now=NOW)


def test_changed_webhook_id_is_a_bad_signature() -> None:
    with pytest.raises(BadSignatureError):
        verify_and_parse(BODY, {**HEADERS, "webhook-id": "01OTHER"}, SECRET, now=NOW)


@pytest.mark.parametrize("offset", [-301, 301, -10_000])
def test_timestamp_out_of_tolerance_is_stale(offset: int) -> None:
    with pytest.raises(StaleTimestampError):
        verify_and_parse(BODY, signed(BODY, [SECRET], ts=NOW + offset), SECRET, now=NOW)


def test_tolerance_is_adjustable() -> None:
    headers = signed(BODY, [SECRET], ts=NOW - 1000)
    assert verify_and_parse(BODY, headers, SECRET, now=NOW, tolerance=1000).entity_version == 1


def test_default_now_is_the_clock() -> None:
    with pytest.raises(StaleTimestampError):
        verify_and_parse(BODY, HEADERS, SECRET)  # NOW is 2023: long past


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"webhook-timestamp": "soon"}, MalformedHeaderError),
        ({"webhook-timestamp": "9" * 20}, MalformedHeaderError),
        ({"webhook-timestamp": "9" * 5000}, MalformedHeaderError),  # past int()'s digit limit
        ({"webhook-signature": "v1"}, MalformedHeaderError),
        ({"webhook-signature": ""}, MissingHeaderError),
        ({"webhook-signature": "v2,abc"}, BadSignatureError),
        # A byte that is no text, as aiohttp hands undecodable header bytes over: was a
        # UnicodeEncodeError (a 500 in the receiver's server).
        ({"webhook-id": "evt\udcff"}, MalformedHeaderError),
    ],
)
def test_malformed_headers(change: dict[str, str], error: type[SignatureError]) -> None:
    with pytest.raises(error):
        verify_and_parse(BODY, {**HEADERS, **change}, SECRET, now=NOW)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_header(missing: str) -> None:
    headers = {k: v for k, v in HEADERS.items() if k != missing}
    with pytest.raises(MissingHeaderError):
        verify_and_parse(BODY, headers, SECRET, now=NOW)


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"event_type": "object_create"}',
        json.dumps({**json.loads(BODY), "entity_version": 0}).encode(),
        json.dumps({**json.loads(BODY), "entity_version": "x"}).encode(),
        b"[" * 100_000,  # nested past any parser's depth: still a 400, never a 500
    ],
)
def test_authentic_but_invalid_payload(body: bytes) -> None:
    headers = signed(body, [SECRET], msg_id="01GSQ8H3G8Q6W7ZQ2V8N5K4T01")
    with pytest.raises(InvalidPayload):
        verify_and_parse(body, headers, SECRET, now=NOW)


def test_webhook_id_must_be_the_event_id() -> None:
    headers = signed(BODY, [SECRET], msg_id="01HOTHERID")
    with pytest.raises(InvalidPayload, match="event_id"):
        verify_and_parse(BODY, headers, SECRET, now=NOW)


def test_rotation_either_secret_verifies() -> None:
    both = signed(BODY, [OLD_SECRET, SECRET])
    assert verify_and_parse(BODY, both, SECRET, now=NOW).event_id
    assert verify_and_parse(BODY, both, OLD_SECRET, now=NOW).event_id
    only_old = signed(BODY, [OLD_SECRET])
    assert verify_and_parse(BODY, only_old, [SECRET, OLD_SECRET], now=NOW).event_id
    with pytest.raises(BadSignatureError):
        verify_and_parse(BODY, only_old, [SECRET, OTHER_SECRET], now=NOW)


def test_stale_is_not_masked_by_trying_another_secret() -> None:
    headers = signed(BODY, [OLD_SECRET], ts=NOW - 3600)
    with pytest.raises(StaleTimestampError):
        verify_and_parse(BODY, headers, [SECRET, OLD_SECRET], now=NOW)


@pytest.mark.parametrize(
    "bad", ["", [], "whsec_!!!not base64", "nope", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
)
def test_unusable_secret_is_a_configuration_error(bad: Any) -> None:
    with pytest.raises(ValueError):
        verify_and_parse(BODY, HEADERS, bad, now=NOW)


def test_response_status() -> None:
    assert receiver.response_status(BadSignatureError("x")) == 401
    assert receiver.response_status(StaleTimestampError("x")) == 401
    assert receiver.response_status(InvalidPayload("x")) == 400
    assert receiver.response_status(WebhookTestReceived({})) == 204
    assert receiver.response_status(UnknownEventReceived({})) == 204
    assert receiver.response_status(RuntimeError("x")) == 500


TEST_BODY = json.dumps(
    {
        "event_type": TEST_EVENT_TYPE,
        "event_id": "01JTEST",
        "mid": "941",
        "subscription_id": "S1",
        "create_time": NOW,
        "data": {"message": "A test event from leadhook"},
    }
).encode()


def test_the_test_event_is_recognised_once_verified() -> None:
    assert TEST_EVENT_TYPE == subscriptions.TEST_EVENT_TYPE
    with pytest.raises(WebhookTestReceived) as caught:
        verify_and_parse(TEST_BODY, signed(TEST_BODY, [SECRET]), SECRET, now=NOW)
    assert caught.value.event["subscription_id"] == "S1"
    with pytest.raises(BadSignatureError):
        verify_and_parse(TEST_BODY, signed(TEST_BODY, [OTHER_SECRET]), SECRET, now=NOW)


def test_a_test_event_is_held_to_the_webhook_id_rule_too() -> None:
    # Signed, but its webhook-id is not its event_id: refused as a lead event would be.
    with pytest.raises(InvalidPayload, match="is not the event_id"):
        verify_and_parse(TEST_BODY, signed(TEST_BODY, [SECRET], msg_id="OTHER"), SECRET, now=NOW)
    # A "test event" without an event_id is no event of leadhook's at all.
    for event_id in (None, "", 5):
        data = {**json.loads(TEST_BODY), "event_id": event_id}
        if event_id is None:
            del data["event_id"]
        body = json.dumps(data).encode()
        # Said as what it is, not as an event type the contract lacks.
        with pytest.raises(InvalidPayload, match="webhook_test event with no event_id"):
            verify_and_parse(body, signed(body, [SECRET], msg_id="M1"), SECRET, now=NOW)


def _newer(event_type: str, event_id: Any = "01JNEWER") -> bytes:
    data = json.loads(BODY)
    data["event_type"], data["event_id"] = event_type, event_id
    return json.dumps(data).encode()


def test_an_event_of_a_newer_type_is_acknowledged_not_refused() -> None:
    # A newer leadhook's event type: refusing it (400) would hold the lead's later events
    # behind it for days; it is acknowledged (2xx) with its JSON at hand.
    body = _newer("object_merge")
    with pytest.raises(UnknownEventReceived) as caught:
        verify_and_parse(body, signed(body, [SECRET]), SECRET, now=NOW)
    assert caught.value.event["event_type"] == "object_merge"
    assert caught.value.event["entity_version"] == 1
    assert receiver.response_status(caught.value) == 204
    assert "object_merge" in str(caught.value)
    # Authentic first, and held to the webhook-id rule as every event is.
    with pytest.raises(BadSignatureError):
        verify_and_parse(body, signed(body, [OTHER_SECRET]), SECRET, now=NOW)
    with pytest.raises(InvalidPayload, match="is not the event_id"):
        verify_and_parse(body, signed(body, [SECRET], msg_id="OTHER"), SECRET, now=NOW)


@pytest.mark.parametrize(
    "body",
    [
        _newer("Object Merge"),  # no event type's name (an event of a newer type: above)
        _newer(""),
        _newer("object_merge", event_id=""),  # no event of leadhook's without an id
        _newer("object_merge", event_id=5),
        b'"object_merge"',
    ],
)
def test_what_is_no_event_of_a_newer_type_is_still_invalid(body: bytes) -> None:
    with pytest.raises(InvalidPayload):
        receiver.parse(body)


# --- frameworks ------------------------------------------------------------------------------


def test_wsgi_environ() -> None:
    environ = {
        "REQUEST_METHOD": "POST",
        "CONTENT_TYPE": "application/json",
        **{"HTTP_" + k.upper().replace("-", "_"): v for k, v in HEADERS.items()},
    }
    event = receiver.verify_wsgi_environ(environ, BODY, SECRET, now=NOW)
    assert event.event_type == "object_create"
    assert receiver.wsgi_headers(environ)["content-type"] == "application/json"


def test_asgi_scope() -> None:
    scope = {
        "type": "http",
        "headers": [(k.title().encode(), v.encode()) for k, v in HEADERS.items()],
    }
    assert receiver.verify_asgi(scope, BODY, SECRET, now=NOW).entity_version == 1


# Module level: the endpoint's postponed annotation is resolved in this module's globals.
VERIFIED = receiver.fastapi_dependency(SECRET, tolerance=10**10)


def test_fastapi_dependency() -> None:
    app = FastAPI()
    received: list[LeadEvent] = []

    @app.post("/hook", status_code=204)
    async def hook(event: Annotated[LeadEvent, Depends(VERIFIED)]) -> None:
        received.append(event)

    client = TestClient(app)
    assert client.post("/hook", content=BODY, headers=HEADERS).status_code == 204
    assert isinstance(received[0], ObjectCreate)
    bad = client.post("/hook", content=BODY, headers={**HEADERS, "webhook-signature": "v1,AAAA"})
    assert bad.status_code == 401
    junk = b'{"hello": "world"}'
    invalid = client.post("/hook", content=junk, headers=signed(junk, [SECRET], msg_id="m1"))
    assert invalid.status_code == 400
    ping = client.post("/hook", content=TEST_BODY, headers=signed(TEST_BODY, [SECRET]))
    assert ping.status_code == 204
    newer = _newer("object_merge")
    assert client.post("/hook", content=newer, headers=signed(newer, [SECRET])).status_code == 204
    assert len(received) == 1


def test_fastapi_dependency_checks_the_secret_up_front() -> None:
    with pytest.raises(ValueError):
        receiver.fastapi_dependency("whsec_%%%")


# --- de-duplication --------------------------------------------------------------------------


def test_deduplicator_marks_and_forgets_the_least_recent() -> None:
    dedup = Deduplicator(capacity=2)
    assert not dedup.is_duplicate("a")
    assert dedup.is_duplicate("a")
    assert not dedup.seen("b")
    dedup.mark("b")
    assert dedup.seen("a")  # a becomes the most recent
    dedup.mark("c")  # evicts b
    assert "b" not in dedup and "a" in dedup and "c" in dedup
    assert len(dedup) == 2


def test_deduplicator_takes_events() -> None:
    event = verify_and_parse(BODY, HEADERS, SECRET, now=NOW)
    dedup = Deduplicator()
    assert not dedup.is_duplicate(event)
    assert dedup.seen(event) and dedup.is_duplicate(event.event_id)
    with pytest.raises(ValueError):
        Deduplicator(0)


@given(st.lists(st.sampled_from("abcdefghij"), max_size=60))
def test_deduplicator_reports_exactly_the_repeats(ids: list[str]) -> None:
    dedup = Deduplicator(capacity=10)
    before: set[str] = set()
    for event_id in ids:
        assert dedup.is_duplicate(event_id) == (event_id in before)
        before.add(event_id)


# --- gap detection ---------------------------------------------------------------------------


def test_in_order_with_duplicates_has_no_gap() -> None:
    gaps = GapDetector()
    assert [gaps.observe_version("L", v) for v in (1, 2, 2, 3, 1, 4)] == [None] * 6
    assert gaps.missing("L") == [] and gaps.last_version("L") == 4


def test_gap_reported_once_then_filled() -> None:
    gaps = GapDetector()
    assert gaps.observe_version("L", 1) is None
    gap = gaps.observe_version("L", 5)
    assert gap == Gap("L", 2, 4) and list(gap.versions) == [2, 3, 4]
    assert gaps.observe_version("L", 6) is None
    assert gaps.observe_version("L", 3) is None  # a late redelivery fills the hole
    assert gaps.missing("L") == [2, 4]
    assert gaps.gaps() == [Gap("L", 2, 2), Gap("L", 4, 4)]


def test_first_event_starts_history_unless_start_at_one() -> None:
    assert GapDetector().observe_version("L", 7) is None
    assert GapDetector(start_at_one=True).observe_version("L", 3) == Gap("L", 1, 2)
    assert GapDetector(start_at_one=True).observe_version("L", 1) is None


def test_leads_are_independent_and_bounded() -> None:
    gaps = GapDetector(max_leads=2)
    gaps.observe_version("A", 1)
    gaps.observe_version("B", 1)
    gaps.observe_version("C", 1)  # forgets A
    assert gaps.last_version("A") is None and gaps.last_version("C") == 1
    with pytest.raises(ValueError):
        gaps.observe_version("A", 0)


def test_observe_takes_events() -> None:
    body = golden("object_change_owner")
    event = verify_and_parse(body, signed(body, [SECRET]), SECRET, now=NOW)
    gap = GapDetector(start_at_one=True).observe(event)
    assert gap == Gap(event.extra_data.entity_id, 1, event.entity_version - 1)


@given(st.integers(1, 30).flatmap(lambda n: st.lists(st.integers(1, n), min_size=1)))
def test_gaps_account_for_exactly_the_versions_not_seen(arrivals: list[int]) -> None:
    gaps = GapDetector(start_at_one=True)
    reported: set[int] = set()
    seen: set[int] = set()
    for version in arrivals:
        gap = gaps.observe_version("L", version)
        if gap is not None:
            missing = set(gap.versions)
            assert not missing & reported, "a version is reported missing only once"
            assert not missing & seen, "a version that arrived is never reported missing"
            reported |= missing
        seen.add(version)
    expected = set(range(1, max(arrivals) + 1)) - seen
    assert set(gaps.missing("L")) == expected
    assert expected <= reported


@given(st.lists(st.integers(1, 20), min_size=1))
def test_sorted_redeliveries_never_report_a_gap(versions: list[int]) -> None:
    gaps = GapDetector(start_at_one=True)
    upto = sorted(set(range(1, max(versions) + 1)))
    replayed = sorted(upto + versions)  # every version at least once, in order, some twice
    assert all(gaps.observe_version("L", v) is None for v in replayed)
    assert gaps.missing("L") == []


# --- the examples of the README ---------------------------------------------------------------

EXAMPLES = Path(__file__).parents[2] / "examples"


def load_example(name: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("LEADHOOK_SECRET", SECRET)
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fresh_headers(body: bytes, secrets: list[str]) -> dict[str, str]:
    return signed(body, secrets, ts=int(time.time()))


def test_fastapi_example(monkeypatch: pytest.MonkeyPatch) -> None:
    example = load_example("receiver_fastapi", monkeypatch)
    client = TestClient(example.app)
    url = "/webhooks/leadhook"
    body = golden("object_change_owner")
    assert client.post(url, content=body, headers=fresh_headers(body, [SECRET])).status_code == 204
    assert example.seen.seen(json.loads(body)["event_id"])
    assert client.post(url, content=body, headers=fresh_headers(body, [SECRET])).status_code == 204
    forged = fresh_headers(body, [OTHER_SECRET])
    assert client.post(url, content=body, headers=forged).status_code == 401


def test_wsgi_example(monkeypatch: pytest.MonkeyPatch) -> None:
    example = load_example("receiver_wsgi", monkeypatch)

    def call(body: bytes, headers: dict[str, str]) -> str:
        environ = {
            "REQUEST_METHOD": "POST",
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(body),
            **{"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()},
        }
        statuses: list[str] = []
        b"".join(example.app(environ, lambda status, _headers: statuses.append(status)))
        return statuses[0]

    assert call(BODY, fresh_headers(BODY, [SECRET])) == "204 No Content"
    assert call(BODY, fresh_headers(BODY, [OTHER_SECRET])) == "401 Unauthorized"
    junk = b"[]"
    assert call(junk, signed(junk, [SECRET], ts=int(time.time()), msg_id="m")) == "400 Bad Request"
    assert call(TEST_BODY, fresh_headers(TEST_BODY, [SECRET])) == "204 No Content"


@pytest.mark.parametrize("noise", ["junk", ",", "v1", ",AAAA"])
def test_an_entry_that_is_no_signature_beside_a_matching_one_is_ignored(noise: str) -> None:
    # "Signatures other than v1 are ignored; any matching v1 signature is enough", as the
    # Standard Webhooks reference library reads the header.
    for signatures in (
        f"{noise} {HEADERS['webhook-signature']}",
        f"{HEADERS['webhook-signature']} {noise}",
    ):
        headers = {**HEADERS, "webhook-signature": signatures}
        assert verify_and_parse(BODY, headers, SECRET, now=NOW).entity_version == 1


def test_a_json_reader_refusal_is_an_invalid_payload() -> None:
    # An application that lowered Python's integer digit limit: json.loads raises ValueError
    # on an unknown key's long integer, which was not an InvalidPayload (a 500).
    import sys

    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(1000)
    try:
        body = BODY[:-1] + b', "zz": ' + b"1" * 2000 + b"}"
        with pytest.raises(InvalidPayload):
            parse(body)
    finally:
        sys.set_int_max_str_digits(limit)


def test_the_bound_forgets_leads_with_nothing_missing_first() -> None:
    gaps = GapDetector(max_leads=2)
    assert gaps.observe_version("A", 1) is None
    assert gaps.observe_version("A", 3) == Gap("A", 2, 2)  # A has a gap outstanding
    gaps.observe_version("B", 1)
    gaps.observe_version("C", 1)  # forgets B, the least recent with nothing missing
    assert gaps.last_version("B") is None and gaps.missing("A") == [2]
    assert gaps.forgotten == 1
    assert gaps.observe_version("A", 5) == Gap("A", 4, 4)  # A still tracked: the gap is seen


def test_the_bound_forgets_the_oldest_when_every_lead_has_a_gap() -> None:
    gaps = GapDetector(max_leads=2)
    gaps.observe_version("A", 2)
    gaps.observe_version("A", 4)
    gaps.observe_version("B", 2)
    gaps.observe_version("B", 4)
    assert gaps.observe_version("C", 1) is None  # the newest is never the one forgotten
    assert gaps.last_version("A") is None and gaps.last_version("C") == 1
    assert gaps.missing("B") == [3] and gaps.forgotten == 1


def test_a_body_handed_over_as_text_verifies_as_its_bytes() -> None:
    # A framework that decoded the body as UTF-8 (Flask's get_data(as_text=True)) hands over
    # text: it is the same bytes encoded again, so it verifies, Chinese values included.
    body = golden("object_create")
    body = body.replace(b'"mid"', '"\u5907\u6ce8": "\u5f20\u4e09", "mid"'.encode(), 1)
    headers = signed(body, [SECRET])
    as_text = verify_and_parse(body.decode(), headers, SECRET, now=NOW)
    assert as_text == verify_and_parse(body, headers, SECRET, now=NOW)
    assert isinstance(as_text, ObjectCreate)
    receiver.verify_signature(body.decode(), headers, SECRET, now=NOW)
    tampered = body.decode().replace("\u5f20\u4e09", "\u674e\u56db")
    with pytest.raises(BadSignatureError):
        verify_and_parse(tampered, headers, SECRET, now=NOW)
    # Anything else is a programming error that says what it was given.
    with pytest.raises(TypeError, match=r"raw bytes received.*dict"):
        verify_and_parse(json.loads(body), headers, SECRET, now=NOW)  # type: ignore[arg-type]
