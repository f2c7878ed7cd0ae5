#!/usr/bin/env python3
"""Reduce `czctl config view -o json` or `kubectl config view --minify --raw
-o json` to the same canonical lines (context, cluster, user, namespace,
server, auth method, TLS settings and resolved paths), so the corpus test can
compare the two tools. kubectl's `config view` shows paths as written (config commands do not
resolve them), so for kubectl the relative paths are resolved here against
BASE, the directory of the file that defined them, with client-go's rule
(filepath.Join; exec.command only when it contains a '/').
URLs are compared with their password redacted.
Usage: canon.py czctl < json | canon.py kubectl BASE < json"""
import json
import re
import os
import sys

BASE = None


def resolve(p, is_command=False):
    if not p or os.path.isabs(p) or (is_command and "/" not in p):
        return p
    return os.path.normpath(os.path.join(BASE, p))


def redacted(url):
    # czctl shows URLs as Go's url.Redacted does (a password becomes "xxxxx");
    # kubectl config view --raw shows them as written
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    end = min([i for i in (rest.find(c) for c in "/?#") if i >= 0] + [len(rest)])
    authority, tail = rest[:end], rest[end:]
    userinfo, at, host = authority.rpartition("@")
    if at and ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + ":xxxxx"
    return (scheme + sep if sep else "") + userinfo + at + host + tail


def kubectl_auth(user):
    # client-go: a token, basic auth or a client certificate wins over exec
    if user.get("tokenFile"):
        return "tokenFile"
    if user.get("token"):
        return "token"
    if user.get("username") or user.get("password"):
        return "basic"
    if user.get("client-certificate") or user.get("client-certificate-data"):
        return "client-certificate"
    if user.get("exec"):
        return "exec"
    return "none"


def from_kubectl(doc):
    ctx = doc["contexts"][0]
    c = ctx.get("context") or {}
    cluster = ((doc.get("clusters") or [{}])[0]).get("cluster") or {}
    user = ((doc.get("users") or [{}])[0] or {}).get("user") or {}
    out = {
        "context": ctx["name"],
        "cluster": c.get("cluster", ""),
        "user": c.get("user", ""),
        "namespace": c.get("namespace") or "default",
        "server": redacted(cluster.get("server", "")),
        "auth": kubectl_auth(user),
        "insecure": bool(cluster.get("insecure-skip-tls-verify")),
        "tls_server_name": cluster.get("tls-server-name", ""),
        "proxy_url": redacted(cluster.get("proxy-url", "")),
    }
    if not cluster.get("certificate-authority-data"):
        out["certificate_authority"] = resolve(cluster.get("certificate-authority", ""))
    if not user.get("client-certificate-data"):
        out["client_certificate"] = resolve(user.get("client-certificate", ""))
    if not user.get("client-key-data"):
        out["client_key"] = resolve(user.get("client-key", ""))
    out["token_file"] = resolve(user.get("tokenFile", ""))
    out["exec_command"] = resolve((user.get("exec") or {}).get("command", ""), is_command=True)
    return out


def from_czctl(info):
    # czctl's documents use camelCase keys (tlsServerName); compare as snake_case
    info = {re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), k): v for k, v in info.items()}
    out = {k: info.get(k, "") for k in ("context", "cluster", "user", "namespace", "server", "auth",
                                        "tls_server_name", "proxy_url", "token_file", "exec_command")}
    out["insecure"] = bool(info.get("insecure"))
    for k in ("certificate_authority", "client_certificate", "client_key"):
        out[k] = info.get(k, "")
    return out


def main():
    global BASE
    if sys.argv[1] == "kubectl":
        BASE = os.path.abspath(sys.argv[2])
    doc = json.load(sys.stdin)
    out = from_kubectl(doc) if sys.argv[1] == "kubectl" else from_czctl(doc)
    for k in sorted(out):
        print(f"{k}={out[k]}")


if __name__ == "__main__":
    main()
