/*
 * landing.c: czctl.core.landing: where a direct tunnel lands on this machine
 * (docs/decisions.md section 2, "the landing").
 *
 * A landing listens on the address the cluster reaches (the host gateway of
 * kind, minikube or the sandbox), admits only peers from the networks it is
 * given (the cluster's side), and forwards each admitted connection to a
 * local port, where the developer's app keeps listening on 127.0.0.1. One
 * thread per landing runs an epoll loop for every connection (no thread per
 * connection); bytes move with splice(2) through a pipe per direction, FIN
 * and RST are passed on. When the app cannot be reached the cluster side is
 * reset without a byte of response, so the proxy falls back to the
 * in-cluster version (decisions section 3).
 *
 * Mutual TLS (decisions section 2): with a `tls` option the landing admits
 * only peers that complete a TLS handshake with a client certificate of the
 * session's CA (core/landing_tls.c). A connection goes through CONN_HANDSHAKE
 * (the app is not dialled before the peer is known), CONN_CONNECTING to the
 * app, then CONN_OPEN; its cluster side moves through SSL_read/SSL_write and
 * a buffer per direction (tls_pump) instead of splice. Nothing of the
 * certificate reaches the app: it sees the plain bytes only.
 *
 * Also the address lookups a direct tunnel needs to pick its host:
 * route_source (the local address towards an IP, from a connected UDP
 * socket: nothing is sent) and interface_of (is an address this machine's).
 * IPv4 only. The thread never touches the Lua state; nothing here knows
 * about Kubernetes or sessions.
 */
#define _GNU_SOURCE   /* accept4, pipe2, splice, O_CLOEXEC */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

#include "czctl.h"
#include "landing_tls.h"

#include <openssl/err.h>

#define MAX_ALLOW 16
#define CHUNK (64 * 1024)    /* a pipe's default capacity */

/* ---- one forwarded connection ------------------------------------------------ */

enum conn_state { CONN_HANDSHAKE, CONN_CONNECTING, CONN_OPEN };

/* One direction: src -> pipe -> dst. */
struct half {
    int src, dst;
    int pipe[2];
    size_t pending;          /* bytes in the pipe, not yet written to dst */
    int eof;                 /* src sent FIN */
    int shut;                /* FIN passed on to dst */
};

/* One direction of a TLS connection: bytes decrypted or to encrypt. */
struct tbuf {
    char data[16384];
    size_t off, len;
    int eof, shut;
};

struct conn {
    enum conn_state state;
    int cluster, app;        /* the admitted peer; the connection to the app (-1 before it is dialled) */
    struct half up, down;    /* cluster -> app, app -> cluster (plain landings) */
    SSL *ssl;                /* the cluster side's TLS, or NULL */
    struct tbuf *tup, *tdown;/* cluster -> app, app -> cluster (TLS landings) */
    struct conn *prev, *next;
};

/* ---- the landing ------------------------------------------------------------- */

struct net4 { uint32_t addr, mask; };   /* host byte order */

struct landing {
    int listen_fd, stop_fd, ep;
    struct sockaddr_in bound, target;
    struct net4 allow[MAX_ALLOW], deny[MAX_ALLOW];
    int nallow, ndeny;
    pthread_t thread;
    int running;
    struct conn *conns;
    SSL_CTX *tls;            /* NULL: plain TCP */
    atomic_long accepted, refused, untrusted, failed, active;
};

/* A socket closed with RST instead of FIN (SO_LINGER 0). */
static void close_reset(int fd)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
}

static void close_pipe(struct half *h)
{
    for (int i = 0; i < 2; i++)
        if (h->pipe[i] >= 0) {
            close(h->pipe[i]);
            h->pipe[i] = -1;
        }
}

static void conn_free(struct landing *l, struct conn *c, int reset)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        l->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    /* out of epoll before close: a child forked meanwhile (before its exec)
     * may hold the same sockets, and epoll would keep reporting them */
    epoll_ctl(l->ep, EPOLL_CTL_DEL, c->cluster, NULL);
    if (c->app >= 0)
        epoll_ctl(l->ep, EPOLL_CTL_DEL, c->app, NULL);
    if (c->ssl) {
        if (!reset)
            SSL_shutdown(c->ssl);
        SSL_free(c->ssl);
    }
    if (reset) {
        close_reset(c->cluster);
        if (c->app >= 0)
            close_reset(c->app);
    } else {
        close(c->cluster);
        if (c->app >= 0)
            close(c->app);
    }
    close_pipe(&c->up);
    close_pipe(&c->down);
    free(c->tup);
    free(c->tdown);
    free(c);
    atomic_fetch_sub(&l->active, 1);
}

