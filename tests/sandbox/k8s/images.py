"""The images the sandbox kubelet can run: names, what each image holds, how it starts.

An image here is a description (user, entrypoint, command, stop signal,
environment) and a function that lays out its files in a container's layer
directory; binaries and libraries come from this machine (k8s/runtime.py binds
/usr read-only). NGINX images run Debian's /usr/sbin/nginx on the official
image's layout, with the configuration they are given, untranslated (README
"Images" lists the command-line differences that remain and why)."""
import hashlib
import os
import re
import signal
import subprocess

NGINX_BIN = "/usr/sbin/nginx"
# Built into the official images; a dynamic module in Debian (libnginx-mod-stream).
STREAM_MODULE = "modules/ngx_stream_module.so"
ECHO_PY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "echo.py")
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



PASSWD = """root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
bin:x:2:2:bin:/bin:/usr/sbin/nologin
sys:x:3:3:sys:/dev:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
"""
GROUP = """root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
nogroup:x:65534:
"""
NGINX_USER = "nginx:x:101:101:nginx user:/nonexistent:/bin/false\n"
NSSWITCH = "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\n"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# What `docker inspect` says of each image: its default user, ENTRYPOINT,
# CMD, STOPSIGNAL, WORKDIR and PATH (the NGINX ones from the nginxinc/docker-nginx
# and docker-nginx-unprivileged Dockerfiles), and the size a kubelet `Pulled`
# event reports (nginx: ~190 MB unpacked, as such events show).
IMAGES = {
    "nginx": {"user": (0, 0), "entrypoint": ["/docker-entrypoint.sh"], "cmd": ["nginx", "-g", "daemon off;"],
              "stop_signal": signal.SIGQUIT, "workdir": "/", "size": 192000000, "env": {"PATH": PATH}},
    "nginx-unprivileged": {"user": (101, 101), "entrypoint": ["/docker-entrypoint.sh"],
                           "cmd": ["nginx", "-g", "daemon off;"], "stop_signal": signal.SIGQUIT, "workdir": "/",
                           "size": 192000000, "env": {"PATH": PATH}},
    # the sandbox's own image: k8s/echo.py, run by this machine's python3
    "echo": {"user": (0, 0), "entrypoint": ["python3", "-I", "/sandbox-echo/echo.py"], "cmd": [],
             "stop_signal": signal.SIGTERM, "workdir": "/", "size": 12000000, "env": {"PATH": PATH}},
}


def config(kind):
    return IMAGES[kind]


def user_entry(kind, uid):
    """(gid, home) of uid in the image's /etc/passwd, or None when it has no such user."""
    text = PASSWD + ("" if kind == "echo" else NGINX_USER)
    for line in text.splitlines():
        f = line.split(":")
        if len(f) >= 6 and f[2] == str(uid):
            return int(f[3]), f[5]
    return None


