"""What every dashboard route shares: templates, sessions, the sign-in and CSRF checks.

- :meth:`Ui.session` (a dependency of every page) answers ``303 -> /ui/login``
  when there is no valid session cookie: a request without a session never
  reaches a route that reads data.
- :meth:`Ui.form` reads a POST's urlencoded form (at most :data:`MAX_FIELDS`
  fields; the body size is already bounded by the guard) and checks the CSRF
  token, the origin and the scope the action needs: 403 otherwise.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import jinja2
from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse

from scheduler import __version__
from scheduler.master.tokens import Tokens
from scheduler.master.ui import describe as describe_mod
from scheduler.master.ui import present
from scheduler.master.ui.overview import SpecCache
from scheduler.master.ui.sessions import COOKIE, Session, Sessions, csrf_ok, same_origin
from scheduler.store import JobStore

MAX_FIELDS = 20
LOGIN = "/ui/login"


class Ui:
    def __init__(
        self,
        store: JobStore,
        tokens: Tokens,
        *,
        max_spec_bytes: int,
        quota_bytes: int,
        sessions: Sessions | None = None,
    ) -> None:
        self.store = store
        self.tokens = tokens
        self.max_spec_bytes = max_spec_bytes
        self.quota_bytes = quota_bytes
        self.sessions = sessions or Sessions()
        self.cache = SpecCache()
        env = jinja2.Environment(
            loader=jinja2.PackageLoader("scheduler.master.ui", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        env.filters.update(
            when=present.when,
            ago=present.ago,
            seconds=present.seconds,
            size=present.size,
            status_class=present.status_class,
            describe=describe_mod.describe,
        )
        env.globals["version"] = __version__
        self.env = env

    # pages -----------------------------------------------------------------

    def render(
        self,
        request: Request,
        template: str,
        session: Session | None,
        *,
        status: int = 200,
        **context: Any,
    ) -> HTMLResponse:
        principal = session.principal if session is not None else None
        html = self.env.get_template(template).render(
            request=request,
            session=session,
            csrf=session.csrf if session is not None else "",
            can_operate=principal is not None and principal.can("operate"),
            can_admin=principal is not None and principal.can("admin"),
            now=datetime.now(UTC),
            **context,
        )
        response = HTMLResponse(html, status_code=status)
        response.headers["Cache-Control"] = "no-store"
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
            "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
        )
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        return response

    def not_found(self, request: Request, session: Session, what: str) -> HTMLResponse:
        return self.render(
            request, "error.html", session, status=404, title="Not found", message=what
        )

    # auth ------------------------------------------------------------------

    async def session(self, request: Request) -> Session:
        """The request's session; else a redirect to the sign-in page (a dependency)."""
        found = self.sessions.get(request.cookies.get(COOKIE))
        if found is None:
            raise HTTPException(303, "sign in first", headers={"Location": LOGIN})
        return found

    async def form(self, request: Request, session: Session, scope: str) -> dict[str, str]:
        """The POSTed fields, once the origin, CSRF token and ``scope`` are checked (403)."""
        fields = await read_form(request)
        if not same_origin(request):
            raise HTTPException(403, "cross-origin request refused")
        if not csrf_ok(session, fields.get("csrf")):
            raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")
        if not session.principal.can(scope):
            raise HTTPException(403, f"this token may not do that (needs the {scope} scope)")
        return fields


async def read_form(request: Request) -> dict[str, str]:
    """An urlencoded body as {field: first value}; 400 when it is not one."""
    body = await request.body()
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if body and kind != "application/x-www-form-urlencoded":
        raise HTTPException(415, "expected an application/x-www-form-urlencoded form")
    try:
        parsed = parse_qs(
            body.decode("utf-8"),
            keep_blank_values=True,
            max_num_fields=MAX_FIELDS,
            strict_parsing=False,
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise HTTPException(400, f"unreadable form: {exc}") from exc
    return {k: v[0] for k, v in parsed.items()}
