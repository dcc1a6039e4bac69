"""The ops client: a typed Python client of the Console API that signs every request."""

from dfe.client.signing import AppKeyAuth

__all__ = ["AppKeyAuth"]
