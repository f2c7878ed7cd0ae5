/*
 * czctl-relay.c: the in-cluster end of the kube tunnel (docs/decisions.md
 * section 6). A small static program, run as its own Deployment per
 * session from the image relay/Dockerfile builds.
 *
 * It listens on two ports. The laptop port (127.0.0.1 by default: inside
 * the pod's network namespace only port-forward reaches it) takes the
 * streams the developer's czctl opens through `pods/portforward` and keeps
 * them idle, pinging them. The proxy port takes the intercept proxy's
 * connections and pairs each with an idle laptop stream, then passes bytes
 * both ways untouched: the proxy and the laptop's landing speak mutual TLS
 * through it, so the relay holds no secret and reads nothing. When no
 * laptop stream is idle, a proxy connection is reset at once, so the proxy
 * falls back to the in-cluster version (decisions section 3); when the
 * laptop is there but all its streams are busy, a proxy connection waits
 * (at most --wait-timeout) for the stream the laptop opens next. The
 * pairing bytes are in core/relay_proto.h.
 *
 * One thread, one epoll loop, level-triggered; bounded buffers (16 KiB per
 * direction of a pair, allocated when paired). Only libc: it is linked
 * statically and runs FROM scratch as any non-root user. A third port
 * answers the kubelet's probes (GET /healthz) and GET /stats (counts only).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "relay_proto.h"

#ifndef CZCTL_VERSION
#define CZCTL_VERSION "0.0.0-dev"
#endif

#define BUF 16384            /* per direction of a pair */
#define REPLAY_MAX 65536     /* proxy bytes kept until the laptop's 'A' */
#define HEALTH_MAX 1024

/* ---- options ---------------------------------------------------------------- */

struct opts {
    struct sockaddr_in proxy, laptop, health;
    int health_on;
    double ping_interval, pair_timeout, hello_timeout, wait_timeout;
    int max_idle, max_pairs, max_waiting;
};

/* ---- objects ------------------------------------------------------------------- */

enum kind { K_LISTEN_PROXY, K_LISTEN_LAPTOP, K_LISTEN_HEALTH, K_SIGNAL, K_LAPTOP, K_PROXY, K_HEALTH };
enum lstate { L_HELLO, L_IDLE, L_PAIRING, L_ACTIVE };

struct ev {
    enum kind kind;
};

/* One direction of a pair: bytes read from one socket, not yet written to the other. */
struct dir {
    char *buf;
    size_t off, len;
    int eof, shut;
};

struct laptop;

struct proxy {
    struct ev ev;
    int fd, events;
    struct laptop *l;
    char *replay;                /* what the proxy sent before 'A' */
    size_t replay_len;
    int replay_lost;             /* more than REPLAY_MAX: cannot be replayed */
    int replays;                 /* at most one */
    struct dir up;               /* proxy -> laptop */
    double paired_at, since;
    int dead;
    struct proxy *wnext;         /* the waiting list (no laptop stream yet) */
    int waiting;
    struct proxy *dnext;
};

struct laptop {
    struct ev ev;
    int fd, events;
    enum lstate state;
    char hello[RELAY_MAGIC_LEN];
    size_t hello_len;
    char out[8];                 /* control bytes to send (hello, pings, 'C') */
    size_t out_len;
    double since, last_pong, ping_sent;
    int ping_out;
    struct proxy *p;
    struct dir down;             /* laptop -> proxy */
    struct laptop *prev, *next;  /* the idle list, oldest first */
    struct laptop *aprev, *anext;/* every live laptop stream (for timeouts) */
    int in_idle, dead;
    struct laptop *dnext;
};

struct health {
    struct ev ev;
    int fd;
    char req[HEALTH_MAX];
    size_t len;
    double since;
    struct health *next;
};

static struct {
    struct opts o;
    int ep;
    struct ev lp, ll, lh, sig;
    int proxy_fd, laptop_fd, health_fd, sig_fd;
    struct laptop *idle_head, *idle_tail;
    int nidle, nlaptops, npairs;
    struct laptop *all_laptops;  /* every live laptop stream */
    struct proxy *wait_head, *wait_tail;
    int nwaiting;
    struct health *healths;
    struct laptop *dead_l;
    struct proxy *dead_p;
    long accepted, refused, paired, replayed, landing_refused, waited, laptop_total;
    double last_log, refused_logged;
    double last_idle;            /* when a laptop stream last became idle */
    int stop;
} R;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void logf_(const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "czctl-relay: %s\n", line);
}

