"""The console's pages: sign-in, leads, events (and their live stream), subscriptions, deliveries.

Reads go through `ConsoleService` (container.console); changes through the services the JSON
API uses (container.subscriptions), so the console and the API cannot disagree.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.routing import APIRoute
from markupsafe import escape
from starlette.responses import HTMLResponse, Response, StreamingResponse

from leadhook.api.console.i18n import LANGS
from leadhook.api.console.session import LANG_COOKIE, Session, csrf_ok
from leadhook.api.console.views import (
    SECURITY_HEADERS,
    ConsoleRoute,
    CsrfRefused,
    Page,
    SignInRequired,
    error_page,
    error_status,
    page_of,
    parse_local,
    safe_next,
    signed_in,
    valid_session,
)
from leadhook.api.deps import HEAD_AS_GET
from leadhook.domain.catalog import Catalog
from leadhook.domain.errors import (
    BadRequestError,
    LeadhookError,
    NotFoundError,
    UnauthorizedError,
    ValidationError,
)
from leadhook.services.console import (
    DeliveryQuery,
    lead_fields,
    lead_row,
    local_time,
    pretty_json,
)
from leadhook.services.lanes import MAX_IN_FLIGHT
from leadhook.services.subscriptions import REPLAY_STATUSES

router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)

PER_PAGE = 25
LIVE_POLL_SECONDS = 0.5
SESSION_CHECK_SECONDS = 1.0
"""How often a live stream checks that its session is still signed in (and its key valid)."""
LIVE_STREAM_SECONDS = 30.0
"""A live stream ends after this long and the browser reconnects where it left off. It also
ends within `LIVE_POLL_SECONDS` of the server beginning to stop (`app.state.stopping`), so an
open console never holds a graceful shutdown."""


PageDep = Annotated[Page, Depends(page_of)]


async def checked(request: Request) -> None:
    """Refuse a POST whose form (or X-CSRF-Token header) lacks the session's CSRF token."""
    page = await asyncio.to_thread(page_of, request)
    form = await request.form()
    given = form.get("csrf_token")
    token = given if isinstance(given, str) else request.headers.get("x-csrf-token")
    if not csrf_ok(page.session, token):
        if page.session.mid is None and request.url.path not in _SIGNED_OUT_FORMS:
            # The session ended since the page was shown (signed out or in again in another
            # tab, its key revoked): its token went with it. To sign in, and back to the page,
            # as a search or the live view go; a "no valid CSRF token" page said nothing of why.
            raise SignInRequired
        raise CsrfRefused("this form has no valid CSRF token: reload the page and try again")


# The forms a signed-out browser posts: their refusal is the CSRF one.
_SIGNED_OUT_FORMS = frozenset({"/console/login", "/console/lang", "/console/logout"})
Csrf = Depends(checked)
Text = Annotated[str, Form()]
OptText = Annotated[str | None, Form()]


# ---- entry, sign-in, language -------------------------------------------------------------


@router.get("")
@router.get("/")  # the API matches paths exactly; a person typing the console's address may not
def home(page: PageDep) -> Response:
    """Leads when signed in, else the sign-in form."""
    return page.redirect("/console/leads" if page.session.mid else "/console/login")


@router.get("/login")
def login_form(page: PageDep, next: str | None = None) -> Response:
    """The sign-in form: one password field for a tenant API key (signed in already, it says
    so: another key signs this browser in as that key's tenant instead)."""
    return page.render("login.html", next=safe_next(next))


@router.post("/login", dependencies=[Csrf])
def login(page: PageDep, api_key: Text = "", next: OptText = None) -> Response:
    """Check the key; start a signed-in session (with a new CSRF token) and go on."""
    try:
        principal = page.container.console.sign_in(api_key)
    except UnauthorizedError:
        # 200, not 4xx: a mistyped key is an ordinary turn of the form, not a failed load
        # that the browser would report as an error in its console (a 422 did, in the
        # browser tests). A script tells it from a success by the success's 303 redirect.
        return page.render("login.html", error=True, next=safe_next(next))
    now = page.container.clock()
    page.replace_session(page.session.signed_in(principal.mid, principal.key_id, now))
    return page.redirect(safe_next(next))


