"""Supabase Auth's token endpoint over real HTTP on 127.0.0.1, for the dashboard's sign-in.

Supabase cannot be reached from here, so this answers what the dashboard asks
of it exactly as Supabase Auth (GoTrue) does: `POST /auth/v1/token` with
`grant_type=password` ({email, password}) or `grant_type=refresh_token`
({refresh_token}), the project's anon key in `apikey`, CORS open to any origin;
a session is `{access_token, token_type, expires_in, expires_at,
refresh_token, user}`, a refusal `400 {code, error_code, msg}`. Its access
tokens are signed as the test nodes verify them (`tests.support.token`), with
this server's issuer. It also serves the project's JWKS, empty as a project
with the legacy HS256 secret serves it, so a node pointed here starts cleanly.
"""

import asyncio
import contextlib
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from backend.embedded import HOST, free_port
from tests.support import token

ANON_KEY = "test-anon-key-for-the-dashboard"


@dataclass
class Grant:
    """One call of the token endpoint, as the test inspects it."""

    grant_type: str
    apikey: str | None
    body: dict[str, Any]
    access_token: str | None  # what it was answered with; None: refused


@dataclass
class User:
    password: str
    role: str | None = None  # app_metadata.role: "admin", "staff" or none (a customer)
    id: str = field(default_factory=lambda: str(uuid.uuid4()))


class AuthServer:
    """`users` by email; `expires_in` is what each new session lasts; `grants` is every call."""

    def __init__(self, users: dict[str, User], expires_in: int = 3600) -> None:
        self.users = users
        self.expires_in = expires_in
        self.grants: list[Grant] = []  # every call, answered, oldest first
        self._refresh: dict[str, str] = {}  # live refresh token -> email
        self._granted = asyncio.Condition()
        self.port = free_port()
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """The project URL, what SUPABASE_URL holds."""
        return f"http://{HOST}:{self.port}"

    @property
    def issuer(self) -> str:
        return f"{self.url}/auth/v1"

    async def wait_for_grants(self, count: int, within: float = 10) -> None:
        async with self._granted:
            await asyncio.wait_for(
                self._granted.wait_for(lambda: len(self.grants) >= count), within
            )

    async def __aenter__(self) -> "AuthServer":
        app = Starlette(
            routes=[
                Route("/auth/v1/token", self._token, methods=["POST"]),
                Route("/auth/v1/.well-known/jwks.json", self._jwks, methods=["GET"]),
            ],
            middleware=[
                Middleware(
                    CORSMiddleware,
                    allow_origins=["*"],
                    allow_methods=["*"],
                    allow_headers=["*"],
                    max_age=0,
                )
            ],
        )
        config = uvicorn.Config(app, host=HOST, port=self.port, log_config=None, lifespan="off")
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _jwks(self, request: Request) -> JSONResponse:
        return JSONResponse({"keys": []})

    async def _token(self, request: Request) -> JSONResponse:
        grant_type = request.query_params.get("grant_type", "")
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return refusal(400, "bad_json", "Could not parse request body as JSON")
        apikey = request.headers.get("apikey")
        answer, access_token = self._answer(grant_type, apikey, body)
        async with self._granted:
            self.grants.append(Grant(grant_type, apikey, body, access_token))
            self._granted.notify_all()
        return answer

    def _answer(
        self, grant_type: str, apikey: str | None, body: dict[str, Any]
    ) -> tuple[JSONResponse, str | None]:
        if apikey != ANON_KEY:
            gateway = {
                "message": "Invalid API key",
                "hint": "Double check your Supabase `anon` key.",
            }
            return JSONResponse(gateway, status_code=401), None
        if grant_type == "password":
            return self._password(body)
        if grant_type == "refresh_token":
            return self._refreshed(body)
        return refusal(400, "validation_failed", "unsupported_grant_type"), None

    def _password(self, body: dict[str, Any]) -> tuple[JSONResponse, str | None]:
        email = str(body.get("email", ""))
        user = self.users.get(email)
        if user is None or not secrets.compare_digest(user.password, str(body.get("password"))):
            return refusal(400, "invalid_credentials", "Invalid login credentials"), None
        return self._session(email)

    def _refreshed(self, body: dict[str, Any]) -> tuple[JSONResponse, str | None]:
        email = self._refresh.pop(str(body.get("refresh_token", "")), None)
        if email is None:
            return refusal(400, "refresh_token_not_found", "Invalid Refresh Token: Not Found"), None
        return self._session(email)

    def _session(self, email: str) -> tuple[JSONResponse, str]:
        user = self.users[email]
        now = int(time.time())
        access = token(
            user.id,
            user.role,
            minutes=self.expires_in / 60,
            email=email,
            iss=self.issuer,
            session_id=str(uuid.uuid4()),
        )
        refresh = secrets.token_urlsafe(12)
        self._refresh[refresh] = email
        app_metadata = {"provider": "email", "providers": ["email"]}
        if user.role:
            app_metadata["role"] = user.role
        session = JSONResponse(
            {
                "access_token": access,
                "token_type": "bearer",
                "expires_in": self.expires_in,
                "expires_at": now + self.expires_in,
                "refresh_token": refresh,
                "user": {
                    "id": user.id,
                    "aud": "authenticated",
                    "role": "authenticated",
                    "email": email,
                    "app_metadata": app_metadata,
                    "user_metadata": {},
                },
            }
        )
        return session, access


def refusal(status: int, error_code: str, message: str) -> JSONResponse:
    return JSONResponse({"code": status, "error_code": error_code, "msg": message}, status)