static void close_reset(int fd)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
}

static void ep_set(int fd, struct ev *e, int *have, int want)
{
    if (*have == want)
        return;
    struct epoll_event ev = {.events = (uint32_t)want, .data.ptr = e};
    if (want == 0)
        epoll_ctl(R.ep, EPOLL_CTL_DEL, fd, NULL);
    else
        epoll_ctl(R.ep, *have == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, fd, &ev);
    *have = want;
}

/* ---- the idle list (most recently heard from last) ---------------------------------- */

/* One log line when proxy connections start or stop being paired. */
static void idle_log(void)
{
    static int had = -1;
    int has = R.nidle > 0;
    if (has == had)
        return;
    had = has;
    logf_(has ? "laptop streams available: proxy connections are paired"
              : "no idle laptop stream: proxy connections wait or are reset (the proxy falls back to the cluster)");
}

static void idle_remove(struct laptop *l)
{
    if (!l->in_idle)
        return;
    if (l->prev)
        l->prev->next = l->next;
    else
        R.idle_head = l->next;
    if (l->next)
        l->next->prev = l->prev;
    else
        R.idle_tail = l->prev;
    l->prev = l->next = NULL;
    l->in_idle = 0;
    R.nidle--;
}

static void idle_push(struct laptop *l)
{
    if (l->in_idle)
        idle_remove(l);
    l->prev = R.idle_tail;
    l->next = NULL;
    if (R.idle_tail)
        R.idle_tail->next = l;
    else
        R.idle_head = l;
    R.idle_tail = l;
    l->in_idle = 1;
    R.nidle++;
    R.last_idle = now_s();
}

/* ---- events of sockets ----------------------------------------------------------------- */

static void laptop_events(struct laptop *l);
static void proxy_events(struct proxy *p);
static void proxy_free(struct proxy *p, int reset);
static void wait_remove(struct proxy *p);

static void laptop_free(struct laptop *l, int reset)
{
    if (l->dead)
        return;
    l->dead = 1;
    idle_remove(l);
    if (l->aprev)
        l->aprev->anext = l->anext;
    else
        R.all_laptops = l->anext;
    if (l->anext)
        l->anext->aprev = l->aprev;
    ep_set(l->fd, &l->ev, &l->events, 0);
    if (reset)
        close_reset(l->fd);
    else
        close(l->fd);
    l->fd = -1;
    free(l->down.buf);
    l->down.buf = NULL;
    R.nlaptops--;
    if (l->p && l->p->l == l)
        l->p->l = NULL;
    l->dnext = R.dead_l;
    R.dead_l = l;
}

static void proxy_free(struct proxy *p, int reset)
{
    if (p->dead)
        return;
    p->dead = 1;
    if (p->waiting)
        wait_remove(p);
    ep_set(p->fd, &p->ev, &p->events, 0);
    if (reset)
        close_reset(p->fd);
    else
        close(p->fd);
    p->fd = -1;
    free(p->up.buf);
    free(p->replay);
    p->up.buf = p->replay = NULL;
    R.npairs--;
    if (p->l) {
        struct laptop *l = p->l;
        p->l = NULL;
        l->p = NULL;
        laptop_free(l, reset);
    }
    p->dnext = R.dead_p;
    R.dead_p = p;
}

/* Control bytes for a laptop stream (hello, ping, connect): tiny, so a
 * partial write only happens on a stream that is going away anyway. */
static int laptop_send(struct laptop *l, const char *b, size_t n)
{
    if (l->out_len + n > sizeof l->out)
        return -1;
    memcpy(l->out + l->out_len, b, n);
    l->out_len += n;
    ssize_t w = send(l->fd, l->out, l->out_len, MSG_NOSIGNAL);
    if (w < 0 && errno != EAGAIN)
        return -1;
    if (w > 0) {
        memmove(l->out, l->out + w, l->out_len - (size_t)w);
        l->out_len -= (size_t)w;
    }
    laptop_events(l);
    return 0;
}

