"""A worker publishes what it can train beyond ``torch.optim``: the plugin optimizers this
installation has (workers/engine/optimizer_classes.py), into ``worker_catalog``
(services/plugins.py), at its start and then every heartbeat so that the API knows it is
live; on a warm shutdown it withdraws its row (one killed is taken for gone once its stamp is
older than the heartbeat timeout).

One publisher per worker (the Celery main process: its pool's processes have the same
installation); its name is that process's ``host:pid``.
"""

from __future__ import annotations

import logging
import threading

from services import plugins
from services.db.leases import worker_name
from services.db.session import unit_of_work
from services.db.transient import describe

log = logging.getLogger(__name__)


class CatalogPublisher:
    """Publishes the catalog now (``start``), stamps it every ``interval`` seconds from a
    daemon thread, and withdraws it (``stop``). A database that does not answer is logged
    and tried again at the next tick, never raised."""

    def __init__(self, interval: float, worker: str | None = None) -> None:
        self.interval, self.worker = interval, worker or worker_name()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def publish(self) -> int:
        """Write the catalog; how many plugin optimizers it lists."""
        from workers.engine import optimizer_classes

        described = optimizer_classes.catalog()
        with unit_of_work() as session:
            plugins.publish(session, self.worker, described)
        return len(described)

    def start(self) -> None:
        try:
            count = self.publish()
            log.info("worker catalog published: %d plugin optimizers", count)
        except Exception as error:
            log.warning("worker catalog not published (%s); retrying", describe(error))
        self._thread = threading.Thread(target=self._beat, name="catalog", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                with unit_of_work() as session:
                    fresh = plugins.refresh(session, self.worker)
                if not fresh:  # never written (the database was away at the start)
                    self.publish()
            except Exception as error:
                log.warning("worker catalog not stamped (%s)", describe(error))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            with unit_of_work() as session:
                plugins.withdraw(session, self.worker)
        except Exception as error:
            log.warning("worker catalog not withdrawn (%s)", describe(error))
