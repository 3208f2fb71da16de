"""The image graph: ``image_tree`` (layers as a tree, images on them) and ``image_viz`` (DOT/SVG).

A node is a layer; an image sits on its top layer. Images that share layers share branches, so
the tree shows what is stored once and what each image adds.
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass, field
from typing import Any, Literal

from engine import ArgSpec, Engine, Job
from engine.errors import NotSupported, Unavailable
from graph.images import ImageStore
from graph.layers import LayerStore
from jobs.services import IMAGES, LAYERS

Node = dict[str, object]


def walk(layers: LayerStore, store: ImageStore) -> list[Node]:
    """The layer tree depth first: depth, whether last among siblings, layer, size, images."""
    heads = store.heads()
    nodes: list[Node] = [
        {
            "depth": depth,
            "last": True,
            "layer": chain,
            "size": size,
            "images": [{"id": image, "tags": list(tags)} for image, tags in heads.get(id, ())],
        }
        for depth, id, chain, size in layers.tree()
    ]
    # A node is the last of its siblings unless a node of the same depth follows before a
    # shallower one does: one pass from the end, remembering the depths seen below.
    below: list[int] = []
    for node in reversed(nodes):
        depth = int(str(node["depth"]))
        while below and below[-1] > depth:
            below.pop()
        node["last"] = not (below and below[-1] == depth)
        if not below or below[-1] != depth:
            below.append(depth)
    return nodes


async def image_tree(job: Job[Any]) -> None:
    """Emit the layer tree depth first: {depth, last, layer, size, images: [{id, tags}]}."""
    nodes = await asyncio.to_thread(walk, job.engine[LAYERS], job.engine[IMAGES])
    for node in nodes:
        job.emit(node)


@dataclass(frozen=True, slots=True)
class VizParams:
    format: Literal["dot", "svg"] = field(
        default="dot", metadata={"doc": "dot text, or svg via dot"}
    )


def dot(nodes: list[Node]) -> str:
    """The graph as Graphviz DOT: layers as ellipses, images as boxes on their top layer."""
    lines = ["digraph images {", "  rankdir=BT;", '  node [fontname="monospace", fontsize=10];']
    parents: list[str] = []
    for node in nodes:
        depth = int(str(node["depth"]))
        layer = str(node["layer"]).removeprefix("sha256:")[:12]
        del parents[depth:]
        lines.append(f'  "l{layer}" [label="{layer}\\n{_size(int(str(node["size"])))}"];')
        if parents:
            lines.append(f'  "l{layer}" -> "l{parents[-1]}";')
        parents.append(layer)
        for image in node["images"]:  # type: ignore[attr-defined]
            short = image["id"].removeprefix("sha256:")[:12]
            label = "\\n".join([*image["tags"], short])
            lines.append(
                f'  "i{short}" [shape=box, style=filled, fillcolor="#dde8f6", label="{label}"];'
            )
            lines.append(f'  "i{short}" -> "l{layer}";')
    lines.append("}")
    return "\n".join(lines) + "\n"


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB"):
        if value < 1000:
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


async def image_viz(job: Job[VizParams]) -> None:
    """Emit the image graph as {"dot": text}, or {"svg": text} rendered by Graphviz's dot."""
    nodes = await asyncio.to_thread(walk, job.engine[LAYERS], job.engine[IMAGES])
    text = dot(nodes)
    if job.params.format == "dot":
        job.emit({"dot": text})
        return
    if shutil.which("dot") is None:
        raise NotSupported("format: svg needs Graphviz's dot (apt-get install graphviz)")
    proc = await asyncio.create_subprocess_exec(
        "dot", "-Tsvg", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate(text.encode())
    if proc.returncode != 0:
        raise Unavailable(f"dot failed: {err.decode(errors='replace').strip()}")
    job.emit({"svg": out.decode()})


async def image_lineage(job: Job[Any]) -> None:
    """Emit the image's id with its ancestors and descendants (parent edges, nearest first)."""
    store = job.engine[IMAGES]

    def lineage() -> dict[str, object]:
        image = store.resolve(job.args[0])
        return {
            "id": image.id,
            "ancestors": store.ancestors(image.id),
            "descendants": store.descendants(image.id),
        }

    job.emit(await asyncio.to_thread(lineage))


def install(engine: Engine) -> None:
    """Register image_tree, image_viz and image_lineage."""
    engine.register("image_tree", image_tree)
    engine.register("image_viz", image_viz, params=VizParams)
    engine.register("image_lineage", image_lineage, args=ArgSpec(("name",)))
