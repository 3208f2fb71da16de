"""What a registry sends, checked before it is trusted: manifests, indexes, platforms,
``WWW-Authenticate`` challenges, and which endpoints and redirects a registry may use.

Every malformed document must end in one of the engine's errors (InvalidArgument, NotSupported,
NotFound), never in a crash of the parser (RecursionError, KeyError, TypeError …).
"""

from __future__ import annotations

import copy
import json
import ssl
from pathlib import Path
from typing import Any

import pytest

from engine.errors import InvalidArgument, NotFound, NotSupported
from registry.auth import Challenge, parse_challenges
from registry.endpoint import (
    HUB_ENDPOINT,
    Endpoint,
    RegistryConfig,
    allowed_redirect,
)
from registry.manifest import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    MAX_MANIFEST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    Index,
    Manifest,
    Platform,
    check_digest,
    choose,
    host_platform_,
    parse,
    parse_platform,
)

WHERE = "127.0.0.1:5000: library/x:latest"
OCI_LAYER_GZ = "application/vnd.oci.image.layer.v1.tar+gzip"


def hexd(c: str) -> str:
    """``sha256:`` and 64 times *c*."""
    return "sha256:" + c * 64


def desc(media: str, c: str = "a", size: int = 10, **extra: object) -> dict[str, object]:
    """A descriptor dict."""
    return {"mediaType": media, "digest": hexd(c), "size": size, **extra}


def docker_manifest() -> dict[str, Any]:
    """A valid Docker schema 2 manifest with two layers."""
    return {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": desc(DOCKER_CONFIG, "c", 1469),
        "layers": [desc(DOCKER_LAYER, "1", 100), desc(DOCKER_LAYER, "2", 200)],
    }


def oci_manifest() -> dict[str, Any]:
    """A valid OCI manifest (with mediaType)."""
    return {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": desc(OCI_CONFIG, "c", 500),
        "layers": [desc(OCI_LAYER_GZ, "1", 100)],
    }


def index(media: str, *platforms: dict[str, str], entry_media: str = OCI_MANIFEST) -> bytes:
    """An index over one entry per platform dict (digests differ by position)."""
    entries = [
        desc(entry_media, "0123456789abcdef"[i], 400 + i, platform=p)
        for i, p in enumerate(platforms)
    ]
    return enc({"schemaVersion": 2, "mediaType": media, "manifests": entries})


def enc(doc: object) -> bytes:
    """JSON bytes."""
    return json.dumps(doc).encode()


def plat(os_: str, arch: str, variant: str = "") -> dict[str, str]:
    """A platform dict of an index entry."""
    return {"os": os_, "architecture": arch, **({"variant": variant} if variant else {})}


# -- well-formed documents ---------------------------------------------------------------------


def test_docker_manifest_parses_with_config_and_layers_in_order() -> None:
    doc = parse(enc(docker_manifest()), DOCKER_MANIFEST, WHERE)
    assert isinstance(doc, Manifest)
    assert doc.media_type == DOCKER_MANIFEST
    assert (doc.config.media_type, doc.config.digest, doc.config.size) == (
        DOCKER_CONFIG,
        hexd("c"),
        1469,
    )
    assert [(x.digest, x.size) for x in doc.layers] == [(hexd("1"), 100), (hexd("2"), 200)]


def test_content_type_parameters_and_case_are_ignored() -> None:
    doc = parse(enc(docker_manifest()), DOCKER_MANIFEST.upper() + "; charset=utf-8", WHERE)
    assert isinstance(doc, Manifest)


def test_oci_manifest_parses_with_or_without_media_type() -> None:
    with_type = parse(enc(oci_manifest()), OCI_MANIFEST, WHERE)
    assert isinstance(with_type, Manifest) and with_type.media_type == OCI_MANIFEST
    bare = oci_manifest()
    del bare["mediaType"]
    # OCI lets mediaType out: the Content-Type, or else the shape, tells what it is
    for served in (OCI_MANIFEST, "application/octet-stream", ""):
        doc = parse(enc(bare), served, WHERE)
        assert isinstance(doc, Manifest) and doc.media_type == OCI_MANIFEST
        assert [x.digest for x in doc.layers] == [hexd("1")]