@router.post("/logout", dependencies=[Csrf])
def logout(page: PageDep) -> Response:
    """End the session (a new anonymous one replaces it; a copy of the old cookie is refused)."""
    page.signer.end(page.session, page.container.clock())
    page.replace_session(Session.new(page.container.clock()))
    return page.redirect("/console/login")


@router.post("/lang", dependencies=[Csrf])
def switch_language(page: PageDep, lang: Text = "en", next: OptText = None) -> Response:
    """Remember the chosen language in a cookie, whatever the browser asks for."""
    # Back where the switch was pressed, signed in or not: the sign-in form keeps its own
    # `next` (a shared link), and a page that needs a session sends to sign in as usual.
    response = page.redirect(safe_next(next))
    if lang in LANGS:
        response.set_cookie(
            LANG_COOKIE,
            lang,
            max_age=365 * 86400,
            path="/console",
            samesite="strict",
            httponly=True,
        )
    return response


# ---- leads --------------------------------------------------------------------------------


@router.get("/leads")
def leads(
    page: PageDep,
    q: str = "",
    p: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> Response:
    """The tenant's leads, newest first, searched by id or any text."""
    mid = signed_in(page)
    catalog, rows, more = page.container.console.leads(mid, q, p, PER_PAGE)
    return page.render("leads.html", catalog=catalog, rows=rows, q=q, p=p, more=more, nav="leads")


@router.get("/leads/{lead_id}")
def lead(page: PageDep, lead_id: str) -> Response:
    """A lead's fields and its timeline, newest first."""
    mid = signed_in(page)
    catalog, found, entries, older = page.container.console.lead(mid, lead_id)
    return page.render(
        "lead.html",
        catalog=catalog,
        lead=found,
        row=lead_row(catalog, found),
        fields=lead_fields(catalog, found),
        members=[catalog.member_name(m) for m in found.team_members],
        relations=[
            (catalog.object_label(r.target_object_name), r.target_entity_id)
            for r in found.relations
        ],
        entries=entries,
        older=older,
        nav="leads",
    )


# ---- events -------------------------------------------------------------------------------


@router.get("/events")
def events(
    page: PageDep,
    event_type: str = "",
    lead: str = "",
    before: str | None = None,
) -> Response:
    """The event log, newest first, filtered by type and lead; a live view above it."""
    mid = signed_in(page)
    svc = page.container.console
    error, code = None, 200
    try:
        found, nxt = svc.events(mid, event_type or None, lead.strip() or None, before, PER_PAGE)
    except LeadhookError as exc:
        # Above the filter form, to be corrected there (as the deliveries' filters are), not
        # a page of its own whose only way on was back to the console's start.
        if error_status(exc) == 404:
            raise
        error, code, found, nxt = page.explain(exc), error_status(exc), [], None
    catalog = svc.catalog(mid)
    items = [(e, pretty_json(e.payload)) for e in found]
    return page.render(
        "events.html",
        status=code,
        error=error,
        catalog=catalog,
        items=items,
        event_type=event_type,
        lead=lead,
        next_before=nxt,
        live_after=svc.latest_event_id(mid) or "",
        nav="events",
    )


@router.get("/events/stream")
async def event_stream(request: Request, after: str | None = None) -> Response:
    """Server-sent events: each event of the tenant as it commits (the log polled by position)."""
    page = await asyncio.to_thread(page_of, request)
    mid = signed_in(page)
    svc = page.container.console
    t = page.t
    start = request.headers.get("last-event-id") or after or None
    try:
        await asyncio.to_thread(svc.events_after, mid, start)
    except BadRequestError:  # not an event of this tenant: start from now
        start = await asyncio.to_thread(svc.latest_event_id, mid)
    headers = {**SECURITY_HEADERS, "x-accel-buffering": "no"}
    if request.scope.get(HEAD_AS_GET):
        # HEAD: the stream's status and headers, then the end (a stream would run its whole
        # LIVE_STREAM_SECONDS with nobody reading, holding the connection). No length: the
        # GET's stream has none, and a HEAD answer's must be the GET's (RFC 9110, 8.6).
        head = Response(media_type="text/event-stream", headers=headers)
        del head.headers["content-length"]
        return head

    stopping: asyncio.Event | None = getattr(request.app.state, "stopping", None)
    catalog = await asyncio.to_thread(svc.catalog, mid)  # its timezone, for each item's time

    async def stream() -> AsyncIterator[bytes]:
        last = start
        ends = time.monotonic() + LIVE_STREAM_SECONDS
        checked = time.monotonic()
        yield b"retry: 500\n\n"
        while time.monotonic() < ends and not await request.is_disconnected():
            if stopping is not None and stopping.is_set():
                return  # the server is stopping: the browser reconnects to the next one
            if time.monotonic() - checked >= SESSION_CHECK_SECONDS:
                # A stream outlives the request that opened it: the session signed out (in
                # another tab) or its key revoked ends it too, and the page goes to sign in.
                checked = time.monotonic()
                if not await asyncio.to_thread(_still_signed_in, page):
                    yield b"event: signed-out\ndata: {}\n\n"
                    return
            batch = await asyncio.to_thread(svc.events_after, mid, last)
            for e in batch:
                data = {
                    "event_id": e.event_id,
                    "event_type": e.event_type,
                    "label": t("type." + e.event_type),
                    "entity_id": e.entity_id,
                    "entity_version": e.entity_version,
                    "create_time": e.create_time,
                    "when": local_time(catalog, e.create_time),  # as the log below shows it
                    "json": pretty_json(e.payload),
                }
                text = json.dumps(data, ensure_ascii=False)
                yield f"id: {e.event_id}\nevent: lead-event\ndata: {text}\n\n".encode()
                last = e.event_id
            if not batch:
                await asyncio.sleep(LIVE_POLL_SECONDS)

    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)


