"""Deployment, ReplicaSet and Endpoints controllers (event driven, one worker each).

They follow kube-controller-manager's logic (pkg/controller/deployment,
replicaset, endpoint) closely enough that kubectl's rollout status, wait and
describe read the same fields and conditions they read on a real cluster."""
import copy
import math
import struct
import time

from . import nodeutil as u

SAFE_CHARS = "bcdfghjklmnpqrstvwxz2456789"
REVISION = "deployment.kubernetes.io/revision"
DESIRED = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
HASH_LABEL = "pod-template-hash"


def _fnv32a(data):
    h = 0x811c9dc5
    for b in data:
        h ^= b
        h = (h * 0x01000193) & 0xffffffff
    return h


def template_hash(template, collision_count=None):
    """pod-template-hash: FNV-32a of the template (and collisionCount), encoded
    with the alphabet of apimachinery's rand.SafeEncodeString."""
    data = u.canon(template).encode()
    if collision_count:
        data += struct.pack("<I", collision_count)
    s = str(_fnv32a(data))
    return "".join(SAFE_CHARS[ord(c) % len(SAFE_CHARS)] for c in s)


def _without_hash(template):
    t = copy.deepcopy(template or {})
    labels = (t.get("metadata") or {}).get("labels")
    if labels:
        labels.pop(HASH_LABEL, None)
    return t


def _int_or_percent(v, total, round_up):
    if v is None:
        return None
    if isinstance(v, int):
        return v
    s = str(v)
    if s.endswith("%"):
        p = int(s[:-1]) * total / 100.0
        return int(math.ceil(p)) if round_up else int(math.floor(p))
    return int(s)


def _cond(status, ctype):
    for c in status.get("conditions") or []:
        if c.get("type") == ctype:
            return c
    return None


def _set_cond(status, ctype, cstatus, reason, message, keep_transition=True):
    conds = status.setdefault("conditions", [])
    ts = u.now_rfc3339()
    old = _cond(status, ctype)
    new = {"type": ctype, "status": cstatus, "lastUpdateTime": ts, "lastTransitionTime": ts,
           "reason": reason, "message": message}
    if old is not None:
        if old.get("status") == cstatus and keep_transition:
            new["lastTransitionTime"] = old.get("lastTransitionTime", ts)
        if (old.get("status"), old.get("reason"), old.get("message")) == (cstatus, reason, message):
            new["lastUpdateTime"] = old.get("lastUpdateTime", ts)
        conds[conds.index(old)] = new
    else:
        conds.append(new)


def _remove_cond(status, ctype):
    if status.get("conditions"):
        status["conditions"] = [c for c in status["conditions"] if c.get("type") != ctype]
        if not status["conditions"]:
            del status["conditions"]


def _owned_by(obj, owner):
    ref = u.controller_ref(obj)
    return ref is not None and ref.get("uid") == u.meta(owner).get("uid")


def _owner_ref(owner, kind, api_version):
    md = u.meta(owner)
    return {"apiVersion": api_version, "kind": kind, "name": md["name"], "uid": md["uid"],
            "controller": True, "blockOwnerDeletion": True}


def _pod_ready(pod):
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return c.get("status") == "True", u.parse_rfc3339(c.get("lastTransitionTime"))
    return False, None


