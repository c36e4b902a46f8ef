"""What every console page needs: the request's session and language, rendering, errors.

Pages are rendered on the server with Jinja2; htmx (served from the package) only makes some
of them quicker (search as you type, the test send's answer in place). Every form works
without JavaScript, and every POST must carry the session's CSRF token.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode, urlsplit
from zoneinfo import ZoneInfo

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.responses import HTMLResponse, RedirectResponse, Response

from leadhook import __version__
from leadhook.api.console import i18n
from leadhook.api.console.session import (
    COOKIE,
    LANG_COOKIE,
    MAX_AGE,
    REVEAL_COOKIE,
    REVEAL_SECONDS,
    Session,
    SessionSigner,
)
from leadhook.api.deps import address_problem
from leadhook.api.limits import TokenBuckets, rate_detail, retry_after
from leadhook.api.problems import problem_kind
from leadhook.bootstrap import Container
from leadhook.domain.catalog import Catalog
from leadhook.domain.errors import LeadhookError, ValidationError
from leadhook.domain.events import EVENT_TYPES
from leadhook.services.console import Principal, local_time

# Scripts and styles from this server only; htmx's own indicator styles are turned off in
# the page's htmx-config so that it needs no inline style element.
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; "
        "base-uri 'none'; form-action 'self'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}

_env = Environment(
    loader=PackageLoader("leadhook.api.console", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


class SignInRequired(Exception):
    """The page needs a signed-in tenant; the browser is sent to the sign-in form."""


class CsrfRefused(LeadhookError):
    """A form posted without this session's CSRF token (answered 403)."""


def error_status(exc: LeadhookError) -> int:
    """The HTTP status a console page answers a domain error with: the API's, 403 for CSRF."""
    return 403 if isinstance(exc, CsrfRefused) else problem_kind(exc).status


def _fmt_number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _fmt_pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


_env.filters["num"] = _fmt_number
# A latency with its unit, or a dash alone when there is none ("- ms" read as a value).
_env.filters["ms"] = lambda value: "-" if value is None else f"{_fmt_number(value)} ms"
# A delivery's `last_error` ends with when its next attempt was due, counted from the failure
# ("HTTP 500; retry 3 in 491.17s"): read hours later it seemed to say "from now". The pages
# show the cause, and the next attempt's time apart (`next_attempt_at`).
_RELATIVE_WAIT = re.compile(
    r"; (?:retry \d+ in [\d.]+s(?:, the schedule's)?|Retry-After [\d.]+s"
    r"|Retry-After asked for no wait: retry \d+ in [\d.]+s, the schedule's)$"
)
_env.filters["cause"] = lambda text: _RELATIVE_WAIT.sub("", text or "")
_env.filters["pct"] = _fmt_pct