def test_manifest_with_no_layers_is_accepted() -> None:
    doc = docker_manifest()
    doc["layers"] = []
    parsed = parse(enc(doc), DOCKER_MANIFEST, WHERE)
    assert isinstance(parsed, Manifest) and parsed.layers == ()


@pytest.mark.parametrize("media", [DOCKER_LIST, OCI_INDEX])
def test_indexes_parse_with_platforms(media: str) -> None:
    entry = DOCKER_MANIFEST if media == DOCKER_LIST else OCI_MANIFEST
    data = index(media, plat("linux", "amd64"), plat("linux", "arm", "v7"), entry_media=entry)
    doc = parse(data, media, WHERE)
    assert isinstance(doc, Index) and doc.media_type == media
    assert [str(e.platform) for e in doc.manifests] == ["linux/amd64", "linux/arm/v7"]
    assert [e.size for e in doc.manifests] == [400, 401]


def test_oci_index_without_media_type_is_told_by_its_shape() -> None:
    doc = json.loads(index(OCI_INDEX, plat("linux", "amd64")))
    del doc["mediaType"]
    parsed = parse(enc(doc), "application/json", WHERE)
    assert isinstance(parsed, Index) and parsed.media_type == OCI_INDEX


# -- refused kinds and shapes ------------------------------------------------------------------


SCHEMA1_BODY = enc(
    {"schemaVersion": 1, "name": "library/x", "tag": "latest", "fsLayers": [], "history": []}
)


@pytest.mark.parametrize(
    "content_type",
    [
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/json",
        "",
    ],
)
def test_schema1_is_refused_naming_schema_1(content_type: str) -> None:
    with pytest.raises(NotSupported) as info:
        parse(SCHEMA1_BODY, content_type, WHERE)
    assert "schema 1" in str(info.value)
    assert str(info.value).startswith("127.0.0.1:5000")


@pytest.mark.parametrize(
    ("body_media", "served"),
    [
        (DOCKER_MANIFEST, OCI_MANIFEST),
        (OCI_MANIFEST, DOCKER_MANIFEST),
        (DOCKER_MANIFEST, DOCKER_LIST),
        (OCI_INDEX, OCI_MANIFEST),
    ],
)
def test_media_type_disagreeing_with_content_type_is_refused(body_media: str, served: str) -> None:
    doc = (
        json.loads(index(OCI_INDEX, plat("linux", "amd64")))
        if body_media in (OCI_INDEX, DOCKER_LIST)
        else docker_manifest()
    )
    doc["mediaType"] = body_media
    with pytest.raises(InvalidArgument) as info:
        parse(enc(doc), served, WHERE)
    assert "Content-Type" in str(info.value)


@pytest.mark.parametrize("extra", ["layers", "config", "both"])
@pytest.mark.parametrize("media", [OCI_INDEX, OCI_MANIFEST, None])
def test_ambiguous_manifest_and_index_is_refused(extra: str, media: str | None) -> None:
    doc = json.loads(index(OCI_INDEX, plat("linux", "amd64")))
    if media is None:
        del doc["mediaType"]
    else:
        doc["mediaType"] = media
    if extra in ("layers", "both"):
        doc["layers"] = [desc(OCI_LAYER_GZ, "1")]
    if extra in ("config", "both"):
        doc["config"] = desc(OCI_CONFIG, "c")
    with pytest.raises(InvalidArgument) as info:
        parse(enc(doc), media or "", WHERE)
    assert "ambiguous" in str(info.value)


@pytest.mark.parametrize("version", [3, 0, -1, "2", 2.0, 2.5, True, None, [2], {"v": 2}])
def test_schema_version_other_than_2_is_refused(version: object) -> None:
    doc = docker_manifest()
    doc["schemaVersion"] = version
    with pytest.raises(InvalidArgument) as info:
        parse(enc(doc), DOCKER_MANIFEST, WHERE)
    assert "schemaVersion" in str(info.value)


def test_missing_schema_version_is_refused() -> None:
    doc = docker_manifest()
    del doc["schemaVersion"]
    with pytest.raises(InvalidArgument):
        parse(enc(doc), DOCKER_MANIFEST, WHERE)


