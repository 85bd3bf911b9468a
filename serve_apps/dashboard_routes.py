"""``GET /dashboard``: a single HTML page that charts ``system/metrics`` over time.

The page lives outside the API prefix, so it needs no key to load (the auth middleware only
guards ``/api/v0/optimization``); it asks the user for a key once (kept in the tab's
``sessionStorage``) and sends it with every poll of ``GET system/metrics``. No build step and no
external resources: the charts are SVG drawn by the page's own script. ``?interval=N`` polls every
N seconds (default 5).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(tags=["dashboard"])

#: The page only talks to this origin and runs only its own inline script and style.
CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@lru_cache(maxsize=1)
def _page() -> str:
    return (Path(__file__).with_name("dashboard.html")).read_text(encoding="utf-8")


@router.get("/dashboard", response_class=HTMLResponse, include_in_schema=False)
async def dashboard() -> HTMLResponse:
    """The dashboard page (open: it holds no data; the data needs a key)."""
    return HTMLResponse(
        _page(),
        headers={
            "Content-Security-Policy": CSP,
            "X-Frame-Options": "DENY",
            "Cache-Control": "no-cache",
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
        },
    )