def _box_time(catalog: Catalog, at: float) -> str:
    """A time as a `datetime-local` box holds it, in the tenant's timezone."""
    return local_time(catalog, at).replace(" ", "T")


def _as_box(catalog: Catalog, at: float | None, typed: str) -> str:
    """A filter's time for its box: as read (in the box's form), else as typed."""
    return typed if at is None else _box_time(catalog, at)


def _still_signed_in(page: Page) -> bool:
    """Tell whether the request's session is still the signed-in one it was, key still valid."""
    session = valid_session(page.request, page.container, page.signer)
    return session is not None and session.mid is not None and session.mid == page.session.mid


# ---- subscriptions ------------------------------------------------------------------------


def _event_types_of(values: list[str]) -> list[str]:
    # "All" with some types ticked too is all of them; none ticked is refused by the service
    # (422, the form kept as typed), as the API refuses an empty list: taking it as "all"
    # turned a subscription whose boxes were all cleared into one that receives everything.
    chosen = [v for v in values if v]
    return ["*"] if "*" in chosen else chosen


def _subscriptions_page(page: PageDep, status: int = 200, **extra: Any) -> Response:
    mid = signed_in(page)
    svc = page.container.console
    subs, charts = svc.subscriptions(mid)
    return page.render(
        "subscriptions.html",
        status=status,
        catalog=svc.catalog(mid),
        subs=subs,
        chart_json=page.render_json([asdict(c) for c in charts]),
        nav="subscriptions",
        **extra,
    )


@router.get("/subscriptions")
def subscriptions(page: PageDep, done: str | None = None, id: str | None = None) -> Response:
    """Every subscription with its last hour's health, a chart, and a form for a new one."""
    if done != "deleted":
        return _subscriptions_page(page)
    # Its deliveries that the delete ended are a link away (they stay, filtered by it).
    ended = None if not id else "/console/deliveries?" + urlencode({"subscription": id})
    return _subscriptions_page(page, done=done, ended=ended)


