"""Image reference parsing: distribution's reference vectors plus hostile input."""

from __future__ import annotations

import dataclasses
import re

import pytest

from engine.errors import InvalidArgument
from graph.reference import (
    Reference,
    is_full_id,
    parse,
    validate_digest,
    with_default_tag,
)

HEX = "f" * 64
DIGEST = f"sha256:{HEX}"

# The grammar written out as one anchored regex (distribution's regexp.go), used as an oracle:
# everything parse() accepts must match it in normalised form.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_HOST = rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[A-Fa-f0-9:]+\])"
ORACLE = re.compile(
    rf"{_HOST}(?::[0-9]+)?/{_COMPONENT}(?:/{_COMPONENT})*"
    r"(?::[\w][\w.-]{0,127})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?",
    re.ASCII,
)

VALID = [
    # (input, str() of the normalised reference, familiar form)
    ("busybox", "docker.io/library/busybox", "busybox"),
    ("library/busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"),
    ("localhost:5000/a/b:tag", "localhost:5000/a/b:tag", "localhost:5000/a/b:tag"),
    ("localhost/foo", "localhost/foo", "localhost/foo"),
    (f"127.0.0.1:5000/x@{DIGEST}", f"127.0.0.1:5000/x@{DIGEST}", f"127.0.0.1:5000/x@{DIGEST}"),
    ("docker.io/x", "docker.io/library/x", "x"),
    ("index.docker.io/library/x", "docker.io/library/x", "x"),
    ("docker.io/library/a/b", "docker.io/library/a/b", "library/a/b"),
    ("user/repo", "docker.io/user/repo", "user/repo"),
    # Domain components may be uppercase (hosts are case-insensitive); the case is kept as given.
    ("Example.com/x", "Example.com/x", "Example.com/x"),
    (f"name:tag@{DIGEST}", f"docker.io/library/name:tag@{DIGEST}", f"name:tag@{DIGEST}"),
    # distribution reference_test.go vectors
    ("test_com", "docker.io/library/test_com", "test_com"),
    ("test.com:tag", "docker.io/library/test.com:tag", "test.com:tag"),
    ("test.com:5000", "docker.io/library/test.com:5000", "test.com:5000"),
    ("test.com/repo:tag", "test.com/repo:tag", "test.com/repo:tag"),
    ("test:5000/repo", "test:5000/repo", "test:5000/repo"),
    (f"test:5000/repo@{DIGEST}", f"test:5000/repo@{DIGEST}", f"test:5000/repo@{DIGEST}"),
    (
        f"test:5000/repo:tag@{DIGEST}",
        f"test:5000/repo:tag@{DIGEST}",
        f"test:5000/repo:tag@{DIGEST}",
    ),
    (
        "sub-dom1.foo.com/bar/baz/quux:some-long-tag",
        "sub-dom1.foo.com/bar/baz/quux:some-long-tag",
        "sub-dom1.foo.com/bar/baz/quux:some-long-tag",
    ),
    (
        "b.gcr.io/test.example.com/my-app:test.example.com",
        "b.gcr.io/test.example.com/my-app:test.example.com",
        "b.gcr.io/test.example.com/my-app:test.example.com",
    ),
    ("xn--n3h.com/myimage:xn--n3h.com", "xn--n3h.com/myimage:xn--n3h.com", None),
    ("foo_bar.com:8080", "docker.io/library/foo_bar.com:8080", "foo_bar.com:8080"),
    ("192.168.1.1:5000/repo:5050", "192.168.1.1:5000/repo:5050", None),
    ("[2001:db8::1]:5000/repo", "[2001:db8::1]:5000/repo", None),
    ("[::1]:5000/repo", "[::1]:5000/repo", None),
    ("lowercase:Uppercase", "docker.io/library/lowercase:Uppercase", "lowercase:Uppercase"),
    ("a__b/c-d---e.f_g", "docker.io/a__b/c-d---e.f_g", "a__b/c-d---e.f_g"),
    ("busybox:" + "t" * 128, "docker.io/library/busybox:" + "t" * 128, None),
    ("a/" + "b" * 243, "docker.io/a/" + "b" * 243, None),  # exactly 255 characters
]


@pytest.mark.parametrize(("text", "full", "familiar"), VALID)
def test_valid_references_normalise(text: str, full: str, familiar: str | None) -> None:
    ref = parse(text)
    assert str(ref) == full
    assert ORACLE.fullmatch(str(ref)), "normalised form must satisfy the grammar"
    assert parse(str(ref)) == ref, "normalising twice changes nothing"
    if familiar is not None:
        assert ref.familiar == familiar
    assert parse(ref.familiar) == ref


def test_fields_of_a_full_reference() -> None:
    ref = parse(f"localhost:5000/team/app:v1.2@{DIGEST}")
    assert ref == Reference(domain="localhost:5000", path="team/app", tag="v1.2", digest=DIGEST)
    assert ref.name == "localhost:5000/team/app"


def test_reference_is_frozen() -> None:
    ref = parse("busybox")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ref.tag = "x"  # type: ignore[misc]


