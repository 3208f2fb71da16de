"""NameGraph on a real SQLite file: Docker's graphdb cases plus the defects it had."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from engine.errors import AlreadyExists, InvalidArgument, NotFound
from graph.db import GraphDB
from graph.names import ALL, MAX_DEPTH, ROOT, NameGraph

Snapshot = tuple[list[str], list[str]]


@pytest.fixture
def db(tmp_path: Path) -> Iterator[GraphDB]:
    graph = GraphDB(tmp_path / "graph.db")
    yield graph
    graph.close()


@pytest.fixture
def names(db: GraphDB) -> NameGraph:
    return NameGraph(db)


def snapshot(db: GraphDB) -> Snapshot:
    """Every entity and edge row, to prove a failed mutation wrote nothing."""
    entities = [str(r["id"]) for r in db.query("SELECT id FROM entity ORDER BY id")]
    edges = [
        f"{r['parent_id']}|{r['name']}|{r['entity_id']}"
        for r in db.query("SELECT parent_id, name, entity_id FROM edge ORDER BY parent_id, name")
    ]
    return entities, edges


def entity_ids(db: GraphDB) -> set[str]:
    return {str(r["id"]) for r in db.query("SELECT id FROM entity")}


def test_root_is_entity_zero(names: NameGraph) -> None:
    assert names.get("/") == ROOT
    assert names.exists("/")
    assert names.refs(ROOT) == 1
    assert names.ref_paths(ROOT) == ["/"]
    assert names.list("/") == {}


def test_set_and_get(names: NameGraph) -> None:
    names.set("/webapp", "1")
    assert names.get("/webapp") == "1"
    assert names.get("webapp") == "1"  # leading "/" optional
    assert names.get("/webapp/") == "1"  # one trailing "/" ignored
    assert names.exists("/webapp")
    assert names.children("/") == [("/webapp", "1")]


def test_get_missing_raises_not_found(names: NameGraph) -> None:
    with pytest.raises(NotFound, match="/nope"):
        names.get("/nope")
    assert not names.exists("/nope")
    assert not names.exists("/nope/deeper")


def test_duplicate_name_is_already_exists_and_writes_nothing(names: NameGraph, db: GraphDB) -> None:
    names.set("/webapp", "1")
    before = snapshot(db)
    with pytest.raises(AlreadyExists, match="/webapp"):
        names.set("/webapp", "2")
    assert snapshot(db) == before
    assert "2" not in entity_ids(db), "the entity row of the failed set was rolled back"
    assert names.get("/webapp") == "1"


def test_set_needs_the_parent(names: NameGraph, db: GraphDB) -> None:
    before = snapshot(db)
    with pytest.raises(NotFound, match="/webapp"):
        names.set("/webapp/db", "2")
    assert snapshot(db) == before


def test_set_refuses_root_and_self_links(names: NameGraph, db: GraphDB) -> None:
    names.set("/webapp", "1")
    before = snapshot(db)
    with pytest.raises(InvalidArgument):
        names.set("/", "2")
    with pytest.raises(InvalidArgument):
        names.set("/zero", ROOT)
    with pytest.raises(InvalidArgument, match="under itself"):
        names.set("/webapp/me", "1")
    assert snapshot(db) == before


def test_link_one_entity_under_two_names(names: NameGraph) -> None:
    names.set("/webapp", "1")
    names.set("/db", "2")
    names.set("/webapp/db", "2")
    assert names.get("/webapp/db") == "2"
    assert names.refs("2") == 2
    assert names.ref_paths("2") == ["/db", "/webapp/db"]
    assert names.refs("1") == 1
    assert names.refs("unknown") == 0
    assert names.ref_paths("unknown") == []


def test_ref_paths_follow_every_name_of_the_parent(names: NameGraph) -> None:
    names.set("/webapp", "1")
    names.set("/frontend", "1")
    names.set("/db", "2")
    names.set("/webapp/db", "2")
    assert names.get("/frontend/db") == "2"
    assert names.refs("2") == 2  # two edges...
    assert names.ref_paths("2") == ["/db", "/frontend/db", "/webapp/db"]  # ...three paths


def _tree(names: NameGraph) -> None:
    names.set("/webapp", "1")
    names.set("/db", "2")
    names.set("/logs", "3")
    names.set("/webapp/db", "2")
    names.set("/webapp/db/logs", "3")


def test_children_depth_one_and_two(names: NameGraph) -> None:
    _tree(names)
    assert names.children("/webapp") == [("/webapp/db", "2")]
    assert names.children("/webapp", 2) == [("/webapp/db", "2"), ("/webapp/db/logs", "3")]
    assert names.children("/") == [("/db", "2"), ("/logs", "3"), ("/webapp", "1")]
    assert names.children("/logs") == []


def test_list_is_in_walk_order(names: NameGraph) -> None:
    _tree(names)
    listing = names.list("/", ALL)
    assert list(listing) == ["/db", "/logs", "/webapp", "/db/logs", "/webapp/db", "/webapp/db/logs"]
    assert listing["/webapp/db/logs"] == "3"
    assert names.list("/webapp") == {"/webapp/db": "2"}


def test_walk_reads_before_yielding(names: NameGraph) -> None:
    _tree(names)
    walked = names.walk("/", 1)
    first = next(walked)
    names.delete("/logs")  # the caller may use the graph while iterating
    assert [first, *walked] == [("/db", "2"), ("/logs", "3"), ("/webapp", "1")]


def test_walk_of_missing_path_raises_at_call(names: NameGraph) -> None:
    with pytest.raises(NotFound):
        names.walk("/nope", 1)


@pytest.mark.parametrize("depth", [0, -2, MAX_DEPTH + 1])
def test_walk_depth_out_of_range(names: NameGraph, depth: int) -> None:
    with pytest.raises(InvalidArgument, match="depth"):
        names.children("/", depth)


def test_walk_is_bounded_on_a_cycle(names: NameGraph) -> None:
    names.set("/aa", "A")
    names.set("/bb", "B")
    names.set("/aa/to-b", "B")
    names.set("/bb/to-a", "A")
    assert names.get("/aa/to-b/to-a/to-b") == "B"  # the cycle is reachable by name...
    assert names.list("/", ALL) == {  # ...but a walk does not enter an entity twice
        "/aa": "A",
        "/bb": "B",
        "/aa/to-b": "B",
        "/bb/to-a": "A",
    }
    assert names.ref_paths("B") == ["/bb", "/aa/to-b"]


def test_walk_is_bounded_on_a_deep_chain(names: NameGraph) -> None:
    path = ""
    for level in range(MAX_DEPTH + 8):
        path += f"/n{level}"
        names.set(path, f"e{level}")
    assert names.get(path) == f"e{MAX_DEPTH + 7}"
    assert len(names.list("/", ALL)) == MAX_DEPTH
    assert names.ref_paths(f"e{MAX_DEPTH + 7}") == []  # deeper than a climb goes


def test_parents(names: NameGraph) -> None:
    names.set("/webapp", "1")
    names.set("/frontend", "3")
    names.set("/db", "2")
    names.set("/webapp/db", "2")
    names.set("/frontend/database", "2")
    names.set("/frontend/db2", "2")  # a second link from the same parent counts once
    assert names.parents("/db") == ["0", "1", "3"]
    assert names.parents("/webapp") == ["0"]
    with pytest.raises(NotFound):
        names.parents("/nope")


def test_delete_removes_one_edge(names: NameGraph, db: GraphDB) -> None:
    names.set("/webapp", "1")
    names.set("/db", "2")
    names.set("/webapp/db", "2")
    names.delete("/webapp/db")
    assert not names.exists("/webapp/db")
    assert names.get("/db") == "2"
    assert names.refs("2") == 1
    before = snapshot(db)
    with pytest.raises(NotFound):
        names.delete("/webapp/db")
    with pytest.raises(NotFound):
        names.delete("/nope/db")
    with pytest.raises(InvalidArgument):
        names.delete("/")
    assert snapshot(db) == before


def test_purge_removes_edges_to_and_from_the_entity(names: NameGraph, db: GraphDB) -> None:
    names.set("/webapp", "1")
    names.set("/db", "2")
    names.set("/cache", "3")
    names.set("/webapp/db", "2")
    names.set("/webapp/cache", "3")
    assert names.purge("1") == 3
    assert "1" not in entity_ids(db)
    assert db.query("SELECT * FROM edge WHERE parent_id = '1' OR entity_id = '1'") == []
    assert names.get("/db") == "2"
    assert names.refs("2") == 1
    assert names.ref_paths("3") == ["/cache"]
    names.set("/webapp", "4")  # the name is free again and carries none of the old links
    assert names.children("/webapp") == []
    assert names.purge("2") == 1
    assert names.children("/") == [("/cache", "3"), ("/webapp", "4")]


def test_purge_refusals_write_nothing(names: NameGraph, db: GraphDB) -> None:
    names.set("/webapp", "1")
    before = snapshot(db)
    with pytest.raises(NotFound):
        names.purge("unknown")
    with pytest.raises(InvalidArgument):
        names.purge(ROOT)
    assert snapshot(db) == before


def test_rename(names: NameGraph) -> None:
    names.set("/webapp", "1")
    names.set("/db", "2")
    names.set("/webapp/db", "2")
    names.rename("/webapp", "/newapp")
    assert names.get("/newapp") == "1"
    assert not names.exists("/webapp")
    assert names.get("/newapp/db") == "2"  # links move with the entity
    names.rename("/newapp/db", "/newapp/database")
    assert names.children("/newapp") == [("/newapp/database", "2")]


def test_rename_failures_keep_the_old_name(names: NameGraph, db: GraphDB) -> None:
    names.set("/webapp", "1")
    names.set("/db", "2")
    names.set("/webapp/db", "2")
    before = snapshot(db)
    with pytest.raises(AlreadyExists, match="/db"):
        names.rename("/webapp", "/db")
    with pytest.raises(NotFound):
        names.rename("/nope", "/other")
    with pytest.raises(InvalidArgument, match="same parent"):
        names.rename("/webapp/db", "/db2")
    with pytest.raises(InvalidArgument, match="x:y"):
        names.rename("/webapp", "/x:y")
    with pytest.raises(InvalidArgument):
        names.rename("/", "/root")
    assert snapshot(db) == before
    assert names.get("/webapp") == "1"


BAD_PATHS = ["", "//", "/a", "/-x", "/_x", "/.x", "/x y", "/x:y", "/ümlaut", "/..", "/web/../db"]
BAD_PATHS += ["/web//db", "/web/.", "/x\x00y", "/x\ny"]


@pytest.mark.parametrize("path", BAD_PATHS)
def test_invalid_names_are_refused(names: NameGraph, db: GraphDB, path: str) -> None:
    names.set("/web", "1")
    before = snapshot(db)
    verbs: list[Callable[[], object]] = [
        lambda: names.set(path, "2"),
        lambda: names.get(path),
        lambda: names.exists(path),
        lambda: names.delete(path),
        lambda: names.children(path),
    ]
    for verb in verbs:
        with pytest.raises(InvalidArgument, match=r"only \[a-zA-Z0-9\]"):
            verb()
    assert snapshot(db) == before


@pytest.mark.parametrize("path", ["/ab", "/web.1", "/a-b_c", "/A9", "/" + "x" * 300])
def test_valid_names(names: NameGraph, path: str) -> None:
    names.set(path, "1")
    assert names.get(path) == "1"


@pytest.mark.parametrize("entity_id", ["", "a/b", "x y", "-x", "x" * 256])
def test_invalid_entity_ids(names: NameGraph, entity_id: str) -> None:
    with pytest.raises(InvalidArgument, match="entity id"):
        names.set("/web", entity_id)
    with pytest.raises(InvalidArgument, match="entity id"):
        names.purge(entity_id)


def test_names_survive_reopen(tmp_path: Path) -> None:
    first = GraphDB(tmp_path / "graph.db")
    NameGraph(first).set("/webapp", "1")
    first.close()
    again = GraphDB(tmp_path / "graph.db")
    try:
        names = NameGraph(again)
        assert names.get("/webapp") == "1"
        assert names.refs(ROOT) == 1  # migrations ran once; the root edge is not duplicated
    finally:
        again.close()
