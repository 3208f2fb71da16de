"""registry.credentials: config.json (lookup, store, erase) and the X-Registry-Auth codec."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from engine.errors import InvalidArgument
from registry import credentials
from registry.credentials import (
    DOCKER_HUB_KEY,
    AuthConfig,
    config_path,
    decode_header,
    encode_header,
    erase,
    lookup,
    server_key,
    store,
)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return tmp_path / "home" / ".docker" / "config.json"


def write(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))


def test_config_path_prefers_docker_config() -> None:
    assert config_path({"DOCKER_CONFIG": "/etc/dc", "HOME": "/h"}) == Path("/etc/dc/config.json")
    assert config_path({"HOME": "/home/alice"}) == Path("/home/alice/.docker/config.json")
    assert config_path({"DOCKER_CONFIG": "", "HOME": "/h"}) == Path("/h/.docker/config.json")


@pytest.mark.parametrize(
    ("registry", "key"),
    [
        ("", DOCKER_HUB_KEY),
        ("docker.io", DOCKER_HUB_KEY),
        ("index.docker.io", DOCKER_HUB_KEY),
        ("registry-1.docker.io", DOCKER_HUB_KEY),
        ("https://index.docker.io/v1/", DOCKER_HUB_KEY),
        ("https://registry-1.docker.io/v2/", DOCKER_HUB_KEY),
        ("https://host:5000/anything/v2/", "host:5000"),
        ("http://host:5000", "host:5000"),
        ("host:5000", "host:5000"),
        ("127.0.0.1:5000", "127.0.0.1:5000"),
        ("localhost", "localhost"),
        ("[::1]:5000", "[::1]:5000"),
    ],
)
def test_server_key(registry: str, key: str) -> None:
    assert server_key(registry) == key
    assert server_key(key) == key


def test_store_then_lookup_round_trip(config: Path) -> None:
    store(config, "127.0.0.1:5000", "alice", "pa:ss:word")
    data = json.loads(config.read_text())
    assert data == {"auths": {"127.0.0.1:5000": {"auth": b64("alice:pa:ss:word")}}}
    found = lookup(config, "https://127.0.0.1:5000/v2/")
    assert found == AuthConfig("alice", "pa:ss:word", "127.0.0.1:5000")
    assert lookup(config, "127.0.0.1:5001") is None


def test_store_modes_and_other_keys_kept(config: Path) -> None:
    other = {
        "credsStore": "desktop",
        "HttpHeaders": {"User-Agent": "x"},
        "auths": {"other:1": {"auth": b64("bob:pw")}},
        "proxies": {"default": {"httpProxy": "http://p:3128"}},
    }
    write(config, other)
    config.parent.chmod(0o755)
    config.chmod(0o644)
    store(config, "docker.io", "alice", "secret")
    data = json.loads(config.read_text())
    assert data == {
        **other,
        "auths": {
            "other:1": {"auth": b64("bob:pw")},
            DOCKER_HUB_KEY: {"auth": b64("alice:secret")},
        },
    }
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert os.listdir(config.parent) == ["config.json"]  # no temporary file left behind


def test_store_creates_the_directory_private(config: Path) -> None:
    store(config, "h:1", "u", "p")
    assert stat.S_IMODE(config.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(config.stat().st_mode) == 0o600


def test_store_replaces_the_file_atomically(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(config, {"auths": {"h:1": {"auth": b64("old:pw")}}})
    before = config.read_text()
    inode = config.stat().st_ino

    def fail(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(credentials.os, "replace", fail)
    with pytest.raises(OSError):
        store(config, "h:1", "new", "pw")
    assert config.read_text() == before
    assert os.listdir(config.parent) == ["config.json"]
    monkeypatch.undo()
    store(config, "h:1", "new", "pw")
    assert config.stat().st_ino != inode  # a new file renamed over the old one
    assert lookup(config, "h:1") == AuthConfig("new", "pw", "h:1")


def test_store_follows_a_symlinked_config(config: Path, tmp_path: Path) -> None:
    real = tmp_path / "dotfiles" / "docker.json"
    write(real, {"auths": {}})
    config.parent.mkdir(parents=True)
    config.symlink_to(real)
    store(config, "h:1", "u", "p")
    assert config.is_symlink()
    assert json.loads(real.read_text()) == {"auths": {"h:1": {"auth": b64("u:p")}}}


def test_identity_token(config: Path) -> None:
    store(config, "h:1", "alice", "", identitytoken="tok")
    assert json.loads(config.read_text())["auths"]["h:1"] == {
        "auth": b64("alice:"),
        "identitytoken": "tok",
    }
    assert lookup(config, "h:1") == AuthConfig("alice", "", "h:1", identitytoken="tok")


@pytest.mark.parametrize(
    ("key", "asked"),
    [
        ("https://h:5000/v2/", "h:5000"),
        ("http://h:5000", "h:5000"),
        ("https://index.docker.io/v1/", "docker.io"),
        ("index.docker.io", ""),
        ("registry-1.docker.io", "https://index.docker.io/v1/"),
    ],
)
def test_lookup_matches_scheme_and_path_variants(config: Path, key: str, asked: str) -> None:
    write(config, {"auths": {key: {"auth": b64("u:p:q")}}})
    assert lookup(config, asked) == AuthConfig("u", "p:q", key)


def test_lookup_prefers_the_exact_key_and_skips_empty_entries(config: Path) -> None:
    write(config, {"auths": {"https://h:1": {"auth": b64("old:x")}, "h:1": {"auth": b64("new:y")}}})
    assert lookup(config, "h:1") == AuthConfig("new", "y", "h:1")
    write(config, {"credsStore": "desktop", "auths": {DOCKER_HUB_KEY: {}}})
    assert lookup(config, "docker.io") is None


def test_lookup_missing_or_empty_file(config: Path) -> None:
    assert lookup(config, "h:1") is None
    write(config, "")
    assert lookup(config, "h:1") is None
    write(config, {"auths": None})
    assert lookup(config, "h:1") is None


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[]",
        json.dumps({"auths": []}),
        json.dumps({"auths": {"h:1": "user:pw"}}),
        json.dumps({"auths": {"h:1": {"auth": "!!!not base64"}}}),
        json.dumps({"auths": {"h:1": {"auth": b64("no colon")}}}),
        json.dumps({"auths": {"h:1": {"auth": 42}}}),
        json.dumps({"auths": {"h:1": {"identitytoken": ["x"]}}}),
    ],
)
def test_malformed_file_names_the_file(config: Path, content: str) -> None:
    write(config, content)
    with pytest.raises(InvalidArgument, match=str(config)):
        lookup(config, "h:1")


def test_store_refuses_to_overwrite_a_malformed_file(config: Path) -> None:
    write(config, "{not json")
    with pytest.raises(InvalidArgument, match=str(config)):
        store(config, "h:1", "u", "p")
    assert config.read_text() == "{not json"


def test_erase(config: Path) -> None:
    assert erase(config, "h:1") is False
    assert not config.exists()
    write(config, {"credsStore": "x", "auths": {"https://h:1/v2/": {"auth": b64("a:b")},
                                                 "h:1": {"auth": b64("a:b")},
                                                 "other:2": {"auth": b64("c:d")}}})  # fmt: skip
    assert erase(config, "http://h:1") is True
    assert json.loads(config.read_text()) == {
        "credsStore": "x",
        "auths": {"other:2": {"auth": b64("c:d")}},
    }
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert erase(config, "h:1") is False


def test_auth_config_json_and_anonymous() -> None:
    assert AuthConfig().anonymous
    assert AuthConfig(serveraddress="h:1").anonymous
    assert not AuthConfig(identitytoken="t").anonymous
    assert AuthConfig("u", "", "h:1").to_json() == {"username": "u", "serveraddress": "h:1"}


def test_encode_header_anonymous() -> None:
    assert encode_header(None) == "e30="
    assert encode_header(AuthConfig()) == "e30="
    assert decode_header("e30=") == AuthConfig()
    assert decode_header("") == AuthConfig()
    assert decode_header("e30") == AuthConfig()


def test_header_round_trip_in_every_base64_variant() -> None:
    auth = AuthConfig("alice", "a>b?c~d", "h:5000", registrytoken="r")
    value = encode_header(auth)
    assert json.loads(base64.urlsafe_b64decode(value)) == auth.to_json()
    standard = value.replace("-", "+").replace("_", "/")
    assert standard != value and value.endswith("=")
    for variant in (value, value.rstrip("="), standard, standard.rstrip("=")):
        assert decode_header(variant) == auth


def test_header_legacy_auth_field() -> None:
    raw = json.dumps({"auth": b64("bob:p:w"), "serveraddress": "h:1", "email": "x@y"})
    assert decode_header(b64(raw)) == AuthConfig("bob", "p:w", "h:1")


@pytest.mark.parametrize(
    "value",
    [
        "***",
        "e",
        b64("not json"),
        b64("[1, 2]"),
        b64(json.dumps({"username": 1})),
        b64(json.dumps({"password": {"a": 1}})),
        b64(json.dumps({"auth": "@@@"})),
        b64(json.dumps({"auth": b64("nocolon")})),
    ],
)
def test_header_errors(value: str) -> None:
    with pytest.raises(InvalidArgument, match=r"^X-Registry-Auth"):
        decode_header(value)