@router.post("/subscriptions", dependencies=[Csrf])
def create_subscription(
    page: PageDep,
    url: Text = "",
    description: Text = "",
    event_types: Annotated[list[str] | None, Form()] = None,
) -> Response:
    """Create a subscription; the page the browser is sent to shows the secret, this once."""
    mid = signed_in(page)
    fields = {"url": url.strip(), "event_types": _event_types_of(event_types or [])}
    if description.strip():
        fields["description"] = description.strip()
    try:
        created = page.container.subscriptions.create(mid, fields)
    except LeadhookError as exc:
        form = {"url": url, "description": description, "event_types": event_types or []}
        return _subscriptions_page(
            page, status=error_status(exc), error=page.explain(exc), form=form
        )
    url_of = f"/console/subscriptions/{created.id}?done=created"
    return page.redirect_revealing(url_of, created.id, created.secret, rotated=False)


def _subscription_page(page: Page, sub_id: str, status: int = 200, **extra: Any) -> Response:
    mid = signed_in(page)
    svc = page.container.console
    sub, health, chart = svc.subscription(mid, sub_id)
    catalog = svc.catalog(mid)
    hour_ago = _box_time(catalog, page.container.clock() - 3600)
    # A replay offers the dead ones first (Svix's "recover" resends failures only): a click
    # on the default does not send every delivered event of the hour again.
    replay = {"replay_since": hour_ago, "replay_status": "dead", "missing_since": hour_ago}
    replay.update({k: v for k, v in extra.items() if k in replay})  # a refused one, as typed
    extra = {k: v for k, v in extra.items() if k not in replay}
    return page.render(
        "subscription.html",
        status=status,
        catalog=catalog,
        **replay,
        sub=sub,
        health=health,
        chart_json=page.render_json([asdict(chart)]),
        replayable=REPLAY_STATUSES,
        max_in_flight_cap=MAX_IN_FLIGHT,
        # A rotation under way: the previous secret still signs (until it expires).
        rotating=(sub.previous_secret_expires_at or 0) > page.container.clock(),
        nav="subscriptions",
        canonical=_with_query(
            f"/console/subscriptions/{sub.id}", done=extra.get("done"), n=extra.get("replayed")
        ),
        **extra,
    )


def _with_query(path: str, **params: str | int | None) -> str:
    """`path` with the given parameters that have a value, as a page's canonical address.

    The address keeps what the page says of the form that led to it (`done=rotated`): a reload
    then shows that the secret was shown once, as it does without JavaScript, where the
    address was never rewritten."""
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return f"{path}?{query}" if query else path


@router.get("/subscriptions/{sub_id}")
def subscription(
    page: PageDep, sub_id: str, done: str | None = None, n: int | None = None
) -> Response:
    """One subscription: its health, chart, settings and actions (and a new secret, once)."""
    revealed = page.take_reveal(sub_id)
    secret, rotated = revealed if revealed is not None else (None, False)
    return _subscription_page(page, sub_id, done=done, replayed=n, secret=secret, rotated=rotated)


# What a number box takes: ASCII digits, a sign, a decimal point and an exponent, as the API's
# JSON does. Python's int() and float() also read "١٢" (Arabic-Indic digits), "1_000", " nan"
# and "infinity", which a form then stored as 12, 1000 or refused with a confusing message.
_INTEGER = re.compile(r"[+-]?\d+", re.ASCII)
_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)


def _optional_number(text: str | None, integer: bool) -> float | int | None:
    if text is None or not text.strip():
        return None
    plain = text.strip()
    if (_INTEGER if integer else _DECIMAL).fullmatch(plain):
        try:
            return int(plain) if integer else float(plain)
        except ValueError:  # an integer of over 4,300 digits
            pass
    return text  # type: ignore[return-value]  # the service refuses it with a clear message


