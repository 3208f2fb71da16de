"""Reading and writing layer tars safely: apply, diff, export, diff_id.

Glossary: *root* is the directory a layer is applied onto or exported from; *layer* and *parent*
are directory trees compared by the naive differ; a *change* is one path and what happened to it;
*diff_id* is ``sha256:<hex>`` of the uncompressed tar. Lifecycle, as in Docker's graph drivers:
``changes(layer, parent)`` → ``export_changes(layer, changes, out)`` gives the layer tar, and
``apply_layer(root, tar)`` writes it back onto a copy of the parent (vfs) or an empty diff dir
(overlay, ``whiteouts=Whiteouts.OVERLAY``). Example::

    tar = io.BytesIO()
    export_changes(layer, changes(layer, parent), tar)
    applied = apply_layer(copy_of_parent, io.BytesIO(tar.getvalue()))
"""

from .apply import apply_layer
from .compression import diff_id_of
from .differ import changes
from .export import export_changes
from .model import AppliedLayer, Change, ChangeKind, Whiteouts

__all__ = [
    "AppliedLayer",
    "Change",
    "ChangeKind",
    "Whiteouts",
    "apply_layer",
    "changes",
    "diff_id_of",
    "export_changes",
]
