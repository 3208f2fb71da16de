"""Dockerfile-style changes on image configs, and new configs for imports."""

from __future__ import annotations

import json

import pytest

from engine.errors import InvalidArgument
from graph.imageconfig import apply_changes, encode, host_architecture, new_config
from graph.images import diff_ids_of, image_id


def test_changes_cover_the_import_instructions() -> None:
    run = apply_changes(
        {"Env": ["A=0", "B=2"]},
        [
            'CMD ["sh", "-c", "echo hi"]',
            "ENTRYPOINT /bin/init --verbose",
            "ENV A=1 C=3",
            "ENV D spaced value",
            "EXPOSE 80 53/udp",
            'LABEL maintainer="a b" version=1',
            "USER nobody",
            "WORKDIR /srv",
            'VOLUME ["/data"]',
            "STOPSIGNAL SIGINT",
            "onbuild RUN true",
        ],
    )
    assert run["Cmd"] == ["sh", "-c", "echo hi"]
    assert run["Entrypoint"] == ["/bin/sh", "-c", "/bin/init --verbose"]
    assert run["Env"] == ["B=2", "A=1", "C=3", "D=spaced value"]
    assert run["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}}
    assert run["Labels"] == {"maintainer": "a b", "version": "1"}
    assert (run["User"], run["WorkingDir"], run["StopSignal"]) == ("nobody", "/srv", "SIGINT")
    assert run["Volumes"] == {"/data": {}}
    assert run["OnBuild"] == ["RUN true"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("FROM busybox", "'FROM' is not a supported instruction"),
        ("CMD", "CMD needs a value"),
        ("EXPOSE 80;1", "EXPOSE: invalid port '80;1'"),
        ("ENV =x", "ENV expects key=value"),
        ("", "is not a supported instruction"),
    ],
)
def test_bad_changes_name_the_problem(change: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=f"^changes: .*{message}"):
        apply_changes({}, [change])


def test_new_config_is_a_valid_image_config() -> None:
    config = new_config(["sha256:" + "a" * 64], "dockyard import -", "hello")
    raw = encode(config)
    assert diff_ids_of(raw) == ["sha256:" + "a" * 64]
    assert image_id(raw).startswith("sha256:") and len(image_id(raw)) == 71
    decoded = json.loads(raw)
    assert decoded["os"] == "linux" and decoded["architecture"] == host_architecture()
    assert decoded["history"] == [
        {"created": decoded["created"], "created_by": "dockyard import -", "comment": "hello"}
    ]
    assert decoded["created"].endswith("Z")


@pytest.mark.parametrize("config", [b"{}", b"[]", b"not json", b'{"rootfs": {"type": "x"}}'])
def test_diff_ids_of_refuses_non_configs(config: bytes) -> None:
    with pytest.raises(InvalidArgument, match="rootfs.diff_ids"):
        diff_ids_of(config)