@router.post("/subscriptions/{sub_id}", dependencies=[Csrf])
def edit_subscription(
    page: PageDep,
    sub_id: str,
    url: Text = "",
    description: Text = "",
    event_types: Annotated[list[str] | None, Form()] = None,
    max_in_flight: OptText = None,
    rate_limit_per_s: OptText = None,
) -> Response:
    """Change a subscription's settings (all or nothing)."""
    mid = signed_in(page)
    changes: dict[str, Any] = {
        "url": url.strip(),
        "description": description.strip(),
        "event_types": _event_types_of(event_types or []),
        "rate_limit_per_s": _optional_number(rate_limit_per_s, integer=False),
    }
    in_flight = _optional_number(max_in_flight, integer=True)
    if in_flight is not None:
        changes["max_in_flight"] = in_flight
    try:
        page.container.subscriptions.update(mid, sub_id, changes, via="the console")
    except LeadhookError as exc:
        if error_status(exc) == 404:
            raise
        typed = {
            "url": url,
            "description": description,
            "max_in_flight": max_in_flight or "",
            "rate_limit_per_s": rate_limit_per_s or "",
            "event_types": event_types or [],
        }
        return _subscription_page(
            page, sub_id, status=error_status(exc), error=page.explain(exc), form=typed
        )
    return page.redirect(f"/console/subscriptions/{sub_id}?done=saved")


@router.post("/subscriptions/{sub_id}/enable", dependencies=[Csrf])
def enable(page: PageDep, sub_id: str) -> Response:
    """Enable the subscription (its pending deliveries flow again)."""
    page.container.subscriptions.update(signed_in(page), sub_id, {"enabled": True})
    return page.redirect(f"/console/subscriptions/{sub_id}?done=saved")


@router.post("/subscriptions/{sub_id}/disable", dependencies=[Csrf])
def disable(page: PageDep, sub_id: str) -> Response:
    """Disable the subscription (nothing is sent to it until enabled)."""
    page.container.subscriptions.update(
        signed_in(page), sub_id, {"enabled": False}, via="the console"
    )
    return page.redirect(f"/console/subscriptions/{sub_id}?done=saved")


@router.post("/subscriptions/{sub_id}/rotate-secret", dependencies=[Csrf])
def rotate(page: PageDep, sub_id: str) -> Response:
    """Issue a new secret; the page the browser is sent to shows it, this once."""
    rotated = page.container.subscriptions.rotate_secret(signed_in(page), sub_id)
    url_of = f"/console/subscriptions/{sub_id}?done=rotated"
    return page.redirect_revealing(url_of, sub_id, rotated.secret, rotated=True)


@router.post("/subscriptions/{sub_id}/reveal-secret", dependencies=[Csrf])
def reveal(page: PageDep, sub_id: str) -> Response:
    """Show the current signing secret (what `GET /v1/subscriptions/{id}/secret` reads).

    A form, not a link: the page it leads to shows the secret once, from a sealed cookie, so
    the secret is in no address, no history entry and no page a reload brings back."""
    sub = page.container.subscriptions.get(signed_in(page), sub_id)
    url_of = f"/console/subscriptions/{sub_id}?done=revealed"
    return page.redirect_revealing(url_of, sub_id, sub.secret, rotated=False)


@router.post("/subscriptions/{sub_id}/delete", dependencies=[Csrf])
def delete(page: PageDep, sub_id: str) -> Response:
    """Delete the subscription, as `DELETE /v1/subscriptions/{id}`: its unfinished deliveries
    end as dead, and the list it returns to says so."""
    page.container.subscriptions.delete(signed_in(page), sub_id)
    return page.redirect("/console/subscriptions?" + urlencode({"done": "deleted", "id": sub_id}))


@router.post("/subscriptions/{sub_id}/test", dependencies=[Csrf])
async def send_test(request: Request, sub_id: str) -> Response:
    """Send a signed test event now and show how the endpoint answered."""
    page = await asyncio.to_thread(page_of, request)
    try:
        result = await page.container.subscriptions.send_test(signed_in(page), sub_id)
    except NotFoundError:
        if request.headers.get("hx-request") != "true":
            raise  # without JavaScript: the console's "not found" page
        # Deleted since the page was shown (another tab, the API): said where the test's
        # answer would have been, not as "the request failed: reload the page".
        gone = escape(page.t("test.gone"))
        return page.finish(
            HTMLResponse(
                '<div id="test-result" aria-live="polite"><p class="flash err"'
                f' data-testid="test-result">{gone}</p></div>'
            )
        )
    return await asyncio.to_thread(_subscription_page, page, sub_id, test=result)


