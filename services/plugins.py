"""Optimizers of installed packages: the live workers' catalog, and a job's plugin entries
checked against it. Torch-free: the API validates with what the workers published.

Each worker process publishes at its start, then every heartbeat, the plugin optimizers it
can train (workers/catalog.py writes ``worker_catalog`` rows: host:pid, published_at, the
descriptions of workers/engine/optimizer_classes.py). A row is *live* while its stamp is
younger than the heartbeat timeout (the rule the run leases use, services/db/leases.py). At
submission every plugin entry of a job (``"<source>:<Name>"``, case-insensitive) must name
an optimizer some live worker has; its hyperparameters are then validated by the entry model
built from that description (services/spec/optimizers.py ``plugin_entry_model``), the same
typed validation torch.optim's entries get, and the entry is replaced by the validated one
(defaults filled in, the name as published), which is what gets stored.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from pydantic import ValidationError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from services.db import store
from services.db.leases import heartbeat_cutoff
from services.db.models import WorkerCatalog
from services.errors import InvalidSpec
from services.spec import JobSpec, field_errors
from services.spec.optimizers import (
    PLUGIN_TAG,
    OptimizerEntryBase,
    PluginEntry,
    plugin_entry_model,
)


def publish(session: Session, worker: str, optimizers: list[dict[str, Any]]) -> None:
    """Store (or refresh) ``worker``'s catalog, stamped with the database's clock."""
    now = store.database_now(session)
    row = session.get(WorkerCatalog, worker)
    if row is None:
        session.add(WorkerCatalog(worker=worker, published_at=now, optimizers=optimizers))
    else:
        row.published_at, row.optimizers = now, optimizers


def refresh(session: Session, worker: str) -> bool:
    """Stamp ``worker``'s row as live again; False when it has none (publish then)."""
    row = session.get(WorkerCatalog, worker)
    if row is None:
        return False
    row.published_at = store.database_now(session)
    return True


def withdraw(session: Session, worker: str) -> None:
    session.execute(delete(WorkerCatalog).where(WorkerCatalog.worker == worker))


def live_optimizers(session: Session, timeout_seconds: float) -> dict[str, dict[str, Any]]:
    """The plugin optimizers of the live workers by name, each with ``workers``: how many
    live workers have it (two workers with different versions: the newest row's wins)."""
    cutoff = heartbeat_cutoff(store.database_now(session), timeout_seconds)
    rows = session.scalars(
        select(WorkerCatalog)
        .where(WorkerCatalog.published_at >= cutoff)
        .order_by(WorkerCatalog.published_at.desc())
    ).all()
    found: dict[str, dict[str, Any]] = {}
    for row in rows:
        for described in row.optimizers:
            entry = found.setdefault(described["name"], {**described, "workers": 0})
            entry["workers"] += 1
    return found


@functools.lru_cache(maxsize=256)
def _entry_model(described_json: str) -> type[OptimizerEntryBase]:
    return plugin_entry_model(json.loads(described_json))


def entry_model(described: dict[str, Any]) -> type[OptimizerEntryBase]:
    """The typed entry model of a published description (built once per description)."""
    plain = {key: value for key, value in described.items() if key != "workers"}
    return _entry_model(json.dumps(plain, sort_keys=True))


def resolve_entries(spec: JobSpec, available: dict[str, dict[str, Any]]) -> JobSpec:
    """The spec with each plugin entry validated against ``available`` (``live_optimizers``)
    by its typed entry model, and holding the validated values. InvalidSpec naming the
    field: an optimizer no live worker has (with the names they have), one that cannot be
    trained (with why), a bad hyperparameter (as for torch.optim's entries)."""
    if not has_plugins(spec):
        return spec
    by_lower = {name.lower(): name for name in available}
    entries: list[Any] = []
    errors = []
    for index, entry in enumerate(spec.optimizers):
        if not isinstance(entry, PluginEntry):
            entries.append(entry)
            continue
        field = f"optimizers[{index}]"
        name = by_lower.get(entry.name.lower())
        if name is None:
            trainable = sorted(n for n, d in available.items() if not d.get("refused"))
            errors.append(
                (
                    f"{field}.name",
                    f"no live worker has the optimizer '{entry.name}'; available: "
                    + (", ".join(trainable) or "none (no live worker publishes plugins)"),
                )
            )
            continue
        described = available[name]
        if described.get("refused"):
            errors.append((f"{field}.name", f"'{name}' cannot be trained: {described['refused']}"))
            continue
        data = {**entry.model_dump(mode="json", exclude_none=False), "name": name}
        try:
            typed = entry_model(described).model_validate(data)
        except ValidationError as error:
            # Located as a torch.optim entry's errors are, so their messages read the same.
            tagged = ("optimizers", index, PLUGIN_TAG)  # the union's tag, as in a spec's errors
            located = [{**e, "loc": (*tagged, *e["loc"])} for e in error.errors()]
            errors += [(problem.field, problem.message) for problem in field_errors(located)]
            continue
        # Kept as a PluginEntry holding every validated value (defaults filled in): the job's
        # spec serialises and parses again as one, on the worker too, without the catalog.
        entries.append(PluginEntry.model_validate(typed.model_dump(mode="json")))
    if errors:
        raise InvalidSpec(
            "; ".join(f"{where}: {message}" for where, message in errors),
            errors=[{"field": where, "message": message} for where, message in errors],
        )
    return spec.model_copy(update={"optimizers": entries})


def has_plugins(spec: JobSpec) -> bool:
    return any(isinstance(entry, PluginEntry) for entry in spec.optimizers)


def check_spec(session: Session, spec: JobSpec, timeout_seconds: float) -> JobSpec:
    """``resolve_entries`` against the live workers' catalog."""
    return resolve_entries(spec, live_optimizers(session, timeout_seconds))
