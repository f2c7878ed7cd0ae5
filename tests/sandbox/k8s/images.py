"""The images the sandbox kubelet can run, and the NGINX emulation.

An NGINX container runs Debian's /usr/sbin/nginx against an emulated image
filesystem under the pod directory ("root"). Its configuration is translated
before start (README "Node: NGINX translation" lists every rule)."""
import glob
import hashlib
import os
import re
import shutil
import subprocess

NGINX_BIN = "/usr/sbin/nginx"
# Built into the official images; a dynamic module in Debian (libnginx-mod-stream).
STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"
_stream_dynamic = None


def stream_is_dynamic():
    """Whether this machine's nginx has `stream` as a dynamic module (asked once)."""
    global _stream_dynamic
    if _stream_dynamic is None:
        try:
            r = subprocess.run([NGINX_BIN, "-V"], capture_output=True, text=True, timeout=10)
            _stream_dynamic = "--with-stream=dynamic" in r.stdout + r.stderr
        except (OSError, subprocess.SubprocessError):
            _stream_dynamic = False
    return _stream_dynamic
NGINX_IMAGES = ("library/nginx", "nginxinc/nginx-unprivileged", "nginx/nginx-unprivileged")
ECHO_IMAGES = ("sandbox/echo",)


def parse_image(image):
    """(registry, path, tag, digest) as containerd normalises a reference."""
    ref, digest = image, None
    if "@" in ref:
        ref, digest = ref.split("@", 1)
    tag = None
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        ref, tag = ref[:colon], ref[colon + 1:]
    parts = ref.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        registry, path = parts[0], "/".join(parts[1:])
    else:
        registry, path = "docker.io", ref
    if registry == "docker.io" and "/" not in path:
        path = "library/" + path
    if tag is None and digest is None:
        tag = "latest"
    return registry, path, tag, digest


def normalized(image):
    registry, path, tag, digest = parse_image(image)
    s = "%s/%s" % (registry, path)
    if tag:
        s += ":" + tag
    if digest:
        s += "@" + digest
    return s


def image_id(image):
    registry, path, tag, digest = parse_image(image)
    d = digest or "sha256:" + hashlib.sha256(normalized(image).encode()).hexdigest()
    return "%s/%s@%s" % (registry, path, d)


def kind_of(image):
    """'nginx', 'nginx-unprivileged', 'echo' or None (unknown image)."""
    if not image:
        return None
    registry, path, tag, digest = parse_image(image)
    if registry != "docker.io":
        return None
    if path == "library/nginx":
        return "nginx"
    if path in NGINX_IMAGES:
        return "nginx-unprivileged"
    if path in ECHO_IMAGES:
        return "echo"
    return None


def pull_error(image):
    """The message containerd gives for an image that does not exist."""
    n = normalized(image)
    return ('failed to pull and unpack image "%s": failed to resolve reference "%s": pull access denied, '
            'repository does not exist or may require authorization: server message: insufficient_scope: '
            'authorization failed' % (n, n))


# ---------------------------------------------------------------------------
# Image filesystem

NGINX_CONF = """
user  nginx;
worker_processes  auto;

error_log  /var/log/nginx/error.log notice;
pid        /var/run/nginx.pid;


events {
    worker_connections  1024;
}


http {
    include       /etc/nginx/mime.types;
    default_type  application/octet-stream;

    log_format  main  '$remote_addr - $remote_user [$time_local] "$request" '
                      '$status $body_bytes_sent "$http_referer" '
                      '"$http_user_agent" "$http_x_forwarded_for"';

    access_log  /var/log/nginx/access.log  main;

    sendfile        on;
    #tcp_nopush     on;

    keepalive_timeout  65;

    #gzip  on;

    include /etc/nginx/conf.d/*.conf;
}
""".lstrip()

NGINX_UNPRIV_CONF = """
worker_processes  auto;

error_log  /var/log/nginx/error.log notice;
pid        /tmp/nginx.pid;


events {
    worker_connections  1024;
}


http {
    proxy_temp_path /tmp/proxy_temp;
    client_body_temp_path /tmp/client_temp;
    fastcgi_temp_path /tmp/fastcgi_temp;
    uwsgi_temp_path /tmp/uwsgi_temp;
    scgi_temp_path /tmp/scgi_temp;

    include       /etc/nginx/mime.types;
    default_type  application/octet-stream;

    log_format  main  '$remote_addr - $remote_user [$time_local] "$request" '
                      '$status $body_bytes_sent "$http_referer" '
                      '"$http_user_agent" "$http_x_forwarded_for"';

    access_log  /var/log/nginx/access.log  main;

    sendfile        on;
    #tcp_nopush     on;

    keepalive_timeout  65;

    #gzip  on;

    include /etc/nginx/conf.d/*.conf;
}
""".lstrip()

