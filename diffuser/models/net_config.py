"""The JSON round trip shared by the networks' config dataclasses (stored in every checkpoint's config.json)."""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import TypeVar

__all__ = ["NetConfig"]

C = TypeVar("C", bound="NetConfig")


class NetConfig:
    """Mixin for a network's ``@dataclass`` config: :meth:`to_dict` gives JSON types, :meth:`from_dict` inverts it
    and refuses unknown keys (a checkpoint from another version, or a typo in a hand-written config)."""

    def to_dict(self) -> dict:
        """Plain dict of JSON types (tuples such as ``dim_mults`` as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls: type[C], d: dict) -> C:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**d)