/* Pairs proxy connection p with the most recently heard-from idle laptop
 * stream; 0, or -1 when there is none. Sends 'C' and what the proxy sent so far. */
static int pair(struct proxy *p)
{
    struct laptop *l = R.idle_tail;
    while (l) {
        idle_remove(l);
        if (laptop_send(l, (const char[]){RELAY_CONNECT}, 1) == 0)
            break;
        laptop_free(l, 1);
        l = R.idle_tail;
    }
    if (!l)
        return -1;
    l->state = L_PAIRING;
    l->p = p;
    l->since = now_s();
    p->l = l;
    p->paired_at = l->since;
    if (!l->down.buf && !(l->down.buf = malloc(BUF)))
        return -1;
    l->down.off = l->down.len = 0;
    l->down.eof = l->down.shut = 0;
    /* the proxy's bytes so far go first (a replay after a failed stream) */
    if (p->replay_len > 0) {
        if (p->up.len > 0 || p->replay_len > BUF)
            return -1;   /* cannot happen: up is only filled from the replay copy */
        memcpy(p->up.buf, p->replay, p->replay_len);
        p->up.off = 0;
        p->up.len = p->replay_len;
    }
    R.paired++;
    laptop_events(l);
    proxy_events(p);
    return 0;
}

/* The laptop stream of a pair ended before 'A': replay on another one, or reset the proxy. */
static void pairing_failed(struct proxy *p, const char *why)
{
    struct laptop *l = p->l;
    if (l) {
        p->l = NULL;
        l->p = NULL;
        laptop_free(l, 1);
    }
    if (!p->replay_lost && p->replay_len <= BUF && p->replays++ == 0) {
        p->up.off = p->up.len = 0;
        if (pair(p) == 0) {
            R.replayed++;
            return;
        }
    }
    logf_("proxy connection reset: %s", why);
    proxy_free(p, 1);
}

static void proxy_events(struct proxy *p)
{
    if (p->dead)
        return;
    int want = 0;
    if (!p->up.eof && p->up.len == 0 && p->l)
        want |= EPOLLIN;
    if (p->l && p->l->down.len > 0)
        want |= EPOLLOUT;
    ep_set(p->fd, &p->ev, &p->events, want);
}

static void laptop_events(struct laptop *l)
{
    if (l->dead)
        return;
    int want = 0;
    if (l->out_len > 0)
        want |= EPOLLOUT;
    if (l->state == L_ACTIVE) {
        if (!l->down.eof && l->down.len == 0)
            want |= EPOLLIN;
        if (l->p && l->p->up.len > 0)
            want |= EPOLLOUT;
    } else {
        want |= EPOLLIN;
        if (l->state == L_PAIRING && l->p && l->p->up.len > 0)
            want |= EPOLLOUT;
    }
    ep_set(l->fd, &l->ev, &l->events, want);
}

/* Writes d's bytes to fd; passes EOF on as a half-close. 0 or -1 (error). */
static int dir_flush(struct dir *d, int fd)
{
    while (d->len > 0) {
        ssize_t w = send(fd, d->buf + d->off, d->len, MSG_NOSIGNAL);
        if (w < 0)
            return errno == EAGAIN || errno == EINTR ? 0 : -1;
        d->off += (size_t)w;
        d->len -= (size_t)w;
    }
    d->off = 0;
    if (d->eof && !d->shut) {
        shutdown(fd, SHUT_WR);
        d->shut = 1;
    }
    return 0;
}

/* Reads fd into an empty d. 1 read, 0 nothing now, -1 error. */
static int dir_fill(struct dir *d, int fd)
{
    ssize_t n = recv(fd, d->buf, BUF, 0);
    if (n < 0)
        return errno == EAGAIN || errno == EINTR ? 0 : -1;
    if (n == 0)
        d->eof = 1;
    d->off = 0;
    d->len = (size_t)n;
    return 1;
}

/* Both directions of a pair done: close it. */
static void pair_check_done(struct proxy *p)
{
    struct laptop *l = p->l;
    if (!l || l->state != L_ACTIVE)
        return;
    if (p->up.shut && l->down.shut)
        proxy_free(p, 0);
}

