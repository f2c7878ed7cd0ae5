"""Watch streams: replay from resourceVersion, live events, bookmarks, timeouts, WatchList."""
import json
import queue
import time

from . import errors as E


def _filter(typ, obj, prev, match):
    """Translate an event through a selector: objects moving in/out of it become ADDED/DELETED."""
    now = match(obj)
    if typ == "ADDED":
        return ("ADDED", obj) if now else None
    if typ == "DELETED":
        return ("DELETED", obj) if (now or (prev is not None and match(prev))) else None
    was = prev is not None and match(prev)
    if now and was:
        return ("MODIFIED", obj)
    if now:
        return ("ADDED", obj)
    if was:
        return ("DELETED", obj)
    return None


def bookmark(kind, api_version, rv, initial_end=False):
    md = {"resourceVersion": rv}
    if initial_end:
        md["annotations"] = {"k8s.io/initial-events-end": "true"}
    return {"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": api_version, "metadata": md}}


def stream(store, res, namespace, params, match, write, transform, bookmark_interval, stop_event):
    """Run one watch. write(bytes) sends one event; raises on a broken connection.

    params: dict with resourceVersion, timeoutSeconds, allowWatchBookmarks, sendInitialEvents.
    match(obj) -> bool applies label/field selectors. transform(obj) -> object to send.
    Raises ApiError before the stream starts only for request errors (the caller answers them).
    """
    rv = params.get("resourceVersion")
    bookmarks = params.get("allowWatchBookmarks")
    send_initial = params.get("sendInitialEvents")
    timeout = params.get("timeoutSeconds")
    deadline = time.monotonic() + (timeout if timeout is not None else 1800)
    kind, api_version = res.kind, res.api_version

    initial_end_rv = None
    try:
        if send_initial:
            w, replay, initial_end_rv = store.watch_initial(res.plural, namespace)
        elif send_initial is False and rv in (None, "", "0"):
            w, replay = store.watch(res.plural, namespace, store.current_rv())
        else:
            w, replay = store.watch(res.plural, namespace, rv)
    except E.ApiError as e:
        if e.code == 410:
            # like the watch cache: a 200 stream carrying one ERROR event
            write(json.dumps({"type": "ERROR", "object": e.body()}, separators=(",", ":")).encode() + b"\n")
            return
        raise
    try:
        last_rv = rv if rv not in (None, "") else "0"
        for typ, obj, prev in replay:
            ev = _filter(typ, obj, prev, match)
            if ev:
                write(_enc(ev[0], transform(ev[1])))
            last_rv = obj["metadata"]["resourceVersion"]
        if initial_end_rv is not None:
            write(json.dumps(bookmark(kind, api_version, initial_end_rv, True), separators=(",", ":")).encode() + b"\n")
            last_rv = initial_end_rv
        next_bm = time.monotonic() + bookmark_interval
        while True:
            now = time.monotonic()
            if now >= deadline or stop_event.is_set():
                return
            wait = min(deadline - now, max(0.0, next_bm - now) if bookmarks else deadline - now, 1.0)
            try:
                item = w.queue.get(timeout=max(0.01, wait))
            except queue.Empty:
                item = False
            if item is None:     # watcher closed (fault injection: drop watches)
                raise ConnectionAbortedError("watch dropped")
            if item:
                typ, obj, prev = item
                ev = _filter(typ, obj, prev, match)
                if ev:
                    write(_enc(ev[0], transform(ev[1])))
                last_rv = obj["metadata"]["resourceVersion"]
                continue
            if bookmarks and time.monotonic() >= next_bm:
                brv = store.bookmark_rv(w)
                if brv is not None:
                    write(json.dumps(bookmark(kind, api_version, brv), separators=(",", ":")).encode() + b"\n")
                next_bm = time.monotonic() + bookmark_interval
    finally:
        store.unwatch(w)


def _enc(typ, obj):
    return json.dumps({"type": typ, "object": obj}, separators=(",", ":")).encode() + b"\n"