@pytest.mark.parametrize("value", ["missing", None, {}, "layer", 5, [None], [[]], ["sha256:x"]])
def test_missing_null_or_malformed_layers_are_refused(value: object) -> None:
    doc = docker_manifest()
    if value == "missing":
        del doc["layers"]
    else:
        doc["layers"] = value
    with pytest.raises(InvalidArgument):
        parse(enc(doc), DOCKER_MANIFEST, WHERE)


@pytest.mark.parametrize("value", ["missing", None, [], "sha256:x", {"digest": hexd("c")}])
def test_missing_or_malformed_config_is_refused(value: object) -> None:
    doc = docker_manifest()
    if value == "missing":
        del doc["config"]
    else:
        doc["config"] = value
    with pytest.raises(InvalidArgument):
        parse(enc(doc), DOCKER_MANIFEST, WHERE)


@pytest.mark.parametrize("value", ["missing", None, {}, [None]])
def test_missing_or_null_index_entries_are_refused(value: object) -> None:
    doc = json.loads(index(DOCKER_LIST, plat("linux", "amd64"), entry_media=DOCKER_MANIFEST))
    if value == "missing":
        del doc["manifests"]
    else:
        doc["manifests"] = value
    with pytest.raises(InvalidArgument):
        parse(enc(doc), DOCKER_LIST, WHERE)


def test_unknown_layer_or_config_media_types_are_refused() -> None:
    doc = docker_manifest()
    doc["layers"][0]["mediaType"] = "application/x-shellscript"
    with pytest.raises(NotSupported):
        parse(enc(doc), DOCKER_MANIFEST, WHERE)
    doc = docker_manifest()
    doc["config"]["mediaType"] = "application/vnd.cncf.helm.config.v1+json"
    with pytest.raises(NotSupported):
        parse(enc(doc), DOCKER_MANIFEST, WHERE)
    doc = docker_manifest()
    doc["mediaType"] = "application/vnd.example.thing+json"
    with pytest.raises((NotSupported, InvalidArgument)):
        parse(enc(doc), "application/vnd.example.thing+json", WHERE)


@pytest.mark.parametrize(
    "size", [-1, -(2**63), 2**53, 2**63, 2**64, 10**30, True, False, 1.5, 10.0, "10", None]
)
@pytest.mark.parametrize("where", ["config", "layer", "index"])
def test_negative_huge_bool_or_non_integer_sizes_are_refused(size: object, where: str) -> None:
    if where == "index":
        doc = json.loads(index(OCI_INDEX, plat("linux", "amd64")))
        doc["manifests"][0]["size"] = size
        served = OCI_INDEX
    else:
        doc = docker_manifest()
        target = doc["config"] if where == "config" else doc["layers"][1]
        target["size"] = size
        served = DOCKER_MANIFEST
    with pytest.raises(InvalidArgument) as info:
        parse(enc(doc), served, WHERE)
    assert "size" in str(info.value)


def test_zero_and_largest_exact_sizes_are_accepted() -> None:
    doc = docker_manifest()
    doc["layers"][0]["size"] = 0
    doc["layers"][1]["size"] = 2**53 - 1
    parsed = parse(enc(doc), DOCKER_MANIFEST, WHERE)
    assert isinstance(parsed, Manifest)
    assert [x.size for x in parsed.layers] == [0, 2**53 - 1]


BAD_DIGESTS = [
    "sha256:../../x",
    "sha256:../../" + "a" * 58,
    "sha256:" + "A" * 64,
    "sha256:" + "a" * 63 + "F",
    "sha256:" + "a" * 63,
    "sha256:" + "a" * 65,
    "sha512:" + "a" * 128,
    "SHA256:" + "a" * 64,
    "sha256:" + "a" * 64 + "\n",
    " sha256:" + "a" * 64,
    "sha256:" + "g" * 64,
    "sha256:" + "a" * 62 + "/x",
    "sha256" + "a" * 64,
    "a" * 64,
    "",
]


@pytest.mark.parametrize("digest", BAD_DIGESTS)
def test_bad_digest_strings_are_refused(digest: str) -> None:
    with pytest.raises(InvalidArgument):
        check_digest(digest)
    for target in ("config", "layer"):
        doc = docker_manifest()
        (doc["config"] if target == "config" else doc["layers"][0])["digest"] = digest
        with pytest.raises(InvalidArgument) as info:
            parse(enc(doc), DOCKER_MANIFEST, WHERE)
        assert "digest" in str(info.value)
    doc = json.loads(index(OCI_INDEX, plat("linux", "amd64")))
    doc["manifests"][0]["digest"] = digest
    with pytest.raises(InvalidArgument):
        parse(enc(doc), OCI_INDEX, WHERE)