@dataclass
class Page:
    """The state of one console request: container, session, language, tenant."""

    request: Request
    container: Container
    signer: SessionSigner
    session: Session
    lang: str
    fresh: bool = False  # the session is new or changed: send its cookie
    vars: dict[str, Any] = field(default_factory=dict)
    # The reveal cookie to send (a sealed new secret), or "" to clear the one that came, and
    # the subscription page it is for (its path: each subscription's page has its own).
    reveal_cookie: str | None = None
    reveal_path: str = "/console"

    @property
    def t(self) -> Callable[[str], str]:
        """The translator of this request's language."""
        return i18n.translator(self.lang)

    @property
    def mid(self) -> str:
        """The signed-in tenant (the page required one)."""
        assert self.session.mid is not None
        return self.session.mid

    def explain(self, exc: LeadhookError) -> str:
        """`exc` as this page shows it: its field by the form's label, in the page's language."""
        return i18n.explain(exc, self.lang)

    def replace_session(self, session: Session) -> None:
        """Use a new session from now on (sign-in, sign-out) and send its cookie."""
        self.session = session
        self.fresh = True

    def render(self, template: str, status: int = 200, **context: Any) -> Response:
        """Render a template with what every page shows (navigation, language, CSRF)."""
        catalog: Catalog | None = context.get("catalog")
        html = _env.get_template(template).render(
            t=self.t,
            lang=self.lang,
            csrf=self.session.csrf,
            mid=self.session.mid,
            path=self.request.url.path,
            here=_page_address(self.request),
            version=__version__,
            event_types=EVENT_TYPES,
            when=lambda at: _when(catalog, at),
            query=lambda **kw: _query(self.request, **kw),
            msg=lambda text: i18n.message(text, self.lang),  # a stored reason, in Chinese too
            **context,
        )
        return self.finish(HTMLResponse(html, status_code=status))

    def redirect(self, url: str) -> Response:
        """Answer 303 See Other to `url` (after a POST, so a reload does not repeat it)."""
        return self.finish(RedirectResponse(url, status_code=303))

    def redirect_revealing(self, url: str, sub_id: str, secret: str, rotated: bool) -> Response:
        """Redirect after a form that issued a secret; the page at `url` shows it, once.

        The secret goes along sealed in a short-lived cookie rather than in the page that
        answers the POST: reloading that page sent the form again (a second subscription, a
        second rotation). The subscription's page opens the cookie and clears it.
        """
        now = self.container.clock()
        self.reveal_cookie = self.signer.seal_reveal(self.session, sub_id, secret, rotated, now)
        self.reveal_path = reveal_path(sub_id)
        return self.redirect(url)

    def take_reveal(self, sub_id: str) -> tuple[str, bool] | None:
        """The secret a form just issued for this subscription, once: the cookie is cleared.

        The cookie's path is this subscription's page: another subscription's page (another
        tab) neither receives nor clears it.
        """
        value = self.request.cookies.get(REVEAL_COOKIE)
        if value is None:
            return None
        self.reveal_cookie, self.reveal_path = "", reveal_path(sub_id)
        return self.signer.open_reveal(value, self.session, sub_id, self.container.clock())

    def finish(self, response: Response) -> Response:
        """Add the security headers and, when it changed, the session cookie."""
        response.headers.update(SECURITY_HEADERS)
        if self.reveal_cookie is not None:
            response.set_cookie(
                REVEAL_COOKIE,
                self.reveal_cookie,
                max_age=REVEAL_SECONDS if self.reveal_cookie else 0,
                path=self.reveal_path,
                httponly=True,
                samesite="strict",
                secure=self.request.url.scheme == "https",
            )
        if self.fresh:
            response.set_cookie(
                COOKIE,
                self.signer.dumps(self.session),
                max_age=MAX_AGE,
                path="/console",
                httponly=True,
                samesite="strict",
                secure=self.request.url.scheme == "https",
            )
        return response

    @staticmethod
    def render_json(value: Any) -> str:
        """Serialise data for a page's script (read from a `type=application/json` element)."""
        # Inside a <script type="application/json"> element the HTML parser still reads the
        # text for `</script>` and `<!--` (a subscription described `<!--<script>` hid the
        # rest of its page): none of <, > or & is left for it to find. JSON reads the escapes
        # back as the same characters.
        text = json.dumps(value, ensure_ascii=False)
        return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def reveal_path(sub_id: str) -> str:
    """The path of a subscription's reveal cookie: its page (and nothing else's)."""
    return f"/console/subscriptions/{quote(sub_id, safe='')}"


def _here(request: Request) -> str:
    path = request.url.path
    return path + ("?" + request.url.query if request.url.query else "")


def _page_address(request: Request) -> str:
    """The address of the page the user is on: the request's own for a GET; for a form's POST
    (answered with a page, or refused), the page it was sent from (htmx's `HX-Current-URL`,
    else the same-origin `Referer`), so that a language switch or a sign-in goes back to a
    page, not to an action only POST may reach (a 405)."""
    if request.method in ("GET", "HEAD"):
        return _here(request)
    for header in ("hx-current-url", "referer"):
        parts = urlsplit(request.headers.get(header, ""))
        if parts.netloc == request.url.netloc and parts.path.startswith("/console/"):
            return parts.path + ("?" + parts.query if parts.query else "")
    return "/console/leads"


