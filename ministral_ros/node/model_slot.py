"""The ministral node's loaded model, from configure to release, without ROS.

``load`` builds the backend (``backend_factory.create_backend`` or a test double); ``release``
closes the plan worker, answering every waiting request, then the backend. A generation that
ignores cancellation past the close timeout leaves worker and backend "lingering": the backend is
not closed under a running generation, and ``load`` refuses to put a second model beside it (a
``BackendError``: configure fails and says why) until that generation has returned.
"""
from __future__ import annotations

from collections.abc import Callable

from ministral_ros.node.backend_factory import BackendError
from ministral_ros.node.cancellation import Cancellation
from ministral_ros.node.params import NodeSettings
from ministral_ros.node.plan_worker import PlanWorker
from ministral_ros.node.request_router import NodeLogger
from ministral_ros.planning.backend import PlanBackend

BackendFactory = Callable[[NodeSettings], PlanBackend]


class ModelSlot:
    def __init__(self, factory: BackendFactory, logger: NodeLogger) -> None:
        self._factory = factory
        self._logger = logger
        self.backend: PlanBackend | None = None
        self._lingering: tuple[PlanWorker, PlanBackend | None] | None = None

    @property
    def lingering_worker(self) -> PlanWorker | None:
        """The worker of a release that timed out, until a ``load`` finds it finished."""
        return self._lingering[0] if self._lingering is not None else None

    def load(self, settings: NodeSettings) -> PlanBackend:
        """Build the backend; raises what the factory raises, or BackendError while a lingering
        generation still runs."""
        self._close_lingering()
        self.backend = self._factory(settings)
        return self.backend

    def release(self, worker: PlanWorker | None, cancellation: Cancellation, timeout_s: float) -> None:
        """Close ``worker`` (every waiting request answered with ``cancellation``) and the model."""
        backend, self.backend = self.backend, None
        if worker is not None and not worker.close(cancellation, timeout_s):
            self._logger.warning(
                f'the planner did not return within {timeout_s:g} s of cancellation: the model '
                'stays loaded until it does, and configure waits for it')
            self._lingering = (worker, backend)
            return
        self._close(backend)

    def _close_lingering(self) -> None:
        if self._lingering is None:
            return
        worker, backend = self._lingering
        if worker.is_running():
            raise BackendError('the previous model is still finishing a generation that ignored '
                               'cancellation; configure again once it returns (see the log)')
        self._lingering = None
        self._close(backend)

    def _close(self, backend: PlanBackend | None) -> None:
        if backend is None:
            return
        try:
            backend.close()
        except Exception as exc:
            self._logger.warning(f'releasing the model failed: {exc}')