def test_default_tag_only_without_tag_or_digest() -> None:
    ref = with_default_tag(parse("busybox"))
    assert str(ref) == "docker.io/library/busybox:latest"
    assert ref.familiar == "busybox:latest"
    assert with_default_tag(parse("busybox:1.36")).tag == "1.36"
    by_digest = with_default_tag(parse(f"busybox@{DIGEST}"))
    assert (by_digest.tag, by_digest.digest) == ("", DIGEST)


def test_uppercase_message_names_the_repository() -> None:
    with pytest.raises(InvalidArgument) as info:
        parse("Busybox")
    assert str(info.value) == (
        "invalid reference format: repository name (library/Busybox) must be lowercase"
    )


INVALID = [
    # (input, fragment the message must contain)
    ("", "repository name must have at least one component"),
    (":tag", "missing repository name"),
    (":justtag", "missing repository name"),
    (f"@{DIGEST}", "missing repository name"),
    ("busybox/", "empty path component"),
    ("a//b", "empty path component"),
    ("/busybox", "empty path component"),
    ("domain/" + "a" * 256 + ":tag", "must not be more than 255 characters"),
    ("a/" + "b" * 244, "must not be more than 255 characters"),
    ("busybox:" + "t" * 129, "at most 128"),
    ("busybox:", "tag is empty"),
    ("busybox:-dash", "tag (-dash) must match"),
    ("busybox:.dot", "tag (.dot) must match"),
    (f"busybox@sha256:{'f' * 34}", "invalid checksum digest length"),
    (f"busybox@sha256:{'f' * 65}", "invalid checksum digest length"),
    (f"busybox@sha256:{'F' * 64}", "checksum hex must be lowercase"),
    (f"busybox@sha256:{'g' * 64}", "checksum must be hexadecimal"),
    (f"validname@invaliddigest:{HEX}", "unsupported digest algorithm"),
    (f"busybox@sha512:{'f' * 128}", "unsupported digest algorithm"),
    ("busybox@sha256", "must be algorithm:hex"),
    ("busybox@", "must be algorithm:hex"),
    (f"busybox@{DIGEST}@{DIGEST}", "checksum must be hexadecimal"),
    ("Uppercase:tag", "repository name (library/Uppercase) must be lowercase"),
    (
        "test:5000/Uppercase/lowercase:tag",
        "repository name (Uppercase/lowercase) must be lowercase",
    ),
    ("Foo/bar", "repository name (Foo/bar) must be lowercase"),
    ("../x", "domain (..) is not a valid host name"),
    ("./x", "domain (.) is not a valid host name"),
    ("a/../x", "path component (..) of repository name (a/../x)"),
    ("-x/y", "path component (-x)"),
    ("a_/b", "path component (a_)"),
    ("aa/asdf$$^/aa", "path component (asdf$$^)"),
    ("bus\x00box", "invalid character '\\x00' at position 3"),
    ("busy box", "invalid character ' ' at position 4"),
    (" busybox", "invalid character ' ' at position 0"),
    ("busybox\n", "invalid character '\\n' at position 7"),
    ("ümlaut", "invalid character 'ü' at position 0"),
    ("x" * 5000, "at most 1024 allowed"),
    (HEX, "cannot specify 64-byte hexadecimal strings"),
    (f"{HEX}:latest", "cannot specify 64-byte hexadecimal strings"),
    ("[2001:db8::1]", "path component"),
    ("[2001:db8::1]:5000", "path component"),
    ("[fe80::1%eth0]:5000/repo", "not a valid [IPv6] address"),
    ("[::1/repo", "not a valid [IPv6] address"),
    ("[::1]x/repo", "instead of :port"),
    ("localhost:99999/x", "invalid port '99999'"),
    ("localhost:0/x", "invalid port '0'"),
    ("localhost:/x", "invalid port ''"),
    ("-bad.com/x", "domain (-bad.com) is not a valid host name"),
    ("bad-.com:5000/x", "domain (bad-.com:5000) is not a valid host name"),
    ("a..b.com/x", "domain (a..b.com) is not a valid host name"),
]


@pytest.mark.parametrize(("text", "fragment"), INVALID)
def test_invalid_references_name_the_problem(text: str, fragment: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse(text)
    assert fragment in str(info.value)


def test_is_full_id() -> None:
    assert is_full_id(HEX)
    assert is_full_id(DIGEST)
    assert not is_full_id("F" * 64)
    assert not is_full_id(HEX[:63])
    assert not is_full_id(HEX + "0")
    assert not is_full_id(f"sha512:{HEX}")
    assert not is_full_id(f"{HEX}\n")
    assert not is_full_id("")


def test_validate_digest() -> None:
    assert validate_digest(DIGEST) == DIGEST
    for bad in (
        "",
        HEX,
        "sha256:",
        f"sha256:{HEX[:-1]}",
        f"SHA256:{HEX}",
        f"sha256:{HEX}\n",
        "x" * 10_000,
    ):
        with pytest.raises(InvalidArgument, match="invalid digest"):
            validate_digest(bad)
