"""The web page: ``/`` serves a single-page app (plain HTML, ES modules and CSS from
services/web/).

No build step, no CDN: the files are package data (services/web/js/ the page's modules,
services/web/vendor/ the chart library) and every request the page makes goes back to this
API (a Content-Security-Policy of ``'self'`` makes sure of it). ``GET /v1/presets`` gives
the form its example specs.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from sqlalchemy.exc import SQLAlchemyError

from services import plugins
from services.api.security import AUTHENTICATED
from services.db.session import unit_of_work
from services.errors import NotFound
from services.settings import get_settings
from services.spec import LECTURE_SPEC, LECTURE_TUNED_SPEC, JobSpec, modern_spec

WEB_DIR = Path(__file__).resolve().parents[2] / "web"
_MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}


def _static_files(folder: Path) -> dict[str, Path]:
    """Every .js and .css file under ``folder`` by its path relative to it ("js/main.js").
    Made once at import: a request can only name a file of this list, so no path it sends
    (``..``, an absolute path, a symlink added later) reaches anything else."""
    return {
        path.relative_to(folder).as_posix(): path
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.suffix in _MEDIA_TYPES
    }


STATIC_FILES = _static_files(WEB_DIR)
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    # The files change with the installed version only; revalidate so an upgrade shows.
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


@router.get("/", operation_id="getWebPage")
def index() -> FileResponse:
    """The single-page app (hash routes: ``#/`` jobs, ``#/jobs/<id>`` one job, ``#/new`` the
    form, ``#/key`` the API key)."""
    return FileResponse(
        WEB_DIR / "index.html", media_type="text/html; charset=utf-8", headers=_HEADERS
    )


@router.get("/web/{name:path}", operation_id="getWebFile")
def static_file(name: str) -> FileResponse:
    """The page's scripts and style sheets: a .js or .css file under services/web/ (the list
    made at import; anything else is a 404)."""
    path = STATIC_FILES.get(name)
    if path is None:
        raise NotFound(f"no web file named '{name}' (the page serves only its .js and .css files)")
    return FileResponse(path, media_type=_MEDIA_TYPES[path.suffix], headers=_HEADERS)


# The presets are API data, typed in /openapi.json for generated clients, unlike the page's
# files above (``router`` keeps them out of the schema, and a route cannot opt back in): their
# own router, which services/api/app.py includes.
presets_router = APIRouter(tags=["jobs"])


@presets_router.get(
    "/v1/presets",
    operation_id="getPresets",
    response_model=dict[str, JobSpec],
    # Each spec as written (no defaults filled in): what the form shows and submits.
    response_model_exclude_unset=True,
    dependencies=AUTHENTICATED,
)
def presets() -> dict[str, JobSpec]:
    """Example job specs by name (the web form's preset buttons): ``lecture`` is the
    lecture's exercise, eight optimizers on digits; ``lecture-tuned`` the same as a tuning
    study (each learning rate searched, the best rerun on five fresh seeds); ``modern``
    AdamW and the installed packages' Schedule-Free AdamW, Lion, Prodigy and SOAP on
    MNIST-1D, tuned (those a live worker has)."""
    return {
        "lecture": JobSpec.model_validate(LECTURE_SPEC),
        "lecture-tuned": JobSpec.model_validate(LECTURE_TUNED_SPEC),
        "modern": JobSpec.model_validate(modern_spec(_live_plugin_names())),
    }


def _live_plugin_names() -> list[str]:
    """The plugin optimizers live workers can train (the modern preset keeps those); none
    while the database does not answer (the presets are examples: they answer anyway)."""
    try:
        with unit_of_work() as session:
            available = plugins.live_optimizers(session, get_settings().heartbeat_timeout)
    except SQLAlchemyError:
        return []
    return [name for name, described in available.items() if not described.get("refused")]
