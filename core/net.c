/*
 * net.c: czctl.core.net: TCP connect probes, free local ports and plain
 * HTTP(S) requests over libcurl (tunnel agents' local APIs, health checks).
 *
 * Also owns the lazy curl_global_init shared with kube.c. Every wait here
 * wakes on the signal self-pipe. It must not know about Kubernetes
 * credentials: the Kubernetes client lives in kube.c.
 */
#define _GNU_SOURCE   /* pipe2, O_CLOEXEC, getrandom, ... */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <curl/curl.h>
#include <lauxlib.h>
#include <lua.h>

#include "czctl.h"

/* ---- libcurl global state ------------------------------------------------- */

static int curl_ready;

int czctl_curl_init(void)
{
    if (curl_ready)
        return 0;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return -1;
    curl_ready = 1;
    return 0;
}

void czctl_curl_cleanup(void)
{
    if (curl_ready) {
        curl_global_cleanup();
        curl_ready = 0;
    }
}

/* ---- helpers ---------------------------------------------------------------- */

static void freeaddrinfo_release(void *ai)
{
    freeaddrinfo(ai);
}

/* ---- probe ------------------------------------------------------------------ */

/* net.probe(host, port[, timeout=2]) -> true | nil, msg
 * Non-blocking connect to every address of host in turn until one accepts
 * or the total timeout passes. Raises on bad arguments. */
static int net_probe(lua_State *L)
{
    const char *host = luaL_checkstring(L, 1);
    lua_Integer port = luaL_checkinteger(L, 2);
    luaL_argcheck(L, port > 0 && port < 65536, 2, "port must be in 1..65535");
    double timeout = czctl_opt_seconds(L, 3, 2.0);
    double deadline = czctl_now() + timeout;
    char service[16];
    snprintf(service, sizeof service, "%d", (int)port);

    czctl_box *box = czctl_box_new(L);
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int gai = getaddrinfo(host, service, &hints, &res);
    if (gai != 0) {
        lua_pushfstring(L, "%s: %s", host, gai_strerror(gai));
        return czctl_fail(L, lua_tostring(L, -1));
    }
    box->ptr = res;
    box->release = freeaddrinfo_release;
    int last_err = ECONNREFUSED;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        box->fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
                         ai->ai_protocol);
        if (box->fd < 0) {
            last_err = errno;
            continue;
        }
        int r = connect(box->fd, ai->ai_addr, ai->ai_addrlen);
        if (r != 0 && errno != EINPROGRESS) {
            last_err = errno;
        } else if (r != 0) {
            double left = deadline - czctl_now();
            int w = czctl_wait_fd(box->fd, POLLOUT, left > 0 ? left : 0);
            if (w == -2) {
                czctl_box_release(box);
                return czctl_fail(L, "interrupted");
            }
            if (w == 0) {
                last_err = ETIMEDOUT;
            } else if (w < 0) {
                last_err = errno;
            } else {
                int soerr = 0;
                socklen_t sl = sizeof soerr;
                if (getsockopt(box->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0)
                    soerr = errno;
                if (soerr == 0)
                    r = 0;
                else
                    last_err = soerr;
            }
        }
        close(box->fd);
        box->fd = -1;
        if (r == 0) {
            czctl_box_release(box);
            lua_pushboolean(L, 1);
            return 1;
        }
        if (last_err == ETIMEDOUT || czctl_now() >= deadline)
            break;
    }
    czctl_box_release(box);
    lua_pushfstring(L, "%s:%d: %s", host, (int)port, strerror(last_err));
    return czctl_fail(L, lua_tostring(L, -1));
}

/* ---- free_port ---------------------------------------------------------------- */

/* net.free_port([host="127.0.0.1"]) -> port | nil, msg
 * Binds port 0 and reports what the kernel chose. The port is free now; a
 * caller that needs it must bind it soon. */
