"""Stand-in until pods have network namespaces: NGINX configurations for pods on this machine's network.

While the sandbox runs every pod in this machine's network namespace (each
pod on its own loopback address), an NGINX configuration cannot run as it was
written: `listen 8080` would take port 8080 of the whole machine, `localhost`
would be the machine, and names resolved by DNS would leave the machine. This
module rewrites only that, into a copy nginx reads through a file descriptor
(the files in the container are left as written):

1. `include` is inlined (globs in the container's filesystem, sorted; relative
   paths relative to the main file's directory, as nginx does), so that the
   rules below apply to included files.
2. `listen` addresses become the pod IP (`listen PORT`, `*:PORT`, `ADDR:PORT`,
   an address without a port); IPv6 listens are dropped; a `server` without
   `listen` gets the pod IP and NGINX's default port (80 when the master runs
   as root, else 8000).
3. Upstream hosts (`*_pass`, `server` in `upstream{}`): Service names become
   the Service's ClusterIP, `localhost` the pod IP, names in DIR/hosts as
   listed; other names fail as NGINX fails without DNS.
4. `resolver` addresses outside 127.0.0.0/8 become 127.0.0.1.

Once the pod network gives every pod its own namespace and cluster DNS
(kubelet's pod network seam), none of this is used and this file goes."""
import glob
import os
import re


class ConfigError(Exception):
    pass


class UnresolvedHost(Exception):
    """A host name in an upstream that is neither an IP, a Service nor in DIR/hosts."""


class Directive:
    __slots__ = ("name", "args", "block")

    def __init__(self, name, args, block=None):
        self.name = name
        self.args = args      # raw tokens (quotes kept)
        self.block = block    # list of Directive, or None


def _tokenize(text):
    i, n = 0, len(text)
    toks = []
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c == "#":
            while i < n and text[i] != "\n":
                i += 1
        elif c in ";{}":
            toks.append(c)
            i += 1
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            if j >= n:
                raise ConfigError("unexpected end of file, expecting \"%s\"" % c)
            toks.append(text[i:j + 1])
            i = j + 1
        else:
            j = i
            while j < n and not text[j].isspace() and text[j] not in ";{}":
                if text[j] == "\\":
                    j += 1
                elif text[j] == "$" and j + 1 < n and text[j + 1] == "{":
                    k = text.find("}", j)
                    if k > 0:
                        j = k
                j += 1
            toks.append(text[i:j])
            i = j
    return toks


def parse(text):
    toks = _tokenize(text)
    pos = 0

    def block(top):
        nonlocal pos
        out = []
        words = []
        while pos < len(toks):
            t = toks[pos]
            pos += 1
            if t == ";":
                if words:
                    out.append(Directive(words[0], words[1:]))
                words = []
            elif t == "{":
                if not words:
                    raise ConfigError('unexpected "{"')
                d = Directive(words[0], words[1:], [])
                words = []
                d.block = block(False)
                out.append(d)
            elif t == "}":
                if top:
                    raise ConfigError('unexpected "}"')
                return out
            else:
                words.append(t)
        if not top:
            raise ConfigError('unexpected end of file, expecting "}"')
        if words:
            raise ConfigError('unexpected end of file, expecting ";" or "}"')
        return out
    return block(True)


def unquote(tok):
    if len(tok) >= 2 and tok[0] == tok[-1] and tok[0] in "\"'":
        return tok[1:-1]
    return tok


def quote(s):
    if s and not re.search(r"[\s;{}'\"#]", s):
        return s
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render(directives, indent=0):
    out = []
    pad = "    " * indent
    for d in directives:
        head = " ".join([d.name] + d.args)
        if d.block is None:
            out.append(pad + head + ";")
        else:
            out.append(pad + head + " {")
            out.append(render(d.block, indent + 1))
            out.append(pad + "}")
    return "\n".join(x for x in out if x != "")


# Blocks whose contents are data, not directives.
OPAQUE_BLOCKS = {"map", "types", "geo", "split_clients", "charset_map", "match"}
PASS_DIRECTIVES = {"proxy_pass", "grpc_pass", "uwsgi_pass", "fastcgi_pass", "scgi_pass", "memcached_pass"}