def _replay_since(page: Page, mid: str, since: str) -> float:
    """A replay form's `since` box, in the tenant's timezone; an empty box is refused."""
    at = parse_local(page.container.console.catalog(mid), since, "since")
    if at is None:
        raise ValidationError.at(("since",), "choose the time from which to replay")
    return at


@router.post("/subscriptions/{sub_id}/replay", dependencies=[Csrf])
def replay(page: PageDep, sub_id: str, since: Text = "", status: Text = "") -> Response:
    """Queue again the finished deliveries created since a time (tenant's timezone)."""
    mid = signed_in(page)
    try:
        at = _replay_since(page, mid, since)
        replayed = page.container.subscriptions.replay(mid, sub_id, at, status or None)
    except LeadhookError as exc:
        if error_status(exc) == 404:
            raise
        return _subscription_page(
            page,
            sub_id,
            status=error_status(exc),
            error=page.explain(exc),
            replay_since=since,
            replay_status=status,
        )
    return page.redirect(f"/console/subscriptions/{sub_id}?done=replayed&n={replayed}")


@router.post("/subscriptions/{sub_id}/replay-missing", dependencies=[Csrf])
def replay_missing(page: PageDep, sub_id: str, since: Text = "") -> Response:
    """Queue the logged events since a time (tenant's timezone) it has no delivery of."""
    mid = signed_in(page)
    try:
        at = _replay_since(page, mid, since)
        queued, more = page.container.subscriptions.replay_missing(mid, sub_id, at)
    except LeadhookError as exc:
        if error_status(exc) == 404:
            raise
        return _subscription_page(
            page, sub_id, status=error_status(exc), error=page.explain(exc), missing_since=since
        )
    done = "missing_more" if more else "missing"
    return page.redirect(f"/console/subscriptions/{sub_id}?done={done}&n={queued}")


# ---- deliveries ---------------------------------------------------------------------------


@router.get("/deliveries")
def deliveries(
    page: PageDep,
    subscription: str = "",
    status: str = "",
    event_type: str = "",
    lead: str = "",
    since: str = "",
    until: str = "",
    before: str | None = None,
) -> Response:
    """Deliveries across subscriptions, newest first, filtered."""
    mid = signed_in(page)
    svc = page.container.console
    catalog = svc.catalog(mid)
    error, code = None, 200
    try:
        since_at = parse_local(catalog, since, "since")
        until_at = parse_local(catalog, until, "until")
        # The boxes are `datetime-local`: a time given as unix seconds or with an offset is
        # shown back in the tenant's timezone, as a box can hold it (else it came back empty
        # and the next Filter dropped it).
        since, until = _as_box(catalog, since_at, since), _as_box(catalog, until_at, until)
        if since_at is not None and until_at is not None and since_at >= until_at:
            raise ValidationError.at(("until",), "must be later than since")
        query = DeliveryQuery(
            subscription_id=subscription or None,
            status=status or None,
            event_type=event_type or None,
            entity_id=lead.strip() or None,
            since=since_at,
            until=until_at,
        )
        found, nxt = svc.deliveries(mid, query, before, PER_PAGE)
    except LeadhookError as exc:
        # A filter refused is shown above the filter form as typed, to be corrected there,
        # rather than on an error page with no way back to it.
        error, code, found, nxt = page.explain(exc), error_status(exc), [], None
    subs = svc.subscription_list(mid)
    live = {s.id: s.description or s.url for s in subs}
    # A deleted subscription's deliveries stay: named by what named it, not by a raw id.
    named = {d.subscription_id for d in found} | ({subscription} if subscription else set())
    deleted = svc.deleted_names(mid, named - set(live))
    return page.render(
        "deliveries.html",
        status=code,
        error=error,
        catalog=catalog,
        items=found,
        subs=subs,
        sub_names=live,
        deleted_names=deleted,
        f={
            "subscription": subscription,
            "status": status,
            "event_type": event_type,
            "lead": lead,
            "since": since,
            "until": until,
        },
        box_type={"since": _box_type(since), "until": _box_type(until)},
        next_before=nxt,
        nav="deliveries",
    )


