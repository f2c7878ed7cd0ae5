/*
 * portforward.c: czctl.core.portforward: Kubernetes port-forward to a pod,
 * from this machine, through the API server (`pods/NAME/portforward`).
 *
 * Two uses, one engine:
 *   - forward: a local listener; each accepted connection becomes a
 *     port-forward stream to the pod's port (what `kubectl port-forward`
 *     does);
 *   - pool: the laptop side of the kube tunnel (docs/decisions.md section
 *     6): keeps N idle streams open to the relay's laptop port, and when
 *     the relay pairs one with a proxy connection, connects it to a local
 *     target (the landing) and copies bytes both ways.
 *
 * Wire: kubectl 1.32's default, SPDY/3.1 tunnelled in WebSocket binary
 * messages (subprotocol SPDY/3.1+portforward.k8s.io), and the plain SPDY/3.1
 * upgrade when the server refuses the WebSocket request (any answer but
 * 101), as client-go's fallback dialer does. Many streams share one
 * connection. The connection is made by libcurl (CONNECT_ONLY) with the
 * client's kubeconfig, TLS, proxy and credentials (kube_stream.h); framing
 * is ours (websocket.c, spdy.c, upgrade.c).
 *
 * One thread per handle runs an epoll loop for the API server connection(s),
 * the local sockets and libcurl's sockets while it connects; it never
 * touches the Lua state. Lua reads stats and events (state changes, one-line
 * errors from the error streams) through a mutex and an eventfd. The thread
 * reconnects by itself with back-off, pings the connection (SPDY PING) and
 * reconnects when it stops answering or when the machine resumed from sleep.
 *
 * Memory is bounded: 64 KiB read from the API server at a time, at most
 * PF_OUT_CAP queued to it (local sockets are not read above PF_OUT_HIGH),
 * and bytes for a local socket that is slower than the server are queued up
 * to PF_PEND_MAX, beyond which the connection is not read (SPDY as the
 * kubelet speaks it has no flow control: back-pressure is the connection's).
 * Credentials never leave kube.c except inside the request head, which is
 * wiped once sent. Nothing here knows about sessions or proxies.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <lauxlib.h>
#include <lua.h>

#include "buf.h"
#include "czctl.h"
#include "kube_stream.h"
#include "relay_proto.h"
#include "spdy.h"
#include "upgrade.h"
#include "websocket.h"

#define PF_MT "czctl.portforward"
#define PF_WS_PROTOCOL "SPDY/3.1+portforward.k8s.io"
#define PF_SPDY_PROTOCOL "portforward.k8s.io"

#define PF_IN_CAP (64 * 1024)      /* read from the API server at a time */
#define PF_OUT_CAP (512 * 1024)    /* most bytes queued to the API server */
#define PF_OUT_HIGH (256 * 1024)   /* local sockets are not read above this */
#define PF_CHUNK (32 * 1024)       /* one DATA frame read from a local socket */
#define PF_PEND_MAX (256 * 1024)   /* bytes queued for one slow local socket */
#define PF_ERRTEXT 1024            /* error stream text kept */
#define PF_BODY_MAX (64 * 1024)    /* refusal body read */
#define PF_MAX_PARKED 256          /* accepted local connections waiting for a connection */
#define PF_EVENTS 64               /* events queued for Lua */
#define PF_MAX_FRAME (64u << 20)   /* largest WebSocket frame accepted */
#define PF_MAX_REQUESTS 4096       /* streams open at once on one connection */

/* ---- small things ------------------------------------------------------------- */

enum src_kind { SRC_STOP, SRC_LISTEN, SRC_CURL, SRC_CONN, SRC_LOCAL };

struct src {
    enum src_kind kind;
};

/* A bounded byte queue: data[head..tail). The output queue never moves
 * while a TLS write is to be retried (OpenSSL wants the same buffer). */
struct iobuf {
    uint8_t *p;
    size_t head, tail, cap;
};

static int iobuf_init(struct iobuf *b, size_t cap)
{
    b->p = malloc(cap);
    b->head = b->tail = 0;
    b->cap = cap;
    return b->p ? 0 : -1;
}

static void iobuf_free(struct iobuf *b)
{
    free(b->p);
    b->p = NULL;
    b->head = b->tail = b->cap = 0;
}

static size_t iobuf_len(const struct iobuf *b)
{
    return b->tail - b->head;
}

static void iobuf_compact(struct iobuf *b)
{
    if (b->head == b->tail) {
        b->head = b->tail = 0;
    } else if (b->head > 0) {
        memmove(b->p, b->p + b->head, b->tail - b->head);
        b->tail -= b->head;
        b->head = 0;
    }
}

static double pf_wall(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* How long the machine has been suspended since boot (CLOCK_BOOTTIME runs
 * on during suspend, CLOCK_MONOTONIC does not). */
static double pf_slept(void)
{
    struct timespec b, m;
    clock_gettime(CLOCK_BOOTTIME, &b);
    clock_gettime(CLOCK_MONOTONIC, &m);
    return (double)(b.tv_sec - m.tv_sec) + (double)(b.tv_nsec - m.tv_nsec) / 1e9;
}

/* A socket closed with RST instead of FIN. */
static void close_reset(int fd)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
}

/* xorshift64*: WebSocket masks need to be unpredictable to intermediaries,
 * not secret; seeded from the kernel. */
static uint64_t mask_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ULL;
}

/* ---- objects -------------------------------------------------------------------- */

enum conn_state { C_DIAL, C_SEND, C_RECV, C_BODY, C_OPEN, C_DEAD };
enum proto { P_WS, P_SPDY };
enum role { R_FORWARD, R_POOL };
enum pool_state { PS_HELLO, PS_IDLE, PS_CONNECTING, PS_ACTIVE, PS_CLOSING };

struct tun;
struct conn;

struct curlsock {
    struct src src;      /* SRC_CURL */
    struct conn *c;
    int fd;              /* -1: slot free */
};

/* One forwarded connection: an error stream and a data stream (ids err_id
 * and err_id + 2), and the local socket. */
struct req {
    struct src src;      /* SRC_LOCAL */
    struct conn *c;
    uint32_t k, err_id, data_id;
    enum role role;
    enum pool_state ps;
    int fd;              /* the local socket, -1 when none */
    int events;          /* registered with epoll */
    uint8_t hello[RELAY_HELLO_LEN];
    size_t hello_len;
    double relay_interval;   /* the relay pings idle streams this often */
    uint8_t *pend;       /* remote bytes waiting for the local socket */
    size_t pend_len, pend_cap;
    int remote_fin, local_shut, local_eof, data_reset, err_fin, dead, over;
    char errtext[PF_ERRTEXT];
    size_t errlen;
    double since, seen, done_at;
    struct req *prev, *next;       /* the connection's requests */
    struct req *dnext;             /* graveyard */
};

struct conn {
    struct src src;      /* SRC_CONN */
    struct tun *t;
    enum conn_state state;
    enum proto proto;
    int refreshed;       /* credentials refreshed once after a 401 */
    int draining, dead;
    CURL *easy;
    CURLM *multi;
    struct curlsock cs[4];
    double curl_at;      /* libcurl's timer: 0 none */
    int fd, events;
    czctl_buf head;      /* the request head, unsent (secret: wiped when freed) */
    char *url;
    char target[520];    /* "namespace/pod" this connection goes to */
    char key[25];
    int status;          /* of a refused upgrade */
    long body_want;      /* refusal body bytes still expected, -1 until close */
    size_t body_start;
    struct iobuf in, out;
    int out_retry;       /* a TLS write must be retried with the same buffer */
    int paused;          /* not read: a local socket is behind */
    int eof;             /* the server closed while we read its answer to the upgrade */
    int read_now;        /* read again without waiting for the socket */
    ws_parser ws;
    spdy_conn spdy;
    int spdy_ready;
    char text[512];      /* a TEXT message from the server */
    size_t text_len;
    uint32_t next_id, next_k, ping_id;
    double opened, dial_started, deadline, last_rx, ping_at;
    int ping_out;
    struct req **tab;    /* requests by k, open addressing */
    size_t tcap, tn;
    struct req *reqs;
    int nreq;
    char errbuf[CURL_ERROR_SIZE];
    struct conn *next;
    struct conn *dnext;
};

struct pf_event {
    char kind[16];
    char message[512];
    double time;
};

struct tun {
    /* set before the thread starts, then read-only */
    enum role mode;
    czctl_kube_dialer *dialer;
    int remote_port;
    enum proto first;    /* protocol tried first */
    int fallback;        /* try the other one when the first is refused */
    struct sockaddr_in target;   /* pool */
    int size;
    double ping_interval, ping_timeout, max_idle, connect_timeout;
    int listen_fd;
    struct sockaddr_in bound;
    /* thread */
    pthread_t thread;
    int running;
    int ep, stop_fd, ev_fd;
    struct src stop_src, listen_src;
    struct conn *conns, *cur;
    struct conn *dead_conns;
    struct req *dead_reqs;
    int parked[PF_MAX_PARKED];
    int nparked;
    double dial_at, backoff, tick_at, slept;
    double pool_wake;    /* run the pool's upkeep then (0: at the next tick) */
    double pool_hold;    /* open no stream before then (back-off after failures) */
    double pool_backoff;
    int pool_failures;
    uint64_t mask_state;
    int ws_works, spdy_works;   /* which protocols worked here */
    /* shared with Lua, under lock */
    pthread_mutex_t lock;
    char ns[254], pod[254], path[600];
    int retarget;
    char state[16], error[512], protocol[16];
    double since;
    struct pf_event events[PF_EVENTS];
    int ev_head, ev_count;
    long dropped_events;
    atomic_long connections, reconnects, requests, active, idle, paired, failed, errors;
    atomic_llong bytes_in, bytes_out;
};

/* ---- events and state (shared with Lua) --------------------------------------------- */

static void tun_event(struct tun *t, const char *kind, const char *message)
{
    pthread_mutex_lock(&t->lock);
    if (t->ev_count == PF_EVENTS) {
        t->ev_head = (t->ev_head + 1) % PF_EVENTS;
        t->ev_count--;
        t->dropped_events++;
    }
    struct pf_event *e = &t->events[(t->ev_head + t->ev_count) % PF_EVENTS];
    snprintf(e->kind, sizeof e->kind, "%s", kind);
    up_one_line(message ? message : "", message ? strlen(message) : 0, e->message, sizeof e->message);
    e->time = pf_wall();
    t->ev_count++;
    pthread_mutex_unlock(&t->lock);
    uint64_t one = 1;
    ssize_t w = write(t->ev_fd, &one, sizeof one);
    (void)w;
}

