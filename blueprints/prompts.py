"""GET /api/prompts/{name}.wav: the prompts the app ships, for Graph to fetch and play.

Anonymous (Graph sends no function key when it fetches media) and cacheable: the files change
only with a deployment. Only the shipped names are served; anything else is a 404 problem.
"""

from __future__ import annotations

import hashlib
import logging

import azure.functions as func

from shared.logevents import log_event
from shared.problems import not_found
from shared.prompts import SHIPPED, WAV_MEDIA_TYPE, shipped_prompt

bp = func.Blueprint()
log = logging.getLogger(__name__)

CACHE_CONTROL = "public, max-age=86400"


@bp.route(route="prompts/{name}.wav", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def prompt(req: func.HttpRequest) -> func.HttpResponse:
    name = req.route_params.get("name") or ""
    data = shipped_prompt(name)
    if data is None:
        log_event(log, "prompt: unknown name", name=name)
        return not_found(
            f"no prompt {name[:60]!r}; the app ships {', '.join(sorted(SHIPPED))}",
            "Prompt not found",
        ).to_response()
    etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
    headers = {"Cache-Control": CACHE_CONTROL, "ETag": etag}
    if req.headers.get("If-None-Match") == etag:
        return func.HttpResponse(status_code=304, headers=headers)
    log_event(log, "prompt", name=name, size_bytes=len(data))
    return func.HttpResponse(data, status_code=200, mimetype=WAV_MEDIA_TYPE, headers=headers)