static void on_proxy(struct proxy *p, uint32_t events)
{
    struct laptop *l = p->l;
    if (p->dead || !l)
        return;
    if (events & EPOLLOUT) {
        if (dir_flush(&l->down, p->fd) < 0) {
            proxy_free(p, 1);
            return;
        }
    }
    if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && p->up.len == 0 && !p->up.eof) {
        int r = dir_fill(&p->up, p->fd);
        if (r < 0) {
            proxy_free(p, 1);
            return;
        }
        if (r > 0 && l->state == L_PAIRING && p->up.len > 0 && !p->replay_lost) {
            if (p->replay_len + p->up.len > REPLAY_MAX) {
                p->replay_lost = 1;
            } else {
                char *nr = realloc(p->replay, p->replay_len + p->up.len);
                if (!nr) {
                    p->replay_lost = 1;
                } else {
                    p->replay = nr;
                    memcpy(p->replay + p->replay_len, p->up.buf, p->up.len);
                    p->replay_len += p->up.len;
                }
            }
        }
        /* after the 'C' still queued, never before it */
        if (l->out_len == 0 && dir_flush(&p->up, l->fd) < 0) {
            if (l->state == L_PAIRING)
                pairing_failed(p, "the laptop stream failed");
            else
                proxy_free(p, 1);
            return;
        }
    }
    proxy_events(p);
    laptop_events(l);
    pair_check_done(p);
}

static void laptop_hello(struct laptop *l)
{
    char b[64];
    ssize_t n = recv(l->fd, b, sizeof b, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        laptop_free(l, n < 0);
        return;
    }
    for (ssize_t i = 0; i < n; i++) {
        if (l->state == L_HELLO) {
            l->hello[l->hello_len++] = b[i];
            if (l->hello_len == RELAY_MAGIC_LEN) {
                if (memcmp(l->hello, RELAY_MAGIC, RELAY_MAGIC_LEN) != 0) {
                    laptop_free(l, 1);   /* not czctl: a stray port-forward */
                    return;
                }
                if (R.nidle >= R.o.max_idle) {
                    laptop_free(l, 0);
                    return;
                }
                unsigned iv = (unsigned)(R.o.ping_interval + 0.5);
                char hello[RELAY_HELLO_LEN];
                memcpy(hello, RELAY_MAGIC, RELAY_MAGIC_LEN);
                hello[4] = (char)(iv >> 8);
                hello[5] = (char)iv;
                if (laptop_send(l, hello, sizeof hello) < 0) {
                    laptop_free(l, 1);
                    return;
                }
                l->state = L_IDLE;
                l->last_pong = l->ping_sent = now_s();
                idle_push(l);
            }
        } else if (b[i] == RELAY_PONG && l->state == L_IDLE) {
            l->ping_out = 0;
            l->last_pong = now_s();
            idle_push(l);   /* heard from it: it goes to the end of the list */
        } else {
            laptop_free(l, 1);
            return;
        }
    }
}

/* Before 'A': drops stray pongs, switches to passing bytes on 'A'. */
static void laptop_pairing_read(struct laptop *l)
{
    struct proxy *p = l->p;
    char b[BUF];
    ssize_t n = recv(l->fd, b, sizeof b, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        pairing_failed(p, "the laptop stream ended before it connected");
        return;
    }
    for (ssize_t i = 0; i < n; i++) {
        if (b[i] == RELAY_PONG)
            continue;
        if (b[i] == RELAY_REFUSED) {
            R.landing_refused++;
            logf_("proxy connection reset: the laptop cannot reach its landing");
            proxy_free(p, 1);
            return;
        }
        if (b[i] != RELAY_ACCEPTED) {
            pairing_failed(p, "the laptop stream broke the protocol");
            return;
        }
        l->state = L_ACTIVE;
        free(p->replay);
        p->replay = NULL;
        p->replay_len = 0;
        size_t rest = (size_t)(n - i - 1);
        memcpy(l->down.buf, b + i + 1, rest);
        l->down.off = 0;
        l->down.len = rest;
        if (dir_flush(&l->down, p->fd) < 0) {
            proxy_free(p, 1);
            return;
        }
        break;
    }
    proxy_events(p);
    laptop_events(l);
}