static int admit_peer(const struct landing *l, const struct sockaddr_in *peer)
{
    uint32_t a = ntohl(peer->sin_addr.s_addr);
    for (int i = 0; i < l->ndeny; i++)
        if ((a & l->deny[i].mask) == l->deny[i].addr)
            return 0;
    for (int i = 0; i < l->nallow; i++)
        if ((a & l->allow[i].mask) == l->allow[i].addr)
            return 1;
    return 0;
}

static int half_init(struct half *h, int src, int dst)
{
    h->pipe[0] = h->pipe[1] = -1;
    h->src = src;
    h->dst = dst;
    h->pending = 0;
    h->eof = h->shut = 0;
    return pipe2(h->pipe, O_CLOEXEC | O_NONBLOCK);
}

/* Moves what can be moved now; 0, or -1 on an error that ends the connection. */
static int pump(struct half *h)
{
    for (;;) {
        if (h->pending > 0) {
            ssize_t n = splice(h->pipe[0], NULL, h->dst, NULL, h->pending, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
            if (n < 0)
                return errno == EAGAIN ? 0 : -1;
            h->pending -= (size_t)n;
            continue;
        }
        if (h->eof) {
            if (!h->shut) {
                shutdown(h->dst, SHUT_WR);
                h->shut = 1;
            }
            return 0;
        }
        ssize_t n = splice(h->src, NULL, h->pipe[1], NULL, CHUNK, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
        if (n < 0)
            return errno == EAGAIN ? 0 : -1;
        if (n == 0)
            h->eof = 1;
        h->pending += (size_t)n;
    }
}

/* The connection to the app finished (or not yet: 0, nothing done). 1 when
 * it is open; -1 when it failed and the connection is gone. */
static int conn_opened(struct landing *l, struct conn *c)
{
    struct pollfd p = {.fd = c->app, .events = POLLOUT};
    if (poll(&p, 1, 0) == 0)
        return 0;   /* an event on the cluster side while the app is being dialled */
    int err = 0;
    socklen_t sl = sizeof err;
    if (getsockopt(c->app, SOL_SOCKET, SO_ERROR, &err, &sl) != 0 || err != 0) {
        atomic_fetch_add(&l->failed, 1);
        conn_free(l, c, 1);   /* no response at all: the proxy falls back */
        return -1;
    }
    int one = 1;
    setsockopt(c->cluster, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(c->app, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (!c->ssl && (half_init(&c->up, c->cluster, c->app) != 0 || half_init(&c->down, c->app, c->cluster) != 0)) {
        conn_free(l, c, 1);
        return -1;
    }
    c->state = CONN_OPEN;
    return 1;
}

/* Whether an SSL call that returned n <= 0 only has to wait for the socket. */
static int tls_waits(SSL *ssl, int n)
{
    int e = SSL_get_error(ssl, n);
    return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE;
}

/* A TLS connection's two directions: what can be moved now; 0, or -1 on an
 * error that ends the connection. The peer's close_notify (or a bare FIN)
 * becomes a FIN to the app; the app's FIN a close_notify and a FIN. */
static int tls_pump(struct conn *c)
{
    struct tbuf *u = c->tup, *d = c->tdown;
    for (;;) {   /* cluster -> app */
        if (u->len > u->off) {
            ssize_t n = write(c->app, u->data + u->off, u->len - u->off);
            if (n < 0) {
                if (errno == EAGAIN)
                    break;
                return -1;
            }
            u->off += (size_t)n;
            continue;
        }
        if (u->eof) {
            if (!u->shut) {
                shutdown(c->app, SHUT_WR);
                u->shut = 1;
            }
            break;
        }
        ERR_clear_error();
        int n = SSL_read(c->ssl, u->data, sizeof u->data);
        if (n > 0) {
            u->off = 0;
            u->len = (size_t)n;
            continue;
        }
        int e = SSL_get_error(c->ssl, n);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
            break;
        if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0)) {
            u->eof = 1;   /* close_notify, or the peer's FIN without one */
            continue;
        }
        return -1;
    }
    for (;;) {   /* app -> cluster */
        if (d->len > d->off) {
            ERR_clear_error();
            int n = SSL_write(c->ssl, d->data + d->off, (int)(d->len - d->off));
            if (n > 0) {
                d->off += (size_t)n;
                continue;
            }
            if (tls_waits(c->ssl, n))
                break;
            return -1;
        }
        if (d->eof) {
            if (!d->shut) {
                ERR_clear_error();
                SSL_shutdown(c->ssl);
                shutdown(c->cluster, SHUT_WR);
                d->shut = 1;
            }
            break;
        }
        ssize_t n = read(c->app, d->data, sizeof d->data);
        if (n > 0) {
            d->off = 0;
            d->len = (size_t)n;
        } else if (n == 0) {
            d->eof = 1;
        } else if (errno == EAGAIN) {
            break;
        } else {
            return -1;
        }
    }
    return 0;
}

static int dial_app(struct landing *l, struct conn *c);

/* The peer's handshake: 0 while it goes on (or once it failed and the
 * connection is gone), 1 once the peer is known and the app is dialled. */
static int conn_handshake(struct landing *l, struct conn *c)
{
    ERR_clear_error();
    int n = SSL_accept(c->ssl);
    if (n == 1) {
        atomic_fetch_add(&l->accepted, 1);
        c->state = CONN_CONNECTING;
        return dial_app(l, c) == 0 ? 1 : 0;
    }
    if (tls_waits(c->ssl, n))
        return 0;
    /* no certificate of the session's CA (or no TLS at all): refused */
    ERR_clear_error();
    atomic_fetch_add(&l->untrusted, 1);
    SSL_free(c->ssl);
    c->ssl = NULL;
    conn_free(l, c, 1);
    return 0;
}

static void conn_event(struct landing *l, struct conn *c)
{
    if (c->state == CONN_HANDSHAKE && conn_handshake(l, c) <= 0)
        return;
    if (c->state == CONN_CONNECTING && conn_opened(l, c) <= 0)
        return;
    if (c->ssl) {
        if (tls_pump(c) != 0) {
            conn_free(l, c, 1);
            return;
        }
        if (c->tup->shut && c->tdown->shut)
            conn_free(l, c, 0);
        return;
    }
    if (pump(&c->up) != 0 || pump(&c->down) != 0) {
        conn_free(l, c, 1);   /* a reset (or error) on one side resets the other */
        return;
    }
    if (c->up.shut && c->down.shut)
        conn_free(l, c, 0);
}

/* Starts the connection to the app; 0, or -1 when it failed and the
 * connection is gone. */
static int dial_app(struct landing *l, struct conn *c)
{
    c->app = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->app < 0 ||
        (connect(c->app, (struct sockaddr *)&l->target, sizeof l->target) != 0 && errno != EINPROGRESS)) {
        atomic_fetch_add(&l->failed, 1);
        conn_free(l, c, 1);
        return -1;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c};
    if (epoll_ctl(l->ep, EPOLL_CTL_ADD, c->app, &ev) != 0) {
        conn_free(l, c, 1);
        return -1;
    }
    return 0;
}

static void accept_all(struct landing *l)
{
    for (;;) {
        struct sockaddr_in peer;
        socklen_t pl = sizeof peer;
        int fd = accept4(l->listen_fd, (struct sockaddr *)&peer, &pl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;   /* EAGAIN, or a connection that went away meanwhile */
        if (peer.sin_family != AF_INET || !admit_peer(l, &peer)) {
            atomic_fetch_add(&l->refused, 1);
            close_reset(fd);
            continue;
        }
        struct conn *c = calloc(1, sizeof *c);
        if (c && l->tls) {
            c->tup = calloc(1, sizeof *c->tup);
            c->tdown = calloc(1, sizeof *c->tdown);
            c->ssl = SSL_new(l->tls);
        }
        if (!c || (l->tls && (!c->tup || !c->tdown || !c->ssl || SSL_set_fd(c->ssl, fd) != 1))) {
            if (c) {
                SSL_free(c->ssl);
                free(c->tup);
                free(c->tdown);
            }
            free(c);
            atomic_fetch_add(&l->failed, 1);
            close_reset(fd);
            continue;
        }
        c->cluster = fd;
        c->app = -1;
        c->up.pipe[0] = c->up.pipe[1] = c->down.pipe[0] = c->down.pipe[1] = -1;
        c->next = l->conns;
        if (l->conns)
            l->conns->prev = c;
        l->conns = c;
        atomic_fetch_add(&l->active, 1);
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c};
        if (epoll_ctl(l->ep, EPOLL_CTL_ADD, c->cluster, &ev) != 0) {
            conn_free(l, c, 1);
            continue;
        }
        if (c->ssl) {
            SSL_set_accept_state(c->ssl);
            c->state = CONN_HANDSHAKE;
            conn_handshake(l, c);   /* the ClientHello may be here already */
            continue;
        }
        atomic_fetch_add(&l->accepted, 1);
        c->state = CONN_CONNECTING;
        dial_app(l, c);
    }
}

static void *landing_loop(void *arg)
{
    struct landing *l = arg;
    struct epoll_event events[64];
    for (;;) {
        int n = epoll_wait(l->ep, events, 64, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        int stop = 0;
        for (int i = 0; i < n; i++) {
            void *p = events[i].data.ptr;
            if (p == &l->listen_fd)
                accept_all(l);
            else if (p == &l->stop_fd)
                stop = 1;
        }
        /* a connection may appear twice in one batch (both of its fds): handle
         * each once, and never after conn_free */
        for (int i = 0; i < n; i++) {
            void *p = events[i].data.ptr;
            if (p == &l->listen_fd || p == &l->stop_fd || p == NULL)
                continue;
            for (int j = i + 1; j < n; j++)
                if (events[j].data.ptr == p)
                    events[j].data.ptr = NULL;
            conn_event(l, p);
        }
        if (stop)
            break;
    }
    while (l->conns)
        conn_free(l, l->conns, 1);
    return NULL;
}

/* Stops the thread and frees everything; idempotent. The handle's memory
 * (the userdata) outlives the thread: __gc runs this, joining it, before
 * Lua frees the block. */
static void landing_release(void *handle)
{
    struct landing *l = handle;
    if (l->running) {
        uint64_t one = 1;
        ssize_t w = write(l->stop_fd, &one, sizeof one);
        (void)w;
        pthread_join(l->thread, NULL);
        l->running = 0;
    }
    int *fds[] = {&l->listen_fd, &l->stop_fd, &l->ep};
    for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++)
        if (*fds[i] >= 0) {
            close(*fds[i]);
            *fds[i] = -1;
        }
    SSL_CTX_free(l->tls);
    l->tls = NULL;
}

/* ---- Lua: handle -------------------------------------------------------------- */

static const czctl_class landing_class;

static void push_addr(lua_State *L, const struct sockaddr_in *sa)
{
    char buf[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &sa->sin_addr, buf, sizeof buf);
    lua_pushstring(L, buf);
}

/* l:address() -> host, port (where the cluster connects) */
static int landing_address(lua_State *L)
{
    struct landing *l = czctl_handle_check_open(L, 1, &landing_class);
    push_addr(L, &l->bound);
    lua_pushinteger(L, ntohs(l->bound.sin_port));
    return 2;
}

/* l:stats() -> { accepted=, refused=, untrusted=, failed=, active=, tls= }:
 * connections admitted, refused (peer outside the allowed networks),
 * untrusted (no client certificate of the session's CA: TLS handshake
 * failed), failed (the app could not be reached: reset without a response),
 * and open now; tls says whether the landing requires mutual TLS. */
static int landing_stats(lua_State *L)
{
    struct landing *l = czctl_handle_check_open(L, 1, &landing_class);
    lua_createtable(L, 0, 6);
    lua_pushinteger(L, atomic_load(&l->untrusted));
    lua_setfield(L, -2, "untrusted");
    lua_pushboolean(L, l->tls != NULL);
    lua_setfield(L, -2, "tls");
    lua_pushinteger(L, atomic_load(&l->accepted));
    lua_setfield(L, -2, "accepted");
    lua_pushinteger(L, atomic_load(&l->refused));
    lua_setfield(L, -2, "refused");
    lua_pushinteger(L, atomic_load(&l->failed));
    lua_setfield(L, -2, "failed");
    lua_pushinteger(L, atomic_load(&l->active));
    lua_setfield(L, -2, "active");
    return 1;
}

static void landing_describe(lua_State *L, const void *handle)
{
    const struct landing *l = handle;
    char a[INET_ADDRSTRLEN], b[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &l->bound.sin_addr, a, sizeof a);
    inet_ntop(AF_INET, &l->target.sin_addr, b, sizeof b);
    lua_pushfstring(L, "landing %s:%d -> %s:%d", a, (int)ntohs(l->bound.sin_port), b,
                    (int)ntohs(l->target.sin_port));
}

/* ---- Lua: module functions ---------------------------------------------------- */

/* An IPv4 address argument; raises unless one. */
static struct in_addr check_ipv4(lua_State *L, int arg, const char *s)
{
    struct in_addr a;
    if (inet_pton(AF_INET, s, &a) != 1)
        luaL_argerror(L, arg, lua_pushfstring(L, "'%s' is not an IPv4 address", s));
    return a;
}

/* "A.B.C.D/N" (or an address alone: /32); raises on anything else. */
static struct net4 check_cidr(lua_State *L, int arg, const char *s)
{
    char buf[INET_ADDRSTRLEN + 4];
    const char *slash = strchr(s, '/');
    long bits = 32;
    size_t alen = slash ? (size_t)(slash - s) : strlen(s);
    if (alen >= INET_ADDRSTRLEN)
        luaL_argerror(L, arg, lua_pushfstring(L, "'%s' is not an IPv4 network", s));
    memcpy(buf, s, alen);
    buf[alen] = '\0';
    if (slash) {
        char *end;
        bits = strtol(slash + 1, &end, 10);
        if (*end || end == slash + 1 || bits < 0 || bits > 32)
            luaL_argerror(L, arg, lua_pushfstring(L, "'%s' is not an IPv4 network", s));
    }
    struct in_addr a = check_ipv4(L, arg, buf);
    struct net4 n;
    n.mask = bits == 0 ? 0 : 0xffffffffu << (32 - bits);
    n.addr = ntohl(a.s_addr) & n.mask;
    return n;
}

static int field_port(lua_State *L, int t, const char *key, int def)
{
    lua_getfield(L, t, key);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        if (def < 0)
            return luaL_error(L, "landing.open: %s is required", key);
        return def;
    }
    int isnum;
    lua_Integer p = lua_tointegerx(L, -1, &isnum);
    lua_pop(L, 1);
    if (!isnum || p < 0 || p > 65535 || (def < 0 && p == 0))
        return luaL_error(L, "landing.open: %s must be a port number", key);
    return (int)p;
}