class Translator:
    """Rewrite a pod's NGINX configuration for a pod on a loopback IP.

    host_path(container_path) -> the file on this machine; resolve(host) ->
    IPv4 or None; root_master: whether nginx's master runs as root."""

    def __init__(self, host_path, pod_ip, resolve=None, root_master=True):
        self.host_path = host_path
        self.pod_ip = pod_ip
        self.resolve = resolve or (lambda h: None)
        self.root_master = root_master
        self.listens = set()
        self.depth = 0
        self.upstreams = set()
        self.collecting = False
        self.conf_dir = "/etc/nginx"

    # hosts --------------------------------------------------------------
    def map_host(self, host):
        if "$" in host or host in self.upstreams:
            return host
        if host == "localhost":
            return self.pod_ip
        if re.match(r"^\d+\.\d+\.\d+\.\d+$", host):
            return host
        if self.collecting:
            return host
        ip = self.resolve(host)
        if not ip:
            raise UnresolvedHost(host)
        return ip

    def _url(self, tok):
        raw = unquote(tok)
        m = re.match(r"^([a-z]+://)(\[[^\]]*\]|[^/:]*)(.*)$", raw)
        if not m or m.group(2).startswith("unix"):
            return tok
        return quote(m.group(1) + self.map_host(m.group(2)) + m.group(3))

    def _hostport(self, tok):
        raw = unquote(tok)
        if raw.startswith("unix:"):
            return tok
        m = re.match(r"^([^:\[]+)(:\d+)?$", raw)
        if not m:
            return tok
        return quote(self.map_host(m.group(1)) + (m.group(2) or ""))

    # listen --------------------------------------------------------------
    def _listen(self, d):
        if not d.args:
            return d
        addr = unquote(d.args[0])
        if addr.startswith("unix:"):
            return d
        if addr.startswith("["):
            return None  # IPv6: pods here have IPv4 only
        if addr.isdigit():
            port = int(addr)
        elif ":" in addr:
            port = int(addr.rsplit(":", 1)[1])
        else:
            port = 80
        params = [a for a in d.args[1:] if not unquote(a).startswith("ipv6only=")]
        if "udp" not in (unquote(a) for a in params):
            self.listens.add(port)  # the kubelet waits for these to accept TCP
        return Directive("listen", ["%s:%d" % (self.pod_ip, port)] + params)

    # include ---------------------------------------------------------------
    def _include(self, d, context):
        if not d.args:
            raise ConfigError('invalid number of arguments in "include" directive')
        name = unquote(d.args[0])
        path = name if name.startswith("/") else os.path.normpath(os.path.join(self.conf_dir, name))
        pattern = self.host_path(path)
        if any(c in path for c in "*?["):
            files = sorted(glob.glob(pattern))
        else:
            if not os.path.exists(pattern):
                raise ConfigError('open() "%s" failed (2: No such file or directory)' % path)
            files = [pattern]
        out = []
        self.depth += 1
        if self.depth > 20:
            raise ConfigError("include nesting too deep")
        for f in files:
            if os.path.isdir(f):
                continue
            with open(f, errors="replace") as fh:
                out.extend(self.translate_block(parse(fh.read()), context))
        self.depth -= 1
        return out

    # walk ------------------------------------------------------------------
    def translate_block(self, directives, context):
        out = []
        for d in directives:
            name = d.name
            if name == "include":
                out.extend(self._include(d, context))
                continue
            if d.block is not None:
                if name in OPAQUE_BLOCKS:
                    out.append(d)
                    continue
                sub = "server" if name == "server" and context == "http" else name
                if name == "upstream":
                    sub = "upstream"
                    if d.args:
                        self.upstreams.add(unquote(d.args[0]))
                block = self.translate_block(d.block, sub)
                if sub == "server" and context == "http" and not any(x.name == "listen" for x in block):
                    port = 80 if self.root_master else 8000
                    self.listens.add(port)
                    block.insert(0, Directive("listen", ["%s:%d" % (self.pod_ip, port)]))
                out.append(Directive(name, list(d.args), block))
                continue
            if name == "listen" and context == "server":
                nd = self._listen(Directive(name, list(d.args)))
                if nd is not None:
                    out.append(nd)
                continue
            args = list(d.args)
            if name in PASS_DIRECTIVES and args:
                args[0] = self._url(args[0]) if "://" in unquote(args[0]) else self._hostport(args[0])
            elif name == "server" and context == "upstream" and args:
                args[0] = self._hostport(args[0])
            elif name == "resolver":
                # No traffic may leave 127.0.0.0/8: other name servers become 127.0.0.1.
                args = [a if "=" in a or unquote(a).startswith("127.") else "127.0.0.1" for a in args]
            out.append(Directive(name, args))
        return out

    def translate(self, conf_path):
        """The rewritten main configuration (container path conf_path) as text."""
        self.conf_dir = os.path.dirname(conf_path) or "/"
        try:
            with open(self.host_path(conf_path), errors="replace") as f:
                text = f.read()
        except OSError as e:
            raise ConfigError('open() "%s" failed (%d: %s)' % (conf_path, e.errno, e.strerror))
        # First pass: learn the upstream{} names, so that proxy_pass to them is not resolved.
        self.collecting = True
        try:
            self.translate_block(parse(text), "main")
        finally:
            self.collecting = False
        self.listens = set()
        return render(self.translate_block(parse(text), "main")) + "\n"