@pytest.mark.parametrize("digest", [None, 5, ["sha256:" + "a" * 64], {"a": 1}, True])
def test_non_string_digests_are_refused(digest: object) -> None:
    doc = docker_manifest()
    doc["layers"][0]["digest"] = digest
    with pytest.raises(InvalidArgument):
        parse(enc(doc), DOCKER_MANIFEST, WHERE)


def test_good_digest_is_returned() -> None:
    assert check_digest(hexd("0")) == hexd("0")


# -- hostile JSON ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b"[" * 100_000,
        b'{"schemaVersion": 2, "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        b'{"schemaVersion": 2, "layers": [' + b"{" * 100_000,
    ],
    ids=["arrays", "unclosed", "inside-object", "objects", "mixed-unclosed"],
)
def test_deep_nesting_is_invalid_argument_not_recursion_error(data: bytes) -> None:
    with pytest.raises(InvalidArgument):
        parse(data, DOCKER_MANIFEST, WHERE)


def test_moderate_nesting_inside_strings_does_not_confuse_the_depth_check() -> None:
    doc = docker_manifest()
    doc["annotations"] = {"note": "]]]]]]]]]]}}}}}}}}" * 20 + "[[[[{{{{" * 5}
    assert isinstance(parse(enc(doc), DOCKER_MANIFEST, WHERE), Manifest)


@pytest.mark.parametrize(
    "data",
    [
        b'{"schemaVersion": 2, "mediaType": "\xff\xfe"}',
        b'{"schemaVersion": 2, "x": "\xc0\xaf"}',
        b'{"schemaVersion": 2, "x": "\xed\xa0\x80"}',  # an encoded surrogate
        b"\xff\xfe{\x00}\x00",
    ],
)
def test_invalid_utf8_is_refused(data: bytes) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse(data, DOCKER_MANIFEST, WHERE)
    assert "UTF-8" in str(info.value)


def test_duplicate_keys_are_refused_at_any_depth() -> None:
    layers = json.dumps(docker_manifest()["layers"])
    config = json.dumps(docker_manifest()["config"])
    top = (
        f'{{"schemaVersion": 2, "mediaType": "{DOCKER_MANIFEST}", "config": {config}, '
        f'"layers": [], "layers": {layers}}}'
    )
    with pytest.raises(InvalidArgument) as info:
        parse(top.encode(), DOCKER_MANIFEST, WHERE)
    assert "duplicate" in str(info.value)
    inner = enc(docker_manifest()).replace(
        b'"size": 100', b'"size": 100, "digest": "' + hexd("9").encode() + b'"'
    )
    with pytest.raises(InvalidArgument):
        parse(inner, DOCKER_MANIFEST, WHERE)
    twice = enc(docker_manifest()).replace(
        b'"schemaVersion": 2', b'"schemaVersion": 2, "schemaVersion": 2'
    )
    with pytest.raises(InvalidArgument):
        parse(twice, DOCKER_MANIFEST, WHERE)


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinities_are_refused(constant: bytes) -> None:
    data = enc(docker_manifest()).replace(b'"size": 200', b'"size": ' + constant)
    with pytest.raises(InvalidArgument):
        parse(data, DOCKER_MANIFEST, WHERE)
    data = enc(docker_manifest())[:-1] + b', "x": ' + constant + b"}"
    with pytest.raises(InvalidArgument):
        parse(data, DOCKER_MANIFEST, WHERE)


def test_overflowing_number_as_a_size_is_refused() -> None:
    data = enc(docker_manifest()).replace(b'"size": 200', b'"size": 1e999')
    with pytest.raises(InvalidArgument) as info:
        parse(data, DOCKER_MANIFEST, WHERE)
    assert "size" in str(info.value)


@pytest.mark.parametrize(
    "data", [b"", b"null", b"[]", b"2", b'"manifest"', b"{", b"{}x", b"\x00" * 10]
)
def test_non_objects_and_broken_json_are_refused(data: bytes) -> None:
    with pytest.raises(InvalidArgument):
        parse(data, DOCKER_MANIFEST, WHERE)