def _query(request: Request, **changes: Any) -> str:
    """The current query string with some parameters changed (None removes one)."""
    params = dict(request.query_params)
    for key, value in changes.items():
        if value is None or value == "":
            params.pop(key, None)
        else:
            params[key] = str(value)
    return "?" + urlencode(params) if params else "?"


def _when(catalog: Catalog | None, at: float | None) -> str:
    if at is None:
        return "-"
    if catalog is not None:
        return local_time(catalog, at)
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def parse_local(catalog: Catalog, text: str | None, field: str = "") -> float | None:
    """Read a `datetime-local` input (or unix seconds) as a time in the tenant's timezone; a
    refusal names its box by `field` (its label: the filter's Since and Until both refuse)."""

    def refused(message: str) -> ValidationError:
        return ValidationError.at((field,), message) if field else ValidationError(message)

    if text is None or not text.strip():
        return None
    text = text.strip()
    try:
        # Unix seconds in ASCII digits only: "١٧٠٠٠٠٠٠٠٠" (Arabic-Indic) is a digit string
        # to str.isdigit() and float() reads it.
        seconds = text.replace(".", "", 1)
        at = float(text) if seconds.isascii() and seconds.isdigit() else _from_local(catalog, text)
    except ValueError:
        raise refused(f"{_echo(text)} is not a time (YYYY-MM-DDTHH:MM)") from None
    if not 0 <= at <= _LAST_SECOND or _past_9999_locally(catalog, at):
        # Shown back in its box as a date in the tenant's timezone, which ends in 9999: the
        # last UTC second of 9999 is already the year 10000 east of UTC.
        raise refused(f"{_echo(text)} is not a time between 1970 and 9999")
    return at


def _echo(text: str, most: int = 60) -> str:
    """What a refusal says of a refused time box: its text (repr), cut to `most` characters:
    the whole of a 1 MiB box was echoed (and read by every message pattern)."""
    return repr(text if len(text) <= most else text[:most] + "…")


def _past_9999_locally(catalog: Catalog, at: float) -> bool:
    try:
        local_time(catalog, at)  # as the box shows it back
    except OverflowError:
        return True
    return False


_LAST_SECOND = 253_402_300_799  # 9999-12-31T23:59:59Z


def _from_local(catalog: Catalog, text: str) -> float:
    naive = datetime.fromisoformat(text)
    if naive.tzinfo is not None:
        return naive.timestamp()
    return naive.replace(tzinfo=ZoneInfo(catalog.timezone)).timestamp()


def valid_session(request: Request, container: Container, signer: SessionSigner) -> Session | None:
    """The request's session, or None if its cookie is not valid or its key was revoked."""
    session = signer.loads(request.cookies.get(COOKIE), container.clock())
    if session is None or session.mid is None or session.key_id is None:
        return session  # none, or anonymous: no key to check
    valid = container.console.still_valid(Principal(session.mid, session.key_id))
    return session if valid else None


def page_of(request: Request) -> Page:
    """Build the request's Page: its session (a new one if none is valid) and language."""
    container: Container = request.app.state.container
    signer: SessionSigner = request.app.state.console_signer
    session = valid_session(request, container, signer)
    fresh = session is None
    if session is None:
        session = Session.new(container.clock())
    lang = i18n.pick(request.headers.get("accept-language"), request.cookies.get(LANG_COOKIE))
    return Page(request, container, signer, session, lang, fresh)


def signed_in(page: Page) -> str:
    """Return the signed-in tenant, or send the browser to sign in."""
    if page.session.mid is None:
        raise SignInRequired
    return page.session.mid


