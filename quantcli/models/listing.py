"""What ``qcli model list`` shows: one model's versions, or every registered model.

Both are records (they always pass); the CLI renders them as tables or prints ``to_dict()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from quantcli.models.versions import ModelVersionInfo
from quantcli.results import Result

if TYPE_CHECKING:
    from quantcli.models.registry import ModelRegistry


@dataclass(frozen=True, kw_only=True)
class VersionListing(Result):
    """Every version of ``name`` (oldest first), its aliases and the production history."""

    name: str
    aliases: dict[str, str]
    production_history: list[str]
    versions: list[ModelVersionInfo]

    def to_dict(self) -> dict[str, Any]:
        versions = []
        for v in self.versions:
            d = v.to_dict()
            d.pop("tags")  # every tag is in the registry; the listing keeps the decoded fields
            versions.append(d)
        return {
            "name": self.name,
            "aliases": self.aliases,
            "production_history": self.production_history,
            "versions": versions,
        }


@dataclass(frozen=True, kw_only=True)
class ModelListing(Result):
    """Every registered model of the store: ``{"name", "aliases", "latest_version", "versions"}``
    each, by name."""

    tracking_uri: str
    models: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {"tracking_uri": self.tracking_uri, "models": self.models}


def list_versions(reg: ModelRegistry, name: str) -> VersionListing:
    """The versions of ``name`` with aliases, verdicts and lineage (NotFoundError if unknown)."""
    versions = reg.list_versions(name)
    return VersionListing(
        passed=True,
        name=name,
        aliases=reg.alias_map(name),
        production_history=reg.production_history(name),
        versions=versions,
    )


def list_models(reg: ModelRegistry) -> ModelListing:
    """Every registered model with its aliases, latest version and number of versions."""
    models = []
    for rm in sorted(reg.client.search_registered_models(), key=lambda m: m.name):
        versions = [int(v.version) for v in reg.client.search_model_versions(f"name = '{rm.name}'")]
        models.append(
            {
                "name": rm.name,
                "aliases": dict(sorted(reg.alias_map(rm.name).items())),
                "latest_version": str(max(versions)) if versions else None,
                "versions": len(versions),
            }
        )
    return ModelListing(passed=True, tracking_uri=reg.tracking_uri, models=models)


__all__ = ["ModelListing", "VersionListing", "list_models", "list_versions"]
