"""HTTPS API server (HTTP/1.1 keep-alive, one thread per connection)."""
import base64
import json
import os
import socket
import ssl
import struct
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import auth
from . import discovery
from . import errors as E
from . import faults as F
from . import patch as P
from . import protobuf
from . import resources as R
from . import schema
from . import selection as selectors
from . import streams
from . import tables
from . import timing
from . import yamlout
from . import watch as W

JSON = "application/json"


def _compact(o):
    return json.dumps(o, separators=(",", ":")).encode()


def _list_kind(res):
    return res.kind + "List"


# Subresources a real API server has that the sandbox does not list in discovery:
# {resource: {subresource: methods the real server accepts}}. Another method is a
# 405 as on a real server; eviction is served; the rest answer 503 with a Status.
UNSERVED = {
    "pods": {"eviction": ("POST",), "binding": ("POST",), "attach": ("GET", "POST"),
             "ephemeralcontainers": ("GET", "PUT", "PATCH"), "proxy": ("GET", "POST", "PUT", "PATCH", "DELETE",
                                                                     "HEAD", "OPTIONS")},
    "services": {"proxy": ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")},
    "nodes": {"proxy": ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")},
    "serviceaccounts": {"token": ("POST",)},
}


class Request:
    """Parsed resource request."""

    def __init__(self, res, namespace, name, sub):
        self.res, self.namespace, self.name, self.sub = res, namespace, name, sub


class ApiServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr, ctx, cluster):
        self.cluster = cluster
        self.ctx = ctx
        super().__init__(addr, Handler)

    def get_request(self):
        sock, addr = self.socket.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, addr

    def finish_request(self, request, client_address):
        # TLS handshake in the connection thread, not in the accept loop
        try:
            request.settimeout(30)
            tls = self.ctx.wrap_socket(request, server_side=True)
            tls.settimeout(None)
        except (ssl.SSLError, OSError):
            try:
                request.close()
            except OSError:
                pass
            return
        self.cluster.track(tls)
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            self.cluster.untrack(tls)

    def shutdown_request(self, request):
        try:
            request.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        request.close()

    def handle_error(self, request, client_address):
        pass


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "sandbox-apiserver"
    sys_version = ""

    def log_message(self, *a):
        pass

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def do_PUT(self):
        self._handle("PUT")

    def do_PATCH(self):
        self._handle("PATCH")

    def do_DELETE(self):
        self._handle("DELETE")

    def do_HEAD(self):
        self._handle("HEAD")

    # ---- plumbing ---------------------------------------------------------------------

    @property
    def C(self):
        return self.server.cluster

    def _read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            return self.rfile.read(n)
        if (self.headers.get("Transfer-Encoding") or "").lower() == "chunked":
            out = b""
            while True:
                line = self.rfile.readline().strip()
                size = int(line.split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                out += self.rfile.read(size)
                self.rfile.readline()
            return out
        return b""

    def _send(self, code, body, ctype=JSON, headers=()):
        self.status = code
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Audit-Id", self.audit_id)
        for k, v in list(headers) + [("Warning", '299 - "%s"' % w.replace('"', '\\"')) for w in self.warnings]:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, code, obj, headers=()):
        if getattr(self, "fmt", "json") == "yaml":
            return self._send(code, yamlout.dumps(obj).encode(), "application/yaml", headers)
        self._send(code, _compact(obj) + b"\n", JSON, headers)

    def _negotiate(self):
        """The response format for a resource request from its Accept header, as the
        API server negotiates it (q-values, wildcards; parameters such as as=Table are
        read elsewhere). Protobuf is not served: a request that accepts only protobuf
        (or only other types) gets the 406 a server answers when it cannot serve it."""
        acc = (self.headers.get("Accept") or "").strip()
        if not acc:
            return "json"
        ranges = []
        for i, part in enumerate(acc.split(",")):
            params = [p.strip() for p in part.split(";")]
            q = 1.0
            for p in params[1:]:
                if p.lower().startswith("q="):
                    try:
                        q = float(p[2:])
                    except ValueError:
                        q = 0.0
            if q > 0:
                ranges.append((-q, i, params[0].lower()))
        for _, _, mt in sorted(ranges):
            if mt in ("application/json", "application/*", "*/*", "*"):
                return "json"
            if mt == "application/yaml":
                return "yaml"
        raise E.not_acceptable("only the following media types are accepted: application/json, application/yaml")

    def _error(self, err):
        if isinstance(err, E.PlainError):
            return self._send(err.code, err.text.encode(), "text/plain; charset=utf-8",
                              [("X-Content-Type-Options", "nosniff")] + list(err.headers))
        self._json(err.code, err.body(), err.headers)

    def _handle(self, method):
        t0 = time.monotonic()
        self.status = 0
        self.fmt = "json"
        self.warnings = []
        self.watching = False
        self.watch_fault = None
        self.audit_id = os.urandom(16).hex()
        u = urllib.parse.urlsplit(self.path)
        path, rawq = u.path, u.query
        self.qs = urllib.parse.parse_qs(rawq, keep_blank_values=True)
        self.q = {k: v[-1] for k, v in self.qs.items()}
        user = None
        try:
            self.body = self._read_body()
            user = self.C.authn.user(self.headers.get("Authorization"))
            rule = self.C.faults.check(method, path, rawq, user, self.headers.get("User-Agent"))
            if rule is not None:
                if rule.action == "stall":
                    time.sleep(rule.seconds)
                elif rule.action in ("drop", "reset"):
                    self.close_connection = True
                    self.status = 0
                    try:
                        if rule.action == "reset":
                            # SO_LINGER 0: close() sends RST instead of FIN
                            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                                       struct.pack("ii", 1, 0))
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    if rule.action == "reset":
                        try:
                            self.connection.close()
                        except OSError:
                            pass
                    return
                elif rule.action in ("cut", "expire"):
                    self.watch_fault = rule     # served by _watch; other requests as usual
                else:
                    raise rule.error()
            if user is None:
                raise E.unauthorized()
            self.user = user
            delay = timing.api_latency(method)
            if delay:
                time.sleep(delay)
            self._route(method, path)
        except E.ApiError as e:
            if not self.watching:
                self._error(e)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, ssl.SSLError):
            self.close_connection = True
        except Exception as e:  # an emulator bug: answer 500 like the apiserver, log the traceback
            import traceback
            traceback.print_exc()
            if not self.watching:
                try:
                    self._error(E.internal(str(e)))
                except OSError:
                    self.close_connection = True
        finally:
            if not self.watching:
                self.C.audit.log(user, method, path, rawq, self.headers.get("Content-Type"), self.status,
                                 (time.monotonic() - t0) * 1000, user_agent=self.headers.get("User-Agent"))

    # ---- routing ----------------------------------------------------------------------

    def _route(self, method, path):
        parts = [p for p in path.split("/") if p]
        if path in ("/healthz", "/readyz", "/livez") or path.startswith(("/healthz/", "/readyz/", "/livez/")):
            return self._send(200, b"ok", "text/plain; charset=utf-8")
        if parts[:1] == ["sandbox"]:
            return self._sandbox(method, parts[1:])
        if method not in ("GET", "HEAD") and parts[:1] not in (["api"], ["apis"]):
            raise E.method_not_allowed()
        if path == "/version":
            return self._json(200, discovery.VERSION)
        if parts[:1] == ["openapi"]:
            return self._openapi(parts[1:])
        if parts == ["api"]:
            return self._json(200, discovery.api_versions(self.C.address))
        if parts == ["apis"]:
            return self._json(200, discovery.api_group_list())
        if not parts or parts[0] not in ("api", "apis"):
            raise E.page_not_found()
        if parts[0] == "api":
            if len(parts) < 2:
                raise E.page_not_found()
            group, version, rest = "", parts[1], parts[2:]
        else:
            if len(parts) == 2:
                g = discovery.api_group(parts[1])
                if g is None:
                    raise E.page_not_found()
                return self._json(200, g)
            group, version, rest = parts[1], parts[2], parts[3:]
        if not rest:
            if method not in ("GET", "HEAD"):
                raise E.method_not_allowed()
            rl = discovery.resource_list(group, version)
            if rl is None:
                raise E.page_not_found()
            return self._json(200, rl)
        req = self._parse_resource(group, version, rest)
        return self._resource(method, req)

    def _parse_resource(self, group, version, rest):
        namespace = None
        if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in ("status", "finalize"):
            namespace = urllib.parse.unquote(rest[1])
            rest = rest[2:]
        res = R.lookup(group, version, rest[0])
        if res is None or (namespace is not None and not res.namespaced):
            raise E.page_not_found()
        name = urllib.parse.unquote(rest[1]) if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        proxy_path = sub is not None and sub == "proxy" and sub in UNSERVED.get(res.plural, {})
        if (len(rest) > 3 and not proxy_path) or (sub is not None and sub not in res.subresources
                                                  and sub not in UNSERVED.get(res.plural, {})):
            raise E.page_not_found()
        return Request(res, namespace, name, sub)

    def _verb(self, method, req):
        if method in ("GET", "HEAD"):
            if self._qbool("watch"):
                return "watch"
            return "get" if req.name else "list"
        return {"POST": "create", "PUT": "update", "PATCH": "patch",
                "DELETE": "delete" if req.name else "deletecollection"}[method]

    def _resource(self, method, req):
        if req.sub not in ("exec", "portforward", "log"):
            self.fmt = self._negotiate()
        verb = self._verb(method, req)
        res = req.res
        if res.verbs:
            if verb not in res.verbs or req.name or req.namespace:
                raise E.method_not_allowed()
            review = self._decode_body(res)
            review = self._typed(res, review)
            if res.plural == "selfsubjectreviews":
                return self._json(201, auth.self_review(self.user))
            if res.plural == "selfsubjectrulesreviews":
                return self._json(201, auth.rules_review(self.C.store, self.user, review))
            return self._json(201, auth.access_review(self.C.store, self.user, review))
        name = req.name
        if name is None and verb in ("list", "watch", "deletecollection"):
            fs = self.q.get("fieldSelector") or ""
            for part in fs.split(","):
                if part.startswith("metadata.name=") and "==" not in part:
                    name = part[len("metadata.name="):]
                elif part.startswith("metadata.name=="):
                    name = part[len("metadata.name=="):]
        err = auth.forbidden(self.C.store, self.user, verb, res.group, res.plural, req.sub, req.namespace, name)
        if err is not None:
            raise err
        if res.namespaced and req.namespace is None and verb not in ("list", "watch"):
            raise E.page_not_found() if method != "POST" else E.method_not_allowed()
        if req.sub in ("exec", "portforward"):
            return streams.serve(self, req, method)   # an upgraded connection, handed to streams.py
        if req.sub in UNSERVED.get(res.plural, {}):
            if method not in UNSERVED[res.plural][req.sub]:
                raise E.method_not_allowed()
            if (res.plural, req.sub) == ("pods", "eviction"):
                return self._evict(req)
            raise E.ApiError(503, "ServiceUnavailable", "the sandbox API server does not serve %s/%s"
                             % (res.plural, req.sub))
        if req.sub == "log":
            if method != "GET":
                raise E.method_not_allowed()
            return self._pod_log(req)
        if req.sub == "scale":
            return self._scale(method, req)
        if req.sub in ("status", "finalize"):
            # a subresource is read, replaced or patched by its HTTP method alone
            # (GET ?watch=1 on it is a plain get); anything else is refused
            handler = {"GET": self._get, "PUT": self._update, "PATCH": self._patch}.get(method)
        elif verb == "create" and req.name:
            handler = None   # POST to an object's own URL
        else:
            handler = {"watch": self._watch, "list": self._list, "get": self._get, "create": self._create,
                       "update": self._update, "patch": self._patch, "delete": self._delete,
                       "deletecollection": self._delete_collection}.get(verb)
        if handler is None:
            raise E.method_not_allowed()
        return handler(req)

    # ---- helpers ----------------------------------------------------------------------

    def _qbool(self, name):
        """A bool query parameter, converted as the API server does (see streams.qbool)."""
        return streams.qbool(self.qs.get(name))

    def _wants_table(self):
        acc = self.headers.get("Accept") or ""
        return "as=Table" in acc

    def _dry_run(self):
        dr = self.q.get("dryRun")
        if dr is None or dr == "":
            return False
        if dr != "All":
            raise E.bad_request('Invalid dryRun: %s' % E.go_quote(dr))
        return True

    def _field_validation(self):
        fv = self.q.get("fieldValidation") or "Warn"
        if fv not in ("Ignore", "Warn", "Strict"):
            raise E.bad_request('fieldValidation parameter unsupported: %s' % fv)
        return fv

    def _decode_body(self, res, allow_kind=None):
        ctype = (self.headers.get("Content-Type") or JSON).split(";")[0].strip()
        if ctype == "application/vnd.kubernetes.protobuf":
            try:
                return protobuf.decode(self.body)
            except (protobuf.ProtoError, UnicodeDecodeError, IndexError) as e:
                raise E.bad_request("couldn't decode protobuf body: %s" % e)
        if ctype not in (JSON, "application/yaml", "*/*", ""):
            raise E.ApiError(415, "UnsupportedMediaType",
                             'the body of the request was in an unknown format - accepted media types include: '
                             'application/json, application/yaml, application/vnd.kubernetes.protobuf, '
                             'application/cbor')
        try:
            if ctype == "application/yaml":
                raise ValueError("yaml bodies are not supported by the sandbox")
            obj = json.loads(self.body) if self.body else None
        except ValueError as e:
            raise E.bad_request("couldn't get version/kind; json parse error: %s" % schema.go_json_error(self.body, e))
        if obj is None:
            raise E.bad_request("couldn't get version/kind; json parse error: unexpected end of JSON input")
        if not isinstance(obj, dict):
            raise E.bad_request("couldn't get version/kind; json parse error: json: cannot unmarshal %s into Go value "
                                "of type struct { APIVersion string \"json:\\\"apiVersion,omitempty\\\"\"; Kind string "
                                "\"json:\\\"kind,omitempty\\\"\" }" % schema._json_kind(obj))
        kind = allow_kind or res.kind
        api_version = "autoscaling/v1" if allow_kind == "Scale" else res.api_version
        if obj.get("apiVersion") and obj["apiVersion"] != api_version:
            raise E.bad_request("the API version in the data (%s) does not match the expected API version (%s)"
                                % (obj["apiVersion"], api_version))
        if obj.get("kind") and obj["kind"] != kind:
            raise E.bad_request('%s in version "%s" cannot be handled as a %s: no kind "%s" is registered for '
                                'version "%s" in scheme "pkg/api/legacyscheme/scheme.go:30"'
                                % (obj["kind"], api_version.split("/")[-1], kind, obj["kind"], api_version))
        return obj

    def _typed(self, res, obj, kind=None, baseline=None):
        class _R:
            pass
        r = res
        if kind:
            r = _R()
            r.kind, r.version = kind, "v1"
        obj, warns = schema.decode(r, obj, self._field_validation(), baseline)
        self.warnings.extend(warns)
        return obj

    # ---- verbs ------------------------------------------------------------------------

    def _get(self, req):
        o = self.C.store.get(req.res.plural, req.namespace, req.name)
        if o is None:
            raise E.not_found(req.res.plural, req.res.group, req.name)
        if self._wants_table() and req.sub is None:
            return self._json(200, tables.table(req.res.plural, [o], o["metadata"]["resourceVersion"],
                                                include=self.q.get("includeObject", "Metadata")))
        self._json(200, o)

    def _list(self, req):
        res = req.res
        lsel, fsel = self._selectors(res)
        if self.q.get("sendInitialEvents"):
            raise self._list_options_invalid([E.forbidden_field("sendInitialEvents", "sendInitialEvents is forbidden for list")])
        limit = self.q.get("limit")
        cont = self.q.get("continue")
        if cont:
            try:
                tok = json.loads(base64.urlsafe_b64decode(cont + "=" * (-len(cont) % 4)))
                start, trv = tok["start"], int(tok["rv"])
            except (ValueError, KeyError, TypeError):
                raise E.bad_request("continue key is not valid: illegal base64 data at input byte 0")
            try:
                items = self.C.store.list_at(res.plural, req.namespace, trv, lsel, fsel)
            except E.ApiError as e:
                if e.code != 410:
                    raise
                raise E.expired("The provided continue parameter is too old to display a consistent list result. "
                                "You can start a new list without the continue parameter, or use the continue token "
                                "in this response to retrieve the remainder of the results. Continuing with the "
                                "provided token results in an inconsistent list - objects that were created, "
                                "modified, or deleted between the time the first chunk was returned and now may "
                                "show up in the list.")
            rv = str(trv)
            items = [o for o in items if [o["metadata"].get("namespace", ""), o["metadata"]["name"]] > start]
        else:
            items, rv = self.C.store.list_rv(res.plural, req.namespace, lsel, fsel)
        next_tok = None
        remaining = None
        if limit:
            try:
                n = int(limit)
            except ValueError:
                raise E.bad_request("limit: Invalid value")
            if n > 0 and len(items) > n:
                last = items[n - 1]["metadata"]
                remaining = len(items) - n
                items = items[:n]
                next_tok = base64.urlsafe_b64encode(_compact(
                    {"rv": int(rv), "start": [last.get("namespace", ""), last["name"]]})).decode().rstrip("=")
        if self._wants_table():
            return self._json(200, tables.table(res.plural, items, rv, next_tok,
                                                include=self.q.get("includeObject", "Metadata"), remaining=remaining))
        for o in items:
            o.pop("kind", None)
            o.pop("apiVersion", None)
        md = {"resourceVersion": rv}
        if next_tok:
            md["continue"] = next_tok
            md["remainingItemCount"] = remaining
        self._json(200, {"kind": _list_kind(res), "apiVersion": res.api_version, "metadata": md, "items": items})

    def _selectors(self, res):
        """labelSelector and fieldSelector of the query, parsed, so that list, watch
        and deletecollection select the same objects; raises 400 Bad Request."""
        try:
            lsel = selectors.parse_label_selector(self.q.get("labelSelector"))
        except ValueError as e:
            raise E.bad_request(str(e))
        return lsel, selectors.parse_field_selector(self.q.get("fieldSelector"), res.plural)

    def _list_options_invalid(self, errs):
        msg = 'ListOptions.meta.k8s.io "" is invalid: ' + E.aggregate([str(e) for e in errs])
        return E.ApiError(422, "Invalid", msg, {"group": "meta.k8s.io", "kind": "ListOptions",
                                                 "causes": [e.cause() for e in errs]})

    def _create(self, req):
        res = req.res
        obj = self._decode_body(res)
        obj = self._typed(res, obj)
        dry = self._dry_run()
        out = self.C.store.create(res.plural, req.namespace, obj, dry_run=dry, warnings=self.warnings)
        self._json(201, out)

    def _update(self, req):
        res = req.res
        obj = self._decode_body(res)
        obj = self._typed(res, obj)
        md = obj.get("metadata") or {}
        if md.get("name", "") != req.name:
            raise E.bad_request("the name of the object (%s) does not match the name on the URL (%s)"
                                % (md.get("name", ""), req.name))
        out = self.C.store.update(res.plural, req.namespace, obj, subresource=req.sub, dry_run=self._dry_run(),
                                  warnings=self.warnings)
        self._json(200, out)

    def _patch_fn(self, res, ctype, patch_doc, kind=None):
        def fn(cur):
            base = json.loads(json.dumps(cur))
            typed = lambda o: self._typed(res, o, kind, base)
            if ctype == "application/json-patch+json":
                new = P.json_patch(cur, patch_doc)
            elif ctype == "application/merge-patch+json":
                new = P.merge_patch(cur, patch_doc)
            else:
                new = P.strategic_merge(cur, patch_doc)
            if not isinstance(new, dict):
                raise E.bad_request("patched object is not a JSON object")
            return typed(new)
        return fn

    def _patch_type(self):
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        if ctype not in ("application/json-patch+json", "application/merge-patch+json",
                         "application/strategic-merge-patch+json"):
            raise E.unsupported_media_type(ctype)
        try:
            doc = json.loads(self.body or b"null")
        except ValueError as e:
            raise E.bad_request(schema.go_json_error(self.body, e))
        if ctype == "application/json-patch+json" and not isinstance(doc, list):
            raise E.bad_request("json: cannot unmarshal %s into Go value of type jsonpatch.Patch" % schema._json_kind(doc))
        if ctype != "application/json-patch+json" and not isinstance(doc, dict):
            raise E.bad_request("json: cannot unmarshal %s into Go value of type map[string]interface {}"
                                % schema._json_kind(doc))
        return ctype, doc

    def _patch(self, req):
        res = req.res
        ctype, doc = self._patch_type()
        fn = self._patch_fn(res, ctype, doc)
        out = self.C.store.modify(res.plural, req.namespace, req.name, fn, subresource=req.sub,
                                  dry_run=self._dry_run(), warnings=self.warnings)
        self._json(200, out)

    def _delete_options(self):
        opts = {}
        if self.body and self.body.startswith(protobuf.MAGIC):
            try:
                opts = protobuf.decode(self.body)
            except (protobuf.ProtoError, UnicodeDecodeError, IndexError) as e:
                raise E.bad_request("couldn't decode protobuf body: %s" % e)
        elif self.body:
            try:
                opts = json.loads(self.body)
            except ValueError as e:
                raise E.bad_request(schema.go_json_error(self.body, e))
            if not isinstance(opts, dict):
                raise E.bad_request("json: cannot unmarshal %s into Go value of type v1.DeleteOptions" % schema._json_kind(opts))
        prop = opts.get("propagationPolicy") or self.q.get("propagationPolicy")
        orphan = opts.get("orphanDependents")
        if orphan is None and "orphanDependents" in self.qs:
            orphan = self._qbool("orphanDependents")
        if orphan is not None and prop:
            raise E.invalid_object("DeleteOptions", "", "", [E.invalid(
                "propagationPolicy", prop, "orphanDependents and deletionPropagation cannot be both set")])
        if orphan is True:
            prop = "Orphan"
        dry = opts.get("dryRun") or ([self.q["dryRun"]] if self.q.get("dryRun") else [])
        if dry and dry != ["All"]:
            raise E.bad_request("Invalid dryRun: %s" % dry)
        grace = opts.get("gracePeriodSeconds")
        if grace is None and self.q.get("gracePeriodSeconds"):
            try:
                grace = int(self.q["gracePeriodSeconds"])
            except ValueError:
                raise E.bad_request("gracePeriodSeconds: invalid value")
        self.grace = grace
        return prop, opts.get("preconditions"), bool(dry)

    def _delete(self, req):
        res = req.res
        prop, pre, dry = self._delete_options()
        obj, deleted = self.C.store.delete_ex(res.plural, req.namespace, req.name, prop, pre, dry_run=dry,
                                              grace=self.grace, api=True)
        if res.return_deleted or not deleted:
            return self._json(200, obj)
        d = {"name": req.name}
        if res.group:
            d["group"] = res.group
        d["kind"] = res.plural
        d["uid"] = obj["metadata"]["uid"]
        self._json(200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": d})

    def _delete_collection(self, req):
        res = req.res
        lsel, fsel = self._selectors(res)
        prop, pre, dry = self._delete_options()
        items, rv = self.C.store.list_rv(res.plural, req.namespace, lsel, fsel)
        out = []
        for o in items:
            try:
                d, _ = self.C.store.delete_ex(res.plural, o["metadata"].get("namespace"), o["metadata"]["name"],
                                              prop, None, dry_run=dry, grace=self.grace, api=True)
                d.pop("kind", None)
                d.pop("apiVersion", None)
                out.append(d)
            except E.ApiError as e:
                if e.code != 404:
                    raise
        self._json(200, {"kind": _list_kind(res), "apiVersion": res.api_version,
                         "metadata": {"resourceVersion": self.C.store.current_rv()}, "items": out})

    def _evict(self, req):
        """POST pods/NAME/eviction (policy/v1 Eviction): a graceful delete (no
        PodDisruptionBudgets exist here), answered 201 with a Success Status."""
        try:
            ev = json.loads(self.body or b"{}")
        except ValueError as e:
            raise E.bad_request(schema.go_json_error(self.body, e))
        if not isinstance(ev, dict) or (ev.get("metadata") or {}).get("name", req.name) != req.name:
            raise E.bad_request("name in URL does not match name in Eviction object")
        opts = ev.get("deleteOptions") or {}
        self.C.store.delete_ex("pods", req.namespace, req.name, opts.get("propagationPolicy"),
                               opts.get("preconditions"), dry_run=bool(opts.get("dryRun")),
                               grace=opts.get("gracePeriodSeconds"), api=True)
        self._json(201, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201})

    # ---- scale ------------------------------------------------------------------------

    def _scale_of(self, o):
        md = o["metadata"]
        sel = (o.get("spec") or {}).get("selector") or {}
        return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {k: md[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                             if k in md},
                "spec": {"replicas": (o.get("spec") or {}).get("replicas", 0)},
                "status": {"replicas": (o.get("status") or {}).get("replicas", 0),
                           "selector": tables._label_selector_string(sel)}}

    def _scale(self, method, req):
        res = req.res
        st = self.C.store
        if method == "GET":
            o = st.get(res.plural, req.namespace, req.name)
            if o is None:
                raise E.not_found(res.plural, res.group, req.name)
            return self._json(200, self._scale_of(o))
        if method == "PUT":
            sc = self._decode_body(res, allow_kind="Scale")
            sc = self._typed(res, sc, "Scale")
            patchfn = lambda cur: sc
        elif method == "PATCH":
            ctype, doc = self._patch_type()
            patchfn = self._patch_fn(res, ctype, doc, "Scale")
        else:
            raise E.method_not_allowed()
        holder = {}

        def fn(o):
            scale = patchfn(self._scale_of(o))
            rv = (scale.get("metadata") or {}).get("resourceVersion")
            if rv and rv != o["metadata"]["resourceVersion"]:
                raise E.conflict(res.plural, res.group, req.name)
            replicas = (scale.get("spec") or {}).get("replicas", 0)
            if isinstance(replicas, int) and replicas < 0:
                raise E.invalid_object("Scale", "autoscaling", req.name, [
                    E.invalid("spec.replicas", replicas, "must be greater than or equal to 0")])
            o.setdefault("spec", {})["replicas"] = replicas
            o["metadata"].pop("resourceVersion", None)
            return o
        out = st.modify(res.plural, req.namespace, req.name, fn, dry_run=self._dry_run())
        self._json(200, self._scale_of(out))

    # ---- watch ------------------------------------------------------------------------

    def _watch(self, req):
        res = req.res
        lsel, fsel = self._selectors(res)
        if req.name:
            fsel.reqs.append(("metadata.name", "=", req.name))
        params = {"resourceVersion": self.q.get("resourceVersion")}
        ts = self.q.get("timeoutSeconds")
        if ts:
            try:
                params["timeoutSeconds"] = max(0, int(ts))
            except ValueError:
                raise E.bad_request("timeoutSeconds: invalid value")
        params["allowWatchBookmarks"] = self._qbool("allowWatchBookmarks")
        sie = self.q.get("sendInitialEvents")
        if sie is not None:
            params["sendInitialEvents"] = self._qbool("sendInitialEvents")
            errs = []
            if self.q.get("resourceVersionMatch") != "NotOlderThan":
                errs.append(E.forbidden_field("resourceVersionMatch",
                                              "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"))
            if params["sendInitialEvents"] and not params["allowWatchBookmarks"]:
                errs.append(E.forbidden_field("allowWatchBookmarks",
                                              "sendInitialEvents requires setting allowWatchBookmarks to true"))
            if errs:
                raise self._list_options_invalid(errs)
        elif self.q.get("resourceVersionMatch"):
            raise self._list_options_invalid([E.forbidden_field(
                "resourceVersionMatch", "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided")])
        namespace = req.namespace
        match = lambda o: lsel.matches(o["metadata"].get("labels")) and fsel.matches(o)
        as_table = self._wants_table()
        first = [True]
        include = self.q.get("includeObject", "Metadata")

        def transform(o):
            if as_table:
                t = tables.table(res.plural, [o], None, include=include, with_columns=first[0])
                first[0] = False
                return t
            return o

        # headers, then the chunked stream; audit logs the start
        self.watching = True
        self.status = 200
        self.send_response(200)
        self.send_header("Content-Type", JSON)
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Audit-Id", self.audit_id)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.C.audit.log(self.user, "GET", urllib.parse.urlsplit(self.path).path,
                         urllib.parse.urlsplit(self.path).query, self.headers.get("Content-Type"), 200, 0, watch=True,
                         user_agent=self.headers.get("User-Agent"))
        lock = threading.Lock()

        fault = self.watch_fault
        sent = [0]

        def write(b):
            if fault is not None and fault.action == "cut" and sent[0] >= fault.events:
                raise ConnectionAbortedError("watch cut (fault injection)")
            with lock:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(b), b))
                self.wfile.flush()
            sent[0] += 1
        try:
            if fault is not None and fault.action == "expire":
                rv = self.q.get("resourceVersion") or "0"
                raise E.ApiError(410, "Expired", "too old resource version: %s (%s)"
                                 % (rv, self.C.store.current_rv()))
            W.stream(self.C.store, res, namespace, params, match, write, transform,
                     self.C.bookmark_interval, self.C.stopping)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except E.ApiError as e:
            write(_compact({"type": "ERROR", "object": e.body()}) + b"\n")
            self.wfile.write(b"0\r\n\r\n")
        except (ConnectionAbortedError, BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # ---- pod logs ---------------------------------------------------------------------

    def _pod_log(self, req):
        st = self.C.store
        pod = st.get("pods", req.namespace, req.name)
        if pod is None:
            raise E.not_found("pods", "", req.name)
        names = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
        inits = [c.get("name") for c in (pod.get("spec") or {}).get("initContainers") or []]
        cname = self.q.get("container")
        if not cname:
            if len(names) != 1:
                raise E.bad_request("a container name must be specified for pod %s, choose one of: [%s]"
                                    % (req.name, " ".join(names)) + (" or one of the init containers: [%s]" % " ".join(inits) if inits else ""))
            cname = names[0]
        elif cname not in names and cname not in inits:
            raise E.bad_request("container %s is not valid for pod %s" % (cname, req.name))
        prev = self._qbool("previous")
        base = os.path.join(self.C.state_dir, "pods", req.namespace, req.name)
        path = os.path.join(base, cname + (".previous.log" if prev else ".log"))
        if not os.path.exists(path):
            if prev:
                raise E.bad_request('previous terminated container "%s" in pod "%s" not found' % (cname, req.name))
            statuses = (pod.get("status") or {}).get("containerStatuses") or []
            reason = "ContainerCreating"
            for cs in statuses:
                if cs.get("name") == cname:
                    reason = ((cs.get("state") or {}).get("waiting") or {}).get("reason") or reason
            raise E.bad_request('container "%s" in pod "%s" is waiting to start: %s' % (cname, req.name, reason))
        tail = self.q.get("tailLines")
        limit = self.q.get("limitBytes")
        follow = self._qbool("follow")
        with open(path, "rb") as f:
            data = f.read()
        if tail is not None:
            try:
                n = int(tail)
            except ValueError:
                raise E.bad_request("tailLines: invalid value")
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[-n:]) if n > 0 else b""
        if limit:
            data = data[:int(limit)]
        if not follow:
            return self._send(200, data, "text/plain")
        self.watching = True
        self.status = 200
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.C.audit.log(self.user, "GET", urllib.parse.urlsplit(self.path).path,
                         urllib.parse.urlsplit(self.path).query, None, 200, 0, watch=True,
                         user_agent=self.headers.get("User-Agent"))
        uid = pod["metadata"]["uid"]
        try:
            if data:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
            with open(path, "rb") as f:
                f.seek(0, 2)
                idle = 0
                while not self.C.stopping.is_set():
                    chunk = f.read(65536)
                    if chunk:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        self.wfile.flush()
                        continue
                    time.sleep(0.05)
                    idle += 1
                    if idle % 10 == 0:
                        p = st.get("pods", req.namespace, req.name)
                        if p is None or p["metadata"]["uid"] != uid:
                            break
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            self.close_connection = True

    # ---- sandbox control endpoints ----------------------------------------------------

    def _openapi(self, parts):
        if parts == ["v3"]:
            return self._json(200, discovery.openapi_v3_index())
        if parts[:1] == ["v3"]:
            doc = discovery.openapi_v3_doc("/".join(parts[1:]))
            if doc is None:
                raise E.page_not_found()
            return self._send(200, doc[0], JSON, [("Etag", '"%s"' % doc[1])])
        raise E.page_not_found()

    def _sandbox(self, method, parts):
        if self.user not in auth.ADMINS:
            raise E.ApiError(403, "Forbidden", 'forbidden: User "%s" cannot %s path "/sandbox/%s"'
                             % (self.user, method.lower(), "/".join(parts)), None)
        if parts == ["faults"]:
            if method == "GET":
                return self._json(200, self.C.faults.state())
            if method in ("POST", "PUT"):
                try:
                    rules = F.parse_rules(json.loads(self.body or b"[]"))
                except (ValueError, F.RuleError) as e:
                    raise E.bad_request("invalid fault rules: %s" % e)
                if method == "PUT":
                    self.C.faults.set_rules(rules)
                else:
                    self.C.faults.add_rules(rules)
                return self._json(200, self.C.faults.state())
            if method == "DELETE":
                if "name" in self.q:     # only the endpoint rules of that name
                    return self._json(200, {"removed": self.C.faults.remove_rules(self.q["name"])})
                self.C.faults.set_rules([])
                return self._json(200, self.C.faults.state())
        if parts == ["drop-watches"] and method == "POST":
            n = self.C.store.drop_watches()
            return self._json(200, {"dropped": n})
        raise E.page_not_found()