_BOX_VALUE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2})?")


def _box_type(value: str) -> str:
    """The type of a time filter's box: `datetime-local` (a date picker) for a value it can
    hold, else a plain text box, which shows a refused value as it was typed (a
    `datetime-local` box shows nothing for it)."""
    return "datetime-local" if not value or _BOX_VALUE.fullmatch(value) else "text"


@router.get("/deliveries/{delivery_id}")
def delivery(page: PageDep, delivery_id: str, done: str | None = None) -> Response:
    """One delivery: what it sends, each attempt's headers, answer and latency."""
    return _delivery_page(page, delivery_id, done=done)


def _delivery_page(page: Page, delivery_id: str, status: int = 200, **extra: Any) -> Response:
    mid = signed_in(page)
    svc = page.container.console
    found, body, attempts = svc.delivery(mid, delivery_id)
    # A deleted subscription's deliveries cannot be sent again (the retry is refused, 409):
    # the page says so rather than offer a button that only fails.
    state = svc.subscription_state(mid, found.subscription_id)
    orphaned = state == "deleted"
    gone = svc.deleted_names(mid, {found.subscription_id}) if orphaned else {}
    if orphaned:
        # A refused retry's reason is the page's own notice, where its Retry button was: not
        # the service's words stacked on top of it.
        extra.pop("error", None)
    return page.render(
        "delivery.html",
        status=status,
        catalog=svc.catalog(mid),
        d=found,
        body=pretty_json(body),
        attempts=attempts,
        orphaned=orphaned,
        orphan_name=gone.get(found.subscription_id),
        sub_disabled=state == "disabled",
        nav="deliveries",
        canonical=_with_query(f"/console/deliveries/{found.id}", done=extra.get("done")),
        **extra,
    )


@router.post("/deliveries/{delivery_id}/retry", dependencies=[Csrf])
def retry(page: PageDep, delivery_id: str) -> Response:
    """Send the delivery again now, with a fresh retry schedule."""
    mid = signed_in(page)
    try:
        page.container.subscriptions.retry(mid, delivery_id)
    except LeadhookError as exc:
        if error_status(exc) == 404:
            raise
        return _delivery_page(page, delivery_id, status=error_status(exc), error=page.explain(exc))
    return page.redirect(f"/console/deliveries/{delivery_id}?done=retried")


# Included after the static files' mount (console/__init__.py), so it only catches what no
# page and no asset is: an unknown console address is the console's own "not found" page,
# in its language, not the API's problem+json.
unknown_pages = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)


def _methods_at(path: str) -> set[str]:
    """The methods the console's routes take at an address (none: no such address)."""
    routes = [r for r in router.routes if isinstance(r, APIRoute)]
    return {m for r in routes if r.path_regex.match(path) for m in r.methods or ()}


@unknown_pages.api_route("/{rest:path}", methods=["GET", "POST"])
def unknown_page(request: Request, rest: str) -> Response:
    """No such page of the console; 405 for an action opened as a page (a typed address) and
    for a page posted to."""
    path = f"/console/{rest}"
    methods = _methods_at(path)
    if methods and request.method not in methods:
        if methods == {"POST"}:
            detail = f"{path} is an action, not a page: use its button in the console"
        else:
            detail = f"{path} is a page: open it, nothing is posted to it"
        response = error_page(request, 405, "method_not_allowed", detail)
        response.headers["allow"] = ", ".join(
            sorted(methods | ({"HEAD"} if "GET" in methods else set()))
        )
        return response
    raise NotFoundError(f"the console has no page {path}")