def _pod_active(pod):
    return (not u.meta(pod).get("deletionTimestamp")
            and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"))


def _status_equal(a, b):
    """Status comparison ignoring lastUpdateTime noise of unchanged conditions."""
    return u.canon(a or {}) == u.canon(b or {})


class ReplicaSetController:
    component = "replicaset-controller"

    def __init__(self, store):
        self.store = store
        self.worker = u.Worker("replicaset-controller", self.sync)
        self.backoff = {}

    def start(self):
        for rs in self.store.list("replicasets"):
            self.worker.queue.add(u.key_of(rs))
        self.worker.start()

    def stop(self):
        self.worker.stop()

    def on_event(self, etype, resource, obj):
        if resource == "replicasets":
            self.worker.queue.add(u.key_of(obj))
        elif resource == "pods":
            ref = u.controller_ref(obj)
            if ref and ref.get("kind") == "ReplicaSet":
                self.worker.queue.add((u.meta(obj).get("namespace"), ref.get("name")))
        elif resource == "namespaces" and etype == "MODIFIED":
            # Pod Security labels may have changed: retry failed creations now.
            ns = u.meta(obj).get("name")
            for key in list(self.backoff):
                if key[0] == ns:
                    self.worker.queue.add(key)

    def sync(self, key):
        ns, name = key
        rs = self.store.get("replicasets", ns, name)
        if rs is None:
            self.backoff.pop(key, None)
            return
        rs.setdefault("kind", "ReplicaSet")
        rs.setdefault("apiVersion", "apps/v1")
        spec = rs.get("spec") or {}
        selector = spec.get("selector") or {}
        pods = [p for p in self.store.list("pods", ns) if _owned_by(p, rs)]
        active = [p for p in pods if _pod_active(p)]
        want = spec.get("replicas", 1)
        failure = None
        if not u.meta(rs).get("deletionTimestamp"):
            diff = len(active) - want
            if diff < 0:
                failure = self._create_pods(rs, -diff, active)
            elif diff > 0:
                self._delete_pods(rs, active, diff)
                pods = [p for p in self.store.list("pods", ns) if _owned_by(p, rs)]
                active = [p for p in pods if _pod_active(p)]
        if failure is None:
            self.backoff.pop(key, None)
        else:
            n = self.backoff.get(key, 0) + 1
            self.backoff[key] = n
            self.worker.queue.add_after(key, min(2 ** (n - 1), 30))
        self._update_status(rs, active, failure, selector)

    def _create_pods(self, rs, count, active):
        md = u.meta(rs)
        template = (rs.get("spec") or {}).get("template") or {}
        tmeta = template.get("metadata") or {}
        failure = None
        # Slow start batches as the real controller: 1, 2, 4, ... stop at the first error.
        batch, done = 1, 0
        while done < count and failure is None:
            for _ in range(min(batch, count - done)):
                pod = {
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"generateName": md["name"] + "-", "namespace": md.get("namespace"),
                                 "labels": copy.deepcopy(tmeta.get("labels") or {}),
                                 "ownerReferences": [_owner_ref(rs, "ReplicaSet", "apps/v1")]},
                    "spec": copy.deepcopy(template.get("spec") or {}),
                }
                if tmeta.get("annotations"):
                    pod["metadata"]["annotations"] = copy.deepcopy(tmeta["annotations"])
                try:
                    created = self.store.create("pods", md.get("namespace"), pod)
                    u.record_event(self.store, rs, "Normal", "SuccessfulCreate",
                                   "Created pod: %s" % u.meta(created).get("name"), self.component)
                    done += 1
                except Exception as e:
                    if u.api_error_code(e) is None:
                        raise
                    msg = getattr(e, "message", str(e))
                    u.record_event(self.store, rs, "Warning", "FailedCreate", "Error creating: %s" % msg,
                                   self.component)
                    failure = msg
                    break
            batch *= 2
        return failure

    def _delete_pods(self, rs, active, count):
        def rank(p):
            st = p.get("status") or {}
            ready, since = _pod_ready(p)
            phase_rank = {"Pending": 0, "Unknown": 1, "Running": 2}.get(st.get("phase"), 0)
            restarts = sum(c.get("restartCount", 0) for c in st.get("containerStatuses") or [])
            created = u.parse_rfc3339(u.meta(p).get("creationTimestamp")) or 0
            return (bool(u.meta(p).get("labels") is not None and (p.get("spec") or {}).get("nodeName")),
                    phase_rank, ready, -restarts, -created)
        for p in sorted(active, key=rank)[:count]:
            try:
                self.store.delete("pods", u.meta(p).get("namespace"), u.meta(p).get("name"))
                u.record_event(self.store, rs, "Normal", "SuccessfulDelete",
                               "Deleted pod: %s" % u.meta(p).get("name"), self.component)
            except Exception as e:
                if u.api_error_code(e) != 404:
                    raise

    def _update_status(self, rs, active, failure, selector):
        spec = rs.get("spec") or {}
        min_ready = spec.get("minReadySeconds", 0) or 0
        tlabels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        nowt = time.time()
        ready = available = labeled = 0
        next_check = None
        for p in active:
            if all((u.meta(p).get("labels") or {}).get(k) == v for k, v in tlabels.items()):
                labeled += 1
            ok, since = _pod_ready(p)
            if ok:
                ready += 1
                if min_ready <= 0 or (since is not None and since + min_ready <= nowt):
                    available += 1
                elif since is not None:
                    wait = since + min_ready - nowt
                    next_check = wait if next_check is None else min(next_check, wait)
        if next_check is not None:
            self.worker.queue.add_after(u.key_of(rs), next_check + 0.05)
        old = rs.get("status") or {}
        new = {"replicas": len(active)}
        if labeled:
            new["fullyLabeledReplicas"] = labeled
        if ready:
            new["readyReplicas"] = ready
        if available:
            new["availableReplicas"] = available
        new["observedGeneration"] = u.meta(rs).get("generation", 1)
        if old.get("conditions"):
            new["conditions"] = copy.deepcopy(old["conditions"])
        if failure is not None:
            _set_cond(new, "ReplicaFailure", "True", "FailedCreate", failure)
        else:
            _remove_cond(new, "ReplicaFailure")
        if _status_equal(old, new):
            return
        ns, name = u.key_of(rs)

        def apply(obj):
            obj["status"] = new
        self.store.patch_status("replicasets", ns, name, apply)


