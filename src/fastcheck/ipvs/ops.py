"""IPVS operations as values: what a backend applies and what `plan` prints.

Owns: one frozen dataclass per kernel operation, each able to describe itself in one
stable line and as a JSON-ready dict.
Must not: apply anything.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from fastcheck.ipvs.table import (
    METHOD_NAMES,
    DestinationKey,
    DestinationSettings,
    ServiceKey,
    ServiceSettings,
)


class Verb(enum.Enum):
    ADD = "add"
    EDIT = "edit"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class ServiceOp:
    verb: Verb
    service: ServiceKey
    settings: ServiceSettings | None = None
    previous: ServiceSettings | None = None

    def describe(self) -> str:
        text = f"{self.verb.value} service {self.service}"
        if self.verb is Verb.ADD and self.settings:
            text += f" ({self.settings.describe()})"
        elif self.verb is Verb.EDIT and self.settings and self.previous:
            text += f": {self.previous.describe()} -> {self.settings.describe()}"
        return text

    def to_json(self) -> dict[str, Any]:
        return {"op": f"{self.verb.value}_service", "service": str(self.service),
                "settings": self.settings.describe() if self.settings else None}


@dataclass(frozen=True, slots=True)
class DestinationOp:
    verb: Verb
    service: ServiceKey
    destination: DestinationKey
    settings: DestinationSettings | None = None
    previous: DestinationSettings | None = None

    def describe(self) -> str:
        text = f"{self.verb.value} destination {self.destination} in {self.service}"
        if self.settings and self.verb is not Verb.DELETE:
            text += f" ({METHOD_NAMES[self.settings.method]} weight {self.settings.weight})"
        if self.verb is Verb.EDIT and self.previous and self.settings:
            text += f" was ({METHOD_NAMES[self.previous.method]} weight " \
                    f"{self.previous.weight})"
        return text

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"op": f"{self.verb.value}_destination",
                               "service": str(self.service),
                               "destination": str(self.destination)}
        if self.settings:
            out["weight"] = self.settings.weight
            out["method"] = self.settings.method.value
        return out


@dataclass(frozen=True, slots=True)
class LocalAddressOp:
    """FULLNAT local address of a service (patched kernels only)."""

    verb: Verb
    service: ServiceKey
    address: str

    def describe(self) -> str:
        return f"{self.verb.value} local address {self.address} in {self.service}"

    def to_json(self) -> dict[str, Any]:
        return {"op": f"{self.verb.value}_local_address", "service": str(self.service),
                "address": self.address}


Op = ServiceOp | DestinationOp | LocalAddressOp