/* "up", "down" or "connecting"; an event when it changes. */
static void tun_state(struct tun *t, const char *state, const char *why)
{
    pthread_mutex_lock(&t->lock);
    int changed = strcmp(t->state, state) != 0;
    if (changed) {
        snprintf(t->state, sizeof t->state, "%s", state);
        t->since = pf_wall();
    }
    if (why && *why)
        up_one_line(why, strlen(why), t->error, sizeof t->error);
    pthread_mutex_unlock(&t->lock);
    if (changed)
        tun_event(t, state, why);
}

static void tun_error(struct tun *t, const char *message)
{
    atomic_fetch_add(&t->errors, 1);
    pthread_mutex_lock(&t->lock);
    up_one_line(message, strlen(message), t->error, sizeof t->error);
    pthread_mutex_unlock(&t->lock);
    tun_event(t, "error", message);
}

/* ---- epoll registration ---------------------------------------------------------------- */

static void ep_set(struct tun *t, int fd, struct src *s, int *have, int want)
{
    if (*have == want)
        return;
    struct epoll_event ev = {.events = (uint32_t)want, .data.ptr = s};
    if (want == 0)
        epoll_ctl(t->ep, EPOLL_CTL_DEL, fd, NULL);
    else if (*have == 0 && epoll_ctl(t->ep, EPOLL_CTL_ADD, fd, &ev) != 0 && errno == EEXIST)
        epoll_ctl(t->ep, EPOLL_CTL_MOD, fd, &ev);
    else if (*have != 0)
        epoll_ctl(t->ep, EPOLL_CTL_MOD, fd, &ev);
    *have = want;
}

/* ---- request table ------------------------------------------------------------------------ */

static size_t tab_slot(uint32_t k, size_t cap)
{
    return (size_t)(k * 2654435761u) & (cap - 1);
}

static int tab_put(struct conn *c, struct req *r)
{
    if ((c->tn + 1) * 2 > c->tcap) {
        size_t ncap = c->tcap ? c->tcap * 2 : 64;
        struct req **nt = calloc(ncap, sizeof *nt);
        if (!nt)
            return -1;
        for (size_t i = 0; i < c->tcap; i++)
            if (c->tab[i]) {
                size_t j = tab_slot(c->tab[i]->k, ncap);
                while (nt[j])
                    j = (j + 1) & (ncap - 1);
                nt[j] = c->tab[i];
            }
        free(c->tab);
        c->tab = nt;
        c->tcap = ncap;
    }
    size_t j = tab_slot(r->k, c->tcap);
    while (c->tab[j])
        j = (j + 1) & (c->tcap - 1);
    c->tab[j] = r;
    c->tn++;
    return 0;
}

static struct req *tab_get(struct conn *c, uint32_t k)
{
    if (!c->tcap)
        return NULL;
    for (size_t j = tab_slot(k, c->tcap); c->tab[j]; j = (j + 1) & (c->tcap - 1))
        if (c->tab[j]->k == k)
            return c->tab[j];
    return NULL;
}

static void tab_del(struct conn *c, struct req *r)
{
    if (!c->tcap)
        return;
    size_t j = tab_slot(r->k, c->tcap);
    while (c->tab[j] && c->tab[j] != r)
        j = (j + 1) & (c->tcap - 1);
    if (!c->tab[j])
        return;
    c->tab[j] = NULL;
    c->tn--;
    /* backward-shift the cluster after the hole */
    for (size_t i = (j + 1) & (c->tcap - 1); c->tab[i]; i = (i + 1) & (c->tcap - 1)) {
        size_t home = tab_slot(c->tab[i]->k, c->tcap);
        int between = j <= i ? (home > j && home <= i) : (home > j || home <= i);
        if (!between) {
            c->tab[j] = c->tab[i];
            c->tab[i] = NULL;
            j = i;
        }
    }
}

/* ---- output to the API server ----------------------------------------------------------------- */

static void conn_fail(struct conn *c, const char *why);

/* Room for n more bytes at the tail; NULL when the queue is full. */
static uint8_t *out_room(struct conn *c, size_t n)
{
    struct iobuf *b = &c->out;
    if (b->cap - b->tail < n && !c->out_retry)
        iobuf_compact(b);
    return b->cap - b->tail >= n ? b->p + b->tail : NULL;
}

/* Queues one SPDY frame (a WebSocket binary message in WS mode); 0 or -1
 * when the queue is full (the connection is then failed). */
static int out_frame(struct conn *c, const void *frame, size_t len)
{
    size_t h = c->proto == P_WS ? (len < 126 ? 6 : len < 65536 ? 8 : 14) : 0;
    uint8_t *p = out_room(c, h + len);
    if (!p) {
        conn_fail(c, "output queue to the API server is full");
        return -1;
    }
    if (c->proto == P_WS) {
        uint64_t m = mask_next(&c->t->mask_state);
        uint8_t mask[4];
        memcpy(mask, &m, 4);
        ws_header(p, WS_BINARY, 1, len, mask);
        memcpy(p + h, frame, len);
        ws_mask(p + h, len, mask);
    } else {
        memcpy(p, frame, len);
    }
    c->out.tail += h + len;
    return 0;
}

/* A WebSocket control frame (pong, close). */
static void out_ws_control(struct conn *c, int opcode, const uint8_t *payload, size_t len)
{
    uint8_t *p = out_room(c, 6 + len);
    if (!p)
        return;
    uint64_t m = mask_next(&c->t->mask_state);
    uint8_t mask[4];
    memcpy(mask, &m, 4);
    ws_header(p, opcode, 1, len, mask);
    memcpy(p + 6, payload, len);
    ws_mask(p + 6, len, mask);
    c->out.tail += 6 + len;
}

static void out_data(struct conn *c, uint32_t stream, int flags, const void *data, size_t len)
{
    uint8_t frame[SPDY_DATA_HEADER + 8];
    if (len <= 8) {
        spdy_data_header(frame, stream, flags, len);
        memcpy(frame + SPDY_DATA_HEADER, data, len);
        out_frame(c, frame, SPDY_DATA_HEADER + len);
    }
}

static void out_rst(struct conn *c, uint32_t stream, uint32_t status)
{
    uint8_t f[16];
    out_frame(c, f, spdy_rst_stream(f, sizeof f, stream, status));
}

/* Writes what is queued; 0, or -1 when the connection failed. */
static int conn_flush(struct conn *c)
{
    struct iobuf *b = &c->out;
    while (iobuf_len(b) > 0) {
        size_t n = 0;
        CURLcode r = curl_easy_send(c->easy, b->p + b->head, iobuf_len(b), &n);
        if (r == CURLE_AGAIN) {
            c->out_retry = 1;
            break;
        }
        if (r != CURLE_OK) {
            conn_fail(c, curl_easy_strerror(r));
            return -1;
        }
        c->out_retry = 0;
        b->head += n;
        atomic_fetch_add(&c->t->bytes_out, (long long)n);
    }
    if (iobuf_len(b) == 0)
        b->head = b->tail = 0;
    return 0;
}

/* ---- requests ------------------------------------------------------------------------------------ */

static void req_events(struct req *r);
static void req_refuse(struct req *r);
static void conn_unpause_check(struct conn *c);

static void req_free(struct req *r, int reset_local)
{
    if (r->dead)
        return;
    struct conn *c = r->c;
    struct tun *t = c->t;
    r->dead = 1;
    if (r->fd >= 0) {
        ep_set(t, r->fd, &r->src, &r->events, 0);
        if (reset_local)
            close_reset(r->fd);
        else
            close(r->fd);
        r->fd = -1;
    }
    if (r->role == R_POOL && r->ps == PS_IDLE)
        atomic_fetch_sub(&t->idle, 1);
    if (r->role == R_FORWARD || r->ps == PS_ACTIVE || r->ps == PS_CONNECTING)
        atomic_fetch_sub(&t->active, 1);
    free(r->pend);
    r->pend = NULL;
    r->pend_len = r->pend_cap = 0;
    tab_del(c, r);
    if (r->prev)
        r->prev->next = r->next;
    else
        c->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    c->nreq--;
    r->dnext = t->dead_reqs;
    t->dead_reqs = r;
    if (r->over) {
        r->over = 0;
        conn_unpause_check(c);
    }
}

/* Ends a request now: both streams reset, the local socket reset. */
static void req_abort(struct req *r)
{
    if (r->dead)
        return;
    if (r->c->state == C_OPEN && !r->c->dead) {
        if (!r->data_reset && !(r->remote_fin && r->local_eof))
            out_rst(r->c, r->data_id, SPDY_CANCEL);
        if (!r->err_fin)
            out_rst(r->c, r->err_id, SPDY_CANCEL);
    }
    req_free(r, 1);
}

/* A finished request is freed once both directions and the error stream
 * ended (or a few seconds after the data did: the error stream is only
 * worth waiting for so long). */
static void req_check_done(struct req *r)
{
    if (r->dead || (r->role == R_POOL && r->ps != PS_ACTIVE))
        return;
    int data_done = r->data_reset || (r->remote_fin && r->pend_len == 0 && (r->local_eof || r->fd < 0));
    if (!data_done)
        return;
    if (r->err_fin || r->data_reset) {
        req_free(r, 0);
        return;
    }
    if (r->done_at == 0)
        r->done_at = czctl_now();
}

/* Opens the two streams of a new request on c. */
static struct req *req_new(struct conn *c, enum role role, int fd)
{
    struct tun *t = c->t;
    if (c->nreq >= PF_MAX_REQUESTS || c->next_id > 0x7FFFFFF0u)
        return NULL;
    struct req *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->src.kind = SRC_LOCAL;
    r->c = c;
    r->fd = fd;
    r->role = role;
    r->ps = PS_HELLO;
    r->k = c->next_k++;
    r->err_id = c->next_id;
    r->data_id = c->next_id + 2;
    r->since = r->seen = czctl_now();
    c->next_id += 4;
    if (tab_put(c, r) != 0) {
        free(r);
        return NULL;
    }
    r->next = c->reqs;
    if (c->reqs)
        c->reqs->prev = r;
    c->reqs = r;
    c->nreq++;
    atomic_fetch_add(&t->requests, 1);
    if (role == R_FORWARD)
        atomic_fetch_add(&t->active, 1);

