"""The pages a problem's ``type`` links to: ``GET /problems`` (every code) and
``GET /problems/{code}`` (one code: its status, what it means, what to do). HTML, read by
people; not part of the OpenAPI document, like ``/docs``."""

from __future__ import annotations

import html
import re

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from command_api.problems import PROBLEM_PAGES, NotFound
from command_api.reference.problem_types import ProblemType, catalog

router = APIRouter(prefix=PROBLEM_PAGES, include_in_schema=False)

_CODE_SPAN = re.compile(r"`([^`]+)`")
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem}}
code{{background:#f3f3f3;padding:0 .2em}}dt{{font-weight:600;margin-top:1rem}}</style></head>
<body>{body}<p><a href="{index}">Every problem code</a> · <a href="/docs">API reference</a></p></body></html>
"""


def _text(markdown: str) -> str:
    """Escaped text, with `code` spans."""
    return _CODE_SPAN.sub(r"<code>\1</code>", html.escape(markdown, quote=False))


def _entry(problem: ProblemType) -> str:
    return (
        f"<dt id='{problem.code}'><a href='{PROBLEM_PAGES}/{problem.code}'><code>{problem.code}</code></a>"
        f" · {problem.status} {html.escape(problem.title)}</dt>"
        f"<dd>{_text(problem.summary)}. {_text(problem.advice)}</dd>"
    )


@router.get("", response_class=HTMLResponse)
def problem_index() -> HTMLResponse:
    entries = "".join(_entry(p) for p in sorted(catalog().values(), key=lambda p: (p.status, p.code)))
    body = f"<h1>Problem codes</h1><p>Every error of the VTO API, by status.</p><dl>{entries}</dl>"
    return HTMLResponse(PAGE.format(title="VTO API problem codes", body=body, index=PROBLEM_PAGES))


@router.get("/{code}", response_class=HTMLResponse)
def problem_page(code: str) -> HTMLResponse:
    problem = catalog().get(code)
    if problem is None:
        raise NotFound("problem code")
    body = (
        f"<h1><code>{problem.code}</code></h1>"
        f"<p>HTTP {problem.status} {html.escape(problem.title)}</p>"
        f"<h2>What happened</h2><p>{_text(problem.summary)}.</p>"
        f"<h2>What to do</h2><p>{_text(problem.advice)}</p>"
    )
    return HTMLResponse(PAGE.format(title=f"{problem.code}: VTO API problem", body=body, index=PROBLEM_PAGES))