DEFAULT_CONF = """
server {
    listen       %(port)d;
    listen  [::]:%(port)d;
    server_name  localhost;

    #access_log  /var/log/nginx/host.access.log  main;

    location / {
        root   /usr/share/nginx/html;
        index  index.html index.htm;
    }

    #error_page  404              /404.html;

    # redirect server error pages to the static page /50x.html
    #
    error_page   500 502 503 504  /50x.html;
    location = /50x.html {
        root   /usr/share/nginx/html;
    }
}
""".lstrip()

INDEX_HTML = """<!DOCTYPE html>
<html>
<head>
<title>Welcome to nginx!</title>
<style>
html { color-scheme: light dark; }
body { width: 35em; margin: 0 auto;
font-family: Tahoma, Verdana, Arial, sans-serif; }
</style>
</head>
<body>
<h1>Welcome to nginx!</h1>
<p>If you see this page, the nginx web server is successfully installed and
working. Further configuration is required.</p>

<p>For online documentation and support please refer to
<a href="http://nginx.org/">nginx.org</a>.<br/>
Commercial support is available at
<a href="http://nginx.com/">nginx.com</a>.</p>

<p><em>Thank you for using nginx.</em></p>
</body>
</html>
"""

HTML_50X = """<!DOCTYPE html>
<html>
<head>
<title>Error</title>
<style>
html { color-scheme: light dark; }
body { width: 35em; margin: 0 auto;
font-family: Tahoma, Verdana, Arial, sans-serif; }
</style>
</head>
<body>
<h1>An error occurred.</h1>
<p>Sorry, the page you are looking for is currently unavailable.<br/>
Please try again later.</p>
<p>If you are the system administrator of this resource then please check
the <a href="http://nginx.org/r/error_log">error log</a> for details.</p>
<p><em>Faithfully yours, nginx.</em></p>
</body>
</html>
"""


def populate_nginx_root(root, variant):
    """Lay out the files of the official image that nginx needs."""
    def write(rel, text):
        p = os.path.join(root, rel.lstrip("/"))
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as f:
            f.write(text)
    unpriv = variant == "nginx-unprivileged"
    write("/etc/nginx/nginx.conf", NGINX_UNPRIV_CONF if unpriv else NGINX_CONF)
    write("/etc/nginx/conf.d/default.conf", DEFAULT_CONF % {"port": 8080 if unpriv else 80})
    try:
        with open("/etc/nginx/mime.types") as f:
            write("/etc/nginx/mime.types", f.read())
    except OSError:
        write("/etc/nginx/mime.types", "types {\n    text/html html htm;\n}\n")
    for name in ("fastcgi_params", "scgi_params", "uwsgi_params"):
        try:
            with open(os.path.join("/etc/nginx", name)) as f:
                write("/etc/nginx/" + name, f.read())
        except OSError:
            pass
    write("/usr/share/nginx/html/index.html", INDEX_HTML)
    write("/usr/share/nginx/html/50x.html", HTML_50X)
    for d in ("/var/cache/nginx", "/var/run", "/run", "/tmp", "/etc/nginx/templates"):
        os.makedirs(os.path.join(root, d.lstrip("/")), exist_ok=True)
    logs = os.path.join(root, "var/log/nginx")
    os.makedirs(logs, exist_ok=True)
    for name, target in (("access.log", "/dev/stdout"), ("error.log", "/dev/stderr")):
        p = os.path.join(logs, name)
        if not os.path.lexists(p):
            os.symlink(target, p)


# ---------------------------------------------------------------------------
# NGINX configuration translation

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