class Layer:
    """Writes an image's files into a container's layer directory, owned as in the image."""

    def __init__(self, root):
        self.root = root.rstrip("/")

    def path(self, rel):
        return self.root + "/" + rel.lstrip("/")

    def dir(self, rel, mode=0o755, owner=(0, 0)):
        p = self.path(rel)
        os.makedirs(p, exist_ok=True)
        os.chmod(p, mode)
        os.chown(p, *owner)

    def file(self, rel, text, mode=0o644, owner=(0, 0)):
        p = self.path(rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(text if isinstance(text, bytes) else text.encode())
        os.chmod(p, mode)
        os.chown(p, *owner)

    def copy(self, rel, host_path, default=b""):
        try:
            with open(host_path, "rb") as f:
                data = f.read()
        except OSError:
            data = default
        self.file(rel, data)

    def link(self, rel, target):
        p = self.path(rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        if os.path.lexists(p):
            os.unlink(p)
        os.symlink(target, p)


def _base(layer, passwd="", group=""):
    """A Debian base image: merged /usr (the links into the bound /usr), /etc, /tmp, /run."""
    for name in ("bin", "sbin", "lib", "lib64"):
        layer.link(name, "usr/" + name)
    layer.dir("/etc")
    layer.file("/etc/passwd", PASSWD + passwd)
    layer.file("/etc/group", GROUP + group)
    layer.file("/etc/nsswitch.conf", NSSWITCH)
    layer.copy("/etc/ld.so.cache", "/etc/ld.so.cache")
    layer.dir("/etc/ssl/certs")
    layer.dir("/tmp", 0o1777)
    layer.dir("/run")
    layer.dir("/var")
    layer.link("/var/run", "/run")
    layer.dir("/root", 0o700)


def populate(root, usr, kind):
    """Lay out image `kind` in the layer directory `root`; files the image has
    under /usr go to the directory `usr` (bound over this machine's /usr, see
    usr_mounts). Ownership as in the image (nginx-unprivileged: /etc/nginx and
    /var/cache/nginx owned by 101:0 and group-writable)."""
    layer = Layer(root)
    if kind == "echo":
        _base(layer)
        with open(ECHO_PY, "rb") as f:
            layer.file("/sandbox-echo/echo.py", f.read())
        return
    _base(layer, NGINX_USER, "nginx:x:101:\n")
    unpriv = kind == "nginx-unprivileged"
    own, mode_d, mode_f = ((101, 0), 0o775, 0o664) if unpriv else ((0, 0), 0o755, 0o644)
    layer.dir("/etc/nginx", mode_d, own)
    layer.dir("/etc/nginx/conf.d", mode_d, own)
    layer.file("/etc/nginx/nginx.conf", NGINX_UNPRIV_CONF if unpriv else NGINX_CONF, mode_f, own)
    layer.file("/etc/nginx/conf.d/default.conf", DEFAULT_CONF % {"port": 8080 if unpriv else 80}, mode_f, own)
    layer.copy("/etc/nginx/mime.types", "/etc/nginx/mime.types", b"types {\n    text/html html htm;\n}\n")
    for name in ("fastcgi_params", "scgi_params", "uwsgi_params"):
        layer.copy("/etc/nginx/" + name, "/etc/nginx/" + name)
    if unpriv:
        for name in ("mime.types", "fastcgi_params", "scgi_params", "uwsgi_params"):
            os.chmod(layer.path("/etc/nginx/" + name), mode_f)
            os.chown(layer.path("/etc/nginx/" + name), *own)
    layer.link("/etc/nginx/modules", "/usr/lib/nginx/modules")
    layer.dir("/var/cache/nginx", mode_d, own)
    # Debian's nginx was built with temp paths in /var/lib/nginx; the official
    # build has them in /var/cache/nginx: the link puts them where the image's are.
    layer.dir("/var/lib")
    layer.link("/var/lib/nginx", "/var/cache/nginx")
    layer.dir("/var/log/nginx")
    layer.link("/var/log/nginx/access.log", "/dev/stdout")
    layer.link("/var/log/nginx/error.log", "/dev/stderr")
    layer.dir("/docker-entrypoint.d")
    html = Layer(usr)
    html.file("/share/nginx/html/index.html", INDEX_HTML)
    html.file("/share/nginx/html/50x.html", HTML_50X)


def usr_mounts(kind, usr):
    """(source, target) binds of the image's own /usr files over this machine's /usr."""
    if kind in ("nginx", "nginx-unprivileged"):
        return [(os.path.join(usr, "share/nginx/html"), "/usr/share/nginx/html")]
    return []


def expand(s, env):
    """Kubernetes' $(VAR) expansion in command, args and env values ($$ is a literal $)."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)",
                  lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), s)


def container_argv(kind, command, args, env):
    """(argv, entrypoint) a container runs: Kubernetes' rule (command replaces
    the image's ENTRYPOINT, args its CMD; $(VAR) expanded), then the image's
    entrypoint script: for NGINX images `/docker-entrypoint.sh nginx ...` runs
    its template step (entrypoint "nginx", done by the launcher as the
    container user) and execs nginx. Running nginx adds `-p /etc/nginx/` (the
    official build's prefix; Debian's is /usr/share/nginx) and, where this
    machine's nginx has `stream` as a dynamic module, loads it with -g (the
    official build has it built in)."""
    img = IMAGES[kind]
    command = [expand(a, env) for a in command or []]
    args = [expand(a, env) for a in args or []]
    if command:
        argv = command + args
    elif kind == "echo":
        argv = list(img["entrypoint"])   # its arguments come from the pod spec (kubelet), args are ignored
    else:
        argv = img["entrypoint"] + (args if args else img["cmd"])
    entrypoint = None
    if kind != "echo" and argv and argv[0] == "/docker-entrypoint.sh":
        argv = argv[1:]
        if argv and argv[0] in ("nginx", "nginx-debug"):
            entrypoint = "nginx"
        if not argv:
            argv = ["/docker-entrypoint.sh"]   # the real script with no arguments execs nothing useful
    if argv and os.path.basename(argv[0]) in ("nginx", "nginx-debug"):
        argv = nginx_argv(argv)
    return argv, entrypoint


def nginx_argv(argv):
    """The nginx command line adjusted for Debian's build (see container_argv)."""
    out = ["nginx" if argv[0] in ("nginx", "nginx-debug") else argv[0]]
    rest = list(argv[1:])
    if "-p" not in rest:
        out += ["-p", "/etc/nginx/"]
    if stream_is_dynamic():
        load = "load_module %s;" % STREAM_MODULE
        if "-g" in rest:
            i = rest.index("-g")
            if i + 1 < len(rest):
                rest[i + 1] = load + " " + rest[i + 1]
        else:
            rest += ["-g", load]
    return out + rest