def _padded(size: int) -> bytes:
    """A valid manifest padded (an annotation) to exactly *size* bytes."""
    doc = docker_manifest()
    doc["annotations"] = {"pad": ""}
    base = len(enc(doc))
    doc["annotations"] = {"pad": "x" * (size - base)}
    data = enc(doc)
    assert len(data) == size
    return data


def test_manifest_limit_is_about_4_mib() -> None:
    # containerd's MaxManifestSize (4 * 1048 * 1048) or distribution's 4 MiB: never more
    assert 4 << 20 <= MAX_MANIFEST <= 4 * 1048 * 1048


@pytest.mark.parametrize("size", [MAX_MANIFEST + 1, 5 << 20, 16 << 20])
def test_manifest_over_the_limit_is_refused_before_parsing(size: int) -> None:
    data = _padded(size)
    with pytest.raises(InvalidArgument) as info:
        parse(data, DOCKER_MANIFEST, WHERE)
    assert "manifest too large" in str(info.value)
    # even when the bytes are not JSON: the size is checked first
    with pytest.raises(InvalidArgument) as info:
        parse(b"[" * size, DOCKER_MANIFEST, WHERE)
    assert "manifest too large" in str(info.value)


def test_manifest_at_the_limit_is_parsed() -> None:
    assert isinstance(parse(_padded(MAX_MANIFEST), DOCKER_MANIFEST, WHERE), Manifest)


def test_parse_does_not_change_its_input() -> None:
    doc = docker_manifest()
    before = copy.deepcopy(doc)
    parse(enc(doc), DOCKER_MANIFEST, WHERE)
    assert doc == before


# -- platforms ---------------------------------------------------------------------------------


MULTI = index(
    OCI_INDEX,
    plat("linux", "arm64", "v8"),
    plat("linux", "amd64"),
    plat("linux", "arm", "v6"),
    plat("linux", "arm", "v7"),
    plat("windows", "amd64"),
    plat("linux", "s390x"),
)


def chosen(data: bytes, want: str) -> str:
    """The platform of the entry chosen for *want*."""
    doc = parse(data, OCI_INDEX, WHERE)
    assert isinstance(doc, Index)
    return str(choose(doc, parse_platform(want), WHERE).platform)


@pytest.mark.parametrize(
    ("want", "got"),
    [
        ("linux/amd64", "linux/amd64"),
        ("linux/x86_64", "linux/amd64"),
        ("linux/arm64", "linux/arm64/v8"),
        ("linux/aarch64", "linux/arm64/v8"),
        ("linux/arm64/v8", "linux/arm64/v8"),
        ("linux/arm/v7", "linux/arm/v7"),
        ("linux/arm/v6", "linux/arm/v6"),
        ("windows/amd64", "windows/amd64"),
        ("LINUX/S390X", "linux/s390x"),
    ],
)
def test_choose_picks_the_entry_for_the_platform(want: str, got: str) -> None:
    assert chosen(MULTI, want) == got


def test_choose_with_an_index_order_takes_the_first_match() -> None:
    data = index(OCI_INDEX, plat("linux", "amd64"), plat("linux", "amd64"))
    doc = parse(data, OCI_INDEX, WHERE)
    assert isinstance(doc, Index)
    assert choose(doc, parse_platform("linux/amd64"), WHERE).digest == hexd("0")


def test_arm64_v8_and_arm64_without_variant_are_the_same_platform() -> None:
    # containerd normalizes arm64/v8 to arm64: an entry without a variant serves linux/arm64/v8
    data = index(OCI_INDEX, plat("linux", "amd64"), plat("linux", "arm64"))
    assert chosen(data, "linux/arm64/v8") == "linux/arm64"
    assert chosen(data, "linux/arm64") == "linux/arm64"


def test_no_matching_platform_names_the_platform_and_the_registry() -> None:
    data = index(OCI_INDEX, plat("linux", "arm64", "v8"), plat("linux", "s390x"))
    doc = parse(data, OCI_INDEX, WHERE)
    assert isinstance(doc, Index)
    with pytest.raises(NotFound) as info:
        choose(doc, parse_platform("linux/amd64"), WHERE)
    message = str(info.value)
    assert "no matching manifest for linux/amd64 in the manifest list entries" in message
    assert message.startswith("127.0.0.1:5000")
    with pytest.raises(NotFound) as info:
        choose(doc, parse_platform("linux/arm/v7"), WHERE)
    assert "no matching manifest for linux/arm/v7 in the manifest list entries" in str(info.value)