PATH_DIRECTIVES = {
    "pid", "lock_file", "working_directory", "root", "alias",
    "client_body_temp_path", "proxy_temp_path", "fastcgi_temp_path", "uwsgi_temp_path", "scgi_temp_path",
    "proxy_cache_path", "fastcgi_cache_path", "uwsgi_cache_path", "scgi_cache_path",
    "ssl_certificate", "ssl_certificate_key", "ssl_trusted_certificate", "ssl_client_certificate",
    "ssl_dhparam", "ssl_crl", "ssl_password_file", "ssl_stapling_file", "ssl_session_ticket_key",
    "proxy_ssl_certificate", "proxy_ssl_certificate_key", "proxy_ssl_trusted_certificate", "proxy_ssl_crl",
    "proxy_ssl_password_file", "grpc_ssl_certificate", "grpc_ssl_certificate_key",
    "grpc_ssl_trusted_certificate", "grpc_ssl_crl", "grpc_ssl_password_file",
    "uwsgi_ssl_certificate", "uwsgi_ssl_certificate_key", "uwsgi_ssl_trusted_certificate",
    "auth_basic_user_file", "error_log", "access_log", "client_body_temp_path", "geoip_country", "geoip_city",
}
# Blocks whose contents are data, not directives.
OPAQUE_BLOCKS = {"map", "types", "geo", "split_clients", "charset_map", "match"}
PASS_DIRECTIVES = {"proxy_pass", "grpc_pass", "uwsgi_pass", "fastcgi_pass", "scgi_pass", "memcached_pass"}
TEMP_DEFAULTS = (("client_body_temp_path", "client_temp"), ("proxy_temp_path", "proxy_temp"),
                 ("fastcgi_temp_path", "fastcgi_temp"), ("uwsgi_temp_path", "uwsgi_temp"),
                 ("scgi_temp_path", "scgi_temp"))


class NginxTranslator:
    """Translate an image's NGINX configuration for a pod on a loopback IP.

    root: the pod's emulated image filesystem; pod_ip: its address;
    resolve(host) -> IPv4 string or None, for Service names."""

    def __init__(self, root, pod_ip, resolve=None, run_as_root=None):
        self.root = root.rstrip("/")
        self.pod_ip = pod_ip
        self.resolve = resolve or (lambda h: None)
        self.run_as_root = os.geteuid() == 0 if run_as_root is None else run_as_root
        self.listens = set()
        self.depth = 0
        self.upstreams = set()
        self.collecting = False

    # paths -------------------------------------------------------------
    def image_abs(self, p, base="/etc/nginx"):
        if p.startswith("/"):
            return p
        return os.path.normpath(os.path.join(base, p))

    def reroot(self, p):
        if p.startswith("/dev/") or p.startswith("/proc/self/"):
            return p
        return self.root + self.image_abs(p)

    def _path_tok(self, tok):
        raw = unquote(tok)
        if not raw or raw.startswith("$") or raw.startswith("data:") or raw.startswith("engine:"):
            return tok
        return quote(self.reroot(raw))

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
            if raw.startswith("unix:"):
                return quote("unix:" + self.reroot(raw[5:]))
            return tok
        return quote(m.group(1) + self.map_host(m.group(2)) + m.group(3))

    def _hostport(self, tok):
        raw = unquote(tok)
        if raw.startswith("unix:"):
            return quote("unix:" + self.reroot(raw[5:]))
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
            d.args[0] = quote("unix:" + self.reroot(addr[5:]))
            return d
        if addr.startswith("["):
            return None  # IPv6: pods here have IPv4 only
        if addr.startswith("127."):
            return d  # the pod's own loopback (its network namespace has one), as in a real pod
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
        pattern = self.reroot(unquote(d.args[0]))
        if any(c in pattern for c in "*?["):
            files = sorted(glob.glob(pattern))
        else:
            if not os.path.exists(pattern):
                raise ConfigError('open() "%s" failed (2: No such file or directory)' % unquote(d.args[0]))
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
            if name in ("daemon", "master_process"):
                continue
            if name == "user" and context == "main":
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
                    port = 80 if self.run_as_root else 8000
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
            elif name == "error_log" and args:
                v = unquote(args[0])
                if v != "stderr" and not v.startswith("syslog:") and not v.startswith("memory:"):
                    args[0] = self._path_tok(args[0])
            elif name == "access_log" and args:
                v = unquote(args[0])
                if v != "off" and not v.startswith("syslog:"):
                    args[0] = self._path_tok(args[0])
            elif name == "resolver":
                # Addresses are kept (cluster DNS answers at the kube-dns ClusterIP;
                # nothing else is reachable from a pod); names map like upstream names.
                args = [a if "=" in a else self._hostport(a) for a in args]
            elif name == "load_module" and args:
                v = unquote(args[0])
                args[0] = quote(os.path.join("/usr/lib/nginx/modules", os.path.basename(v)))
            elif name in PATH_DIRECTIVES and args:
                args[0] = self._path_tok(args[0])
            out.append(Directive(name, args))
        return out

    def translate(self, main_conf_text, extra_main=""):
        """The translated main configuration as text."""
        # First pass: learn the upstream{} names, so that proxy_pass to them is not resolved.
        self.collecting = True
        try:
            if extra_main.strip():
                self.translate_block(parse(extra_main), "main")
            self.translate_block(parse(main_conf_text), "main")
        finally:
            self.collecting = False
        self.listens = set()
        main = self.translate_block(parse(extra_main), "main") if extra_main.strip() else []
        main += self.translate_block(parse(main_conf_text), "main")
        names = {d.name for d in main}
        pre = []
        # A top-level stream{} needs the module the official images have built in.
        if any(d.name == "stream" and d.block is not None for d in main) and stream_is_dynamic() and not any(
                d.name == "load_module" and d.args and "ngx_stream_module" in unquote(d.args[0]) for d in main):
            pre.append(Directive("load_module", [quote(STREAM_MODULE)]))
        if self.run_as_root:
            pre.append(Directive("user", ["root", "root"]))
        pre.append(Directive("daemon", ["off"]))
        if "pid" not in names:
            pre.append(Directive("pid", [quote(self.reroot("/var/run/nginx.pid"))]))
        for d in main:
            if d.name == "http" and d.block is not None:
                have = {x.name for x in d.block}
                extra = [Directive(k, [quote(self.reroot("/var/cache/nginx/" + v))])
                         for k, v in TEMP_DEFAULTS if k not in have]
                if "access_log" not in have:
                    extra.append(Directive("access_log", [quote(self.reroot("/var/log/nginx/access.log"))]))
                d.block[:0] = extra
        return render(pre + main) + "\n"


