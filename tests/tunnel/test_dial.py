#!/usr/bin/env python3
"""A port-forward's upgrade request carries the kubeconfig's credentials and TLS
settings as every other request of czctl's Kubernetes client does (core/kube.c's
dialer on a libcurl CONNECT_ONLY handle): client certificates from files and from
an exec plugin, basic auth (also from the server URL's userinfo), bearer tokens, an
exec plugin's token refreshed once after a 401, proxy-url, tls-server-name, and the
CA check. The server here refuses every upgrade with a Status whose message says
what it saw (booleans and names, never a secret), which czctl reports as the
one-line reason the tunnel is down."""
import json
import os
import shutil
import socket
import socketserver
import ssl
import subprocess
import tempfile
import threading
import unittest
import base64

import tunnellib as tl
import tap  # noqa: E402

D = None
PORT = NAMED_PORT = PROXY_PORT = None
CONNECTS = []


class Upgrade(socketserver.StreamRequestHandler):
    """Reads an upgrade request; answers 401 to a token starting with "wrong-",
    else 403 with what it saw."""

    def handle(self):
        head = []
        while True:
            line = self.rfile.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            head.append(line.decode().rstrip("\r\n"))
        if not head:
            return
        method, path, _ = head[0].split(" ", 2)
        h = {}
        for line in head[1:]:
            k, _, v = line.partition(":")
            h[k.strip().lower()] = v.strip()
        cert = self.connection.getpeercert()
        cn = next((v for rdn in (cert or {}).get("subject", ()) for k, v in rdn if k == "commonName"), None)
        scheme, _, cred = h.get("authorization", "").partition(" ")
        if scheme == "Bearer" and cred.startswith("wrong-"):
            body = json.dumps({"kind": "Status", "message": "Unauthorized", "code": 401})
            status = "401 Unauthorized"
        else:
            user, ok = None, False
            if scheme == "Basic":
                user, _, pw = base64.b64decode(cred).decode().partition(":")
                ok = pw == "s3cret"
            elif scheme == "Bearer":
                ok = cred == "tok3n"
            seen = "cn=%s scheme=%s user=%s ok=%s host=%s %s %s upgrade=%s" % (
                cn, scheme or None, user, ok, h.get("host"), method, path, h.get("upgrade"))
            body = json.dumps({"kind": "Status", "status": "Failure", "message": seen, "code": 403})
            status = "403 Forbidden"
        self.wfile.write(("HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                          "Connection: close\r\n\r\n%s" % (status, len(body), body)).encode())


class TLSServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, ctx):
        super().__init__(("127.0.0.1", 0), Upgrade)
        self.ctx = ctx

    def get_request(self):
        s, a = self.socket.accept()
        return self.ctx.wrap_socket(s, server_side=True), a


class Connect(socketserver.StreamRequestHandler):
    """proxy-url: an HTTP CONNECT proxy that counts tunnels."""

    def handle(self):
        line = self.rfile.readline().decode()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass
        host, port = line.split()[1].rsplit(":", 1)
        CONNECTS.append(line.split()[1])
        up = socket.create_connection((host, int(port)))
        self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        self.wfile.flush()
        t = threading.Thread(target=lambda: shutil.copyfileobj(up.makefile("rb", buffering=0), self.wfile),
                             daemon=True)
        t.start()
        try:
            while True:
                d = self.connection.recv(65536)
                if not d:
                    break
                up.sendall(d)
        except OSError:
            pass
        t.join(5)
        up.close()


def ossl(*args):
    subprocess.run(["openssl"] + list(args), cwd=D, check=True, capture_output=True)


def setUpModule():
    global D, PORT, NAMED_PORT, PROXY_PORT
    D = tempfile.mkdtemp()
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ossl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=test-ca")
    ossl("req", "-x509", *ec, "-keyout", "other.key", "-out", "other.crt", "-days", "2", "-subj", "/CN=other-ca")
    ossl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=server")
    with open(os.path.join(D, "server.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\n")
    ossl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
         "-out", "server.crt", "-days", "2", "-extfile", "server.ext")
    # a server known only by a name (what tls-server-name is for): its certificate has no IP
    ossl("req", *ec, "-keyout", "named.key", "-out", "named.csr", "-subj", "/CN=named")
    with open(os.path.join(D, "named.ext"), "w") as f:
        f.write("subjectAltName=DNS:api.example\n")
    ossl("x509", "-req", "-in", "named.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
         "-out", "named.crt", "-days", "2", "-extfile", "named.ext")
    ossl("req", *ec, "-keyout", "alice.key", "-out", "alice.csr", "-subj", "/CN=alice")
    ossl("x509", "-req", "-in", "alice.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
         "-out", "alice.crt", "-days", "2")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.path.join(D, "server.crt"), os.path.join(D, "server.key"))
    ctx.load_verify_locations(os.path.join(D, "ca.crt"))
    ctx.verify_mode = ssl.CERT_OPTIONAL
    srv = TLSServer(ctx)
    PORT = srv.server_address[1]
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    named = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    named.load_cert_chain(os.path.join(D, "named.crt"), os.path.join(D, "named.key"))
    nsrv = TLSServer(named)
    NAMED_PORT = nsrv.server_address[1]
    threading.Thread(target=nsrv.serve_forever, daemon=True).start()
    proxy = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Connect)
    proxy.daemon_threads = True
    PROXY_PORT = proxy.server_address[1]
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    with open(os.path.join(D, "token"), "w") as f:
        f.write("tok3n")
    shutil.copy(os.path.join(tl.ROOT, "tests", "kubeconfig", "fixtures", "exec-plugin.sh"), os.path.join(D, "plugin"))
    exec_user = ('{exec: {apiVersion: client.authentication.k8s.io/v1, command: ./plugin, interactiveMode: Never, '
                 'env: [{name: PLUGIN_COUNT, value: "%s/%%s.count"}, %%s]}}' % D)
    users = {
        "certfiles": "{client-certificate: alice.crt, client-key: alice.key}",
        "basic": "{username: bob, password: s3cret}",
        "bearer": "{token: tok3n}",
        "anon": "{}",
        "exectoken": exec_user % ("exectoken", '{name: PLUGIN_TOKEN_FILE, value: "%s/token"}, '
                                              '{name: PLUGIN_WRONG_FIRST, value: "1"}' % D),
        "execcert": exec_user % ("execcert", '{name: PLUGIN_CERT, value: "%s/alice.crt"}, '
                                             '{name: PLUGIN_KEY, value: "%s/alice.key"}' % (D, D)),
    }
    url = "https://127.0.0.1:%d" % PORT
    clusters = {
        "good": '{server: "%s", certificate-authority: ca.crt}' % url,
        "userinfo": '{server: "https://bob:s3cret@127.0.0.1:%d", certificate-authority: ca.crt}' % PORT,
        "proxied": '{server: "%s", certificate-authority: ca.crt, proxy-url: "http://127.0.0.1:%d"}' % (url, PROXY_PORT),
        "wrongca": '{server: "%s", certificate-authority: other.crt}' % url,
        "tlsname": '{server: "https://127.0.0.1:%d", certificate-authority: ca.crt, tls-server-name: api.example}'
                   % NAMED_PORT,
        "noname": '{server: "https://127.0.0.1:%d", certificate-authority: ca.crt}' % NAMED_PORT,
    }
    contexts = {"certfiles": ("good", "certfiles"), "basic": ("good", "basic"), "bearer": ("good", "bearer"),
                "userinfo": ("userinfo", "anon"), "exectoken": ("good", "exectoken"),
                "execcert": ("good", "execcert"), "proxied": ("proxied", "bearer"),
                "wrongca": ("wrongca", "bearer"), "tlsname": ("tlsname", "bearer"), "noname": ("noname", "bearer")}
    with open(os.path.join(D, "kubeconfig"), "w") as f:
        f.write("apiVersion: v1\nkind: Config\nclusters:\n")
        f.writelines("- {name: %s, cluster: %s}\n" % kv for kv in clusters.items())
        f.write("users:\n")
        f.writelines("- {name: %s, user: %s}\n" % kv for kv in users.items())
        f.write("contexts:\n")
        f.writelines("- {name: %s, context: {cluster: %s, user: %s, namespace: ns1}}\n" % (n, c, u)
                     for n, (c, u) in contexts.items())
    os.chmod(os.path.join(D, "kubeconfig"), 0o600)