/* Networks from field key of the options table at t (a string or a list of
 * strings) into out; returns how many. Raises on anything else. */
static int field_networks(lua_State *L, int t, const char *key, struct net4 *out)
{
    int n = 0;
    lua_getfield(L, t, key);
    if (lua_type(L, -1) == LUA_TSTRING) {
        out[n++] = check_cidr(L, t, lua_tostring(L, -1));
    } else if (lua_type(L, -1) == LUA_TTABLE) {
        lua_Integer len = luaL_len(L, -1);
        if (len > MAX_ALLOW)
            luaL_error(L, "landing.open: %s: too many networks", key);
        for (lua_Integer i = 1; i <= len; i++) {
            lua_geti(L, -1, i);
            if (lua_type(L, -1) != LUA_TSTRING)
                luaL_error(L, "landing.open: %s must list networks as strings", key);
            out[n++] = check_cidr(L, t, lua_tostring(L, -1));
            lua_pop(L, 1);
        }
    } else if (!lua_isnil(L, -1)) {
        luaL_error(L, "landing.open: %s must be a network or a list of networks", key);
    }
    lua_pop(L, 1);
    return n;
}

/* landing.open{ host=, port=0, target_port=, target_host="127.0.0.1", allow={CIDR...}, deny={CIDR...},
 *               tls={ cert=PEM, key=PEM, client_ca=PEM } }
 *   -> handle | nil, msg, errno
 * Listens on host:port (0: a free port) and forwards admitted connections to
 * target_host:target_port. allow lists the networks peers may come from
 * (required: there is no "anyone"); deny, networks refused even so (this
 * machine's own address on that network). With tls, a peer is admitted
 * only after a TLS handshake in which it shows a certificate signed by
 * client_ca; the landing shows cert. Raises on bad arguments. */