class DeploymentController:
    component = "deployment-controller"

    def __init__(self, store):
        self.store = store
        self.worker = u.Worker("deployment-controller", self.sync)

    def start(self):
        for d in self.store.list("deployments"):
            self.worker.queue.add(u.key_of(d))
        self.worker.start()

    def stop(self):
        self.worker.stop()

    def on_event(self, etype, resource, obj):
        if resource == "deployments":
            self.worker.queue.add(u.key_of(obj))
        elif resource == "replicasets":
            ref = u.controller_ref(obj)
            if ref and ref.get("kind") == "Deployment":
                self.worker.queue.add((u.meta(obj).get("namespace"), ref.get("name")))

    # -- sync -------------------------------------------------------------
    def sync(self, key):
        ns, name = key
        d = self.store.get("deployments", ns, name)
        if d is None or u.meta(d).get("deletionTimestamp"):
            return
        d.setdefault("kind", "Deployment")
        d.setdefault("apiVersion", "apps/v1")
        spec = d.get("spec") or {}
        rss = [rs for rs in self.store.list("replicasets", ns) if _owned_by(rs, d)]
        rss.sort(key=lambda r: (u.meta(r).get("creationTimestamp") or "", u.meta(r).get("name")))
        template = spec.get("template") or {}
        new_rs = None
        for rs in rss:
            if u.canon(_without_hash((rs.get("spec") or {}).get("template"))) == u.canon(_without_hash(template)):
                new_rs = rs
                break
        old_rss = [rs for rs in rss if rs is not new_rs]
        replicas = spec.get("replicas", 1)
        strategy = spec.get("strategy") or {}
        surge, unavailable = self._surge_unavailable(d)
        progress_reason = None  # condition reason set by this sync, when a new RS was created or found

        if spec.get("paused"):
            self._sync_status(d, new_rs, rss, None)
            return

        max_old_rev = max([self._revision(rs) for rs in old_rss] or [0])
        if new_rs is None:
            new_rs, progress_reason = self._create_new_rs(d, rss, max_old_rev, surge), "NewReplicaSetCreated"
            if new_rs is None:
                return
            rss.append(new_rs)
        else:
            new_rs = self._ensure_new_rs_annotations(d, new_rs, max_old_rev, surge)
            if self._revision(new_rs) > int((u.meta(d).get("annotations") or {}).get(REVISION, "0") or 0):
                progress_reason = "FoundNewReplicaSet"
            rss = [new_rs if rs is new_rs or u.meta(rs).get("name") == u.meta(new_rs).get("name") else rs
                   for rs in rss]
        self._sync_revision_annotation(d, new_rs)

        if strategy.get("type") == "Recreate":
            self._recreate(d, new_rs, old_rss, replicas)
        else:
            self._rolling(d, new_rs, old_rss, replicas, surge, unavailable)

        rss = [rs for rs in self.store.list("replicasets", ns) if _owned_by(rs, d)]
        new_rs = next((rs for rs in rss if u.meta(rs).get("name") == u.meta(new_rs).get("name")), new_rs)
        self._cleanup(d, new_rs, rss)
        self._sync_status(d, new_rs, rss, progress_reason)

    def _revision(self, rs):
        try:
            return int((u.meta(rs).get("annotations") or {}).get(REVISION, "0"))
        except ValueError:
            return 0

    def _surge_unavailable(self, d):
        spec = d.get("spec") or {}
        replicas = spec.get("replicas", 1)
        strategy = spec.get("strategy") or {}
        if strategy.get("type") == "Recreate":
            return 0, replicas
        ru = strategy.get("rollingUpdate") or {}
        surge = _int_or_percent(ru.get("maxSurge", "25%"), replicas, True)
        unav = _int_or_percent(ru.get("maxUnavailable", "25%"), replicas, False)
        if surge == 0 and unav == 0:
            unav = 1
        return surge, unav

    def _create_new_rs(self, d, rss, max_old_rev, surge):
        md = u.meta(d)
        spec = d.get("spec") or {}
        collision = (d.get("status") or {}).get("collisionCount")
        template = copy.deepcopy(spec.get("template") or {})
        h = template_hash(_without_hash(template), collision)
        template.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = h
        selector = copy.deepcopy(spec.get("selector") or {})
        selector.setdefault("matchLabels", {})[HASH_LABEL] = h
        replicas = spec.get("replicas", 1)
        if (spec.get("strategy") or {}).get("type") == "Recreate":
            new_replicas = replicas if not any((rs.get("spec") or {}).get("replicas") for rs in rss) else 0
        else:
            current = sum((rs.get("spec") or {}).get("replicas", 0) for rs in rss)
            new_replicas = max(0, min(replicas + surge - current, replicas))
        annotations = {k: v for k, v in (md.get("annotations") or {}).items()
                       if k not in ("kubectl.kubernetes.io/last-applied-configuration", REVISION,
                                    "deployment.kubernetes.io/revision-history")}
        annotations.update({DESIRED: str(replicas), MAX_REPLICAS: str(replicas + surge),
                            REVISION: str(max_old_rev + 1)})
        rs = {
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "%s-%s" % (md["name"], h), "namespace": md.get("namespace"),
                         "labels": copy.deepcopy(template["metadata"]["labels"]),
                         "annotations": annotations,
                         "ownerReferences": [_owner_ref(d, "Deployment", "apps/v1")]},
            "spec": {"replicas": new_replicas, "minReadySeconds": spec.get("minReadySeconds", 0),
                     "selector": selector, "template": template},
        }
        try:
            created = self.store.create("replicasets", md.get("namespace"), rs)
        except Exception as e:
            if u.api_error_code(e) == 409:
                existing = self.store.get("replicasets", md.get("namespace"), rs["metadata"]["name"])
                if existing is not None and _owned_by(existing, d):
                    return existing
                # Hash collision with a foreign ReplicaSet: bump collisionCount and retry.
                def bump(obj):
                    obj["status"]["collisionCount"] = (obj["status"].get("collisionCount") or 0) + 1
                self.store.patch_status("deployments", md.get("namespace"), md["name"], bump)
                return None
            raise
        u.record_event(self.store, d, "Normal", "ScalingReplicaSet",
                       "Scaled up replica set %s from 0 to %d" % (rs["metadata"]["name"], new_replicas)
                       if new_replicas else "Created new replica set %s" % rs["metadata"]["name"],
                       self.component)
        return created

    def _ensure_new_rs_annotations(self, d, rs, max_old_rev, surge):
        md = u.meta(rs)
        ann = dict(md.get("annotations") or {})
        want_rev = self._revision(rs)
        if want_rev <= max_old_rev:
            want_rev = max_old_rev + 1
        replicas = (d.get("spec") or {}).get("replicas", 1)
        changes = {REVISION: str(want_rev), DESIRED: str(replicas), MAX_REPLICAS: str(replicas + surge)}
        if all(ann.get(k) == v for k, v in changes.items()) and \
                (rs.get("spec") or {}).get("minReadySeconds", 0) == (d.get("spec") or {}).get("minReadySeconds", 0):
            return rs
        ann.update(changes)
        rs["metadata"]["annotations"] = ann
        rs["spec"]["minReadySeconds"] = (d.get("spec") or {}).get("minReadySeconds", 0)
        return self.store.update("replicasets", md.get("namespace"), rs)

    def _sync_revision_annotation(self, d, new_rs):
        rev = (u.meta(new_rs).get("annotations") or {}).get(REVISION)
        ann = u.meta(d).get("annotations") or {}
        if rev and ann.get(REVISION) != rev:
            cur = self.store.get("deployments", u.meta(d).get("namespace"), u.meta(d).get("name"))
            if cur is None:
                return
            cur["metadata"].setdefault("annotations", {})[REVISION] = rev
            updated = self.store.update("deployments", u.meta(d).get("namespace"), cur)
            d["metadata"] = updated["metadata"]

    def _scale(self, d, rs, count):
        if (rs.get("spec") or {}).get("replicas", 0) == count:
            return rs
        old = (rs.get("spec") or {}).get("replicas", 0)
        rs = copy.deepcopy(rs)
        rs["spec"]["replicas"] = count
        updated = self.store.update("replicasets", u.meta(rs).get("namespace"), rs)
        u.record_event(self.store, d, "Normal", "ScalingReplicaSet",
                       "Scaled %s replica set %s from %d to %d" % ("up" if count > old else "down",
                                                                   u.meta(rs).get("name"), old, count),
                       self.component)
        return updated

    def _rolling(self, d, new_rs, old_rss, replicas, surge, unavailable):
        # reconcileNewReplicaSet
        all_rss = [new_rs] + old_rss
        cur_new = (new_rs.get("spec") or {}).get("replicas", 0)
        if cur_new > replicas:
            new_rs = self._scale(d, new_rs, replicas)
        elif cur_new < replicas:
            current = sum((rs.get("spec") or {}).get("replicas", 0) for rs in all_rss)
            target = min(replicas + surge - current + cur_new, replicas)
            if target > cur_new:
                new_rs = self._scale(d, new_rs, target)
        # reconcileOldReplicaSets
        all_rss = [new_rs] + old_rss
        old_count = sum((rs.get("spec") or {}).get("replicas", 0) for rs in old_rss)
        if old_count == 0:
            return
        all_count = sum((rs.get("spec") or {}).get("replicas", 0) for rs in all_rss)
        min_available = replicas - unavailable
        new_unavail = (new_rs.get("spec") or {}).get("replicas", 0) - \
            (new_rs.get("status") or {}).get("availableReplicas", 0)
        max_scaled_down = all_count - min_available - new_unavail
        if max_scaled_down <= 0:
            return
        # Clean up unhealthy old replicas first.
        cleaned = 0
        olds = sorted(old_rss, key=lambda r: u.meta(r).get("creationTimestamp") or "")
        for i, rs in enumerate(olds):
            if cleaned >= max_scaled_down:
                break
            want = (rs.get("spec") or {}).get("replicas", 0)
            unhealthy = want - (rs.get("status") or {}).get("availableReplicas", 0)
            if want == 0 or unhealthy <= 0:
                continue
            n = min(max_scaled_down - cleaned, unhealthy)
            olds[i] = self._scale(d, rs, want - n)
            cleaned += n
        # Then scale down old replicas while keeping minAvailable.
        available = sum((rs.get("status") or {}).get("availableReplicas", 0) for rs in [new_rs] + olds)
        if available <= min_available:
            return
        total = min(available - min_available, max_scaled_down - cleaned)
        for i, rs in enumerate(olds):
            if total <= 0:
                break
            want = (rs.get("spec") or {}).get("replicas", 0)
            if want == 0:
                continue
            n = min(want, total)
            olds[i] = self._scale(d, rs, want - n)
            total -= n

    def _recreate(self, d, new_rs, old_rss, replicas):
        for rs in old_rss:
            self._scale(d, rs, 0)
        ns = u.meta(d).get("namespace")
        olds = {u.meta(rs).get("uid") for rs in old_rss}
        for p in self.store.list("pods", ns):
            ref = u.controller_ref(p)
            if ref and ref.get("uid") in olds and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
                return  # wait until old pods are gone (pod events re-trigger via ReplicaSet status)
        self._scale(d, new_rs, replicas)

    def _cleanup(self, d, new_rs, rss):
        limit = (d.get("spec") or {}).get("revisionHistoryLimit", 10)
        olds = [rs for rs in rss if u.meta(rs).get("name") != u.meta(new_rs).get("name")
                and (rs.get("spec") or {}).get("replicas", 0) == 0
                and (rs.get("status") or {}).get("replicas", 0) == 0
                and not u.meta(rs).get("deletionTimestamp")]
        if len(olds) <= limit:
            return
        olds.sort(key=self._revision)
        for rs in olds[:len(olds) - limit]:
            try:
                self.store.delete("replicasets", u.meta(rs).get("namespace"), u.meta(rs).get("name"))
            except Exception as e:
                if u.api_error_code(e) != 404:
                    raise

    def _sync_status(self, d, new_rs, rss, progress_reason):
        spec = d.get("spec") or {}
        replicas = spec.get("replicas", 1)
        surge, unavailable = self._surge_unavailable(d)
        old = d.get("status") or {}
        st = lambda rs, f: (rs.get("status") or {}).get(f, 0)  # noqa: E731
        total = sum(st(rs, "replicas") for rs in rss)
        ready = sum(st(rs, "readyReplicas") for rs in rss)
        available = sum(st(rs, "availableReplicas") for rs in rss)
        updated = st(new_rs, "replicas") if new_rs is not None else 0
        new = {"observedGeneration": u.meta(d).get("generation", 1)}
        for k, v in (("replicas", total), ("updatedReplicas", updated), ("readyReplicas", ready),
                     ("availableReplicas", available), ("unavailableReplicas", max(replicas - available, 0))):
            if v:
                new[k] = v
        if old.get("collisionCount") is not None:
            new["collisionCount"] = old["collisionCount"]
        if old.get("conditions"):
            new["conditions"] = copy.deepcopy(old["conditions"])
        if available >= replicas - unavailable:
            _set_cond(new, "Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
        else:
            _set_cond(new, "Available", "False", "MinimumReplicasUnavailable",
                      "Deployment does not have minimum availability.")
        rs_name = u.meta(new_rs).get("name") if new_rs is not None else None
        if not spec.get("paused") and new_rs is not None:
            cur = _cond(new, "Progressing")
            complete = (updated == replicas and total == replicas and available == replicas
                        and new["observedGeneration"] >= u.meta(d).get("generation", 1))
            if progress_reason == "NewReplicaSetCreated":
                _set_cond(new, "Progressing", "True", "NewReplicaSetCreated",
                          'Created new replica set "%s"' % rs_name)
            elif progress_reason == "FoundNewReplicaSet" or cur is None:
                _set_cond(new, "Progressing", "True", "FoundNewReplicaSet", 'Found new replica set "%s"' % rs_name)
            cur = _cond(new, "Progressing")
            is_complete = cur is not None and cur.get("reason") == "NewReplicaSetAvailable"
            deadline = spec.get("progressDeadlineSeconds", 600)
            if not is_complete:
                progressing = (updated > old.get("updatedReplicas", 0) or ready > old.get("readyReplicas", 0)
                               or available > old.get("availableReplicas", 0)
                               or (total - updated) < (old.get("replicas", 0) - old.get("updatedReplicas", 0)))
                if complete:
                    _set_cond(new, "Progressing", "True", "NewReplicaSetAvailable",
                              'ReplicaSet "%s" has successfully progressed.' % rs_name)
                elif progressing:
                    _set_cond(new, "Progressing", "True", "ReplicaSetUpdated",
                              'ReplicaSet "%s" is progressing.' % rs_name)
                elif deadline is not None:
                    since = u.parse_rfc3339(cur.get("lastUpdateTime")) if cur else None
                    if since is not None and cur.get("reason") != "ProgressDeadlineExceeded":
                        left = since + deadline - time.time()
                        if left <= 0:
                            _set_cond(new, "Progressing", "False", "ProgressDeadlineExceeded",
                                      'ReplicaSet "%s" has timed out progressing.' % rs_name)
                        else:
                            self.worker.queue.add_after(u.key_of(d), left + 0.5)
        failure = _cond(new_rs.get("status") or {}, "ReplicaFailure") if new_rs is not None else None
        if failure is not None:
            _set_cond(new, "ReplicaFailure", "True", failure.get("reason"), failure.get("message"))
        else:
            _remove_cond(new, "ReplicaFailure")
        if new.get("conditions"):
            order = {"Available": 0, "Progressing": 1, "ReplicaFailure": 2}
            new["conditions"].sort(key=lambda c: order.get(c.get("type"), 3))
        if _status_equal(old, new):
            return
        ns, name = u.key_of(d)

        def apply(obj):
            # Only write what this generation decided; a newer spec is synced next.
            obj["status"] = new
        self.store.patch_status("deployments", ns, name, apply)


class EndpointsController:
    component = "endpoint-controller"

    def __init__(self, store):
        self.store = store
        self.worker = u.Worker("endpoint-controller", self.sync)

    def start(self):
        for s in self.store.list("services"):
            self.worker.queue.add(u.key_of(s))
        self.worker.start()

    def stop(self):
        self.worker.stop()

    def on_event(self, etype, resource, obj):
        if resource in ("services", "endpoints"):
            self.worker.queue.add(u.key_of(obj))
        elif resource == "pods":
            ns = u.meta(obj).get("namespace")
            for s in self.store.list("services", ns):
                if (s.get("spec") or {}).get("selector"):
                    self.worker.queue.add(u.key_of(s))

    @staticmethod
    def _find_port(pod, target):
        if isinstance(target, int):
            return target
        if target is None:
            return None
        if isinstance(target, str) and target.isdigit():
            return int(target)
        for c in (pod.get("spec") or {}).get("containers") or []:
            for p in c.get("ports") or []:
                if p.get("name") == target:
                    return p.get("containerPort")
        return None

    def sync(self, key):
        ns, name = key
        svc = self.store.get("services", ns, name)
        if svc is None:
            return  # the Endpoints object goes with the Service (deleted by the API side / GC)
        spec = svc.get("spec") or {}
        selector = spec.get("selector")
        if not selector or spec.get("type") == "ExternalName":
            return  # user-managed Endpoints
        publish_not_ready = spec.get("publishNotReadyAddresses", False)
        groups = {}
        for pod in self.store.list("pods", ns):
            if not u.map_selector_matches(selector, u.meta(pod).get("labels")):
                continue
            st = pod.get("status") or {}
            ip = st.get("podIP")
            if not ip:
                continue
            if u.meta(pod).get("deletionTimestamp") and not publish_not_ready:
                continue
            if st.get("phase") in ("Succeeded", "Failed"):
                continue
            ports = []
            for sp in spec.get("ports") or []:
                tp = sp.get("targetPort", sp.get("port"))
                port = self._find_port(pod, tp)
                if port is None:
                    continue
                ep = {"port": port, "protocol": sp.get("protocol", "TCP")}
                if sp.get("name"):
                    ep = {"name": sp["name"], **ep}
                if sp.get("appProtocol"):
                    ep["appProtocol"] = sp["appProtocol"]
                ports.append(ep)
            if not ports and spec.get("ports"):
                continue
            addr = {"ip": ip, "nodeName": (pod.get("spec") or {}).get("nodeName") or u.NODE_NAME,
                    "targetRef": {"kind": "Pod", "namespace": ns, "name": u.meta(pod).get("name"),
                                  "uid": u.meta(pod).get("uid")}}
            ready, _ = _pod_ready(pod)
            g = groups.setdefault(u.canon(sorted(ports, key=u.canon)), {"ports": ports, "ready": [], "not": []})
            (g["ready"] if ready or publish_not_ready else g["not"]).append(addr)
        subsets = []
        for _, g in sorted(groups.items()):
            sub = {}
            ipkey = lambda a: tuple(int(x) for x in a["ip"].split("."))  # noqa: E731
            if g["ready"]:
                sub["addresses"] = sorted(g["ready"], key=ipkey)
            if g["not"]:
                sub["notReadyAddresses"] = sorted(g["not"], key=ipkey)
            sub["ports"] = sorted(g["ports"], key=lambda p: (p.get("name", ""), p["port"]))
            subsets.append(sub)
        labels = dict(u.meta(svc).get("labels") or {})
        cur = self.store.get("endpoints", ns, name)
        if cur is not None:
            if u.canon(cur.get("subsets") or []) == u.canon(subsets) and \
                    (u.meta(cur).get("labels") or {}) == labels:
                return
            cur["metadata"]["labels"] = labels
            ann = cur["metadata"].setdefault("annotations", {})
            ann["endpoints.kubernetes.io/last-change-trigger-time"] = u.now_rfc3339()
            if subsets:
                cur["subsets"] = subsets
            else:
                cur.pop("subsets", None)
            self.store.update("endpoints", ns, cur)
        else:
            ep = {"apiVersion": "v1", "kind": "Endpoints",
                  "metadata": {"name": name, "namespace": ns, "labels": labels,
                               "annotations": {"endpoints.kubernetes.io/last-change-trigger-time":
                                               u.now_rfc3339()}}}
            if subsets:
                ep["subsets"] = subsets
            try:
                self.store.create("endpoints", ns, ep)
            except Exception as e:
                if u.api_error_code(e) == 409:
                    self.worker.queue.add(key)
                    return
                raise