static void on_laptop(struct laptop *l, uint32_t events)
{
    if (l->dead)
        return;
    if ((events & EPOLLOUT) && l->out_len > 0) {
        ssize_t w = send(l->fd, l->out, l->out_len, MSG_NOSIGNAL);
        if (w < 0 && errno != EAGAIN) {
            if (l->p)
                pairing_failed(l->p, "the laptop stream failed");
            else
                laptop_free(l, 1);
            return;
        }
        if (w > 0) {
            memmove(l->out, l->out + w, l->out_len - (size_t)w);
            l->out_len -= (size_t)w;
        }
    }
    struct proxy *p = l->p;
    if (p && (events & EPOLLOUT) && l->out_len == 0) {
        if (dir_flush(&p->up, l->fd) < 0) {
            if (l->state == L_PAIRING)
                pairing_failed(p, "the laptop stream failed");
            else
                proxy_free(p, 1);
            return;
        }
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        if (l->state == L_HELLO || l->state == L_IDLE) {
            laptop_hello(l);
        } else if (l->state == L_PAIRING) {
            laptop_pairing_read(l);
        } else if (p && l->down.len == 0 && !l->down.eof) {
            if (dir_fill(&l->down, l->fd) < 0 || dir_flush(&l->down, p->fd) < 0) {
                proxy_free(p, 1);
                return;
            }
        }
    }
    if (l->dead)
        return;
    if (l->p) {
        proxy_events(l->p);
        laptop_events(l);
        pair_check_done(l->p);
    } else {
        laptop_events(l);
    }
}

/* ---- accepting -------------------------------------------------------------------- */

