#!/usr/bin/env python3
"""Normalise `kubectl get ... -o json` for comparing cluster snapshots: drops
what changes without anyone changing the object (resourceVersion, timestamps,
uid, status, managedFields, generation) and sorts items."""
import json
import sys

DROP_META = ("resourceVersion", "creationTimestamp", "uid", "managedFields", "generation",
             "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink")


def clean(item):
    item = dict(item)
    item.pop("status", None)
    meta = dict(item.get("metadata") or {})
    for k in DROP_META:
        meta.pop(k, None)
    # kubectl's own bookkeeping (written by `kubectl apply`, not by czctl) is
    # dropped; an annotations map that was already empty is kept, so `{}`
    # after a session is told apart from no annotations before it.
    if "annotations" in meta:
        ann = dict(meta["annotations"] or {})
        had = "kubectl.kubernetes.io/last-applied-configuration" in ann
        ann.pop("kubectl.kubernetes.io/last-applied-configuration", None)
        if had and not ann:
            meta.pop("annotations")
        else:
            meta["annotations"] = ann
    item["metadata"] = meta
    return item


data = json.load(sys.stdin)
items = [clean(i) for i in data.get("items", [])]
items.sort(key=lambda i: (i.get("kind", ""), i["metadata"].get("namespace", ""), i["metadata"].get("name", "")))
json.dump(items, sys.stdout, indent=1, sort_keys=True)
sys.stdout.write("\n")
