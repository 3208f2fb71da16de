"""Image-graph queries with 10,000 images: the layer tree, lineage, listing, resolving.

Builds a GraphDB with N images (default 10,000) arranged as 100 chains of 100 images, each image
on its own layer and with a parent edge to the one below, then times the queries the image jobs
run: ``image_tree``'s walk (and the walk right after a tag moved, which the stores' cached graph
must follow), ``ancestors`` and ``descendants``, ``images``' listing, and resolving by tag and by
short id. Rows only: no layer files are needed for these queries.

    python3 bench/lineage.py [--images N] [--runs R]
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drivers.graph import select
from graph.db import GraphDB
from graph.images import ImageStore
from graph.layers import LayerStore
from graph.reference import parse
from jobs.imagegraph import walk


def populate(db: GraphDB, count: int, depth: int = 100) -> list[str]:
    """Insert *count* images in chains of *depth*; return the image ids."""
    ids: list[str] = []
    now = time.time()
    with db.write() as tx:
        for n in range(count):
            layer = hashlib.sha256(f"layer{n}".encode()).hexdigest()
            parent_layer = (
                None if n % depth == 0 else hashlib.sha256(f"layer{n - 1}".encode()).hexdigest()
            )
            diff = "sha256:" + hashlib.sha256(f"diff{n}".encode()).hexdigest()
            tx.execute(
                "INSERT INTO layers (id, chain_id, diff_id, parent, size, state, created)"
                " VALUES (?, ?, ?, ?, ?, 'ready', ?)",
                (layer, "sha256:" + layer, diff, parent_layer, 1000 + n, now),
            )
            config = b'{"rootfs":{"type":"layers","diff_ids":["%s"]},"n":%d}' % (diff.encode(), n)
            image = "sha256:" + hashlib.sha256(config).hexdigest()
            parent = None if n % depth == 0 else ids[-1]
            tx.execute(
                "INSERT INTO images (id, parent, top_layer, config, created, size, added)"
                " VALUES (?, ?, ?, ?, '2026-01-01T00:00:00Z', ?, ?)",
                (image, parent, layer, config, 1000 + n, now + n),
            )
            tx.execute("INSERT INTO image_layers VALUES (?, 0, ?)", (image, layer))
            tx.execute(
                "INSERT INTO tags VALUES (?, ?, ?)",
                (f"docker.io/library/bench{n // depth}:v{n % depth}", image, now),
            )
            ids.append(image)
    return ids


def cold(images: ImageStore, layers: LayerStore, ids: list[str]) -> Callable[[], object]:
    """Walk the tree right after a change: a tag moving to another image each time."""
    turn = iter(range(10**9))

    def run() -> object:
        images.tag(ids[next(turn) % len(ids)], parse("bench-moving:latest"))
        start = time.perf_counter()
        walk(layers, images)
        return time.perf_counter() - start

    return run


def timed(name: str, fn: Callable[[], object], runs: int) -> float:
    """Median of *runs* calls of *fn*, in ms; a float *fn* returns is its own measured time."""
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        took = fn()
        samples.append(took if isinstance(took, float) else time.perf_counter() - start)
    median = statistics.median(samples) * 1000
    print(f"{name:<36} median {median:8.2f} ms   (min {min(samples) * 1000:.2f}, {runs} runs)")
    return median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dockyard-bench-") as tmp:
        root = Path(tmp)
        db = GraphDB(root / "graph.db")
        driver = select(root, (), {}, name="vfs")
        layers, images = LayerStore(db, driver, root / "layertars"), ImageStore(db)
        start = time.perf_counter()
        ids = populate(db, args.images)
        print(f"{args.images} images in {time.perf_counter() - start:.2f} s")
        deepest = ids[99] if len(ids) >= 100 else ids[-1]
        results = {
            "image_tree (walk the layer tree)": timed(
                "image_tree (walk the layer tree)", lambda: walk(layers, images), args.runs
            ),
            "image_tree, right after a tag moved": timed(
                "image_tree, right after a tag moved", cold(images, layers, ids), args.runs
            ),
            "lineage (ancestors of the deepest)": timed(
                "lineage (ancestors of the deepest)", lambda: images.ancestors(deepest), args.runs
            ),
        }
        timed(
            "image_tree, first (fresh stores)",
            lambda: walk(LayerStore(db, driver, root / "layertars"), ImageStore(db)),
            args.runs,
        )
        results["descendants (of a chain's base)"] = timed(
            "descendants (of a chain's base)", lambda: images.descendants(ids[0]), args.runs
        )
        timed("images (list all)", images.all, args.runs)
        timed("resolve by tag", lambda: images.resolve("bench7:v42"), args.runs)
        timed("resolve by short id", lambda: images.resolve(ids[5000][7:19]), args.runs)
        db.close()
        for name, ms in results.items():
            print(f"target under 50 ms: {name}: {'met' if ms < 50 else 'NOT met'} ({ms:.1f} ms)")


if __name__ == "__main__":
    main()