static int net_free_port(lua_State *L)
{
    const char *host = luaL_optstring(L, 1, "127.0.0.1");
    czctl_box *box = czctl_box_new(L);
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV | AI_PASSIVE;
    int gai = getaddrinfo(host, "0", &hints, &res);
    if (gai != 0) {
        lua_pushfstring(L, "%s: %s", host, gai_strerror(gai));
        return czctl_fail(L, lua_tostring(L, -1));
    }
    box->ptr = res;
    box->release = freeaddrinfo_release;
    box->fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (box->fd < 0 || bind(box->fd, res->ai_addr, res->ai_addrlen) != 0 ||
        getsockname(box->fd, (struct sockaddr *)&ss, &sl) != 0) {
        int e = errno;
        czctl_box_release(box);
        lua_pushfstring(L, "%s: %s", host, strerror(e));
        return czctl_fail(L, lua_tostring(L, -1));
    }
    czctl_box_release(box);
    int port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                        : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    lua_pushinteger(L, port);
    return 1;
}

/* ---- http ----------------------------------------------------------------------- */

/* Everything one request owns; a handle on the stack, so a raise frees it. */
struct http_req {
    CURL *curl;
    struct curl_slist *headers;
    czctl_buf body;      /* response body */
    czctl_buf hdrs;      /* raw response header lines of the last response */
    int interrupted;
};

static void http_release(void *handle)
{
    struct http_req *h = handle;
    if (h->curl) {
        curl_easy_cleanup(h->curl);
        h->curl = NULL;
    }
    if (h->headers) {
        curl_slist_free_all(h->headers);
        h->headers = NULL;
    }
    czctl_buf_free(&h->body);
    czctl_buf_free(&h->hdrs);
}

static const czctl_class http_class = {"czctl.net.request", "http request", NULL, http_release, NULL};

static size_t http_on_body(char *data, size_t size, size_t n, void *ud)
{
    struct http_req *h = ud;
    size_t len = size * n;
    return czctl_buf_add(&h->body, data, len) == 0 ? len : 0;
}

static size_t http_on_header(char *data, size_t size, size_t n, void *ud)
{
    struct http_req *h = ud;
    size_t len = size * n;
    /* a new status line starts a new response (redirect, 100 Continue) */
    if (len >= 5 && memcmp(data, "HTTP/", 5) == 0)
        czctl_buf_reset(&h->hdrs);
    return czctl_buf_add(&h->hdrs, data, len) == 0 ? len : 0;
}

static int http_on_progress(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut,
                            curl_off_t un)
{
    struct http_req *h = ud;
    (void)dt, (void)dn, (void)ut, (void)un;
    if (czctl_signal_pending()) {
        h->interrupted = 1;
        return 1;   /* abort the transfer */
    }
    return 0;
}

void czctl_push_headers(lua_State *L, const char *raw, size_t len)
{
    lua_newtable(L);
    const char *p = raw, *end = raw ? raw + len : NULL;
    while (p && p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *next = eol ? eol + 1 : end;
        if (!eol)
            eol = end;
        const char *colon = memchr(p, ':', (size_t)(eol - p));
        int status_line = eol - p >= 5 && memcmp(p, "HTTP/", 5) == 0;
        if (colon && colon > p && !status_line) {
            luaL_Buffer b;
            char *name = luaL_buffinitsize(L, &b, (size_t)(colon - p));
            for (const char *q = p; q < colon; q++)
                name[q - p] = (char)((*q >= 'A' && *q <= 'Z') ? *q + 32 : *q);
            luaL_pushresultsize(&b, (size_t)(colon - p));
            const char *v = colon + 1, *ve = eol;
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            lua_pushvalue(L, -1);
            /* a repeated header is one comma-separated list; empty
             * elements add nothing (RFC 9110, 5.6.1) */
            if (lua_rawget(L, -3) == LUA_TSTRING && lua_rawlen(L, -1) > 0 && ve > v) {
                lua_pushliteral(L, ", ");
                lua_pushlstring(L, v, (size_t)(ve - v));
                lua_concat(L, 3);
            } else if (lua_type(L, -1) != LUA_TSTRING || ve > v) {
                lua_pop(L, 1);
                lua_pushlstring(L, v, (size_t)(ve - v));
            }
            lua_rawset(L, -3);
        }
        p = next;
    }
}

int czctl_header_value_ok(const char *v)
{
    for (const unsigned char *p = (const unsigned char *)v; *p; p++)
        if ((*p < 0x20 && *p != '\t') || *p == 0x7f)
            return 0;
    return 1;
}

/* An HTTP token: method or header name. */
static int is_token(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f || strchr("()<>@,;:\\\"/[]?={}", *s))
            return 0;
    return 1;
}