    char port[8], kbuf[16];
    snprintf(port, sizeof port, "%d", t->remote_port);
    snprintf(kbuf, sizeof kbuf, "%u", r->k);
    spdy_header h[3] = {
        {"streamtype", "error", 10, 5},
        {"port", port, 4, strlen(port)},
        {"requestid", kbuf, 9, strlen(kbuf)},
    };
    uint8_t frame[512];
    size_t n = spdy_syn_stream(&c->spdy, frame, sizeof frame, r->err_id, 0, h, 3);
    if (n == 0 || out_frame(c, frame, n) != 0)
        goto broken;
    out_data(c, r->err_id, SPDY_FLAG_FIN, "", 0);   /* we only read the error stream */
    h[0].value = "data";
    h[0].value_len = 4;
    n = spdy_syn_stream(&c->spdy, frame, sizeof frame, r->data_id, 0, h, 3);
    if (n == 0 || out_frame(c, frame, n) != 0)
        goto broken;
    if (role == R_POOL)
        out_data(c, r->data_id, 0, RELAY_MAGIC, RELAY_MAGIC_LEN);
    return r;
broken:
    if (!c->dead)
        conn_fail(c, "cannot compress a SPDY header block");
    return NULL;
}

/* Delivers remote bytes to the local socket, queueing what it cannot take. */
static void req_to_local(struct req *r, const uint8_t *d, size_t n)
{
    if (r->pend_len == 0 && r->fd >= 0 && (r->role == R_FORWARD || r->ps == PS_ACTIVE)) {
        while (n > 0) {
            ssize_t w = send(r->fd, d, n, MSG_NOSIGNAL);
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                if (errno == EAGAIN)
                    break;
                req_abort(r);   /* the local side is gone */
                return;
            }
            d += w;
            n -= (size_t)w;
        }
    }
    if (n == 0)
        return;
    if (r->pend_len + n > r->pend_cap) {
        size_t ncap = r->pend_cap ? r->pend_cap : 16384;
        while (ncap < r->pend_len + n)
            ncap *= 2;
        uint8_t *np = realloc(r->pend, ncap);
        if (!np) {
            req_abort(r);
            return;
        }
        r->pend = np;
        r->pend_cap = ncap;
    }
    memcpy(r->pend + r->pend_len, d, n);
    r->pend_len += n;
    if (r->pend_len > PF_PEND_MAX && !r->over) {
        r->over = 1;
        r->c->paused = 1;
    }
    req_events(r);
}

/* Writes queued bytes to the local socket; passes on the remote FIN once
 * everything is written. */
static void req_flush_local(struct req *r)
{
    size_t off = 0;
    while (off < r->pend_len) {
        ssize_t w = send(r->fd, r->pend + off, r->pend_len - off, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                break;
            req_abort(r);
            return;
        }
        off += (size_t)w;
    }
    if (off > 0) {
        memmove(r->pend, r->pend + off, r->pend_len - off);
        r->pend_len -= off;
    }
    if (r->pend_len == 0 && r->pend_cap > 65536) {
        free(r->pend);
        r->pend = NULL;
        r->pend_cap = 0;
    }
    if (r->over && r->pend_len < PF_PEND_MAX / 2) {
        r->over = 0;
        conn_unpause_check(r->c);
    }
    if (r->pend_len == 0 && r->remote_fin && !r->local_shut) {
        shutdown(r->fd, SHUT_WR);
        r->local_shut = 1;
    }
    req_events(r);
    req_check_done(r);
}

/* Which epoll events the local socket needs now. */
static void req_events(struct req *r)
{
    if (r->dead || r->fd < 0)
        return;
    int want = 0;
    if (r->role == R_POOL && r->ps == PS_CONNECTING) {
        want = EPOLLOUT;
    } else if (r->role == R_FORWARD || r->ps == PS_ACTIVE) {
        if (!r->local_eof && r->c->state == C_OPEN && iobuf_len(&r->c->out) < PF_OUT_HIGH)
            want |= EPOLLIN;
        if (r->pend_len > 0)
            want |= EPOLLOUT;
    }
    ep_set(r->c->t, r->fd, &r->src, &r->events, want);
}

/* Reads the local socket into DATA frames while the output queue has room. */
static void req_from_local(struct req *r)
{
    struct conn *c = r->c;
    for (int rounds = 0; rounds < 8 && !r->dead && !r->local_eof; rounds++) {
        if (iobuf_len(&c->out) >= PF_OUT_HIGH)
            break;
        /* WebSocket header (8: a 16-bit length) + SPDY header, then the payload */
        size_t pre = (c->proto == P_WS ? 8 : 0) + SPDY_DATA_HEADER;
        uint8_t *p = out_room(c, pre + PF_CHUNK);
        if (!p)
            break;
        ssize_t n = recv(r->fd, p + pre, PF_CHUNK, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                req_abort(r);
            break;
        }
        if (n == 0) {
            r->local_eof = 1;
            out_data(c, r->data_id, SPDY_FLAG_FIN, "", 0);
            break;
        }
        size_t len = SPDY_DATA_HEADER + (size_t)n, at = 0;
        if (c->proto == P_WS) {
            uint64_t m = mask_next(&c->t->mask_state);
            uint8_t mask[4];
            memcpy(mask, &m, 4);
            if (len < 126) {   /* a 7-bit length: the header is 2 bytes shorter */
                memmove(p + 14, p + 16, (size_t)n);
                at = 6;
            } else {
                at = 8;
            }
            ws_header(p, WS_BINARY, 1, len, mask);
            spdy_data_header(p + at, r->data_id, 0, (size_t)n);
            ws_mask(p + at, len, mask);
        } else {
            spdy_data_header(p, r->data_id, 0, (size_t)n);
        }
        c->out.tail += at + len;
        /* less than asked for: the socket is drained (epoll is level-triggered and
         * says when more comes), so the frame goes out now, without one more recv
         * that would only say EAGAIN (a request's answer waits for it) */
        if ((size_t)n < PF_CHUNK)
            break;
    }
    req_events(r);
    req_check_done(r);
}

/* Pool: connects a paired stream to the target. */
static void req_pair(struct req *r)
{
    struct tun *t = r->c->t;
    atomic_fetch_sub(&t->idle, 1);
    atomic_fetch_add(&t->active, 1);
    atomic_fetch_add(&t->paired, 1);
    r->ps = PS_CONNECTING;
    t->pool_wake = czctl_now();   /* one idle stream fewer: open its replacement now */
    r->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (r->fd < 0 || (connect(r->fd, (struct sockaddr *)&t->target, sizeof t->target) != 0 && errno != EINPROGRESS)) {
        req_refuse(r);
        return;
    }
    req_events(r);
}

/* Pool: the target refused a paired stream. The relay resets the proxy's
 * connection at once (no other stream would do better): 'R', then our FIN;
 * the stream ends when the relay closes it. */
static void req_refuse(struct req *r)
{
    struct tun *t = r->c->t;
    atomic_fetch_add(&t->failed, 1);
    atomic_fetch_sub(&t->active, 1);
    if (r->fd >= 0) {
        ep_set(t, r->fd, &r->src, &r->events, 0);
        close(r->fd);
        r->fd = -1;
    }
    r->ps = PS_CLOSING;
    r->local_eof = 1;
    r->pend_len = 0;
    r->done_at = czctl_now();
    out_data(r->c, r->data_id, 0, "R", 1);
    out_data(r->c, r->data_id, SPDY_FLAG_FIN, "", 0);
}

