"""Settings that Ray reads when it is imported: every module that imports ray imports this first.

- never phone home (usage stats);
- keep an embedded Ray, or a process joining a Ray on 127.0.0.1, on loopback: Ray otherwise
  advertises the machine's interface address even for a local ray.init, and mixed addresses stop
  workers from starting;
- on such a one-machine Ray, no PreemptionWatcher: Ray Train starts that actor for every job to
  hear of nodes going away (spot instances), which does not happen to one machine, and its start
  takes about 1.4 s of CPU from the job's cores (benchmarks/README.md). Ray Train passes the
  variable on to its controller; a value set by the user wins;
- send the authentication token when one is at hand: Ray's client sends it only in token mode,
  which a new local Ray turns on for itself but a process joining a cluster does not. The token is
  taken where Ray's own CLI looks for it: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token;
- have Ray Train's controller look at its workers every 0.5 s instead of 2 s: it notices that a
  job is done only at its next look, so this takes a second or more off every job. Ray Train passes
  this variable on to its controller, so it holds on a joined cluster too.
"""

import ipaddress
import os
from pathlib import Path
from typing import Optional

from .errors import RunFailed

LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
PREEMPTION_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"


def current_cluster() -> Path:
    """Where `ray start --head` records its address: in its temp folder (RAY_TMPDIR, else /tmp/ray)."""
    return Path(os.environ.get("RAY_TMPDIR") or "/tmp/ray") / "ray_current_cluster"


def gcs_address(address: str) -> Optional[str]:
    """host:port of the cluster named by a Ray address ('auto' means the one started on this machine)."""
    if address == "auto":
        try:
            return current_cluster().read_text().strip() or None
        except OSError:
            return None
    return address.split("://")[-1].rstrip("/")


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


os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
if on_loopback(os.environ.get("RAY_ADDRESS")):
    os.environ.setdefault(LOOPBACK_ENV, "0")
    os.environ.setdefault(PREEMPTION_ENV, "0")
if "RAY_AUTH_MODE" not in os.environ and (os.environ.get("RAY_AUTH_TOKEN") or token_file().exists()):
    os.environ["RAY_AUTH_MODE"] = "token"
