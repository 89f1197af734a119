"""The session-management guide's shop: a cart across app servers, on sessionquorum.web.asgi.

    SHOP_CLUSTER_DIR=./data uvicorn --factory examples.shop.app:from_environment --port 8001
    make shop     # a 3-node cluster and two app servers (examples/shop/__main__.py)

Server-rendered HTML, no JavaScript. Browse, add to the cart anonymously, log in (the cart
survives the login rotation), see and revoke your devices, check out, log out. Any number
of app servers may serve one shopper: the session lives in the store, not in the process.
The demo's login takes any name (there are no passwords here: the point is the session).
Forms are plain POSTs; the SameSite=Lax cookie is not sent on cross-site POSTs.
"""

from __future__ import annotations

import contextlib
import html
import os
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from sessionquorum.client import AsyncSessionClient, TLSConfig
from sessionquorum.cluster import ClusterView
from sessionquorum.web import SessionOptions, last_writer_wins
from sessionquorum.web.asgi import SessionMiddleware, end_session, login, logout, my_sessions

PRODUCTS = {"tea": ("Green tea", 4), "mug": ("Blue mug", 9), "cake": ("Lemon cake", 6)}
SEE_OTHER = 303


def page(request: Request, title: str, body: str) -> HTMLResponse:
    user = request.session.principal  # type: ignore[attr-defined]
    cart = len(request.session.get("cart", []))
    who = (
        f"signed in as <b>{html.escape(user)}</b> · <a href='/devices'>your devices</a> · "
        "<form method='post' action='/logout' style='display:inline'><button>log out</button></form>"
        if user
        else "<a href='/login'>log in</a>"
    )
    return HTMLResponse(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
        f"<body><header><a href='/'>Shop</a> · <a href='/cart'>cart ({cart})</a> · {who}"
        f" · <small>served by {html.escape(request.app.state.name)}</small></header>"
        f"<h1>{html.escape(title)}</h1>{body}</body></html>"
    )


async def form(request: Request) -> dict[str, str]:
    # Parsed by hand: starlette's request.form() needs python-multipart, even for urlencoded.
    fields = parse_qs((await request.body()).decode("utf-8"))
    return {name: values[0] for name, values in fields.items()}


async def home(request: Request) -> Response:
    items = "".join(
        f"<li>{html.escape(name)} ({price} €) <form method='post' action='/cart/add' style='display:inline'>"
        f"<input type='hidden' name='product' value='{key}'>"
        f"<button id='add-{key}'>add to cart</button></form></li>"
        for key, (name, price) in PRODUCTS.items()
    )
    return page(request, "Products", f"<ul>{items}</ul>")


async def add(request: Request) -> Response:
    product = (await form(request)).get("product", "")
    if product in PRODUCTS:
        request.session["cart"] = [*request.session.get("cart", []), product]
    return RedirectResponse("/", SEE_OTHER)


async def cart(request: Request) -> Response:
    items = request.session.get("cart", [])
    total = sum(PRODUCTS[p][1] for p in items)
    lines = "".join(f"<li>{html.escape(PRODUCTS[p][0])}</li>" for p in items)
    checkout = "<form method='post' action='/checkout'><button id='checkout'>check out</button></form>"
    return page(
        request, "Your cart", f"<ul id='cart'>{lines}</ul><p>Total: {total} €</p>{checkout if items else ''}"
    )


async def checkout(request: Request) -> Response:
    items = request.session.pop("cart", [])
    if not request.session.principal:  # type: ignore[attr-defined]
        request.session["cart"] = items
        return RedirectResponse("/login", SEE_OTHER)
    request.session["orders"] = request.session.get("orders", 0) + 1
    return page(request, "Thank you", f"<p id='done'>Order of {len(items)} item(s) placed.</p>")


async def login_page(request: Request) -> Response:
    if request.method == "POST":
        name = (await form(request)).get("name", "").strip()
        if name:
            await login(request, name)  # new token, bound to the name; the cart stays
            return RedirectResponse("/cart", SEE_OTHER)
    body = (
        "<form method='post'><input name='name' placeholder='your name'>"
        "<button id='login'>log in</button></form>"
    )
    return page(request, "Log in", body)


async def devices(request: Request) -> Response:
    if request.method == "POST":
        await end_session(request, (await form(request)).get("handle", ""))
        return RedirectResponse("/devices", SEE_OTHER)
    rows = "".join(
        f"<li>{'this device' if s.handle == request.session.handle else 'another device'}, "  # type: ignore[attr-defined]
        f"since {s.created_ms}, last seen {s.last_access_ms}"
        f"<form method='post' style='display:inline'><input type='hidden' name='handle' value='{s.handle}'>"
        f"<button class='revoke'>revoke</button></form></li>"
        for s in await my_sessions(request)
    )
    return page(request, "Your devices", f"<ul id='devices'>{rows}</ul>")


async def sign_out(request: Request) -> Response:
    await logout(request)
    return page(request, "Logged out", "<p id='bye'>You are logged out.</p>")


def create_app(
    client: AsyncSessionClient, *, name: str = "app", options: SessionOptions | None = None
) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await client.close()

    # Two tabs adding to one cart at once: the cart is written whole, the later write wins
    # rather than failing the request (a shop could merge with a union instead).
    options = options or SessionOptions(merge=last_writer_wins)
    app = Starlette(
        routes=[
            Route("/", home),
            Route("/cart", cart),
            Route("/cart/add", add, methods=["POST"]),
            Route("/checkout", checkout, methods=["POST"]),
            Route("/login", login_page, methods=["GET", "POST"]),
            Route("/devices", devices, methods=["GET", "POST"]),
            Route("/logout", sign_out, methods=["POST"]),
        ],
        middleware=[Middleware(SessionMiddleware, client=client, options=options)],
        lifespan=lifespan,
    )
    app.state.name = name
    return app


def from_environment() -> Starlette:
    """The app for uvicorn --factory: the cluster of SHOP_CLUSTER_DIR (made by `sessionquorum init`)."""
    view = ClusterView(Path(os.environ["SHOP_CLUSTER_DIR"]))
    files = view.tls_files
    client = AsyncSessionClient(
        list(view.endpoints), tls=TLSConfig.from_files(files.ca, files.cert, files.key)
    )
    return create_app(client, name=os.environ.get("SHOP_NAME", "app"))