static void req_connected(struct req *r)
{
    int err = 0;
    socklen_t sl = sizeof err;
    if (getsockopt(r->fd, SOL_SOCKET, SO_ERROR, &err, &sl) != 0 || err != 0) {
        req_refuse(r);
        return;
    }
    int one = 1;
    setsockopt(r->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    r->ps = PS_ACTIVE;
    out_data(r->c, r->data_id, 0, "A", 1);
    req_flush_local(r);   /* what came after 'C', and a FIN that came meanwhile */
}

/* Pool: bytes from the relay before the stream is paired. */
static void req_pool_bytes(struct req *r, const uint8_t *d, size_t n)
{
    struct tun *t = r->c->t;
    r->seen = czctl_now();
    while (n > 0 && !r->dead) {
        if (r->ps == PS_HELLO) {
            while (n > 0 && r->hello_len < RELAY_HELLO_LEN) {
                r->hello[r->hello_len++] = *d++;
                n--;
            }
            if (r->hello_len < RELAY_HELLO_LEN)
                return;
            if (memcmp(r->hello, RELAY_MAGIC, RELAY_MAGIC_LEN) != 0) {
                char msg[600];
                snprintf(msg, sizeof msg, "pod %s port %d did not answer as the czctl relay does", r->c->target,
                         t->remote_port);
                tun_error(t, msg);
                req_abort(r);
                return;
            }
            r->ps = PS_IDLE;
            r->relay_interval = r->hello[4] << 8 | r->hello[5];
            atomic_fetch_add(&t->idle, 1);
            t->pool_failures = 0;
            t->pool_backoff = 0;
            t->pool_hold = 0;
            tun_state(t, "up", NULL);
            continue;
        }
        if (r->ps == PS_IDLE) {
            uint8_t b = *d++;
            n--;
            if (b == RELAY_PING) {
                out_data(r->c, r->data_id, 0, "p", 1);
            } else if (b == RELAY_CONNECT) {
                req_pair(r);
                if (r->dead)
                    return;
            } else {
                tun_error(t, "the relay sent a byte outside its protocol");
                req_abort(r);
                return;
            }
            continue;
        }
        if (r->ps == PS_CLOSING)
            return;   /* we are replacing it: whatever the relay sends is dropped */
        req_to_local(r, d, n);   /* paired: the proxy's bytes */
        return;
    }
}

/* Data for a request's stream from the server. */
static void req_data(struct req *r, int is_data, const uint8_t *d, size_t n, int fin)
{
    struct tun *t = r->c->t;
    if (!is_data) {
        size_t room = sizeof r->errtext - 1 - r->errlen;
        size_t take = n < room ? n : room;
        memcpy(r->errtext + r->errlen, d, take);
        r->errlen += take;
        if (fin) {
            r->err_fin = 1;
            if (r->errlen > 0) {
                char msg[PF_ERRTEXT + 700];
                r->errtext[r->errlen] = '\0';
                if (r->role == R_POOL && r->ps == PS_HELLO)
                    snprintf(msg, sizeof msg, "cannot reach the relay at pod %s port %d: %s", r->c->target,
                             t->remote_port, r->errtext);
                else
                    snprintf(msg, sizeof msg, "port-forward to pod %s port %d: %s", r->c->target, t->remote_port,
                             r->errtext);
                tun_error(t, msg);
                if (r->role == R_POOL && r->ps == PS_HELLO)
                    tun_state(t, "down", msg);
                req_abort(r);
                return;
            }
            req_check_done(r);
        }
        return;
    }
    if (n > 0) {
        if (r->role == R_POOL && r->ps != PS_ACTIVE && r->ps != PS_CONNECTING)
            req_pool_bytes(r, d, n);
        else if (r->fd >= 0 || r->ps == PS_CONNECTING)
            req_to_local(r, d, n);
    }
    if (fin && !r->dead) {
        r->remote_fin = 1;
        if (r->role == R_POOL && (r->ps == PS_HELLO || r->ps == PS_IDLE || r->ps == PS_CLOSING)) {
            /* the relay closed an unpaired stream (or answered our close) */
            req_free(r, 0);
            return;
        }
        if (r->fd >= 0 && r->pend_len == 0 && !r->local_shut && r->ps != PS_CONNECTING) {
            shutdown(r->fd, SHUT_WR);
            r->local_shut = 1;
        }
        req_check_done(r);
    }
}

/* ---- connections ----------------------------------------------------------------------------------- */

static void tun_schedule_dial(struct tun *t, double delay);

static void conn_free_now(struct conn *c)
{
    if (c->multi) {
        if (c->easy)
            curl_multi_remove_handle(c->multi, c->easy);
        curl_multi_cleanup(c->multi);
    }
    if (c->easy)
        curl_easy_cleanup(c->easy);
    czctl_buf_free(&c->head);
    free(c->url);
    iobuf_free(&c->in);
    iobuf_free(&c->out);
    if (c->spdy_ready)
        spdy_free(&c->spdy);
    free(c->tab);
    free(c);
}

/* Ends a connection: every request on it is reset, and the tunnel redials
 * when it was the current one. */
static void conn_fail(struct conn *c, const char *why)
{
    if (c->dead)
        return;
    struct tun *t = c->t;
    int was_open = c->state == C_OPEN;
    c->dead = 1;
    c->state = C_DEAD;
    while (c->reqs)
        req_free(c->reqs, 1);
    for (int i = 0; i < 4; i++)
        if (c->cs[i].fd >= 0) {
            epoll_ctl(t->ep, EPOLL_CTL_DEL, c->cs[i].fd, NULL);
            c->cs[i].fd = -1;
        }
    if (c->fd >= 0)
        ep_set(t, c->fd, &c->src, &c->events, 0);
    struct conn **pp = &t->conns;
    while (*pp && *pp != c)
        pp = &(*pp)->next;
    if (*pp)
        *pp = c->next;
    c->dnext = t->dead_conns;
    t->dead_conns = c;
    if (t->cur == c) {
        t->cur = NULL;
        char msg[900];
        if (was_open)
            snprintf(msg, sizeof msg, "port-forward connection to pod %s lost: %s", c->target, why);
        else
            snprintf(msg, sizeof msg, "port-forward to pod %s: %s", c->target, why);
        tun_state(t, "down", msg);
        if (was_open) {
            atomic_fetch_add(&t->reconnects, 1);
            tun_schedule_dial(t, 0);
        } else {
            tun_schedule_dial(t, t->backoff);
            t->backoff = t->backoff < 2.5 ? t->backoff * 2 : 5;
            /* local clients waiting for this connection get a reset, not a hang */
            for (int i = 0; i < t->nparked; i++)
                close_reset(t->parked[i]);
            t->nparked = 0;
        }
    }
}

static void conn_events(struct conn *c)
{
    if (c->dead || c->fd < 0)
        return;
    int want = 0;
    if (c->state == C_SEND)
        want = EPOLLOUT;
    else if (c->state == C_RECV || c->state == C_BODY)
        want = EPOLLIN;
    else if (c->state == C_OPEN)
        want = (c->paused ? 0 : EPOLLIN) | (iobuf_len(&c->out) > 0 ? EPOLLOUT : 0);
    ep_set(c->t, c->fd, &c->src, &c->events, want);
}

/* A local socket drained: read the connection again once none is behind. */
static void conn_unpause_check(struct conn *c)
{
    if (!c->paused)
        return;
    for (struct req *r = c->reqs; r; r = r->next)
        if (r->over)
            return;
    c->paused = 0;
    c->read_now = 1;
}

/* The connection's output queue went below the mark: local sockets may be read again. */
static void conn_resume_locals(struct conn *c)
{
    for (struct req *r = c->reqs; r; r = r->next)
        if (!(r->events & EPOLLIN))
            req_events(r);
}

static void conn_goaway(struct conn *c)
{
    struct tun *t = c->t;
    c->draining = 1;
    for (struct req *r = c->reqs, *n; r; r = n) {
        n = r->next;
        if (r->role == R_POOL && (r->ps == PS_HELLO || r->ps == PS_IDLE))
            req_abort(r);
    }
    if (t->cur == c) {
        t->cur = NULL;
        tun_schedule_dial(t, 0);
    }
}

static void conn_spdy_event(struct conn *c, const spdy_event *ev)
{
    struct tun *t = c->t;
    if (ev->type == SPDY_EV_ERROR) {
        uint8_t f[16];
        out_frame(c, f, spdy_goaway(f, sizeof f, 0, 1));
        conn_flush(c);
        char msg[200];
        snprintf(msg, sizeof msg, "SPDY: %s", ev->error);
        conn_fail(c, msg);
        return;
    }
    if (ev->type == SPDY_EV_DATA || (ev->type == SPDY_EV_CONTROL && (ev->control == SPDY_RST_STREAM ||
                                                                       ev->control == SPDY_SYN_REPLY))) {
        uint32_t id = ev->stream;
        if (!(id & 1)) {
            if (ev->type == SPDY_EV_DATA)
                return;   /* a server stream we refused */
        } else {
            struct req *r = tab_get(c, (id - 1) / 4);
            if (!r || r->dead)
                return;
            int is_data = id == r->data_id;
            if (ev->type == SPDY_EV_DATA) {
                req_data(r, is_data, ev->data, ev->len, ev->fin);
            } else if (ev->control == SPDY_RST_STREAM) {
                if (is_data) {
                    r->data_reset = 1;
                    if (r->role == R_POOL && r->ps != PS_ACTIVE) {
                        req_free(r, 1);
                        return;
                    }
                    req_free(r, r->pend_len > 0 || !r->remote_fin);
                } else {
                    r->err_fin = 1;
                    req_check_done(r);
                }
            }
            return;
        }
    }
    if (ev->type != SPDY_EV_CONTROL)
        return;
    if (ev->control == SPDY_PING) {
        if (ev->stream & 1) {
            if (ev->stream == c->ping_id && c->ping_out) {
                c->ping_out = 0;
                c->ping_at = czctl_now() + c->t->ping_interval;
            }
        } else {
            uint8_t f[12];
            out_frame(c, f, spdy_ping(f, sizeof f, ev->stream));
        }
    } else if (ev->control == SPDY_GOAWAY) {
        conn_goaway(c);
    } else if (ev->control == SPDY_SYN_STREAM) {
        out_rst(c, ev->stream, SPDY_REFUSED_STREAM);
    }
    (void)t;
}

/* Feeds SPDY bytes; with stop, returns early (bytes used) when the
 * connection must not be read on. */
static size_t conn_spdy(struct conn *c, const uint8_t *d, size_t n, int stop)
{
    size_t used = 0;
    while (used < n && !c->dead) {
        spdy_event ev;
        used += spdy_parse(&c->spdy, d + used, n - used, &ev);
        if (ev.type == SPDY_EV_NONE)
            break;
        conn_spdy_event(c, &ev);
        if (stop && c->paused)
            break;
    }
    return used;
}

/* Handles what is in the input queue of an open connection. */
static void conn_process(struct conn *c)
{
    struct iobuf *b = &c->in;
    while (b->head < b->tail && !c->dead && !c->paused) {
        if (c->proto == P_SPDY) {
            b->head += conn_spdy(c, b->p + b->head, iobuf_len(b), 1);
            continue;
        }
        ws_event ev;
        size_t used = ws_parse(&c->ws, b->p + b->head, iobuf_len(b), &ev);
        b->head += used;
        switch (ev.type) {
        case WS_EV_NONE:
            break;
        case WS_EV_DATA:
            if (ev.opcode == WS_BINARY) {
                conn_spdy(c, ev.data, ev.len, 0);
            } else {   /* a TEXT message is the server's error text */
                size_t room = sizeof c->text - 1 - c->text_len, take = ev.len < room ? ev.len : room;
                memcpy(c->text + c->text_len, ev.data, take);
                c->text_len += take;
                if (ev.fin) {
                    char msg[600];
                    c->text[c->text_len] = '\0';
                    snprintf(msg, sizeof msg, "the API server says: %s", c->text);
                    conn_fail(c, msg);
                }
            }
            break;
        case WS_EV_PING:
            out_ws_control(c, WS_PONG, ev.data, ev.len);
            break;
        case WS_EV_PONG:
            break;
        case WS_EV_CLOSE: {
            uint8_t code[2] = {WS_NORMAL >> 8, WS_NORMAL & 0xFF};
            out_ws_control(c, WS_CLOSE, code, 2);
            conn_flush(c);
            char msg[300];
            snprintf(msg, sizeof msg, "closed by the API server (WebSocket close %u%s%.*s)", ev.code,
                     ev.len ? ": " : "", (int)ev.len, (const char *)ev.data);
            conn_fail(c, msg);
            break;
        }
        case WS_EV_ERROR: {
            uint8_t code[2] = {(uint8_t)(ev.code >> 8), (uint8_t)ev.code};
            out_ws_control(c, WS_CLOSE, code, 2);
            conn_flush(c);
            char msg[200];
            snprintf(msg, sizeof msg, "WebSocket: %s", ev.error);
            conn_fail(c, msg);
            break;
        }
        }
        if (ev.type == WS_EV_NONE)
            break;
    }
    if (!c->dead && b->head == b->tail)
        b->head = b->tail = 0;
}

/* Reads what the connection has: until the socket has nothing, because
 * TLS may hold bytes the socket no longer shows. Open connections process
 * as they read (and stop while a local socket is behind). */
static void conn_read(struct conn *c)
{
    struct iobuf *b = &c->in;
    c->read_now = 0;
    if (c->state == C_OPEN)
        conn_process(c);   /* what was left while paused */
    while (!c->dead && !c->paused) {
        if (c->state == C_OPEN)
            iobuf_compact(b);
        if (b->tail == b->cap)
            break;
        size_t n = 0;
        CURLcode r = curl_easy_recv(c->easy, b->p + b->tail, b->cap - b->tail, &n);
        if (r == CURLE_AGAIN)
            break;
        if (r != CURLE_OK) {
            conn_fail(c, curl_easy_strerror(r));
            return;
        }
        if (n == 0) {
            if (c->state != C_OPEN) {
                c->eof = 1;   /* an answer followed by a close: the handshake reads it first */
                return;
            }
            conn_fail(c, "the API server closed the connection");
            return;
        }
        b->tail += n;
        c->last_rx = czctl_now();
        atomic_fetch_add(&c->t->bytes_in, (long long)n);
        if (c->state == C_OPEN)
            conn_process(c);
    }
}

/* ---- dialing and the handshake ------------------------------------------------------------------------ */

static int curl_sock_cb(CURL *e, curl_socket_t s, int what, void *userp, void *socketp)
{
    struct conn *c = userp;
    (void)e, (void)socketp;
    if (c->state != C_DIAL || c->dead)
        return 0;
    struct curlsock *slot = NULL, *free_slot = NULL;
    for (int i = 0; i < 4; i++) {
        if (c->cs[i].fd == s)
            slot = &c->cs[i];
        else if (c->cs[i].fd < 0 && !free_slot)
            free_slot = &c->cs[i];
    }
    if (what == CURL_POLL_REMOVE) {
        if (slot) {
            epoll_ctl(c->t->ep, EPOLL_CTL_DEL, s, NULL);
            slot->fd = -1;
        }
        return 0;
    }
    if (!slot) {
        if (!free_slot)
            return -1;
        slot = free_slot;
        slot->fd = s;
        struct epoll_event ev = {.events = 0, .data.ptr = &slot->src};
        epoll_ctl(c->t->ep, EPOLL_CTL_ADD, s, &ev);
    }
    struct epoll_event ev = {.events = (what & CURL_POLL_IN ? EPOLLIN : 0) | (what & CURL_POLL_OUT ? EPOLLOUT : 0),
                             .data.ptr = &slot->src};
    epoll_ctl(c->t->ep, EPOLL_CTL_MOD, s, &ev);
    return 0;
}

static int curl_timer_cb(CURLM *m, long ms, void *userp)
{
    struct conn *c = userp;
    (void)m;
    c->curl_at = ms < 0 ? 0 : czctl_now() + (double)ms / 1000.0;
    return 0;
}

static void conn_send_head(struct conn *c);

/* libcurl finished connecting (or failed). */
static void conn_curl_check(struct conn *c)
{
    CURLMsg *msg;
    int q;
    while (!c->dead && (msg = curl_multi_info_read(c->multi, &q))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        if (msg->data.result != CURLE_OK) {
            conn_fail(c, c->errbuf[0] ? c->errbuf : curl_easy_strerror(msg->data.result));
            return;
        }
        curl_socket_t s = CURL_SOCKET_BAD;
        if (curl_easy_getinfo(c->easy, CURLINFO_ACTIVESOCKET, &s) != CURLE_OK || s == CURL_SOCKET_BAD) {
            conn_fail(c, "libcurl gave no socket");
            return;
        }
        for (int i = 0; i < 4; i++)
            if (c->cs[i].fd >= 0) {
                epoll_ctl(c->t->ep, EPOLL_CTL_DEL, c->cs[i].fd, NULL);
                c->cs[i].fd = -1;
            }
        c->fd = (int)s;
        c->curl_at = 0;
        c->state = C_SEND;
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conn_send_head(c);
    }
}

static void conn_curl_action(struct conn *c, int fd, int flags)
{
    int running = 0;
    curl_multi_socket_action(c->multi, fd, flags, &running);
    conn_curl_check(c);
}

static int tun_dial_proto(struct tun *t, enum proto proto, int refresh);

/* Appends the protocol's upgrade headers and the empty line to the head. */
static int conn_finish_head(struct conn *c)
{
    char extra[512];
    int n;
    if (c->proto == P_WS) {
        if (up_ws_key(c->key) != 0)
            return -1;
        n = snprintf(extra, sizeof extra,
                     "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                     "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Protocol: " PF_WS_PROTOCOL "\r\n\r\n",
                     c->key);
    } else {
        n = snprintf(extra, sizeof extra,
                     "Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: " PF_SPDY_PROTOCOL
                     "\r\nContent-Length: 0\r\n\r\n");
    }
    return czctl_buf_add(&c->head, extra, (size_t)n);
}

static void conn_send_head(struct conn *c)
{
    while (czctl_buf_unread(&c->head) > 0) {
        size_t n = 0;
        CURLcode r = curl_easy_send(c->easy, c->head.data + c->head.start, czctl_buf_unread(&c->head), &n);
        if (r == CURLE_AGAIN) {
            conn_events(c);
            return;
        }
        if (r != CURLE_OK) {
            conn_fail(c, curl_easy_strerror(r));
            return;
        }
        czctl_buf_consume(&c->head, n);
    }
    czctl_buf_free(&c->head);
    c->state = C_RECV;
    conn_events(c);
}

static void conn_log(struct conn *c, const char *what)
{
    if (czctl_kube_dialer_verbose(c->t->dialer))
        fprintf(stderr, "kube: %s %s (port-forward, %s) -> %s (%.1f ms)\n", c->proto == P_WS ? "GET" : "POST",
                c->url, c->proto == P_WS ? "websocket" : "spdy", what, (czctl_now() - c->dial_started) * 1000);
}

/* Drops a connection that is replaced at once (fallback, refreshed
 * credentials): no state change, parked clients keep waiting. */
static void conn_replace(struct conn *c, const char *why, enum proto p, int refresh)
{
    struct tun *t = c->t;
    if (t->cur == c)
        t->cur = NULL;
    conn_fail(c, why);
    tun_dial_proto(t, p, refresh);
}

/* The upgrade was refused: one line for the error, and maybe the fallback
 * (client-go's: any answer but 101 to the WebSocket request means "try SPDY"). */
static void conn_refused(struct conn *c)
{
    struct tun *t = c->t;
    char msg[512], line[700];
    const char *body = (const char *)c->in.p + c->body_start;
    size_t blen = c->in.tail - c->body_start;
    up_refusal_message(body, blen, msg, sizeof msg);
    char status[16];
    snprintf(status, sizeof status, "%d", c->status);
    conn_log(c, status);
    if (msg[0])
        snprintf(line, sizeof line, "%s (HTTP %d)", msg, c->status);
    else
        snprintf(line, sizeof line, "HTTP %d", c->status);
    if (c->status == 401 && !c->refreshed && czctl_kube_dialer_exec_auth(t->dialer))
        conn_replace(c, line, c->proto, 1);
    else if (c->proto == P_WS && t->fallback)
        conn_replace(c, line, P_SPDY, 0);
    else
        conn_fail(c, line);
}

/* A 101: checks it is the protocol asked for; the connection is open. */
static void conn_upgraded(struct conn *c, const char *head, size_t hl)
{
    struct tun *t = c->t;
    char v[256];
    const char *bad = NULL;
    if (c->proto == P_WS) {
        char want[29];
        if (up_ws_accept(c->key, want) != 0)
            bad = "out of memory checking Sec-WebSocket-Accept";
        else if (!up_header(head, hl, "Upgrade", v, sizeof v) || !up_has_token(v, "websocket"))
            bad = "101 without Upgrade: websocket";
        else if (!up_header(head, hl, "Sec-WebSocket-Accept", v, sizeof v) || strcmp(v, want) != 0)
            bad = "101 with a wrong Sec-WebSocket-Accept";
        else if (!up_header(head, hl, "Sec-WebSocket-Protocol", v, sizeof v) || strcmp(v, PF_WS_PROTOCOL) != 0)
            bad = "101 without the " PF_WS_PROTOCOL " subprotocol";
    } else {
        if (!up_header(head, hl, "Upgrade", v, sizeof v) || !up_has_token(v, "SPDY/3.1"))
            bad = "101 without Upgrade: SPDY/3.1";
        else if (!up_header(head, hl, "X-Stream-Protocol-Version", v, sizeof v) || strcmp(v, PF_SPDY_PROTOCOL) != 0)
            bad = "101 without X-Stream-Protocol-Version: " PF_SPDY_PROTOCOL;
    }
    if (bad) {
        conn_log(c, "101, refused");
        if (c->proto == P_WS && t->fallback)
            conn_replace(c, bad, P_SPDY, 0);
        else
            conn_fail(c, bad);
        return;
    }
    conn_log(c, "101");
    c->state = C_OPEN;
    c->opened = c->last_rx = czctl_now();
    c->ping_at = c->opened + t->ping_interval;
    t->backoff = 0.25;
    if (c->proto == P_WS)
        t->ws_works = 1;
    else
        t->spdy_works = 1;
    atomic_fetch_add(&t->connections, 1);
    pthread_mutex_lock(&t->lock);
    snprintf(t->protocol, sizeof t->protocol, "%s", c->proto == P_WS ? "websocket" : "spdy");
    pthread_mutex_unlock(&t->lock);
    if (t->mode == R_FORWARD)
        tun_state(t, "up", NULL);
    for (int i = 0; i < t->nparked && !c->dead; i++) {
        struct req *r = req_new(c, R_FORWARD, t->parked[i]);
        if (!r)
            close_reset(t->parked[i]);
        else
            req_events(r);
    }
    t->nparked = 0;
    t->pool_wake = c->opened;
    conn_events(c);
    if (iobuf_len(&c->in) > 0)
        conn_process(c);
}

/* Reads the upgrade answer (and a refusal's body). */
static void conn_handshake_read(struct conn *c)
{
    conn_read(c);
    while (!c->dead && c->state == C_RECV) {
        int status = 0;
        const char *why = NULL;
        long hl = up_parse_head((const char *)c->in.p, c->in.tail, &status, &why);
        if (hl == 0) {
            if (c->eof) {
                conn_log(c, "closed");
                conn_fail(c, "the API server closed the connection without answering the upgrade");
            }
            return;
        }
        if (hl < 0) {
            conn_log(c, why);
            conn_fail(c, why);
            return;
        }
        if (status == 101) {
            char head[UP_MAX_HEAD];
            memcpy(head, c->in.p, (size_t)hl);
            c->in.head = (size_t)hl;
            conn_upgraded(c, head, (size_t)hl);
            return;
        }
        if (status < 200) {   /* 1xx other than 101: an interim answer, the real one follows */
            memmove(c->in.p, c->in.p + hl, c->in.tail - (size_t)hl);
            c->in.tail -= (size_t)hl;
            continue;
        }
        char v[64];
        c->status = status;
        c->body_start = (size_t)hl;
        c->body_want = -1;
        if (up_header((const char *)c->in.p, (size_t)hl, "Content-Length", v, sizeof v))
            c->body_want = strtol(v, NULL, 10);
        c->state = C_BODY;
    }
    if (c->state == C_BODY) {
        size_t have = c->in.tail - c->body_start;
        if ((c->body_want >= 0 && have >= (size_t)c->body_want) || have >= PF_BODY_MAX || c->in.tail == c->in.cap ||
            c->eof)
            conn_refused(c);
    }
}

static void conn_body_read(struct conn *c)
{
    struct iobuf *b = &c->in;
    for (;;) {
        if (b->tail == b->cap) {
            conn_refused(c);
            return;
        }
        size_t n = 0;
        CURLcode r = curl_easy_recv(c->easy, b->p + b->tail, b->cap - b->tail, &n);
        if (r == CURLE_AGAIN)
            break;
        if (r != CURLE_OK || n == 0) {
            conn_refused(c);   /* the body ends with the connection */
            return;
        }
        b->tail += n;
    }
    size_t have = b->tail - c->body_start;
    if ((c->body_want >= 0 && have >= (size_t)c->body_want) || have >= PF_BODY_MAX)
        conn_refused(c);
}

/* Starts a connection for the tunnel's current path with protocol proto. */
static int tun_dial_proto(struct tun *t, enum proto proto, int refresh)
{
    struct conn *c = calloc(1, sizeof *c);
    char *err = NULL, path[600];
    if (!c)
        return -1;
    c->src.kind = SRC_CONN;
    c->t = t;
    c->fd = -1;
    c->proto = proto;
    c->refreshed = refresh;
    c->state = C_DIAL;
    c->next_id = 1;
    c->ping_id = 1;
    c->dial_started = czctl_now();
    c->deadline = c->dial_started + t->connect_timeout + 10;
    for (int i = 0; i < 4; i++) {
        c->cs[i].src.kind = SRC_CURL;
        c->cs[i].c = c;
        c->cs[i].fd = -1;
    }
    c->next = t->conns;
    t->conns = c;
    t->cur = c;
    pthread_mutex_lock(&t->lock);
    memcpy(path, t->path, sizeof path);
    snprintf(c->target, sizeof c->target, "%s/%s", t->ns, t->pod);
    pthread_mutex_unlock(&t->lock);
    if (iobuf_init(&c->in, PF_IN_CAP) != 0 || iobuf_init(&c->out, PF_OUT_CAP) != 0 || spdy_init(&c->spdy) != 0) {
        conn_fail(c, "out of memory");
        return -1;
    }
    c->spdy_ready = 1;
    ws_parser_init(&c->ws, PF_MAX_FRAME);
    c->easy = curl_easy_init();
    c->multi = curl_multi_init();
    if (!c->easy || !c->multi) {
        conn_fail(c, "libcurl: cannot create a handle");
        return -1;
    }
    char *head = NULL;
    size_t head_len = 0;
    int r = czctl_kube_dialer_prepare(t->dialer, c->easy, proto == P_WS ? "GET" : "POST", path, refresh, &head,
                                      &head_len, &c->url, &err);
    if (r != 0) {
        conn_fail(c, err ? err : "interrupted");
        free(err);
        return -1;
    }
    c->head.secret = 1;
    int added = czctl_buf_add(&c->head, head, head_len);
    explicit_bzero(head, head_len);
    free(head);
    if (added != 0 || conn_finish_head(c) != 0) {
        conn_fail(c, "out of memory");
        return -1;
    }
    curl_easy_setopt(c->easy, CURLOPT_ERRORBUFFER, c->errbuf);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, curl_sock_cb);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, curl_timer_cb);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
    if (curl_multi_add_handle(c->multi, c->easy) != CURLM_OK) {
        conn_fail(c, "libcurl: cannot start a connection");
        return -1;
    }
    return 0;
}