def tearDownModule():
    tl.stop_all()
    shutil.rmtree(D, ignore_errors=True)


def seen(context, protocol="websocket"):
    """The reason the tunnel is down for this context: what the server saw."""
    with tl.Driver("forward", os.path.join(D, "kubeconfig"), context=context, namespace="ns1", pod="p1", port=80,
                   protocol=protocol) as d:
        _, msg = d.event("down")
    out = d.p.stdout.read() + d.p.stderr.read() + msg
    assert "tok3n" not in out and "s3cret" not in out and "PRIVATE" not in out, "a secret in the output"
    return msg


class A_Credentials(unittest.TestCase):
    def test_1_credentials_reach_the_upgrade(self):
        "certificates, basic auth (also from the URL), tokens and an exec plugin's certificate reach the upgrade"
        cases = {
            "certfiles": "cn=alice scheme=None user=None ok=False",
            "basic": "cn=None scheme=Basic user=bob ok=True",
            "userinfo": "cn=None scheme=Basic user=bob ok=True",
            "bearer": "cn=None scheme=Bearer user=None ok=True",
            "execcert": "cn=alice scheme=None user=None ok=False",
        }
        for context, want in cases.items():
            with self.subTest(context=context):
                msg = seen(context)
                self.assertIn(want, msg)
                self.assertIn("host=127.0.0.1:%d GET /api/v1/namespaces/ns1/pods/p1/portforward upgrade=websocket"
                              % PORT, msg)
                self.assertTrue(msg.endswith("(HTTP 403)"), msg)

    def test_2_exec_token_refreshed_after_401(self):
        "an exec plugin's token that the server refuses (401) is refreshed once and the upgrade retried"
        msg = seen("exectoken")
        self.assertIn("scheme=Bearer user=None ok=True", msg)
        with open(os.path.join(D, "exectoken.count")) as f:
            self.assertEqual(len(f.readlines()), 2)

    def test_3_proxy_and_tls_server_name(self):
        "proxy-url: the upgrade goes through an HTTP CONNECT; tls-server-name: the certificate is checked for it"
        before = len(CONNECTS)
        self.assertIn("ok=True", seen("proxied"))
        self.assertEqual(CONNECTS[before:before + 1], ["127.0.0.1:%d" % PORT])
        msg = seen("tlsname", protocol="spdy")
        self.assertIn("ok=True host=127.0.0.1:%d POST /api/v1/namespaces/ns1/pods/p1/portforward upgrade=SPDY/3.1"
                      % NAMED_PORT, msg)
        msg = seen("noname")   # the same server without tls-server-name: its certificate does not match
        self.assertRegex(msg, r"^port-forward to pod ns1/p1: .*(certificate|SSL)")
        self.assertNotIn("scheme=", msg)

    def test_4_certificate_from_another_ca(self):
        "a server certificate from another CA: the connection is refused, and the error says why"
        with tl.Driver("forward", os.path.join(D, "kubeconfig"), context="wrongca", namespace="ns1", pod="p1",
                       port=80) as d:
            _, msg = d.event("down")
        self.assertRegex(msg, r"^port-forward to pod ns1/p1: .*(certificate|SSL)")
        self.assertNotIn("scheme=", msg, "nothing was sent to it")


if __name__ == "__main__":
    tap.main()
