"""The ``search`` job: Docker's ``GET /images/search`` (find images on a registry).

Searching asks Docker Hub's v1 index, which the Registry HTTP API v2 that registries speak has
no equivalent of: the job checks its params as dockerd does (a term is required, ``limit`` is
1-100, the filters are ``is-official``, ``is-automated`` and ``stars``) and then refuses with
``NotSupported``, so a client sees a clear 501 rather than an empty result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from engine import Engine, Job
from engine.errors import InvalidArgument, NotSupported
from jobs.prune import check_filters

FILTERS: Final = frozenset({"is-official", "is-automated", "stars"})


@dataclass(frozen=True, slots=True)
class SearchParams:
    term: str = field(default="", metadata={"doc": "what to search for"})
    limit: int = field(default=25, metadata={"doc": "at most this many results (1-100)"})
    filters: dict[str, list[str]] = field(
        default_factory=dict, metadata={"doc": "is-official, is-automated, stars"}
    )


async def search(job: Job[SearchParams]) -> None:
    """Search a registry for images (not supported: NotSupported after the checks)."""
    p = job.params
    if not p.term.strip():
        raise InvalidArgument("term: a search term is required")
    if not 1 <= p.limit <= 100:
        raise InvalidArgument(f"limit {p.limit} is outside the range of [1, 100]")
    check_filters(p.filters, FILTERS)
    raise NotSupported(
        f"search {p.term}: searching is not supported: the Registry HTTP API v2 has no search"
    )


def install(engine: Engine) -> None:
    """Register search."""
    engine.register("search", search, params=SearchParams)
