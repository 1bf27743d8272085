"""The Costs pages the Airflow UI shows in a frame: the overview at /cost/ (its period and filters in
the query string, so a view can be shared) and a task try's lines at /cost/task-instance (the
"Cost" tab of a task instance). Plain HTML and a small JS module reading the JSON API; the charts
are plotly.js, served from the `plotly` package this provider depends on, never from a CDN."""

from __future__ import annotations

import html
from pathlib import Path
from string import Template

from fastapi import HTTPException, Request, status
from fastapi.responses import FileResponse, HTMLResponse

from airflow_cost_provider.api.access import SignedIn
from airflow_cost_provider.version import __version__

STATIC = Path(__file__).with_name("static")
# plotly.js's URL carries its version: kept a year; the pages' own files change with the provider
LIBRARY_CACHE = {"Cache-Control": "public, max-age=31536000, immutable"}
OWN_CACHE = {"Cache-Control": "private, max-age=300"}


def _plotly_js() -> Path:
    import plotly

    return Path(plotly.__file__).with_name("package_data") / "plotly.min.js"


def _plotly_version() -> str:
    import plotly

    return plotly.__version__


def _render(name: str, request: Request) -> HTMLResponse:
    # links under the prefix the app is mounted at (/cost, after Airflow's own base path if any)
    base = html.escape(request.scope.get("root_path", "").rstrip("/"))
    page = Template((STATIC / name).read_text(encoding="utf-8")).substitute(
        base=base,
        version=html.escape(__version__),
        plotly_version=html.escape(_plotly_version()),
    )
    return HTMLResponse(page, headers={"Cache-Control": "no-store"})


def costs_page(request: Request, _: SignedIn) -> HTMLResponse:
    return _render("costs.html", request)


def task_instance_page(request: Request, _: SignedIn) -> HTMLResponse:
    return _render("task_instance.html", request)


def dag_run_page(request: Request, _: SignedIn) -> HTMLResponse:
    return _render("dag_run.html", request)


def plotly_js(_: SignedIn) -> FileResponse:
    return FileResponse(_plotly_js(), media_type="text/javascript", headers=LIBRARY_CACHE)


def static_file(name: str, _: SignedIn) -> FileResponse:
    """The pages' own scripts and style sheet (only the files in static/, by their plain name)."""
    media = {".js": "text/javascript", ".css": "text/css"}
    path = STATIC / name
    if "/" in name or path.suffix not in media or not path.is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no static file {name!r}")
    return FileResponse(path, media_type=media[path.suffix], headers=OWN_CACHE)
