"""The Costs page and JSON API inside Airflow's api-server, under /cost (see app.py).

The plugin registers `lazy_app`: FastAPI and Airflow's API security are imported when the api-server
first serves /cost, never in a scheduler or worker that loads the plugin for its listener."""

from __future__ import annotations

import threading
from typing import Any

URL_PREFIX = "/cost"


class LazyApp:
    """An ASGI app that builds the real one (api.app.create_app) at its first request."""

    def __init__(self) -> None:
        self._app: Any = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        if self._app is None:
            with self._lock:
                if self._app is None:
                    from airflow_cost_provider.api.app import create_app

                    self._app = create_app()
        return self._app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        await self.get()(scope, receive, send)

    def __repr__(self) -> str:
        return "<LazyApp of airflow_cost_provider.api.app.create_app>"


lazy_app = LazyApp()
