"""How long the sandbox node takes: the one place that reads SANDBOX_TIMING.

Default ("fast", SANDBOX_TIMING unset or empty): the node does everything as
soon as it can, so the test suite stays quick. SANDBOX_TIMING=realistic: the
node (kubelet, service proxy, API server) takes the time a real node takes,
from the published or measured figures below (README "Timing" cites them).
One figure can be overridden for an experiment:

    SANDBOX_TIMING=realistic,volume_sync=10,image_pull=1

Interface (every component asks here, nothing else reads the variable):

    timing.realistic() -> bool
    timing.figure(name) -> float          # seconds; 0.0 in fast mode
    timing.image_pull(cached, always) -> float
    timing.pod_resync_interval() -> float | None   # None: propagate at once
    timing.api_latency(method) -> float   # per API request (API server side)
    timing.probe_schedule(started, initial, period) -> (first, next)
        # when a container started at `started` is probed first, and the
        # function giving each later probe's time from the time a probe ended
    timing.datapath_due(now, last_applied) -> float
        # monotonic time at which a Service proxy applies an Endpoints change
        # seen at `now`, given when it last applied one (kube-proxy's
        # minSyncPeriod); returns `now` in fast mode

This module must not import anything of the sandbox: the API server, the
proxy and the kubelet all import it.
"""
import os
import random

ENV = "SANDBOX_TIMING"

# Realistic figures in seconds (README "Timing" gives the source of each).
REALISTIC = {
    # First pull of an image on a node (kubelet `Pulled` event of nginx on
    # cloud nodes: 2.4 s, 3.3 s, 4.8 s; desktop clusters 12-100 s).
    "image_pull": 3.0,
    # imagePullPolicy Always on an image the node has: one registry round
    # trip (token + manifest HEAD); assumed, not measured.
    "image_check": 0.4,
    # RunPodSandbox: pause container and CNI set-up (kind + Cilium 0.31 s,
    # containerd on a laptop 1.5 s).
    "pod_sandbox": 0.5,
    # CreateContainer + StartContainer, per container.
    "container_start": 0.3,
    # kubelet syncFrequency: a pod is re-synced every Jitter(60 s, 0.5), and
    # a changed ConfigMap/Secret reaches its volume on that sync.
    "volume_sync": 60.0,
    # kubelet generic PLEG relist period: a started container is in the pod's
    # status (and its first readiness probe runs) at the next relist.
    "pleg_relist": 1.0,
    # EndpointSlice change -> kube-proxy rules on a small idle cluster.
    "endpoints_lag": 0.3,
    # kube-proxy iptables minSyncPeriod (default 1 s).
    "proxy_min_sync": 1.0,
    # Per API request on a small idle cluster (reads, writes).
    "api_read": 0.005,
    "api_write": 0.015,
}
RESYNC_JITTER = 0.5   # kubelet workerResyncIntervalJitterFactor


class TimingError(ValueError):
    pass


def parse(value):
    """(realistic: bool, figures: dict) from a SANDBOX_TIMING value; raises TimingError."""
    parts = [p.strip() for p in (value or "").split(",") if p.strip()]
    mode = "fast"
    if parts and "=" not in parts[0]:
        mode = parts.pop(0)
    if mode not in ("fast", "realistic"):
        raise TimingError("%s=%s: the mode must be 'realistic' or 'fast' (default), optionally followed by "
                          ",name=seconds overrides" % (ENV, value))
    figures = dict(REALISTIC) if mode == "realistic" else {k: 0.0 for k in REALISTIC}
    for p in parts:
        name, _, num = p.partition("=")
        name = name.strip()
        if name not in REALISTIC:
            raise TimingError("%s: unknown figure %r (known: %s)" % (ENV, name, ", ".join(sorted(REALISTIC))))
        try:
            secs = float(num)
        except ValueError:
            secs = -1.0
        if not secs >= 0:
            raise TimingError("%s: %s=%s is not a number of seconds" % (ENV, name, num))
        figures[name] = secs
    return mode == "realistic", figures


_realistic, _figures = parse(os.environ.get(ENV, ""))


def configure(value):
    """Re-read a SANDBOX_TIMING value (tests of this module; the cluster reads the environment once)."""
    global _realistic, _figures
    _realistic, _figures = parse(value)


def realistic():
    return _realistic


def figure(name):
    return _figures[name]


def image_pull(cached, always):
    """Seconds a pull takes: the whole pull on first use, a registry check for
    imagePullPolicy Always on a cached image, nothing otherwise."""
    if not cached:
        return _figures["image_pull"]
    return _figures["image_check"] if always else 0.0


def pod_resync_interval():
    """Seconds until a pod's next periodic sync (where ConfigMap/Secret volume
    changes land), or None when changes are propagated at once (fast mode)."""
    base = _figures["volume_sync"]
    if base <= 0:
        return None
    return base * (1.0 + random.random() * RESYNC_JITTER)


def api_latency(method):
    return _figures["api_read"] if method in ("GET", "HEAD", "OPTIONS") else _figures["api_write"]


def datapath_due(now, last_applied):
    """When a Service proxy applies an Endpoints change it saw at `now`."""
    lag = _figures["endpoints_lag"]
    min_sync = _figures["proxy_min_sync"]
    if lag <= 0 and min_sync <= 0:
        return now
    due = now + lag
    if last_applied is not None:
        due = max(due, last_applied + min_sync)
    return due


def probe_schedule(started, initial, period):
    """When the kubelet probes a container that started at monotonic time
    `started` (initialDelaySeconds `initial`, periodSeconds `period`):
    (first, next) where `next(now)` is the probe after one that ended at
    `now`. Fast mode: first at started + initial, then every period after a
    probe. Realistic mode, as the kubelet's prober worker does: it ticks
    every period from its creation at the pod's sync (a phase unrelated to
    the container's start); the status sync after the PLEG relist that sees
    the container running (0 to pleg_relist later) triggers a probe at once,
    which counts only once initialDelaySeconds have passed; otherwise the
    first tick after them."""
    if not _realistic:
        return started + initial, lambda now: now + period
    phase = started + random.uniform(0, period)

    def tick_after(t):
        if t < phase - 1e-9:
            return phase
        return phase + (int((t - phase) / period + 1e-9) + 1) * period
    seen = started + random.uniform(0, _figures["pleg_relist"])
    first = seen if seen >= started + initial else tick_after(started + initial)
    return first, tick_after

