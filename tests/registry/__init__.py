"""The registry test kit: real registries, a token server, a hostile registry, image builders.

- ``registries``: start Debian's ``docker-registry`` (plain, htpasswd or token auth) and a small
  HTTP client that speaks its auth challenges.
- ``tokenserver``: a token server issuing signed JWTs the registry trusts.
- ``hostile``: a registry that misbehaves on demand, per blob or manifest.
- ``images``: layer, image and index builders, OCI layouts, and pushes (HTTP, skopeo, umoci).
"""