static void tun_schedule_dial(struct tun *t, double delay)
{
    t->dial_at = czctl_now() + delay;
}

static void tun_dial(struct tun *t)
{
    t->dial_at = 0;
    if (t->cur)
        return;
    enum proto p = t->first;
    if (t->fallback && !t->ws_works && t->spdy_works)
        p = P_SPDY;   /* only SPDY ever worked here: start with it */
    tun_dial_proto(t, p, 0);
}

/* ---- the pool -------------------------------------------------------------------------------------- */

static void pool_tick(struct tun *t, double now)
{
    struct conn *c = t->cur;
    if (!c || c->state != C_OPEN || c->dead)
        return;
    int idle = 0, opening = 0;
    struct req *oldest = NULL;
    for (struct req *r = c->reqs, *n; r; r = n) {
        n = r->next;
        if (r->role != R_POOL)
            continue;
        if (r->ps == PS_HELLO && now - r->since > 10) {
            tun_error(t, "the relay did not answer a new stream within 10 s");
            req_abort(r);
            continue;
        }
        if (r->ps == PS_IDLE && now - r->seen > 3 * r->relay_interval + 5) {
            tun_error(t, "an idle stream heard nothing from the relay: replaced");
            req_abort(r);
            continue;
        }
        if (r->ps == PS_HELLO)
            opening++;
        if (r->ps == PS_IDLE) {
            idle++;
            if (t->max_idle > 0 && now - r->since > t->max_idle && (!oldest || r->since < oldest->since))
                oldest = r;
        }
    }
    /* an aged idle stream is replaced before anything closes it under us:
     * its replacement is opened first, and it goes once that one is idle */
    if (oldest && idle > t->size) {
        atomic_fetch_sub(&t->idle, 1);
        oldest->ps = PS_CLOSING;
        oldest->local_eof = 1;
        oldest->done_at = now;
        out_data(c, oldest->data_id, SPDY_FLAG_FIN, "", 0);   /* the relay drops it on our FIN */
        idle--;
        oldest = NULL;
    }
    int want = t->size + (oldest && opening == 0 ? 1 : 0);
    if (idle + opening < want && now >= t->pool_hold) {
        for (int i = idle + opening; i < want && !c->dead; i++)
            if (!req_new(c, R_POOL, -1))
                break;
    }
    if (atomic_load(&t->idle) == 0 && atomic_load(&t->active) == 0 && strcmp(t->state, "up") == 0 &&
        t->pool_failures > 0)
        tun_state(t, "down", t->error);
}

