"""Image archives for ``save`` (image_export) and ``load``: docker-archive and OCI image layout.

Glossary: an *archive* is one tar holding images; an *image* is its config (``sha256`` of the
config bytes is the image id), its layers base first and its *repo tags* in familiar form
(``busybox:latest``); a *blob* is a content-addressed file ``blobs/sha256/<hex>``; a layer's
*diff_id* is ``sha256:<hex>`` of its uncompressed tar. ``write_archive`` writes what
``docker save`` ≥ 25 writes (both formats in one tar); ``read_archive`` reads either format,
plain or gzip, verifies blob digests and configs, and cleans up what it unpacked. Example::

    write_archive(out, [ArchiveImage(config, (LayerBlob(diff_id, opener, size),), ("busybox:latest",))])
    with read_archive(stream, workdir) as images:
        for image in images: store(image.config, image.layers, image.repo_tags)
"""  # noqa: E501

from .model import ArchiveImage, LayerBlob
from .read import read_archive
from .write import write_archive

__all__ = ["ArchiveImage", "LayerBlob", "read_archive", "write_archive"]