static int landing_open(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    const char *host = czctl_field_string(L, 1, "host");
    if (!host)
        return luaL_error(L, "landing.open: host is required");
    const char *thost = czctl_field_string(L, 1, "target_host");
    int port = field_port(L, 1, "port", 0);
    int tport = field_port(L, 1, "target_port", -1);
    struct in_addr bind_addr = check_ipv4(L, 1, host);
    struct in_addr target_addr = check_ipv4(L, 1, thost ? thost : "127.0.0.1");
    struct net4 allow[MAX_ALLOW], deny[MAX_ALLOW];
    int nallow = field_networks(L, 1, "allow", allow);
    int ndeny = field_networks(L, 1, "deny", deny);
    if (nallow == 0)
        return luaL_error(L, "landing.open: allow must name the networks the cluster connects from");
    /* The handle first: an error below leaves it to __gc (landing_release),
     * which frees the TLS context. */
    struct landing *l = czctl_handle_new(L, &landing_class, sizeof *l, 0);
    l->listen_fd = l->stop_fd = l->ep = -1;
    lua_getfield(L, 1, "tls");
    if (!lua_isnil(L, -1)) {
        luaL_checktype(L, -1, LUA_TTABLE);
        int t = lua_gettop(L);
        const char *cert = czctl_field_string(L, t, "cert");
        const char *key = czctl_field_string(L, t, "key");
        const char *ca = czctl_field_string(L, t, "client_ca");
        if (!cert || !key || !ca)
            return luaL_error(L, "landing.open: tls needs cert, key and client_ca");
        const char *terr;
        l->tls = landing_tls_server(cert, key, ca, &terr);
        if (!l->tls)
            return luaL_error(L, "landing.open: %s", terr);
    }
    lua_pop(L, 1);

    memcpy(l->allow, allow, sizeof allow);
    l->nallow = nallow;
    memcpy(l->deny, deny, sizeof deny);
    l->ndeny = ndeny;
    l->target.sin_family = AF_INET;
    l->target.sin_addr = target_addr;
    l->target.sin_port = htons((uint16_t)tport);
    l->bound.sin_family = AF_INET;
    l->bound.sin_addr = bind_addr;
    l->bound.sin_port = htons((uint16_t)port);

    const char *what = "socket";
    int one = 1;
    socklen_t bl = sizeof l->bound;
    l->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (l->listen_fd < 0)
        goto fail;
    setsockopt(l->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    what = "bind";
    if (bind(l->listen_fd, (struct sockaddr *)&l->bound, sizeof l->bound) != 0)
        goto fail;
    what = "listen";
    if (listen(l->listen_fd, 128) != 0 || getsockname(l->listen_fd, (struct sockaddr *)&l->bound, &bl) != 0)
        goto fail;
    what = "epoll";
    l->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    l->ep = epoll_create1(EPOLL_CLOEXEC);
    if (l->stop_fd < 0 || l->ep < 0)
        goto fail;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &l->listen_fd};
    struct epoll_event sev = {.events = EPOLLIN, .data.ptr = &l->stop_fd};
    if (epoll_ctl(l->ep, EPOLL_CTL_ADD, l->listen_fd, &ev) != 0 ||
        epoll_ctl(l->ep, EPOLL_CTL_ADD, l->stop_fd, &sev) != 0)
        goto fail;
    /* The thread takes no signal: they stay with the Lua thread's self-pipe. */
    what = "thread";
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int e = pthread_create(&l->thread, NULL, landing_loop, l);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (e != 0) {
        errno = e;
        goto fail;
    }
    l->running = 1;
    return 1;

fail:;
    int err = errno;
    czctl_handle_close(L, -1, &landing_class);
    lua_pushfstring(L, "%s %s:%d", what, host, port);
    return czctl_fail_errno(L, lua_tostring(L, -1), err);
}

