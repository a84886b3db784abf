"""What rnnjob asks of Ray through its environment, set by one call, `configure()`, before Ray is first
imported (Ray reads some of it at import: its loopback switch, its authentication mode). Importing this
module changes nothing; the Ray rooms (`ray_train`, `grid`, `jobs_api`) import Ray, so whoever imports
them calls `configure()` first (`runs` and `cli` do; so does the tests' conftest). A value the user set
wins over each of these:

- never phone home (usage stats);
- keep an embedded Ray, or a process joining a Ray on 127.0.0.1, on loopback: Ray otherwise
  advertises the machine's interface address even for a local ray.init, and mixed addresses stop
  workers from starting;
- on such a one-machine Ray, no PreemptionWatcher: Ray Train starts that actor for every job to
  hear of nodes going away (spot instances), which does not happen to one machine, and its start
  takes about 1.4 s of CPU from the job's cores (benchmarks/README.md). Ray Train passes the
  variable on to its controller;
- send the authentication token when one is at hand: Ray's client sends it only in token mode,
  which a new local Ray turns on for itself but a process joining a cluster does not. The token is
  taken where Ray's own CLI looks for it: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token;
- have Ray Train's controller look at its workers every 0.5 s instead of 2 s: it notices that a
  job is done only at its next look, so this takes a second or more off every job. Ray Train passes
  this variable on to its controller, so it holds on a joined cluster too;
- grids and searches (Ray Tune): Tune's SIGINT handler off, since rnnjob stops an experiment itself
  (grid._stops_gracefully); Tune's older console output, since its newer one prints an experiment box
  and a TensorBoard hint into Ray's session folder even at verbose=0, while rnnjob prints its own
  lines and writes TensorBoard files into the run directories; and no warning when Tune saves its
  experiment's state after every second checkpoint of a trial, which it does by design when a trial
  keeps two checkpoints.
"""

import ipaddress
import os
from pathlib import Path
from typing import Optional

from .errors import RunFailed

LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
PREEMPTION_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"
GCS_RECONNECT_ENV = "RAY_gcs_rpc_server_reconnect_timeout_s"
API_SERVER_ENV = "RAY_API_SERVER_ADDRESS"  # a cluster's dashboard: its Jobs API and State API


def current_cluster() -> Path:
    """Where `ray start --head` records its address: in Ray's temp folder, $RAY_TMPDIR/ray (else /tmp/ray)."""
    return Path(os.environ.get("RAY_TMPDIR") or "/tmp") / "ray" / "ray_current_cluster"


def gcs_address(address: str) -> Optional[str]:
    """host:port of the cluster named by a Ray address ('auto' means the one started on this machine)."""
    if address == "auto":
        try:
            return current_cluster().read_text().strip() or None
        except OSError:
            return None
    return address.split("://")[-1].rstrip("/")


def is_jobs_address(address: Optional[str]) -> bool:
    """Whether an address names a cluster's Jobs API (its dashboard, http://HOST:8265) rather than its GCS."""
    return bool(address) and address.startswith(("http://", "https://"))


def jobs_address(address: Optional[str]) -> Optional[str]:
    """The Jobs API address a command should use: `address` if it is http(s), else (no address given) the one
    Ray's own CLI would take from RAY_API_SERVER_ADDRESS or RAY_ADDRESS, if any."""
    if address:
        return address if is_jobs_address(address) else None
    for name in (API_SERVER_ENV, "RAY_ADDRESS"):
        if is_jobs_address(os.environ.get(name)):
            return os.environ[name]
    return None


def on_loopback(address: Optional[str]) -> bool:
    if not address:
        return True  # an embedded Ray
    host = (gcs_address(address) or "").rsplit(":", 1)[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def token_file() -> Path:
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")


def token_rejected(cluster: str) -> RunFailed:
    return RunFailed(f"the Ray cluster at {cluster} rejected the authentication token; give it the cluster's "
                     "token in RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token")


TUNE = {"TUNE_DISABLE_SIGINT_HANDLER": "1", "RAY_AIR_NEW_OUTPUT": "0",
        "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0"}


def configure() -> None:
    """Put rnnjob's Ray settings into this process's environment (each unless already set), for the
    cluster in $RAY_ADDRESS, or an embedded Ray where there is none. Call it before Ray is imported."""
    env = os.environ
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
    # how long a Ray process waits for a silent head (its GCS) before it ends itself (Ray's default: 60 s;
    # Ray's GCS fault-tolerance guide names this setting). rnnjob's driver gives a lost head up after 10 s
    # (ray_train.ClusterWatch) and writes the run's summary; leaving Ray can then block on the dead head, so
    # Ray's own limit is what bounds the driver's end: well within a minute
    env.setdefault(GCS_RECONNECT_ENV, "30")
    if on_loopback(env.get("RAY_ADDRESS")):
        env.setdefault(LOOPBACK_ENV, "0")
        env.setdefault(PREEMPTION_ENV, "0")
    if "RAY_AUTH_MODE" not in env and (env.get("RAY_AUTH_TOKEN") or token_file().exists()):
        env["RAY_AUTH_MODE"] = "token"
    for name, value in TUNE.items():
        env.setdefault(name, value)