def test_variant_narrows_the_choice() -> None:
    data = index(OCI_INDEX, plat("linux", "arm", "v6"))
    assert chosen(data, "linux/arm/v6") == "linux/arm/v6"
    with pytest.raises(NotFound):
        chosen(data, "linux/arm/v7")


def test_entries_without_platform_or_not_manifests_are_never_chosen() -> None:
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            desc(OCI_MANIFEST, "1", 10),  # no platform
            desc(OCI_INDEX, "2", 10, platform=plat("linux", "amd64")),  # a nested index
            desc("application/vnd.in-toto+json", "3", 10, platform=plat("linux", "amd64")),
            desc(OCI_MANIFEST, "4", 10, platform=plat("unknown", "unknown")),
        ],
    }
    parsed = parse(enc(doc), OCI_INDEX, WHERE)
    assert isinstance(parsed, Index)
    with pytest.raises(NotFound) as info:
        choose(parsed, parse_platform("linux/amd64"), WHERE)
    assert "no matching manifest for linux/amd64" in str(info.value)
    doc["manifests"].append(desc(OCI_MANIFEST, "5", 10, platform=plat("linux", "amd64")))
    parsed = parse(enc(doc), OCI_INDEX, WHERE)
    assert isinstance(parsed, Index)
    assert choose(parsed, parse_platform("linux/amd64"), WHERE).digest == hexd("5")


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("linux/amd64", Platform("linux", "amd64")),
        ("linux/arm64/v8", Platform("linux", "arm64", "v8")),
        ("linux/arm/v7", Platform("linux", "arm", "v7")),
        ("Linux/AMD64", Platform("linux", "amd64")),
        ("linux/x86_64", Platform("linux", "amd64")),
        ("windows/amd64", Platform("windows", "amd64")),
    ],
)
def test_parse_platform(text: str, want: Platform) -> None:
    assert parse_platform(text) == want


def test_parse_platform_defaults_to_this_host() -> None:
    here = host_platform_()
    assert here.os == "linux" and here.architecture and "/" not in here.architecture
    assert parse_platform("") == here
    assert parse_platform("linux") == Platform("linux", here.architecture)