/* ---- the loop ----------------------------------------------------------------------------------------- */

static void tun_accept(struct tun *t)
{
    for (;;) {
        int fd = accept4(t->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = t->cur;
        if (c && c->state == C_OPEN && !c->dead) {
            struct req *r = req_new(c, R_FORWARD, fd);
            if (!r)
                close_reset(fd);
            else
                req_events(r);
        } else if (t->nparked < PF_MAX_PARKED) {
            t->parked[t->nparked++] = fd;
        } else {
            close_reset(fd);
        }
    }
}

static void tun_local_event(struct req *r, uint32_t events)
{
    if (r->dead)
        return;
    if (r->role == R_POOL && r->ps == PS_CONNECTING) {
        if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
            req_connected(r);
        return;
    }
    if (events & EPOLLOUT)
        req_flush_local(r);
    if (!r->dead && (events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
        req_from_local(r);
}

static void tun_conn_event(struct conn *c, uint32_t events)
{
    if (c->dead)
        return;
    switch (c->state) {
    case C_SEND:
        conn_send_head(c);
        break;
    case C_RECV:
        conn_handshake_read(c);
        break;
    case C_BODY:
        conn_body_read(c);
        break;
    case C_OPEN:
        if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
            conn_read(c);
        break;
    default:
        break;
    }
}

/* Timers: sleep, retargets, redials, libcurl's, handshake deadlines, pings,
 * the pool. Returns when the loop must wake next. */
static double tun_timers(struct tun *t)
{
    double now = czctl_now(), next = now + 1;
    double slept = pf_slept();
    if (slept - t->slept > 2) {
        for (struct conn *c = t->conns, *n; c; c = n) {
            n = c->next;
            if (c->state == C_OPEN)
                conn_fail(c, "this machine resumed from sleep");
        }
    }
    t->slept = slept;
    pthread_mutex_lock(&t->lock);
    int retarget = t->retarget;
    t->retarget = 0;
    pthread_mutex_unlock(&t->lock);
    if (retarget) {
        struct conn *c = t->cur;
        if (c && c->state == C_OPEN) {
            conn_goaway(c);   /* streams to the old pod finish; new ones go to the new pod */
        } else if (c) {
            t->cur = NULL;
            conn_fail(c, "retargeted");
        }
        tun_schedule_dial(t, 0);
    }
    if (!t->cur && t->dial_at > 0 && now >= t->dial_at)
        tun_dial(t);
    if (!t->cur && t->dial_at > 0 && t->dial_at < next)
        next = t->dial_at;
    for (struct conn *c = t->conns, *n; c; c = n) {
        n = c->next;
        if (c->state == C_DIAL && c->curl_at > 0 && now >= c->curl_at) {
            c->curl_at = 0;
            conn_curl_action(c, CURL_SOCKET_TIMEOUT, 0);
        }
        if (c->dead)
            continue;
        if (c->state != C_OPEN) {
            if (now >= c->deadline) {
                conn_fail(c, "timed out connecting to the API server");
                continue;
            }
            if (c->deadline < next)
                next = c->deadline;
            if (c->curl_at > 0 && c->curl_at < next)
                next = c->curl_at;
            continue;
        }
        if (c->ping_out && !c->paused && now - c->ping_at > t->ping_timeout && now - c->last_rx > t->ping_timeout) {
            char msg[100];
            snprintf(msg, sizeof msg, "no answer to a ping for %.0f s", t->ping_timeout);
            conn_fail(c, msg);
            continue;
        }
        if (!c->ping_out && now >= c->ping_at) {
            uint8_t f[12];
            c->ping_id += 2;
            out_frame(c, f, spdy_ping(f, sizeof f, c->ping_id));
            c->ping_out = 1;
            c->ping_at = now;
        }
        if (c->draining && c->nreq == 0) {
            conn_fail(c, "drained");
            continue;
        }
        double p = c->ping_out ? c->ping_at + t->ping_timeout : c->ping_at;
        if (p < next)
            next = p;
    }
    /* finished requests whose error stream (or, for a stream being replaced,
     * the relay's close) did not come: the server is told with RST_STREAM; the
     * local socket is closed, not reset (its client may not have read all yet) */
    for (struct conn *c = t->conns; c; c = c->next)
        for (struct req *r = c->reqs, *n; r; r = n) {
            n = r->next;
            if (r->done_at > 0 && now - r->done_at > 5) {
                if (!r->remote_fin && !r->data_reset)
                    out_rst(c, r->data_id, SPDY_CANCEL);
                if (!r->err_fin)
                    out_rst(c, r->err_id, SPDY_CANCEL);
                req_free(r, 0);
            }
        }
    if (t->mode == R_POOL) {
        if (now >= t->tick_at || (t->pool_wake > 0 && now >= t->pool_wake)) {
            t->tick_at = now + 1;
            t->pool_wake = 0;
            pool_tick(t, now);
        }
        if (t->tick_at < next)
            next = t->tick_at;
        if (t->pool_wake > 0 && t->pool_wake < next)
            next = t->pool_wake;
    }
    return next;
}

/* Frees what died in this round. A pool stream that ended before the
 * relay's hello counts as a failed open (back-off); any pool stream that
 * ended makes the pool refill soon. */
static void tun_reap(struct tun *t)
{
    double now = czctl_now();
    while (t->dead_reqs) {
        struct req *r = t->dead_reqs;
        t->dead_reqs = r->dnext;
        if (t->mode == R_POOL && r->role == R_POOL) {
            if (r->ps == PS_HELLO) {
                t->pool_failures++;
                t->pool_backoff = t->pool_backoff > 0 ? (t->pool_backoff < 2.5 ? t->pool_backoff * 2 : 5) : 0.25;
                t->pool_hold = now + t->pool_backoff;
            }
            double at = t->pool_hold > now ? t->pool_hold : now;
            if (t->pool_wake == 0 || at < t->pool_wake)
                t->pool_wake = at;
        }
        free(r);
    }
    while (t->dead_conns) {
        struct conn *c = t->dead_conns;
        t->dead_conns = c->dnext;
        conn_free_now(c);
    }
}

static void *tun_loop(void *arg)
{
    struct tun *t = arg;
    struct epoll_event evs[64];
    t->slept = pf_slept();
    tun_schedule_dial(t, 0);
    for (;;) {
        double next = tun_timers(t);
        for (struct conn *c = t->conns; c; c = c->next) {
            if (c->dead || c->state != C_OPEN)
                continue;
            if (c->read_now)
                conn_read(c);
            if (!c->dead && iobuf_len(&c->out) > 0) {
                size_t before = iobuf_len(&c->out);
                conn_flush(c);
                if (!c->dead && before >= PF_OUT_HIGH / 2 && iobuf_len(&c->out) < PF_OUT_HIGH / 2)
                    conn_resume_locals(c);
            }
            conn_events(c);
        }
        tun_reap(t);
        int busy = 0;
        for (struct conn *c = t->conns; c; c = c->next)
            busy |= c->read_now;
        double wait = next - czctl_now();
        int ms = busy ? 0 : wait <= 0 ? 0 : wait > 1 ? 1000 : (int)(wait * 1000) + 1;
        int n = epoll_wait(t->ep, evs, 64, ms);
        if (n < 0 && errno != EINTR)
            break;
        int stop = 0;
        for (int i = 0; i < n; i++) {
            struct src *s = evs[i].data.ptr;
            switch (s->kind) {
            case SRC_STOP:
                stop = 1;
                break;
            case SRC_LISTEN:
                tun_accept(t);
                break;
            case SRC_CURL: {
                struct curlsock *cs = (struct curlsock *)s;
                if (!cs->c->dead && cs->fd >= 0) {
                    int f = (evs[i].events & EPOLLIN ? CURL_CSELECT_IN : 0) |
                            (evs[i].events & EPOLLOUT ? CURL_CSELECT_OUT : 0) |
                            (evs[i].events & (EPOLLERR | EPOLLHUP) ? CURL_CSELECT_ERR : 0);
                    conn_curl_action(cs->c, cs->fd, f);
                }
                break;
            }
            case SRC_CONN:
                tun_conn_event((struct conn *)s, evs[i].events);
                break;
            case SRC_LOCAL:
                tun_local_event((struct req *)s, evs[i].events);
                break;
            }
        }
        if (stop)
            break;
    }
    while (t->conns)
        conn_fail(t->conns, "closed");
    for (int i = 0; i < t->nparked; i++)
        close_reset(t->parked[i]);
    t->nparked = 0;
    tun_reap(t);
    return NULL;
}

/* ---- Lua ------------------------------------------------------------------------------------------ */

static void tun_release(struct tun *t)
{
    if (t->running) {
        uint64_t one = 1;
        ssize_t w = write(t->stop_fd, &one, sizeof one);
        (void)w;
        pthread_join(t->thread, NULL);
        t->running = 0;
    }
    int *fds[] = {&t->listen_fd, &t->stop_fd, &t->ev_fd, &t->ep};
    for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++)
        if (*fds[i] >= 0) {
            close(*fds[i]);
            *fds[i] = -1;
        }
    czctl_kube_dialer_free(t->dialer);
    t->dialer = NULL;
    pthread_mutex_destroy(&t->lock);
}

/* The handle (core/class.c) holds the tunnel, made by pf_new once the
 * handle exists. pf:close() (also __close, __gc) stops its thread and resets
 * what is open; idempotent. */
static void pf_release(void *p)
{
    struct tun **h = p;
    if (*h) {
        tun_release(*h);
        free(*h);
        *h = NULL;
    }
}

/* "portforward pool default/POD:9001 (up)" (the class says "(closed)") */
static void pf_describe(lua_State *L, const void *p)
{
    struct tun *t = *(struct tun *const *)p;
    if (!t) {
        lua_pushliteral(L, "portforward (not started)");
        return;
    }
    pthread_mutex_lock(&t->lock);
    lua_pushfstring(L, "portforward %s %s/%s:%d (%s)", t->mode == R_POOL ? "pool" : "forward", t->ns, t->pod,
                    t->remote_port, t->state);
    pthread_mutex_unlock(&t->lock);
}

static const czctl_class pf_class;

static struct tun *check_open(lua_State *L)
{
    struct tun *t = *(struct tun **)czctl_handle_check_open(L, 1, &pf_class);
    if (!t)
        luaL_argerror(L, 1, "portforward is not started");
    return t;
}

/* pf:address() -> host, port (forward: where the local listener is) | nil, msg */
static int pf_address(lua_State *L)
{
    struct tun *t = check_open(L);
    if (t->mode != R_FORWARD)
        return czctl_fail(L, "a pool has no local listener");
    char a[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &t->bound.sin_addr, a, sizeof a);
    lua_pushstring(L, a);
    lua_pushinteger(L, ntohs(t->bound.sin_port));
    return 2;
}

static void set_int(lua_State *L, const char *k, long long v)
{
    lua_pushinteger(L, (lua_Integer)v);
    lua_setfield(L, -2, k);
}

/* pf:stats() -> { state=, since=, error=, protocol=, pod=, connections=, reconnects=,
 *   requests=, active=, idle=, paired=, failed=, errors=, bytes_in=, bytes_out=, dropped_events= } */
static int pf_stats(lua_State *L)
{
    struct tun *t = check_open(L);
    lua_createtable(L, 0, 16);
    pthread_mutex_lock(&t->lock);
    lua_pushstring(L, t->state);
    lua_setfield(L, -2, "state");
    lua_pushnumber(L, t->since);
    lua_setfield(L, -2, "since");
    if (t->error[0]) {
        lua_pushstring(L, t->error);
        lua_setfield(L, -2, "error");
    }
    if (t->protocol[0]) {
        lua_pushstring(L, t->protocol);
        lua_setfield(L, -2, "protocol");
    }
    lua_pushstring(L, t->pod);
    lua_setfield(L, -2, "pod");
    set_int(L, "dropped_events", t->dropped_events);
    pthread_mutex_unlock(&t->lock);
    set_int(L, "connections", atomic_load(&t->connections));
    set_int(L, "reconnects", atomic_load(&t->reconnects));
    set_int(L, "requests", atomic_load(&t->requests));
    set_int(L, "active", atomic_load(&t->active));
    set_int(L, "errors", atomic_load(&t->errors));
    set_int(L, "bytes_in", atomic_load(&t->bytes_in));
    set_int(L, "bytes_out", atomic_load(&t->bytes_out));
    if (t->mode == R_POOL) {
        set_int(L, "idle", atomic_load(&t->idle));
        set_int(L, "paired", atomic_load(&t->paired));
        set_int(L, "failed", atomic_load(&t->failed));
        set_int(L, "size", t->size);
    }
    return 1;
}

/* Pops the oldest event into a new table on the stack; 0 when none. */
static int pop_event(lua_State *L, struct tun *t)
{
    struct pf_event e;
    pthread_mutex_lock(&t->lock);
    int have = t->ev_count > 0;
    if (have) {
        e = t->events[t->ev_head];
        t->ev_head = (t->ev_head + 1) % PF_EVENTS;
        t->ev_count--;
    }
    pthread_mutex_unlock(&t->lock);
    if (!have)
        return 0;
    lua_createtable(L, 0, 3);
    lua_pushstring(L, e.kind);
    lua_setfield(L, -2, "kind");
    if (e.message[0]) {
        lua_pushstring(L, e.message);
        lua_setfield(L, -2, "message");
    }
    lua_pushnumber(L, e.time);
    lua_setfield(L, -2, "time");
    return 1;
}

/* pf:event([timeout]) -> { kind=, message=, time= } | nil, "timeout" | nil, "interrupted"
 * The next event: kind "up", "down" or "connecting" when the state changes
 * (message: why), "error" for a one-line error (an error stream's text, a
 * protocol problem). Waits up to timeout seconds (nil: forever). */
static int pf_event(lua_State *L)
{
    struct tun *t = check_open(L);
    double timeout = czctl_opt_seconds(L, 2, -1);
    double deadline = timeout >= 0 ? czctl_now() + timeout : -1;
    for (;;) {
        uint64_t v;
        ssize_t r = read(t->ev_fd, &v, sizeof v);
        (void)r;
        if (pop_event(L, t))
            return 1;
        double left = deadline >= 0 ? deadline - czctl_now() : -1;
        if (deadline >= 0 && left <= 0)
            return czctl_fail(L, "timeout");
        int w = czctl_wait_fd(t->ev_fd, POLLIN, left);
        if (w == -2)
            return czctl_fail(L, "interrupted");
        if (w < 0)
            return czctl_fail_errno(L, "poll", errno);
    }
}

/* Is s a DNS-1123 name (what a namespace or a pod name may be)? */
static int valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 253)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '.'))
            return 0;
    return s[0] != '-' && s[0] != '.' && s[n - 1] != '-' && s[n - 1] != '.';
}

