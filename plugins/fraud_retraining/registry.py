"""Model registry: versions with lineage in MongoDB, artifacts in S3, and a champion pointer.

Documents in the collection `cfg.mongo.registry_collection`:

    {_id: "<model>/<version>", doc_type: "version", model_name, version, registered_at, engine,
     lineage: {dag_id, run_id, data_interval, training_window, rows, frauds, data_hash, budget_s,
               library_versions, ...}, metrics, artifact: {bucket, prefix, keys}}
    {_id: "<model>/champion", doc_type: "champion", model_name, version, generation, promoted_at,
     history: [{generation, action, version, previous, at, reason, actor}, ...]}

The champion pointer moves only by compare-and-set: the update's filter names the champion the
caller expects to replace, so of two concurrent promotions from the same champion exactly one
matches and the other gets PromotionConflict. The history lives inside the pointer document and
is pushed in the same single-document update, so pointer and history can never disagree; it
answers "which model served at time T" and drives rollback.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, ReturnDocument
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from fraud_retraining.config import UseCaseConfig
from fraud_retraining.layout import model_prefix
from fraud_retraining.timeutil import as_utc

VERSION_DOC = "version"
CHAMPION_DOC = "champion"


class RegistryError(RuntimeError):
    """A registry operation that cannot proceed as asked."""


class PromotionConflict(RegistryError):
    """The champion changed since the caller read it: another promotion won the race."""


def version_for_run(dag_id: str, run_id: str, as_of: datetime) -> str:
    """A version id that sorts by data time and is the same on every retry of one DAG run."""
    digest = hashlib.sha256(f"{dag_id}\x00{run_id}".encode()).hexdigest()[:8]
    return f"{as_utc(as_of):%Y%m%dT%H%M%SZ}-{digest}"


def store_artifact_files(s3_client: Any, bucket: str, prefix: str, files: Mapping[str, bytes]) -> list[str]:
    """Upload artifact files under `prefix`; return their keys (model.json last, as the commit mark)."""
    prefix = prefix if prefix.endswith("/") else prefix + "/"
    # model.json goes last: a reader that finds it knows the model file beside it is complete.
    ordered = sorted(files, key=lambda name: (name == "model.json", name))
    keys = []
    for name in ordered:
        content_type = "application/json" if name.endswith(".json") else "text/plain"
        s3_client.put_object(Bucket=bucket, Key=prefix + name, Body=files[name], ContentType=content_type)
        keys.append(prefix + name)
    return keys


class ModelRegistry:
    """Versions and the champion pointer of one model name."""

    def __init__(self, collection: Collection, model_name: str) -> None:
        self.collection = collection
        self.model_name = model_name
        self._pointer_id = f"{model_name}/{CHAMPION_DOC}"

    @classmethod
    def for_use_case(cls, cfg: UseCaseConfig, mongo_client: Any) -> ModelRegistry:
        collection = mongo_client[cfg.mongo.database][cfg.mongo.registry_collection]
        return cls(collection, cfg.model_name)

    def ensure_indexes(self) -> None:
        self.collection.create_index(
            [("model_name", ASCENDING), ("doc_type", ASCENDING), ("registered_at", ASCENDING)],
            name="model_doc_type_registered_at",
        )

    def artifact_prefix(self, cfg: UseCaseConfig, version: str) -> str:
        return model_prefix(cfg, version)

    # --- versions -------------------------------------------------------------------------

    def register(
        self,
        version: str,
        *,
        engine: str,
        lineage: Mapping[str, Any],
        metrics: Mapping[str, Any],
        artifact: Mapping[str, Any],
        registered_at: datetime | None = None,
    ) -> dict[str, Any]:
        """Record a version (idempotent for retries); a version that ever served is immutable."""
        if version in {event["version"] for event in self.history()}:
            raise RegistryError(f"version {version} has served as champion; register a new version")
        doc_id = f"{self.model_name}/{version}"
        fields = {
            "doc_type": VERSION_DOC,
            "model_name": self.model_name,
            "version": version,
            "engine": engine,
            "lineage": dict(lineage),
            "metrics": dict(metrics),
            "artifact": dict(artifact),
            "updated_at": datetime.now(UTC),
        }
        self.collection.update_one(
            {"_id": doc_id},
            {"$set": fields, "$setOnInsert": {"registered_at": registered_at or datetime.now(UTC)}},
            upsert=True,
        )
        return self.get(version) or {}

    def record_gate(self, version: str, decision: Mapping[str, Any]) -> None:
        """Store the evaluation gate's decision (rules, numbers, reasons) on the version."""
        result = self.collection.update_one(
            {"_id": f"{self.model_name}/{version}", "doc_type": VERSION_DOC},
            {"$set": {"gate": dict(decision)}},
        )
        if result.matched_count == 0:
            raise RegistryError(f"version {version} of {self.model_name} is not registered")

    def get(self, version: str) -> dict[str, Any] | None:
        return self.collection.find_one({"_id": f"{self.model_name}/{version}", "doc_type": VERSION_DOC})

    def list_versions(self, limit: int = 0) -> list[dict[str, Any]]:
        """Versions, newest registration first."""
        cursor = self.collection.find(
            {"model_name": self.model_name, "doc_type": VERSION_DOC},
            sort=[("registered_at", -1), ("_id", -1)],
            limit=limit,
        )
        return list(cursor)

    # --- champion ---------------------------------------------------------------------------

    def champion(self) -> dict[str, Any] | None:
        """The pointer document ({version, generation, promoted_at, history}) or None."""
        return self.collection.find_one({"_id": self._pointer_id})

    def champion_version(self) -> str | None:
        pointer = self.champion()
        return pointer["version"] if pointer else None

    def history(self) -> list[dict[str, Any]]:
        pointer = self.champion()
        return list(pointer.get("history", [])) if pointer else []

    def promote(
        self,
        version: str,
        *,
        expected_champion: str | None,
        reason: str = "",
        actor: str = "",
        at: datetime | None = None,
        action: str = "promote",
    ) -> dict[str, Any]:
        """Make `version` champion if the champion is still `expected_champion` (None: no champion yet).

        Raises PromotionConflict when another promotion got there first.
        """
        if self.get(version) is None:
            raise RegistryError(f"version {version} of {self.model_name} is not registered")
        when = as_utc(at or datetime.now(UTC))
        if expected_champion is None:
            event = self._event(1, action, version, None, when, reason, actor)
            try:
                self.collection.insert_one(
                    {
                        "_id": self._pointer_id,
                        "doc_type": CHAMPION_DOC,
                        "model_name": self.model_name,
                        "version": version,
                        "generation": 1,
                        "promoted_at": when,
                        "history": [event],
                    }
                )
            except DuplicateKeyError as err:
                raise PromotionConflict(
                    f"expected no champion, but {self.champion_version()} already is"
                ) from err
            return self.champion() or {}
        current = self.champion()
        generation = (current or {}).get("generation", 0) + 1
        event = self._event(generation, action, version, expected_champion, when, reason, actor)
        updated = self.collection.find_one_and_update(
            # The generation read above is matched too, so each history entry's generation is
            # unique and dense even when the same version is promoted twice in a row.
            {"_id": self._pointer_id, "version": expected_champion, "generation": generation - 1},
            {
                "$set": {"version": version, "promoted_at": when, "generation": generation},
                "$push": {"history": event},
            },
            return_document=ReturnDocument.AFTER,
        )
        if updated is None:
            raise PromotionConflict(
                f"expected champion {expected_champion}, found {self.champion_version()}: promotion lost the race"
            )
        return updated

    def rollback(self, *, reason: str = "", actor: str = "", at: datetime | None = None) -> dict[str, Any]:
        """Reinstate the champion that served before the current one, in one compare-and-set."""
        stack = self.champion_stack()
        if len(stack) < 2:
            raise RegistryError(f"{self.model_name} has no previous champion to roll back to")
        return self.promote(
            stack[-2], expected_champion=stack[-1], reason=reason, actor=actor, at=at, action="rollback"
        )

    def champion_stack(self) -> list[str]:
        """Champions in succession with rolled-back ones removed: the last is serving now."""
        stack: list[str] = []
        for event in self.history():
            if event["action"] == "rollback" and stack:
                stack.pop()
            else:
                stack.append(event["version"])
        return stack

    def served_at(self, when: datetime) -> str | None:
        """The champion at time `when`, or None if there was none yet."""
        moment = as_utc(when)
        serving = None
        for event in sorted(self.history(), key=lambda e: e["generation"]):
            if as_utc(event["at"]) <= moment:
                serving = event["version"]
        return serving

    @staticmethod
    def _event(
        generation: int,
        action: str,
        version: str,
        previous: str | None,
        at: datetime,
        reason: str,
        actor: str,
    ) -> dict[str, Any]:
        return {
            "generation": generation,
            "action": action,
            "version": version,
            "previous": previous,
            "at": at,
            "reason": reason,
            "actor": actor,
        }