@pytest.mark.parametrize(
    "text", ["linux/", "/amd64", "linux//v7", "a/b/c/d", "linux/amd 64", "linux/amd64\n", "ü/x"]
)
def test_bad_platforms_are_refused(text: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_platform(text)
    assert "platform" in str(info.value)


def test_platform_text_and_json() -> None:
    assert str(Platform("linux", "arm", "v7")) == "linux/arm/v7"
    assert str(Platform("linux", "amd64")) == "linux/amd64"
    assert Platform("linux", "amd64").to_json() == {"architecture": "amd64", "os": "linux"}
    assert Platform("linux", "arm", "v7").to_json()["variant"] == "v7"


# -- WWW-Authenticate challenges ---------------------------------------------------------------


def test_basic_challenge() -> None:
    assert parse_challenges('Basic realm="Registry Realm"') == [
        Challenge("basic", {"realm": "Registry Realm"})
    ]


def test_bearer_challenge_with_quoted_params_and_commas() -> None:
    header = (
        'Bearer realm="https://auth.example.com/token",service="registry.example.com",'
        'scope="repository:library/busybox:pull,push"'
    )
    assert parse_challenges(header) == [
        Challenge(
            "bearer",
            {
                "realm": "https://auth.example.com/token",
                "service": "registry.example.com",
                "scope": "repository:library/busybox:pull,push",
            },
        )
    ]


def test_bearer_challenge_with_spaces_error_and_escapes() -> None:
    header = (
        'bearer  Realm = "http://127.0.0.1:5001/token?a=1&b=2" , service="svc", '
        'error="insufficient_scope", scope="repository:a/b:pull,push repository:c:pull", '
        'note="say \\"hi\\""'
    )
    [challenge] = parse_challenges(header)
    assert challenge.scheme == "bearer"
    assert challenge.params == {
        "realm": "http://127.0.0.1:5001/token?a=1&b=2",
        "service": "svc",
        "error": "insufficient_scope",
        "scope": "repository:a/b:pull,push repository:c:pull",
        "note": 'say "hi"',
    }


def test_unquoted_params() -> None:
    [challenge] = parse_challenges("Bearer realm=https://a.example/token,service=reg")
    assert challenge.params == {"realm": "https://a.example/token", "service": "reg"}


@pytest.mark.parametrize("first", ["bearer", "basic"])
def test_bearer_and_basic_in_one_header_keep_their_order(first: str) -> None:
    bearer = 'Bearer realm="https://a.example/token",service="s",scope="repository:x:pull,push"'
    basic = 'Basic realm="basic realm, with a comma"'
    header = f"{bearer}, {basic}" if first == "bearer" else f"{basic}, {bearer}"
    got = parse_challenges(header)
    assert [c.scheme for c in got] == (
        ["bearer", "basic"] if first == "bearer" else ["basic", "bearer"]
    )
    by_scheme = {c.scheme: c.params for c in got}
    assert by_scheme["bearer"] == {
        "realm": "https://a.example/token",
        "service": "s",
        "scope": "repository:x:pull,push",
    }
    assert by_scheme["basic"] == {"realm": "basic realm, with a comma"}


@pytest.mark.parametrize("header", ["", "   ", "Negotiate abc", 'Digest realm="x", nonce="y"'])
def test_headers_without_known_challenges(header: str) -> None:
    assert parse_challenges(header) == []


# -- endpoints ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "registry",
    [
        "127.0.0.1:5000",
        "127.0.0.1",
        "127.1.2.3:443",
        "[::1]:5000",
        "::1",
        "localhost",
        "localhost:5000",
        "registry.localhost:5000",
    ],
)
def test_loopback_registries_are_insecure_by_default(registry: str) -> None:
    assert RegistryConfig().is_insecure(registry)


@pytest.mark.parametrize(
    "registry",
    [
        "docker.io",
        "10.1.2.3:5000",
        "192.168.0.1",
        "[fd00::1]:5000",
        "127.0.0.1.example.com",
        "localhost.example.com:5000",
        "0.0.0.0:5000",
    ],
)
def test_other_registries_are_secure_by_default(registry: str) -> None:
    assert not RegistryConfig().is_insecure(registry)


def test_listed_host_port_is_insecure_exactly() -> None:
    config = RegistryConfig(insecure=("myregistry.example:5000", "other.example"))
    assert config.is_insecure("myregistry.example:5000")
    assert config.is_insecure("other.example")
    assert not config.is_insecure("myregistry.example:5001")
    assert not config.is_insecure("myregistry.example")


def test_cidrs_make_addresses_insecure() -> None:
    config = RegistryConfig(insecure=("10.1.0.0/16", "fd00::/8", "192.168.5.7/32"))
    assert config.is_insecure("10.1.2.3:5000")
    assert config.is_insecure("10.1.255.255")
    assert config.is_insecure("[fd12::1]:5000")
    assert config.is_insecure("192.168.5.7:443")
    assert not config.is_insecure("10.2.0.1:5000")
    assert not config.is_insecure("192.168.5.8")
    assert not config.is_insecure("[fe80::1]:5000")