static void tun_set_target(struct tun *t, const char *ns, const char *pod)
{
    snprintf(t->ns, sizeof t->ns, "%s", ns);
    snprintf(t->pod, sizeof t->pod, "%s", pod);
    snprintf(t->path, sizeof t->path, "/api/v1/namespaces/%s/pods/%s/portforward", ns, pod);
}

/* pf:retarget(pod) -> true: later streams go to pod (same namespace and port),
 * on a new connection; streams to the old pod finish where they are.
 * Raises unless pod is a valid pod name. */
static int pf_retarget(lua_State *L)
{
    struct tun *t = check_open(L);
    const char *pod = luaL_checkstring(L, 2);
    luaL_argcheck(L, valid_name(pod), 2, "not a pod name");
    pthread_mutex_lock(&t->lock);
    char ns[sizeof t->ns];
    memcpy(ns, t->ns, sizeof ns);
    tun_set_target(t, ns, pod);
    t->retarget = 1;   /* the loop wakes at least once a second */
    pthread_mutex_unlock(&t->lock);
    lua_pushboolean(L, 1);
    return 1;
}

static int field_int(lua_State *L, int t, const char *key, int def, int lo, int hi)
{
    int type = lua_getfield(L, t, key);
    int isnum = 0;
    lua_Integer v = lua_tointegerx(L, -1, &isnum);
    lua_pop(L, 1);
    if (type == LUA_TNIL) {
        if (def < lo)
            luaL_error(L, "portforward: %s is required", key);
        return def;
    }
    if (!isnum || v < lo || v > hi)
        luaL_error(L, "portforward: %s must be an integer in %d..%d", key, lo, hi);
    return (int)v;
}

