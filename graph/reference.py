"""Image references: ``[registry[:port]/]path[:tag][@digest]``, parsed and normalised.

The grammar is the one of docker/distribution's ``reference`` package::

    reference  := name [ ":" tag ] [ "@" digest ]
    name       := [ domain "/" ] path
    domain     := host [ ":" port ]            host: domain-name | "[" ipv6 "]"
    path       := component ( "/" component )*  component: [a-z0-9]+ ( separator [a-z0-9]+ )*
    separator  := [._] | "__" | "-"+
    tag        := [\\w][\\w.-]{0,127}
    digest     := algorithm ":" hex             only sha256 (64 lowercase hex) is accepted

Normalisation follows Docker's ``ParseNormalizedNamed``: the first component is a domain only when
it contains ``.`` or ``:`` or is ``localhost``; otherwise the domain is ``docker.io``, and a
one-component path on ``docker.io`` gains ``library/``. ``index.docker.io`` is ``docker.io``.

Glossary: *domain* is the registry (``docker.io``, ``localhost:5000``); *path* is the repository
inside it (``library/busybox``); *name* is ``domain/path``; *familiar* is the short form a user
types (``busybox:latest``); an *id* is 64 lowercase hex and is never a name.

Example::

    ref = with_default_tag(parse("busybox"))
    str(ref)        # "docker.io/library/busybox:latest"
    ref.familiar    # "busybox:latest"
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Final

from engine.errors import InvalidArgument

DEFAULT_DOMAIN: Final = "docker.io"
LEGACY_DEFAULT_DOMAIN: Final = "index.docker.io"
OFFICIAL_PREFIX: Final = "library/"
DEFAULT_TAG: Final = "latest"
NAME_MAX: Final = 255
TAG_MAX: Final = 128
# Longest well-formed reference is name (255) + ":" + tag (128) + "@" + digest (71); anything far
# beyond that is refused before any regex sees it.
INPUT_MAX: Final = 1024

_COMPONENT: Final = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_DOMAIN_LABEL: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?")
_IPV6: Final = re.compile(r"\[[A-Fa-f0-9:]+\]")
_PORT: Final = re.compile(r"[0-9]{1,5}")
_TAG: Final = re.compile(r"[\w][\w.-]*", re.ASCII)
_ALGORITHM: Final = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*")
_HEX: Final = re.compile(r"[0-9A-Fa-f]+")
_ID: Final = re.compile(r"(?:sha256:)?[a-f0-9]{64}")
_HEX64: Final = re.compile(r"[a-f0-9]{64}")
# go-digest knows more algorithms; the content store only hashes with sha256, so only that is
# accepted here rather than letting an unusable digest reach the puller.
_DIGEST_HEX_LEN: Final = {"sha256": 64}


@dataclass(frozen=True, slots=True)
class Reference:
    """A parsed, normalised image reference; tag and digest are "" when absent."""

    domain: str
    path: str
    tag: str = ""
    digest: str = ""

    @property
    def name(self) -> str:
        """Return the full repository name, e.g. ``docker.io/library/busybox``."""
        return f"{self.domain}/{self.path}"

    @property
    def familiar(self) -> str:
        """Return the short form a user types, e.g. ``busybox:latest`` (Docker's FamiliarString)."""
        name = self.name
        if self.domain == DEFAULT_DOMAIN:
            name = self.path
            rest = name.removeprefix(OFFICIAL_PREFIX)
            if rest != name and "/" not in rest:
                name = rest
        return name + self._suffix()

    def _suffix(self) -> str:
        return (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")

    def __str__(self) -> str:
        """Return the full normalised form, e.g. ``docker.io/library/busybox:latest``."""
        return self.name + self._suffix()


def familiar_name(name: str) -> str:
    """The short form of a stored, already normalised name (``str(Reference)``), without
    parsing it again: ``docker.io/library/busybox:latest`` → ``busybox:latest``."""
    prefix = DEFAULT_DOMAIN + "/"
    if not name.startswith(prefix):
        return name
    rest = name[len(prefix) :]
    short = rest.removeprefix(OFFICIAL_PREFIX)
    repository = short.split("@", 1)[0].rsplit(":", 1)[0]
    return short if short != rest and "/" not in repository else rest


def _invalid(problem: str) -> InvalidArgument:
    return InvalidArgument(f"invalid reference format: {problem}")


def is_full_id(text: str) -> bool:
    """Tell whether *text* is a full image id: 64 lowercase hex, optionally ``sha256:``-prefixed."""
    return _ID.fullmatch(text) is not None


def validate_digest(text: str) -> str:
    """Return *text* if it is an accepted digest (``sha256:<64 hex>``); InvalidArgument if not."""
    if len(text) > 256:  # keeps hostile input out of the message and the regexes
        raise InvalidArgument(f"invalid digest: {len(text)} characters long, at most 256")
    algorithm, sep, hexpart = text.partition(":")
    if not sep or _ALGORITHM.fullmatch(algorithm) is None:
        raise InvalidArgument(
            f"invalid digest ({text!r}): must be algorithm:hex, e.g. sha256:<64 hex>"
        )
    want = _DIGEST_HEX_LEN.get(algorithm)
    if want is None:
        raise InvalidArgument(
            f"invalid digest ({text!r}): unsupported digest algorithm {algorithm!r}, "
            "only sha256 is accepted"
        )
    if _HEX.fullmatch(hexpart) is None:
        raise InvalidArgument(f"invalid digest ({text!r}): checksum must be hexadecimal")
    if len(hexpart) != want:
        raise InvalidArgument(
            f"invalid digest ({text!r}): invalid checksum digest length, "
            f"{algorithm} needs {want} hex characters, got {len(hexpart)}"
        )
    if hexpart != hexpart.lower():
        raise InvalidArgument(f"invalid digest ({text!r}): checksum hex must be lowercase")
    return text


def _check_characters(text: str) -> None:
    if not text:
        raise _invalid("repository name must have at least one component")
    if len(text) > INPUT_MAX:
        raise _invalid(f"reference is {len(text)} characters long, at most {INPUT_MAX} allowed")
    for position, char in enumerate(text):
        if not "!" <= char <= "~":  # printable ASCII without space
            raise _invalid(f"invalid character {char!r} at position {position}")


def _split_domain(name: str) -> tuple[str, str]:
    """Split *name* into (domain, remainder) the way Docker's splitDockerDomain does."""
    first, sep, rest = name.partition("/")
    if not sep or ("." not in first and ":" not in first and first != "localhost"):
        if sep and first != first.lower():
            # Docker would take an uppercase first component for a registry host; a dotless,
            # portless host is never what the user meant, so say what is wrong instead.
            raise _invalid(f"repository name ({name}) must be lowercase")
        domain, rest = DEFAULT_DOMAIN, name
    else:
        domain = first
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in rest:
        rest = OFFICIAL_PREFIX + rest
    return domain, rest


def _check_domain(domain: str) -> None:
    host, port = domain, ""
    if domain.startswith("["):
        end = domain.find("]")
        host, port = domain[: end + 1], domain[end + 1 :]
        if end < 0 or _IPV6.fullmatch(host) is None:
            raise _invalid(f"domain ({domain}) is not a valid [IPv6] address")
    elif ":" in domain:
        host, _, port = domain.partition(":")
        port = ":" + port
        if any(_DOMAIN_LABEL.fullmatch(label) is None for label in host.split(".")):
            raise _invalid(f"domain ({domain}) is not a valid host name")
    elif any(_DOMAIN_LABEL.fullmatch(label) is None for label in host.split(".")):
        raise _invalid(f"domain ({domain}) is not a valid host name")
    if not port:
        return
    if port[0] != ":":
        raise _invalid(f"domain ({domain}) has {port!r} after the address instead of :port")
    if _PORT.fullmatch(port[1:]) is None or not 0 < int(port[1:]) <= 65535:
        raise _invalid(f"domain ({domain}) has an invalid port {port[1:]!r}")


def _check_path(path: str) -> None:
    if path != path.lower():
        raise _invalid(f"repository name ({path}) must be lowercase")
    for component in path.split("/"):
        if not component:
            raise _invalid(f"repository name ({path}) has an empty path component")
        if _COMPONENT.fullmatch(component) is None:
            raise _invalid(
                f"path component ({component}) of repository name ({path}) must match "
                f"{_COMPONENT.pattern}"
            )


def _check_tag(tag: str) -> None:
    if not tag:
        raise _invalid("tag is empty after ':'")
    if len(tag) > TAG_MAX:
        raise _invalid(f"tag ({tag[:16]}...) is {len(tag)} characters long, at most {TAG_MAX}")
    if _TAG.fullmatch(tag) is None:
        raise _invalid(f"tag ({tag}) must match [\\w][\\w.-]{{0,127}}")


def parse(text: str) -> Reference:
    """Parse and normalise an image reference; raise InvalidArgument naming what is wrong."""
    _check_characters(text)
    rest, at, digest = text.partition("@")
    colon = rest.rfind(":")
    if colon > rest.rfind("/"):  # a ":" after the last "/" starts the tag, not a port
        name, tag, has_tag = rest[:colon], rest[colon + 1 :], True
    else:
        name, tag, has_tag = rest, "", False
    if not name:
        raise _invalid(f"missing repository name in {text!r}")
    if _HEX64.fullmatch(name):
        raise InvalidArgument(
            f"invalid repository name ({name}), cannot specify 64-byte hexadecimal strings"
        )
    domain, path = _split_domain(name)
    _check_domain(domain)
    _check_path(path)
    if len(domain) + 1 + len(path) > NAME_MAX:
        raise _invalid(f"repository name must not be more than {NAME_MAX} characters")
    if has_tag:
        _check_tag(tag)
    if at:
        try:
            validate_digest(digest)
        except InvalidArgument as exc:
            raise _invalid(str(exc)) from exc
    return Reference(domain=domain, path=path, tag=tag, digest=digest)


def with_default_tag(ref: Reference) -> Reference:
    """Return *ref* with tag ``latest`` when it has neither tag nor digest, else *ref* itself."""
    if ref.tag or ref.digest:
        return ref
    return dataclasses.replace(ref, tag=DEFAULT_TAG)