@pytest.mark.parametrize("bad", ["10.0.0.0/33", "nonsense/8", "10.0.0.300/8"])
def test_bad_cidr_is_refused(bad: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        RegistryConfig(insecure=(bad,))
    assert "insecure-registry" in str(info.value)


@pytest.mark.parametrize(
    "bad", ["ftp://mirror.example", "mirror.example", "https://", "https://m.example/?x=1"]
)
def test_bad_mirror_is_refused(bad: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        RegistryConfig(mirrors=(bad,))
    assert "registry-mirror" in str(info.value)


def test_docker_hub_tries_mirrors_first() -> None:
    config = RegistryConfig(mirrors=("https://mirror.example:5000/", "http://127.0.0.1:5001"))
    got = config.endpoints("docker.io")
    assert [(e.url, e.mirror) for e in got] == [
        ("https://mirror.example:5000", True),
        ("http://127.0.0.1:5001", True),
        (HUB_ENDPOINT, False),
    ]
    assert all(e.registry == "docker.io" for e in got)
    assert got[0].tls is not None and got[0].tls.verify_mode == ssl.CERT_REQUIRED
    assert got[1].tls is None
    assert got[2].tls is not None and got[2].tls.verify_mode == ssl.CERT_REQUIRED
    assert got[2].tls.check_hostname


def test_mirrors_are_only_for_docker_hub() -> None:
    config = RegistryConfig(mirrors=("https://mirror.example",))
    assert [e.url for e in config.endpoints("registry.example.com")] == [
        "https://registry.example.com"
    ]
    assert not any(e.mirror for e in config.endpoints("127.0.0.1:5000"))


def test_insecure_registry_tries_https_unverified_then_http() -> None:
    got = RegistryConfig().endpoints("127.0.0.1:5000")
    assert [e.url for e in got] == ["https://127.0.0.1:5000", "http://127.0.0.1:5000"]
    assert got[0].tls is not None
    assert got[0].tls.verify_mode == ssl.CERT_NONE and not got[0].tls.check_hostname
    assert got[1].tls is None
    assert got[0].host == "127.0.0.1:5000"


def test_listed_insecure_registry_tries_https_then_http() -> None:
    got = RegistryConfig(insecure=("reg.example:5000",)).endpoints("reg.example:5000")
    assert [e.url for e in got] == ["https://reg.example:5000", "http://reg.example:5000"]


def test_secure_registry_is_https_only_and_verified() -> None:
    got = RegistryConfig().endpoints("registry.example.com:5000")
    assert [e.url for e in got] == ["https://registry.example.com:5000"]
    tls = got[0].tls
    assert tls is not None and tls.verify_mode == ssl.CERT_REQUIRED and tls.check_hostname


def test_client_certificate_without_key_is_refused(tmp_path: Path) -> None:
    (tmp_path / "registry.example.com").mkdir()
    (tmp_path / "registry.example.com" / "client.cert").write_text("not used")
    config = RegistryConfig(certs_dir=tmp_path)
    with pytest.raises(InvalidArgument) as info:
        config.endpoints("registry.example.com")
    assert "client.key" in str(info.value)


def _endpoint(url: str, tls: bool) -> Endpoint:
    context = ssl.create_default_context() if tls else None
    registry = url.split("://", 1)[1]
    return Endpoint(registry, url, context)


@pytest.mark.parametrize(
    ("origin", "target", "allowed"),
    [
        (("https://registry.example.com", True), "https://cdn.example.net/blob", True),
        (("https://registry.example.com", True), "http://cdn.example.net/blob", False),
        (("https://127.0.0.1:5000", True), "http://127.0.0.1:5000/cdn/x", False),
        (("https://127.0.0.1:5000", True), "https://localhost:5000/cdn/x", True),
        (("http://127.0.0.1:5000", False), "http://localhost:5000/cdn/x", True),
        (("http://127.0.0.1:5000", False), "http://127.0.0.1:5001/cdn/x", True),
        (("http://127.0.0.1:5000", False), "https://cdn.example.net/x", True),
        (("http://127.0.0.1:5000", False), "http://cdn.example.net/x", False),
        (("http://127.0.0.1:5000", False), "ftp://127.0.0.1:5000/x", False),
        (("http://127.0.0.1:5000", False), "file:///etc/passwd", False),
        (("https://registry.example.com", True), "gopher://cdn.example.net/", False),
        (("https://registry.example.com", True), "data:text/plain,hello", False),
    ],
)
def test_allowed_redirect(origin: tuple[str, bool], target: str, allowed: bool) -> None:
    why = allowed_redirect(RegistryConfig(), _endpoint(*origin), target)
    if allowed:
        assert why == ""
    else:
        assert "redirect" in why and "refused" in why


def test_http_redirect_to_a_listed_insecure_host_is_allowed() -> None:
    config = RegistryConfig(insecure=("reg.example:5000", "cdn.example:8080"))
    origin = Endpoint("reg.example:5000", "http://reg.example:5000", None)
    assert allowed_redirect(config, origin, "http://cdn.example:8080/b") == ""
    assert allowed_redirect(config, origin, "http://cdn.example:8081/b") != ""