static struct in_addr field_ipv4(lua_State *L, int t, const char *key, const char *def)
{
    const char *s = czctl_field_string(L, t, key);
    struct in_addr a;
    if (inet_pton(AF_INET, s ? s : def, &a) != 1)
        luaL_error(L, "portforward: %s must be an IPv4 address", key);
    return a;
}

/* Common to forward and pool: options at index 2, client at 1. Pushes the
 * handle; returns it (NULL after pushing nil, msg). */
static struct tun *pf_new(lua_State *L, enum role mode)
{
    luaL_checktype(L, 2, LUA_TTABLE);
    const char *ns = czctl_field_string(L, 2, "namespace");
    const char *pod = czctl_field_string(L, 2, "pod");
    if (!ns || !valid_name(ns))
        luaL_error(L, "portforward: namespace must be a namespace name");
    if (!pod || !valid_name(pod))
        luaL_error(L, "portforward: pod must be a pod name");
    int port = field_int(L, 2, "port", -1, 1, 65535);
    const char *proto = czctl_field_string(L, 2, "protocol");
    if (proto && strcmp(proto, "auto") && strcmp(proto, "websocket") && strcmp(proto, "spdy"))
        luaL_error(L, "portforward: protocol must be \"auto\", \"websocket\" or \"spdy\"");
    double ping = czctl_field_seconds(L, 2, "ping_interval", 5);
    double ping_timeout = czctl_field_seconds(L, 2, "ping_timeout", 3 * ping);
    double connect_timeout = czctl_field_seconds(L, 2, "connect_timeout", 10);
    if (ping < 0.05)
        luaL_error(L, "portforward: ping_interval must be at least 0.05 s");

    struct tun **h = czctl_handle_new(L, &pf_class, sizeof *h, 1);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1);   /* the client (and its kubeconfig) live as long as we do */
    struct tun *t = calloc(1, sizeof *t);
    if (!t)
        luaL_error(L, "not enough memory");
    *h = t;
    t->listen_fd = t->stop_fd = t->ev_fd = t->ep = -1;
    pthread_mutex_init(&t->lock, NULL);
    t->mode = mode;
    t->remote_port = port;
    t->first = proto && !strcmp(proto, "spdy") ? P_SPDY : P_WS;
    t->fallback = !proto || !strcmp(proto, "auto");
    t->ping_interval = ping;
    t->ping_timeout = ping_timeout > ping ? ping_timeout : ping;
    t->connect_timeout = connect_timeout;
    t->backoff = 0.25;
    snprintf(t->state, sizeof t->state, "connecting");
    t->since = pf_wall();
    tun_set_target(t, ns, pod);
    t->stop_src.kind = SRC_STOP;
    t->listen_src.kind = SRC_LISTEN;
    if (getrandom(&t->mask_state, sizeof t->mask_state, 0) != sizeof t->mask_state || t->mask_state == 0)
        t->mask_state = (uint64_t)time(NULL) * 2654435761u | 1;

    if (mode == R_POOL) {
        t->target.sin_family = AF_INET;
        t->target.sin_addr = field_ipv4(L, 2, "target_host", "127.0.0.1");
        t->target.sin_port = htons((uint16_t)field_int(L, 2, "target_port", -1, 1, 65535));
        t->size = field_int(L, 2, "size", 4, 1, 256);
        t->max_idle = czctl_field_seconds(L, 2, "max_idle", 600);
    } else {
        t->bound.sin_family = AF_INET;
        t->bound.sin_addr = field_ipv4(L, 2, "host", "127.0.0.1");
        t->bound.sin_port = htons((uint16_t)field_int(L, 2, "local_port", 0, 0, 65535));
    }

    char *err = NULL;
    if (czctl_curl_init() != 0) {
        czctl_fail(L, "libcurl initialisation failed");
        return NULL;
    }
    t->dialer = czctl_kube_dialer_new(L, 1, &err);
    if (!t->dialer) {
        lua_pushstring(L, err ? err : "out of memory");
        free(err);
        czctl_fail(L, lua_tostring(L, -1));
        return NULL;
    }
    const char *what = "epoll";
    t->ep = epoll_create1(EPOLL_CLOEXEC);
    t->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    t->ev_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (t->ep < 0 || t->stop_fd < 0 || t->ev_fd < 0)
        goto fail;
    struct epoll_event sev = {.events = EPOLLIN, .data.ptr = &t->stop_src};
    if (epoll_ctl(t->ep, EPOLL_CTL_ADD, t->stop_fd, &sev) != 0)
        goto fail;
    if (mode == R_FORWARD) {
        int one = 1;
        socklen_t bl = sizeof t->bound;
        what = "listen";
        t->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (t->listen_fd < 0)
            goto fail;
        setsockopt(t->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(t->listen_fd, (struct sockaddr *)&t->bound, sizeof t->bound) != 0 || listen(t->listen_fd, 128) != 0 ||
            getsockname(t->listen_fd, (struct sockaddr *)&t->bound, &bl) != 0)
            goto fail;
        struct epoll_event lev = {.events = EPOLLIN, .data.ptr = &t->listen_src};
        if (epoll_ctl(t->ep, EPOLL_CTL_ADD, t->listen_fd, &lev) != 0)
            goto fail;
    }
    /* the thread takes no signal: they stay with the Lua thread's self-pipe */
    what = "thread";
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int e = pthread_create(&t->thread, NULL, tun_loop, t);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (e != 0) {
        errno = e;
        goto fail;
    }
    t->running = 1;
    return t;
fail:;
    int saved = errno;
    char a[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &t->bound.sin_addr, a, sizeof a);
    if (!strcmp(what, "listen"))
        lua_pushfstring(L, "listen %s:%d", a, (int)ntohs(t->bound.sin_port));
    else
        lua_pushstring(L, what);
    czctl_fail_errno(L, lua_tostring(L, -1), saved);
    return NULL;
}

/* The results of forward/pool: the handle, or the failure pf_new pushed
 * after it (nil, msg[, errno]) with the handle released at once. */
static int pf_open(lua_State *L, enum role mode)
{
    lua_settop(L, 2);
    struct tun *t = pf_new(L, mode);
    if (t)
        return 1;
    czctl_handle_close(L, 3, &pf_class);
    return lua_gettop(L) - 3;
}

/* portforward.forward(client, { namespace=, pod=, port=, host="127.0.0.1", local_port=0,
 *   protocol="auto", ping_interval=5, ping_timeout=3*ping_interval, connect_timeout=10 })
 *   -> pf | nil, msg
 * Listens on host:local_port and forwards each connection to the pod's port. */
static int pf_forward(lua_State *L)
{
    return pf_open(L, R_FORWARD);
}

/* portforward.pool(client, { namespace=, pod=, port=, target_port=, target_host="127.0.0.1",
 *   size=4, max_idle=600, protocol="auto", ping_interval=5, ping_timeout=, connect_timeout=10 })
 *   -> pf | nil, msg
 * Keeps size idle streams open to the relay at the pod's port and connects
 * each one the relay pairs to target_host:target_port. */
static int pf_pool(lua_State *L)
{
    return pf_open(L, R_POOL);
}

static const luaL_Reg pf_methods[] = {
    {"address", pf_address},
    {"event", pf_event},
    {"retarget", pf_retarget},
    {"stats", pf_stats},
    {NULL, NULL},
};

static const czctl_class pf_class = {PF_MT, "portforward", pf_methods, pf_release, pf_describe};

static const luaL_Reg pf_funcs[] = {
    {"forward", pf_forward},
    {"pool", pf_pool},
    {NULL, NULL},
};

int luaopen_czctl_core_portforward(lua_State *L)
{
    luaL_newlib(L, pf_funcs);
    czctl_class_register(L, &pf_class);
    return 1;
}