/* landing.route_source(ip) -> { address=, interface=, prefix=, on_link= } | nil, msg
 * The local address this machine sends from towards ip (the kernel's route
 * lookup through a connected UDP socket: nothing is sent), the interface
 * holding it, its prefix length, and whether ip is inside that interface's
 * network (a directly attached neighbour, as a kind or minikube node is). */
static int landing_route_source(lua_State *L)
{
    const char *ip = luaL_checkstring(L, 1);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(9)};
    to.sin_addr = check_ipv4(L, 1, ip);
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return czctl_fail_errno(L, "socket", errno);
    struct sockaddr_in me;
    socklen_t ml = sizeof me;
    if (connect(fd, (struct sockaddr *)&to, sizeof to) != 0 || getsockname(fd, (struct sockaddr *)&me, &ml) != 0) {
        int e = errno;
        close(fd);
        lua_pushfstring(L, "no route to %s", ip);
        return czctl_fail_errno(L, lua_tostring(L, -1), e);
    }
    close(fd);
    struct ifaddrs *ifs = NULL;
    if (getifaddrs(&ifs) != 0)
        return czctl_fail_errno(L, "getifaddrs", errno);
    lua_createtable(L, 0, 4);
    push_addr(L, &me);
    lua_setfield(L, -2, "address");
    for (struct ifaddrs *i = ifs; i; i = i->ifa_next) {
        if (!i->ifa_addr || !i->ifa_netmask || i->ifa_addr->sa_family != AF_INET)
            continue;
        const struct sockaddr_in *a = (const struct sockaddr_in *)i->ifa_addr;
        if (a->sin_addr.s_addr != me.sin_addr.s_addr)
            continue;
        uint32_t mask = ntohl(((const struct sockaddr_in *)i->ifa_netmask)->sin_addr.s_addr);
        int bits = 0;
        while (bits < 32 && (mask & (0x80000000u >> bits)))
            bits++;
        lua_pushstring(L, i->ifa_name);
        lua_setfield(L, -2, "interface");
        lua_pushinteger(L, bits);
        lua_setfield(L, -2, "prefix");
        lua_pushboolean(L, (ntohl(to.sin_addr.s_addr) & mask) == (ntohl(me.sin_addr.s_addr) & mask) &&
                               !(i->ifa_flags & IFF_LOOPBACK));
        lua_setfield(L, -2, "on_link");
        break;
    }
    freeifaddrs(ifs);
    return 1;
}