static void accept_laptops(void)
{
    for (;;) {
        int fd = accept4(R.laptop_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        struct laptop *l = calloc(1, sizeof *l);
        if (!l) {
            close_reset(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        l->ev.kind = K_LAPTOP;
        l->fd = fd;
        l->state = L_HELLO;
        l->since = now_s();
        R.nlaptops++;
        R.laptop_total++;
        l->anext = R.all_laptops;
        if (R.all_laptops)
            R.all_laptops->aprev = l;
        R.all_laptops = l;
        laptop_events(l);
    }
}

static void wait_remove(struct proxy *p)
{
    for (struct proxy **pp = &R.wait_head; *pp; pp = &(*pp)->wnext)
        if (*pp == p) {
            *pp = p->wnext;
            if (R.wait_tail == p) {
                R.wait_tail = NULL;
                for (struct proxy *q = R.wait_head; q; q = q->wnext)
                    R.wait_tail = q;
            }
            p->wnext = NULL;
            p->waiting = 0;
            R.nwaiting--;
            return;
        }
}

/* Waiting proxy connections get the streams that became idle, oldest first;
 * with no laptop stream left at all they are reset (the laptop is gone). */
static void serve_waiting(void)
{
    while (R.wait_head && (R.nidle > 0 || R.nlaptops == 0)) {
        struct proxy *p = R.wait_head;
        wait_remove(p);
        if (R.nidle > 0 && pair(p) == 0)
            continue;
        R.refused++;
        proxy_free(p, 1);
    }
}

static void accept_proxies(void)
{
    for (;;) {
        int fd = accept4(R.proxy_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        R.accepted++;
        int can_wait = R.nlaptops > 0 && R.nwaiting < R.o.max_waiting;
        if ((R.nidle == 0 && !can_wait) || R.npairs >= R.o.max_pairs) {
            R.refused++;
            close_reset(fd);   /* at once: the proxy falls back to the cluster */
            continue;
        }
        struct proxy *p = calloc(1, sizeof *p);
        if (!p || !(p->up.buf = malloc(BUF))) {
            free(p);
            R.refused++;
            close_reset(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        p->ev.kind = K_PROXY;
        p->fd = fd;
        p->since = now_s();
        R.npairs++;
        if (R.nidle == 0) {
            /* the laptop is there but busy: wait for the stream it opens next */
            R.waited++;
            if (R.wait_tail)
                R.wait_tail->wnext = p;
            else
                R.wait_head = p;
            R.wait_tail = p;
            R.nwaiting++;
            p->waiting = 1;
        } else if (pair(p) != 0) {
            R.refused++;
            proxy_free(p, 1);
        }
    }
}

static void accept_health(void)
{
    for (;;) {
        int fd = accept4(R.health_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        struct health *h = calloc(1, sizeof *h);
        if (!h) {
            close(fd);
            continue;
        }
        h->ev.kind = K_HEALTH;
        h->fd = fd;
        h->since = now_s();
        h->next = R.healths;
        R.healths = h;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = h};
        epoll_ctl(R.ep, EPOLL_CTL_ADD, fd, &ev);
    }
}

static void health_close(struct health *h)
{
    epoll_ctl(R.ep, EPOLL_CTL_DEL, h->fd, NULL);
    close(h->fd);
    h->fd = -1;
}

static void on_health(struct health *h)
{
    ssize_t n = recv(h->fd, h->req + h->len, sizeof h->req - 1 - h->len, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        health_close(h);
        return;
    }
    h->len += (size_t)n;
    h->req[h->len] = '\0';
    if (!strstr(h->req, "\r\n\r\n") && !strstr(h->req, "\n\n") && h->len < sizeof h->req - 1)
        return;
    char body[512], resp[768];
    int code = 200;
    if (!strncmp(h->req, "GET /healthz ", 13) || !strncmp(h->req, "GET /readyz ", 12)) {
        snprintf(body, sizeof body, "ok\n");
    } else if (!strncmp(h->req, "GET /stats ", 11)) {
        snprintf(body, sizeof body,
                 "{\"idle\":%d,\"laptop_streams\":%d,\"pairs\":%d,\"waiting\":%d,\"accepted\":%ld,\"refused\":%ld,"
                 "\"paired\":%ld,\"waited\":%ld,\"replayed\":%ld,\"landing_refused\":%ld,"
                 "\"laptop_streams_total\":%ld}\n",
                 R.nidle, R.nlaptops, R.npairs, R.nwaiting, R.accepted, R.refused, R.paired, R.waited, R.replayed,
                 R.landing_refused, R.laptop_total);
    } else {
        code = 404;
        snprintf(body, sizeof body, "not found\n");
    }
    int m = snprintf(resp, sizeof resp, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n%s", code, code == 200 ? "OK" : "Not Found",
                     body[0] == '{' ? "application/json" : "text/plain", strlen(body), body);
    ssize_t w = send(h->fd, resp, (size_t)m, MSG_NOSIGNAL);
    (void)w;
    health_close(h);
}

/* ---- timers ----------------------------------------------------------------------------------- */

static void tick(double now)
{
    for (struct laptop *l = R.all_laptops, *n; l; l = n) {
        n = l->anext;
        if (l->state == L_HELLO && now - l->since > R.o.hello_timeout) {
            laptop_free(l, 1);
        } else if (l->state == L_PAIRING && now - l->since > R.o.pair_timeout) {
            /* a laptop that does not answer 'C' is likely gone altogether: no
             * replay (it would wait as long again), the proxy falls back now */
            logf_("proxy connection reset: the laptop stream did not answer within %.1f s", R.o.pair_timeout);
            proxy_free(l->p, 1);
        } else if (l->state == L_IDLE) {
            if (l->ping_out && now - l->ping_sent > R.o.ping_interval) {
                laptop_free(l, 1);   /* no pong within an interval */
            } else if (!l->ping_out && now - l->ping_sent >= R.o.ping_interval) {
                l->ping_out = 1;
                l->ping_sent = now;
                if (laptop_send(l, (const char[]){RELAY_PING}, 1) < 0)
                    laptop_free(l, 1);
            }
        }
    }
    /* A burst waits while the laptop keeps delivering streams (each one goes
     * to the oldest waiter); the oldest is reset once none came for
     * wait_timeout, measured from its own arrival or the last stream. */
    while (R.wait_head && now - (R.wait_head->since > R.last_idle ? R.wait_head->since : R.last_idle)
                              > R.o.wait_timeout) {
        struct proxy *p = R.wait_head;
        wait_remove(p);
        R.refused++;
        logf_("proxy connection reset: no laptop stream became idle within %.1f s", R.o.wait_timeout);
        proxy_free(p, 1);
    }
    for (struct health *h = R.healths, **hp = &R.healths; h; h = *hp) {
        if (h->fd >= 0 && now - h->since > 5)
            health_close(h);
        if (h->fd < 0) {
            *hp = h->next;
            free(h);
        } else {
            hp = &h->next;
        }
    }
}

static void reap(void)
{
    while (R.dead_p) {
        struct proxy *p = R.dead_p;
        R.dead_p = p->dnext;
        free(p);
    }
    while (R.dead_l) {
        struct laptop *l = R.dead_l;
        R.dead_l = l->dnext;
        free(l);
    }
}

/* ---- main ---------------------------------------------------------------------------------------- */

static int parse_addr(const char *s, struct sockaddr_in *out)
{
    char host[64];
    const char *colon = strrchr(s, ':');
    if (!colon || (size_t)(colon - s) >= sizeof host)
        return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || end == colon + 1 || port < 0 || port > 65535)
        return -1;
    memset(out, 0, sizeof *out);
    out->sin_family = AF_INET;
    out->sin_port = htons((uint16_t)port);
    return inet_pton(AF_INET, host[0] ? host : "0.0.0.0", &out->sin_addr) == 1 ? 0 : -1;
}

static int parse_seconds(const char *s, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (*end || end == s || !(v > 0) || v > 86400)
        return -1;
    *out = v;
    return 0;
}

static int parse_count(const char *s, int *out, int max)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*end || end == s || v < 1 || v > max)
        return -1;
    *out = (int)v;
    return 0;
}

static void usage(FILE *f)
{
    fputs("usage: czctl-relay [--proxy-listen ADDR:PORT] [--laptop-listen ADDR:PORT]\n"
          "                   [--health-listen ADDR:PORT|off] [--ping-interval SECONDS]\n"
          "                   [--pair-timeout SECONDS] [--wait-timeout SECONDS]\n"
          "                   [--max-idle N] [--max-pairs N] [--version]\n"
          "defaults: --proxy-listen 0.0.0.0:9000 --laptop-listen 127.0.0.1:9001\n"
          "          --health-listen 0.0.0.0:9002 --ping-interval 5 --pair-timeout 2\n"
          "          --wait-timeout 1 --max-idle 256 --max-pairs 512\n",
          f);
}

static int listen_on(const struct sockaddr_in *a, const char *what)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
    char s[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &a->sin_addr, s, sizeof s);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, (const struct sockaddr *)a, sizeof *a) != 0 || listen(fd, 512) != 0) {
        fprintf(stderr, "czctl-relay: cannot listen on %s:%d for the %s: %s\n", s, ntohs(a->sin_port), what,
                strerror(errno));
        exit(1);
    }
    return fd;
}

