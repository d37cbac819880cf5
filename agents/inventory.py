"""store_inventory: what the AMAS store and object storage hold right now.

Counts rows in every table the store's models define and objects/bytes under each top-level
storage prefix. Compliance reads it as "what do we hold"; the health flow uses it to prove
the store and storage answer real queries, not just pings.
"""

from __future__ import annotations

from collections import defaultdict

from pydantic import BaseModel, Field
from sqlalchemy import func, select

from amas.db.models import Base
from amas.registry import AgentContext, AgentResult


class InventoryInput(BaseModel):
    include_storage: bool = Field(True, description="Also walk object storage (can be slow on large buckets).")
    max_objects: int = Field(100_000, ge=1, le=10_000_000, description="Stop walking storage after this many objects.")


class PrefixUsage(BaseModel):
    objects: int
    bytes: int


class StorageUsage(BaseModel):
    url: str
    prefixes: dict[str, PrefixUsage]
    truncated: bool


class InventoryOutput(AgentResult):
    tables: dict[str, int] = Field(description="Rows per store table.")
    storage: StorageUsage | None = Field(None, description="Objects and bytes per top-level storage prefix.")


class StoreInventory:
    name = "store_inventory"
    description = "Row counts per store table and object counts/bytes per storage prefix."
    Input = InventoryInput
    Output = InventoryOutput

    def run(self, params: InventoryInput, context: AgentContext) -> InventoryOutput:
        tables: dict[str, int] = {}
        with context.engine.connect() as conn:
            for table in Base.metadata.sorted_tables:
                tables[table.name] = conn.execute(select(func.count()).select_from(table)).scalar_one()
        storage = None
        summary = f"{sum(tables.values())} rows in {len(tables)} tables"
        if params.include_storage:
            objects: dict[str, int] = defaultdict(int)
            sizes: dict[str, int] = defaultdict(int)
            walked = 0
            truncated = False
            for info in context.storage.list(""):
                if walked >= params.max_objects:
                    truncated = True
                    break
                prefix = info.key.split("/", 1)[0] if "/" in info.key else "(root)"
                objects[prefix] += 1
                sizes[prefix] += info.size
                walked += 1
            storage = StorageUsage(
                url=context.storage.url,
                prefixes={p: PrefixUsage(objects=objects[p], bytes=sizes[p]) for p in sorted(objects)},
                truncated=truncated,
            )
            summary += f"; {walked} objects ({sum(sizes.values())} bytes) in storage"
            summary += " (stopped early)" if truncated else ""
        return InventoryOutput(agent=self.name, summary=summary, tables=tables, storage=storage,
                               reads=list(tables))


AGENT = StoreInventory()
