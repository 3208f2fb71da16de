"""The background sha256 gives the digest of the bytes in the order they were given."""

from __future__ import annotations

import hashlib
import random

import pytest

from graph.archive.hashing import BackgroundSha256


def test_mixed_chunk_sizes_hash_in_order() -> None:
    rng = random.Random(7)
    chunks = [rng.randbytes(rng.choice((10, 4096, 70_000, 1 << 20))) for _ in range(200)]
    background = BackgroundSha256()
    for chunk in chunks:
        background.update(chunk)
    assert background.hexdigest() == hashlib.sha256(b"".join(chunks)).hexdigest()
    assert background.hexdigest() == hashlib.sha256(b"".join(chunks)).hexdigest()  # stable
    with pytest.raises(ValueError, match="after hexdigest"):
        background.update(b"more")


def test_empty_input() -> None:
    assert BackgroundSha256().hexdigest() == hashlib.sha256().hexdigest()