def envsubst_templates(root, env):
    """The official image's 20-envsubst-on-templates.sh: /etc/nginx/templates/*.template
    -> /etc/nginx/conf.d/*, substituting ${VAR} of defined variables only."""
    tdir = os.path.join(root, "etc/nginx/templates")
    out_dir = os.path.join(root, "etc/nginx/conf.d")
    if not os.path.isdir(tdir):
        return
    for dirpath, _, files in os.walk(tdir, followlinks=True):
        for f in files:
            if not f.endswith(".template"):
                continue
            src = os.path.join(dirpath, f)
            rel = os.path.relpath(src, tdir)[:-len(".template")]
            dst = os.path.join(out_dir, rel)
            with open(src, errors="replace") as fh:
                text = fh.read()
            text = re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}",
                          lambda m: env.get(m.group(1), m.group(0)), text)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            if os.path.lexists(dst):
                os.unlink(dst)
            with open(dst, "w") as fh:
                fh.write(text)


def nginx_command(command, args):
    """Split the container's command/args into (main conf path, -g text) or raise ValueError
    when the container does not run nginx."""
    argv = list(command or []) + list(args or [])
    if not argv:
        argv = ["nginx", "-g", "daemon off;"]
    if os.path.basename(argv[0]) in ("/docker-entrypoint.sh", "docker-entrypoint.sh") and len(argv) > 1:
        argv = argv[1:]
    if os.path.basename(argv[0]) not in ("nginx", "nginx-debug"):
        raise ValueError(argv[0])
    conf, g = "/etc/nginx/nginx.conf", ""
    i = 1
    while i < len(argv):
        a = argv[i]
        if a == "-c" and i + 1 < len(argv):
            conf = argv[i + 1]
            i += 2
        elif a == "-g" and i + 1 < len(argv):
            g += argv[i + 1] + "\n"
            i += 2
        elif a in ("-p", "-e") and i + 1 < len(argv):
            i += 2
        else:
            i += 1
    return conf, g


def copy_tree(src, dst):
    if os.path.isdir(src):
        shutil.copytree(src, dst, symlinks=True, dirs_exist_ok=True)