/* landing.interface_of(ip) -> { interface=, prefix= } | nil: is ip an
 * address of this machine, and on which interface. Raises unless ip is IPv4. */
static int landing_interface_of(lua_State *L)
{
    struct in_addr want = check_ipv4(L, 1, luaL_checkstring(L, 1));
    struct ifaddrs *ifs = NULL;
    if (getifaddrs(&ifs) != 0)
        return czctl_fail_errno(L, "getifaddrs", errno);
    int found = 0;
    for (struct ifaddrs *i = ifs; i && !found; i = i->ifa_next) {
        if (!i->ifa_addr || !i->ifa_netmask || i->ifa_addr->sa_family != AF_INET ||
            ((const struct sockaddr_in *)i->ifa_addr)->sin_addr.s_addr != want.s_addr)
            continue;
        uint32_t mask = ntohl(((const struct sockaddr_in *)i->ifa_netmask)->sin_addr.s_addr);
        int bits = 0;
        while (bits < 32 && (mask & (0x80000000u >> bits)))
            bits++;
        lua_createtable(L, 0, 2);
        lua_pushstring(L, i->ifa_name);
        lua_setfield(L, -2, "interface");
        lua_pushinteger(L, bits);
        lua_setfield(L, -2, "prefix");
        found = 1;
    }
    freeifaddrs(ifs);
    if (!found)
        lua_pushnil(L);
    return 1;
}

static const luaL_Reg landing_methods[] = {
    {"address", landing_address},
    {"stats", landing_stats},
    {NULL, NULL},
};

/* l:close() (also __close, __gc) is the class's: idempotent, open connections
 * are reset. tostring(l): "landing 10.0.0.1:41234 -> 127.0.0.1:8080". */
static const czctl_class landing_class = {"czctl.landing", "landing", landing_methods, landing_release,
                                          landing_describe};

static const luaL_Reg landing_funcs[] = {
    {"interface_of", landing_interface_of},
    {"open", landing_open},
    {"route_source", landing_route_source},
    {"session_pki", landing_session_pki},
    {NULL, NULL},
};

int luaopen_czctl_core_landing(lua_State *L)
{
    luaL_newlib(L, landing_funcs);
    czctl_class_register(L, &landing_class);
    return 1;
}
