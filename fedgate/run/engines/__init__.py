"""Where a simulation's clients run: the engine of `fedgate sim --engine`.

- ``local`` (the default): one `fedgate client` process per client over a network
  transport, or every client as a coroutine of this process over ``inproc``
  (`fedgate.run.simulation`).
- ``ray``: virtual clients on a Ray cluster, a local one or one at ``--ray-address``
  (`fedgate.run.engines.ray_sim`). Ray is the optional extra ``fedgate[ray]``: this package
  imports it only when that engine runs, so importing fedgate never does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fedgate.errors import ConfigError

if TYPE_CHECKING:
    from fedgate.core.messages import RoundRecord
    from fedgate.run.launch import ServerProcess
    from fedgate.run.sim_config import SimConfig
    from fedgate.run.simulation import Serving

LOCAL = "local"
RAY = "ray"
ENGINES = (LOCAL, RAY)
RAY_MISSING = "the ray engine needs Ray, which is not installed: pip install 'fedgate[ray]'"


def run_on_ray(
    config: SimConfig,
    on_round: Callable[[RoundRecord], None] | None,
    on_server: Callable[[ServerProcess], None] | None,
    serving: Serving,
) -> dict[str, Any]:
    """`fedgate.run.engines.ray_sim.simulate_on_ray`, or a ConfigError saying how to install
    Ray when it is missing."""
    try:
        from fedgate.run.engines import ray_sim  # noqa: PLC0415 - Ray loads only when asked for
    except ImportError as error:
        if error.name is not None and error.name.split(".")[0] == "ray":
            raise ConfigError(RAY_MISSING) from None
        raise
    return ray_sim.simulate_on_ray(config, on_round, on_server, serving)
