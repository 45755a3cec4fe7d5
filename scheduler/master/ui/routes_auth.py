"""Sign-in, sign-out and the dashboard's static files."""

from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import RedirectResponse

from scheduler.master.principal import client_address
from scheduler.master.ui.core import Ui, read_form
from scheduler.master.ui.sessions import COOKIE, Session, clear_cookie, same_origin, set_cookie

STATIC = {"ui.css": "text/css; charset=utf-8", "ui.js": "text/javascript; charset=utf-8"}
MAX_TOKEN_BYTES = 4096


def _static(name: str) -> bytes:
    return resources.files("scheduler.master.ui").joinpath("static", name).read_bytes()


def add_auth_routes(router: APIRouter, ui: Ui) -> None:
    files = {name: _static(name) for name in STATIC}

    @router.get("/ui", include_in_schema=False)
    @router.get("/ui/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/ui/jobs", status_code=303)

    @router.get("/ui/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        if name not in files:
            raise HTTPException(404, "no such file")
        return Response(
            files[name], media_type=STATIC[name], headers={"Cache-Control": "max-age=3600"}
        )

    @router.get("/ui/login", include_in_schema=False)
    async def login_page(request: Request) -> Response:
        return ui.render(request, "login.html", None, title="Sign in", error="")

    @router.post("/ui/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        fields = await read_form(request)
        token = fields.get("token", "").strip().encode()
        principal = None
        if same_origin(request) and 0 < len(token) <= MAX_TOKEN_BYTES:
            principal = ui.tokens.check(token, client_address(request))
        if principal is None:
            error = "That token is not valid for this master."
            return ui.render(request, "login.html", None, status=401, title="Sign in", error=error)
        ui.sessions.drop(request.cookies.get(COOKIE))
        session = ui.sessions.create(principal)
        response = RedirectResponse("/ui/jobs", status_code=303)
        set_cookie(response, request, session, ui.sessions.ttl)
        return response

    @router.post("/ui/logout", include_in_schema=False)
    async def logout(
        request: Request, session: Annotated[Session, Depends(ui.session)]
    ) -> Response:
        await ui.form(request, session, "read")
        ui.sessions.drop(session.id)
        response = RedirectResponse("/ui/login", status_code=303)
        clear_cookie(response, request)
        return response