/* net.http{ method=, url=, headers=, body=, timeout=30, connect_timeout=10,
 *           insecure=false } -> status, body, headers | nil, msg
 * Raises on bad arguments; transport failures (and signals: "interrupted")
 * return nil, msg. Only http and https URLs; redirects are not followed. */
static int net_http(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "url");
    const char *url = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    luaL_argcheck(L, url && czctl_header_value_ok(url), 1, "url must be a string without control characters");
    lua_getfield(L, 1, "method");
    const char *method = lua_isnil(L, -1) ? "GET" : lua_tostring(L, -1);
    luaL_argcheck(L, method && is_token(method), 1, "method must be a word such as \"GET\"");
    lua_getfield(L, 1, "body");
    size_t body_len = 0;
    luaL_argcheck(L, lua_isnil(L, -1) || lua_type(L, -1) == LUA_TSTRING, 1,
                  "body must be a string");
    const char *body = lua_isnil(L, -1) ? NULL : lua_tolstring(L, -1, &body_len);
    double timeout = czctl_field_seconds(L, 1, "timeout", 30.0);
    double ctimeout = czctl_field_seconds(L, 1, "connect_timeout", 10.0);
    lua_getfield(L, 1, "insecure");
    int insecure = lua_toboolean(L, -1);
    lua_getfield(L, 1, "headers");
    int headers_idx = lua_gettop(L);
    luaL_argcheck(L, lua_isnil(L, -1) || lua_istable(L, -1), 1, "headers must be a table");

    /* every resource from here on hangs off the userdata */
    struct http_req *h = czctl_handle_new(L, &http_class, sizeof *h, 0);

    if (lua_istable(L, headers_idx)) {
        lua_pushnil(L);
        while (lua_next(L, headers_idx)) {
            if (lua_type(L, -2) != LUA_TSTRING || !lua_isstring(L, -1) ||
                !is_token(lua_tostring(L, -2)) || !czctl_header_value_ok(lua_tostring(L, -1))) {
                http_release(h);
                return luaL_argerror(L, 1, "headers must map strings to strings");
            }
            lua_pushfstring(L, "%s: %s", lua_tostring(L, -2), lua_tostring(L, -1));
            struct curl_slist *n = curl_slist_append(h->headers, lua_tostring(L, -1));
            lua_pop(L, 2);
            if (!n) {
                http_release(h);
                return czctl_fail(L, "out of memory");
            }
            h->headers = n;
        }
    }
    if (czctl_signal_pending()) {
        http_release(h);
        return czctl_fail(L, "interrupted");
    }
    if (czctl_curl_init() != 0 || !(h->curl = curl_easy_init())) {
        http_release(h);
        return czctl_fail(L, "cannot initialise libcurl");
    }
    CURL *c = h->curl;
    char errbuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (strcmp(method, "HEAD") == 0)
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h->headers);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)(timeout * 1000));
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)(ctimeout * 1000));
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    /* *_proxy variables apply, but never to loopback (agents' local APIs) */
    curl_easy_setopt(c, CURLOPT_NOPROXY, "localhost,127.0.0.0/8,::1");
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, http_on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, h);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, http_on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, h);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, http_on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, h);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    if (insecure) {
        curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    CURLcode rc = curl_easy_perform(c);
    if (rc != CURLE_OK) {
        if (h->interrupted || (rc == CURLE_ABORTED_BY_CALLBACK && czctl_signal_pending()))
            lua_pushliteral(L, "interrupted");
        else
            lua_pushfstring(L, "%s: %s", url, errbuf[0] ? errbuf : curl_easy_strerror(rc));
        http_release(h);
        return czctl_fail(L, lua_tostring(L, -1));
    }
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    lua_pushinteger(L, status);
    lua_pushlstring(L, h->body.data ? h->body.data : "", h->body.len);
    czctl_push_headers(L, h->hdrs.data, h->hdrs.len);
    http_release(h);
    return 3;
}

static const luaL_Reg net_funcs[] = {
    {"free_port", net_free_port},
    {"http", net_http},
    {"probe", net_probe},
    {NULL, NULL},
};

int luaopen_czctl_core_net(lua_State *L)
{
    luaL_newlib(L, net_funcs);
    return 1;
}