def safe_next(value: str | None) -> str:
    """A redirect target inside the console only: never another site, nor an API address
    reached through `/consolex` or a `..` segment."""
    if value and (value == "/console" or value.startswith("/console/")):
        path = urlsplit(value).path
        if "\\" not in value and ".." not in path.split("/") and "%2e" not in path.lower():
            return value
    return "/console/leads"


def error_page(
    request: Request, status: int, title_key: str, detail: str | LeadhookError
) -> Response:
    """Render an error as a page of the console, in its language (`i18n.explain`)."""
    page = page_of(request)
    text = (
        page.explain(detail)
        if isinstance(detail, LeadhookError)
        else i18n.message(detail, page.lang)
    )
    return page.render("error.html", status=status, title_key=title_key, detail=text)


_TITLES = {400: "bad_request", 403: "forbidden", 404: "not_found", 422: "bad_request"}


def _over_rate(request: Request) -> Response | None:
    """The page refusing a signed-in session over its key's request rate (429), or None.

    The API limits each key (`LEADHOOK_RATE_LIMIT`, api/limits.py) by its bearer token; the
    console's requests carry a session instead, and went unlimited: a signed-in browser (or a
    script holding its cookie) could create subscriptions, send test events to any public
    address, replay, and open live views without bound. A session counts against a budget
    of its own key's, the same size as the API's."""
    buckets: TokenBuckets | None = getattr(request.app.state, "rate_buckets", None)
    if buckets is None:
        return None
    signer: SessionSigner = request.app.state.console_signer
    session = signer.loads(request.cookies.get(COOKIE), request.app.state.container.clock())
    if session is None or session.key_id is None:
        return None  # anonymous: the sign-in page and its form
    wait = buckets.take(b"console\x00" + session.key_id.encode())
    if wait <= 0:
        return None
    response = error_page(request, 429, "too_many_requests", rate_detail(buckets))
    response.headers["Retry-After"] = retry_after(wait)
    return response


async def _unstorable(request: Request) -> tuple[int, str] | None:
    """What the API's `storable_input` refuses, refused here too: a NUL in the path or query,
    or a query that is not UTF-8 (400), a NUL in a form's text (422). No id or text holds a
    NUL, PostgreSQL refuses it in any text parameter (the console's pages answered 500
    there), and SQLite would store it."""
    problem = address_problem(request)
    if problem is not None:
        return 400, problem
    if request.method == "POST":
        form = await request.form()
        if any(isinstance(v, str) and "\x00" in k + v for k, v in form.multi_items()):
            return 422, "a field of this form holds a NUL character: remove it and try again"
    return None


class ConsoleRoute(APIRoute):
    """Console routes answer errors with pages (not problem+json) and send strangers to sign in."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            refused = await _unstorable(request)
            if refused is not None:
                return error_page(request, refused[0], "bad_request", refused[1])
            over = _over_rate(request)
            if over is not None:
                return over
            try:
                return await handler(request)
            except SignInRequired:
                target = "/console/login?" + urlencode({"next": _page_address(request)})
                if request.headers.get("hx-request") == "true":
                    # htmx would follow a redirect and swap the sign-in page's fragment into
                    # the page (a search's results emptied, a test's result unchanged): it is
                    # told to load the sign-in form itself instead.
                    response = Response(status_code=200, headers={"hx-redirect": target})
                else:
                    response = RedirectResponse(target, status_code=303)
                response.headers.update(SECURITY_HEADERS)
                return response
            except LeadhookError as exc:
                status = error_status(exc)
                return error_page(request, status, _TITLES.get(status, "bad_request"), exc)
            except RequestValidationError as exc:
                # A form's field by its label ("Since", "Page"), not the API's location of it
                # ("body.since", "query.p"), and Pydantic's words in the page's language.
                lang = page_of(request).lang
                t, colon = i18n.translator(lang), "：" if lang == "zh" else ": "
                detail = "; ".join(
                    i18n.field_label(tuple(e["loc"]), t) + colon + i18n.message(e["msg"], lang)
                    for e in exc.errors()
                )
                return error_page(request, 400, "bad_request", detail)

        return route
