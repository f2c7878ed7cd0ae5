"""Small helpers shared by the node side: work queues, time stamps, selectors, Events."""
import heapq
import json
import logging
import random
import re
import threading
import time
import datetime

log = logging.getLogger("sandbox.node")

NODE_NAME = "sandbox"


_SUFFIX = {"Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40, "Pi": 2 ** 50, "Ei": 2 ** 60,
           "n": 1e-9, "u": 1e-6, "m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}


def parse_quantity(q):
    """A resource.Quantity ("64Mi", "500m", "1.5", "129e6") as a number; None when absent or malformed."""
    if q is None:
        return None
    if isinstance(q, (int, float)):
        return float(q)
    m = re.match(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$", str(q).strip())
    if not m:
        return None
    try:
        v = float(m.group(1) + (m.group(2) or ""))
    except ValueError:
        return None
    return v * _SUFFIX[m.group(3) or ""]


def now_rfc3339():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(s):
    if not s:
        return None
    try:
        return datetime.datetime.strptime(s[:19], "%Y-%m-%dT%H:%M:%S").replace(
            tzinfo=datetime.timezone.utc).timestamp()
    except ValueError:
        return None


def canon(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def meta(obj):
    return obj.get("metadata") or {}


def key_of(obj):
    md = meta(obj)
    return (md.get("namespace"), md.get("name"))


def controller_ref(obj):
    for ref in meta(obj).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref
    return None


def selector_matches(selector, labels):
    """A LabelSelector (matchLabels + matchExpressions) against a label map.

    An empty selector matches everything, as in Kubernetes for ReplicaSets."""
    if selector is None:
        return False
    labels = labels or {}
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        k, op, vals = e.get("key"), e.get("operator"), e.get("values") or []
        if op == "In" and labels.get(k) not in vals:
            return False
        if op == "NotIn" and k in labels and labels[k] in vals:
            return False
        if op == "Exists" and k not in labels:
            return False
        if op == "DoesNotExist" and k in labels:
            return False
    return True


def map_selector_matches(selector, labels):
    """A Service's plain map selector; an empty or missing selector matches nothing."""
    if not selector:
        return False
    labels = labels or {}
    return all(labels.get(k) == v for k, v in selector.items())


def api_error_code(e):
    return getattr(e, "code", None)


class WorkQueue:
    """A de-duplicating work queue with delayed adds (like client-go's workqueue).

    A key added while it is being processed is processed again afterwards, never
    concurrently."""

    def __init__(self):
        self._cv = threading.Condition()
        self._queue = []
        self._dirty = set()
        self._processing = set()
        self._delayed = []
        self._seq = 0
        self._closed = False

    def add(self, key):
        with self._cv:
            if self._closed or key in self._dirty:
                return
            self._dirty.add(key)
            if key not in self._processing:
                self._queue.append(key)
                self._cv.notify()

    def add_after(self, key, delay):
        if delay <= 0:
            self.add(key)
            return
        with self._cv:
            self._seq += 1
            heapq.heappush(self._delayed, (time.monotonic() + delay, self._seq, key))
            self._cv.notify()

    def get(self):
        """Next key, or None once the queue is shut down."""
        with self._cv:
            while True:
                if self._closed:
                    return None
                nowt = time.monotonic()
                while self._delayed and self._delayed[0][0] <= nowt:
                    _, _, key = heapq.heappop(self._delayed)
                    if key not in self._dirty:
                        self._dirty.add(key)
                        if key not in self._processing:
                            self._queue.append(key)
                if self._queue:
                    key = self._queue.pop(0)
                    self._dirty.discard(key)
                    self._processing.add(key)
                    return key
                timeout = None
                if self._delayed:
                    timeout = max(0.0, self._delayed[0][0] - nowt)
                self._cv.wait(timeout)

    def done(self, key):
        with self._cv:
            self._processing.discard(key)
            if key in self._dirty:
                self._queue.append(key)
                self._cv.notify()

    def shutdown(self):
        with self._cv:
            self._closed = True
            self._cv.notify_all()


class Worker:
    """A thread that takes keys from a WorkQueue and calls sync(key)."""

    def __init__(self, name, sync):
        self.name = name
        self.queue = WorkQueue()
        self._sync = sync
        self._failures = {}
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self):
        self.thread.start()

    def _run(self):
        while True:
            key = self.queue.get()
            if key is None:
                return
            try:
                self._sync(key)
                self._failures.pop(key, None)
            except Exception as e:  # keep the controller alive; retry with back-off
                n = self._failures.get(key, 0) + 1
                self._failures[key] = n
                if api_error_code(e) != 409:
                    log.warning("%s: sync %s failed: %r", self.name, key, e, exc_info=api_error_code(e) is None)
                self.queue.add_after(key, min(0.005 * (2 ** n), 5.0))
            finally:
                self.queue.done(key)

    def stop(self):
        self.queue.shutdown()
        self.thread.join(5)


_EVENT_CHARS = "0123456789abcdef"


def record_event(store, obj, etype, reason, message, component):
    """Create a core/v1 Event about obj, as the real controllers and kubelet do.

    Failures are ignored: Events are best effort in Kubernetes too."""
    md = meta(obj)
    ns = md.get("namespace") or "default"
    ts = now_rfc3339()
    ev = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "%s.%s" % (md.get("name"), "".join(random.choice(_EVENT_CHARS) for _ in range(16))),
                     "namespace": ns},
        "involvedObject": {"kind": obj.get("kind"), "namespace": ns, "name": md.get("name"),
                           "uid": md.get("uid"), "apiVersion": obj.get("apiVersion"),
                           "resourceVersion": md.get("resourceVersion")},
        "reason": reason,
        "message": message,
        "type": etype,
        "source": {"component": component} if component != "kubelet" else
        {"component": "kubelet", "host": NODE_NAME},
        "firstTimestamp": ts,
        "lastTimestamp": ts,
        "count": 1,
        "reportingComponent": component,
        "reportingInstance": NODE_NAME if component == "kubelet" else "",
    }
    try:
        store.create("events", ns, ev)
    except Exception:  # noqa: best effort
        pass
