"""How `midog batch` gets its Ray: join a running cluster, or start a local one that is closed
to the network.

A local Ray started the usual way binds its servers (GCS, raylet, object manager, each
worker's gRPC port, the runtime-env agent) to the node's network address, and Ray has no
authentication unless token authentication is on: anyone who can reach the machine could
run code in it. Ray's single-machine mode (the one it uses on macOS and Windows) gives the
node the loopback address instead, so every server listens on 127.0.0.1 only; its switch is
the environment variable below, read by Ray's processes when they start (and by the driver
at `import ray`, hence the module constant set too). The dashboard stays off unless asked
for, and then listens on 127.0.0.1 as well.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import MidogError, reclaim_signals

# Ray's switch for its single-machine mode: "0" gives the node 127.0.0.1 as its address.
LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
LOOPBACK = "127.0.0.1"


def ray_token_available() -> bool:
    return bool(os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")) or (Path.home() / ".ray" / "auth_token").is_file()


@contextmanager
def loopback_only(ray: Any) -> Iterator[None]:
    """Within the block, a Ray started here gives its node the loopback address; the
    environment and Ray's constant are restored afterwards, so a later `--address` run in
    the same process joins its cluster with the real address."""
    from ray._private import ray_constants

    saved_env, saved_constant = os.environ.get(LOCAL_ONLY_ENV), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[LOCAL_ONLY_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_constant
        if saved_env is None:
            os.environ.pop(LOCAL_ONLY_ENV, None)
        else:
            os.environ[LOCAL_ONLY_ENV] = saved_env


def connect(ray: Any, address: str | None, cpus: int, dashboard: bool = False) -> bool:
    """Join `address`, or start a local Ray of `cpus` logical CPUs on the loopback address
    (dashboard on 127.0.0.1 when asked for). True when this call connected."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reporting from an offline tool
    if ray.is_initialized():
        return False
    if address:
        kwargs: dict[str, Any] = {"logging_level": logging.ERROR}
        if not address.startswith("ray://"):
            kwargs["log_to_driver"] = False
        elif "RAY_AUTH_MODE" not in os.environ and ray_token_available():
            # Ray turns token authentication on by itself when it finds a token, except
            # through the Ray client; do the same there.
            os.environ["RAY_AUTH_MODE"] = "token"
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise MidogError(f"--address {address}: cannot join the Ray cluster ({exc})") from None
        reclaim_signals()
        return True
    with loopback_only(ray):
        try:
            ray.init(
                num_cpus=cpus, include_dashboard=dashboard, dashboard_host=LOOPBACK, logging_level=logging.ERROR, log_to_driver=False
            )
        except Exception as exc:  # Ray raises a bare Exception when the dashboard's packages are missing
            if not dashboard:
                raise
            raise MidogError(f'--dashboard: Ray could not start its dashboard ({exc}); pip install "ray[default]" adds it') from None
    reclaim_signals()  # SIGTERM must stop the run cleanly (report, no temporary files), not abort it
    return True