static void bound_port(int fd, struct sockaddr_in *a)
{
    socklen_t l = sizeof *a;
    getsockname(fd, (struct sockaddr *)a, &l);
}

int main(int argc, char **argv)
{
    struct opts *o = &R.o;
    parse_addr("0.0.0.0:9000", &o->proxy);
    parse_addr("127.0.0.1:9001", &o->laptop);
    parse_addr("0.0.0.0:9002", &o->health);
    o->health_on = 1;
    o->ping_interval = 5;
    o->pair_timeout = 2;
    o->hello_timeout = 10;
    o->wait_timeout = 1;
    o->max_idle = 256;
    o->max_pairs = 512;
    o->max_waiting = 256;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
        if (!strcmp(a, "--version")) {
            printf("czctl-relay %s\n", CZCTL_VERSION);
            return 0;
        } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!v) {
            bad = 1;
        } else if (!strcmp(a, "--proxy-listen")) {
            bad = parse_addr(v, &o->proxy);
        } else if (!strcmp(a, "--laptop-listen")) {
            bad = parse_addr(v, &o->laptop);
        } else if (!strcmp(a, "--health-listen")) {
            o->health_on = strcmp(v, "off") != 0;
            bad = o->health_on && parse_addr(v, &o->health);
        } else if (!strcmp(a, "--ping-interval")) {
            bad = parse_seconds(v, &o->ping_interval) || o->ping_interval > 3600;
        } else if (!strcmp(a, "--pair-timeout")) {
            bad = parse_seconds(v, &o->pair_timeout);
        } else if (!strcmp(a, "--wait-timeout")) {
            bad = parse_seconds(v, &o->wait_timeout);
        } else if (!strcmp(a, "--max-idle")) {
            bad = parse_count(v, &o->max_idle, 4096);
        } else if (!strcmp(a, "--max-pairs")) {
            bad = parse_count(v, &o->max_pairs, 65536);
        } else {
            fprintf(stderr, "czctl-relay: unknown option %s (see --help)\n", a);
            return 2;
        }
        if (bad) {
            fprintf(stderr, "czctl-relay: %s needs %s\n", a,
                    strstr(a, "listen") ? "ADDR:PORT (an IPv4 address)" : "a positive number");
            return 2;
        }
        i++;
    }
    signal(SIGPIPE, SIG_IGN);
    sigset_t ss;
    sigemptyset(&ss);
    sigaddset(&ss, SIGTERM);
    sigaddset(&ss, SIGINT);
    sigprocmask(SIG_BLOCK, &ss, NULL);
    R.sig_fd = signalfd(-1, &ss, SFD_NONBLOCK | SFD_CLOEXEC);
    R.ep = epoll_create1(EPOLL_CLOEXEC);
    if (R.sig_fd < 0 || R.ep < 0) {
        perror("czctl-relay: set-up");
        return 1;
    }
    R.proxy_fd = listen_on(&o->proxy, "proxy");
    R.laptop_fd = listen_on(&o->laptop, "laptop streams");
    R.health_fd = o->health_on ? listen_on(&o->health, "probes") : -1;
    bound_port(R.proxy_fd, &o->proxy);
    bound_port(R.laptop_fd, &o->laptop);
    if (o->health_on)
        bound_port(R.health_fd, &o->health);
    R.lp.kind = K_LISTEN_PROXY;
    R.ll.kind = K_LISTEN_LAPTOP;
    R.lh.kind = K_LISTEN_HEALTH;
    R.sig.kind = K_SIGNAL;
    struct epoll_event e1 = {.events = EPOLLIN, .data.ptr = &R.lp}, e2 = {.events = EPOLLIN, .data.ptr = &R.ll},
                       e3 = {.events = EPOLLIN, .data.ptr = &R.lh}, e4 = {.events = EPOLLIN, .data.ptr = &R.sig};
    epoll_ctl(R.ep, EPOLL_CTL_ADD, R.proxy_fd, &e1);
    epoll_ctl(R.ep, EPOLL_CTL_ADD, R.laptop_fd, &e2);
    if (o->health_on)
        epoll_ctl(R.ep, EPOLL_CTL_ADD, R.health_fd, &e3);
    epoll_ctl(R.ep, EPOLL_CTL_ADD, R.sig_fd, &e4);
    char a1[INET_ADDRSTRLEN], a2[INET_ADDRSTRLEN], a3[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &o->proxy.sin_addr, a1, sizeof a1);
    inet_ntop(AF_INET, &o->laptop.sin_addr, a2, sizeof a2);
    inet_ntop(AF_INET, &o->health.sin_addr, a3, sizeof a3);
    /* one line tests and operators can read: where everything listens */
    printf("czctl-relay %s listening proxy=%s:%d laptop=%s:%d health=%s%s:%d\n", CZCTL_VERSION, a1,
           ntohs(o->proxy.sin_port), a2, ntohs(o->laptop.sin_port), o->health_on ? "" : "off,", a3,
           ntohs(o->health.sin_port));
    fflush(stdout);

    struct epoll_event evs[64];
    double next_tick = now_s() + 0.25;
    while (!R.stop) {
        double wait = next_tick - now_s();
        int n = epoll_wait(R.ep, evs, 64, wait <= 0 ? 0 : (int)(wait * 1000) + 1);
        if (n < 0 && errno != EINTR)
            break;
        for (int i = 0; i < n; i++) {
            struct ev *e = evs[i].data.ptr;
            switch (e->kind) {
            case K_LISTEN_PROXY: accept_proxies(); break;
            case K_LISTEN_LAPTOP: accept_laptops(); break;
            case K_LISTEN_HEALTH: accept_health(); break;
            case K_SIGNAL: R.stop = 1; break;
            case K_LAPTOP: on_laptop((struct laptop *)e, evs[i].events); break;
            case K_PROXY: on_proxy((struct proxy *)e, evs[i].events); break;
            case K_HEALTH: on_health((struct health *)e); break;
            }
        }
        serve_waiting();
        idle_log();
        double now = now_s();
        if (now >= next_tick) {
            tick(now);
            next_tick = now + (R.wait_head ? 0.05 : 0.25);
        }
        reap();
    }
    logf_("stopping");
    return 0;
}
