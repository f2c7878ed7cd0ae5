/*
 * kube.c: the czctl.core.kube Lua module: load a kubeconfig (kubeconfig.c),
 * make REST requests and stream watches over libcurl.
 *
 * Handles are czctl classes (czctl.h: "czctl.kube.config",
 * "czctl.kube.client", "czctl.kube.watch"): one idempotent close behind
 * :close(), __close and __gc, and __tostring. Every malloc'd buffer, CURL and CURLM
 * handle is owned by a userdata created before it is acquired, so a Lua error
 * (memory errors included) never leaks one. Misuse raises; failures of the
 * world return nil, message.
 *
 * Credentials stay here: they are put into libcurl options and request
 * headers only, never pushed to Lua, never logged (verbose mode prints the
 * method, URL, status, timing and whether a new connection was opened), never
 * put into an error message.
 *
 * tls-server-name: libcurl has no SNI override (curl/curl#607, PR #5239: the
 * maintainers point at --resolve/--connect-to). So the request URL carries
 * tls-server-name as its host (libcurl sends it as SNI and verifies the
 * certificate against it), CURLOPT_CONNECT_TO sends the connection to the
 * real server host:port, and an explicit Host header keeps the server's own
 * authority in the request, as client-go does.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <curl/curl.h>
#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>

#include "buf.h"
#include "czctl.h"
#include "kubeconfig.h"
#include "tls.h"

#ifndef CZCTL_VERSION
#define CZCTL_VERSION "0.0.0-dev"
#endif

static const czctl_class cfg_class, client_class, watch_class;

#define MAX_BODY (512u * 1024u * 1024u)   /* refuse absurd responses */
#define MAX_HEADERS (1024u * 1024u)
#define WATCH_PAUSE_AT (8u * 1024u * 1024u)

static size_t on_body(char *d, size_t sz, size_t n, void *ud)
{
    return czctl_buf_add(ud, d, sz * n) == 0 ? sz * n : 0;
}

/* Header lines of the last response only (a new status line starts over). */
static size_t on_header(char *d, size_t sz, size_t n, void *ud)
{
    czctl_buf *b = ud;
    if (sz * n >= 5 && !memcmp(d, "HTTP/", 5))
        czctl_buf_reset(b);
    return czctl_buf_add(b, d, sz * n) == 0 ? sz * n : 0;
}

/* Wipe secrets in a header list (Authorization) before freeing it. */
static void slist_wipe_free(struct curl_slist **l)
{
    for (struct curl_slist *s = *l; s; s = s->next)
        if (s->data)
            explicit_bzero(s->data, strlen(s->data));
    curl_slist_free_all(*l);
    *l = NULL;
}

static void wipe_free(char **s)
{
    if (*s) {
        explicit_bzero(*s, strlen(*s));
        free(*s);
        *s = NULL;
    }
}

/* ---- config ------------------------------------------------------------ */

/* A client holds its own reference to the kc_config (kubeconfig_ref), so
 * closing the config from Lua leaves the clients made from it working. */
typedef struct kube_cfg {
    kc_config *c;
    char *err;      /* load error, owned here so a raise while pushing it cannot leak it */
} kube_cfg;

static void cfg_release(void *handle)
{
    kube_cfg *k = handle;
    kubeconfig_free(k->c);   /* drops this reference; secrets wiped with the last */
    k->c = NULL;
    free(k->err);
    k->err = NULL;
}

/* `kube config (context "kind-dev")` */
static void cfg_describe(lua_State *L, const void *handle)
{
    const kube_cfg *k = handle;
    if (k->c)
        lua_pushfstring(L, "kube config (context \"%s\")", k->c->context);
    else
        lua_pushliteral(L, "kube config (not loaded)");
}

/* The open config at index i; raises when it is not one or is closed. */
static kube_cfg *check_cfg(lua_State *L, int i)
{
    kube_cfg *k = czctl_handle_check_open(L, i, &cfg_class);
    if (!k->c)
        luaL_argerror(L, i, "kube config is not loaded");
    return k;
}

static int opt_bool(lua_State *L, int t, const char *key)
{
    lua_getfield(L, t, key);
    int v = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

/* load_config{kubeconfig=, context=} -> cfg | nil, err */
static int kube_load_config(lua_State *L)
{
    kc_options o = {0};
    if (!lua_isnoneornil(L, 1)) {
        luaL_checktype(L, 1, LUA_TTABLE);
        o.kubeconfig = czctl_field_string(L, 1, "kubeconfig");
        o.context = czctl_field_string(L, 1, "context");
    }
    kube_cfg *k = czctl_handle_new(L, &cfg_class, sizeof *k, 0);
    if (kubeconfig_load(&o, &k->c, &k->err) < 0) {
        return czctl_fail(L, k->err);
    }
    return 1;
}

static void set_str(lua_State *L, const char *key, const char *v)
{
    if (v) {
        lua_pushstring(L, v);
        lua_setfield(L, -2, key);
    }
}

/* Like set_str for a URL, its secret replaced by "xxxxx" (as Go's
 * url.Redacted writes a password): proxy URLs often carry one, and no
 * secret goes to Lua. */
static void set_url(lua_State *L, const char *key, const char *url)
{
    size_t from, to;
    if (!url)
        return;
    if (kube_url_secret_span(url, &from, &to)) {
        lua_pushlstring(L, url, from);
        lua_pushliteral(L, "xxxxx");
        lua_pushstring(L, url + to);
        lua_concat(L, 3);
    } else {
        lua_pushstring(L, url);
    }
    lua_setfield(L, -2, key);
}

/* A URL as an error message may show it (see kube_url_secret_span); NULL when
 * out of memory. */
static char *url_for_message(const char *url)
{
    size_t from, to;
    char *out = NULL;
    if (!kube_url_secret_span(url, &from, &to))
        return strdup(url);
    if (asprintf(&out, "%.*sxxxxx%s", (int)from, url, url + to) < 0)
        return NULL;
    return out;
}

/* cfg:info() -> table without secrets */
static int cfg_info(lua_State *L)
{
    kc_config *c = check_cfg(L, 1)->c;
    lua_createtable(L, 0, 16);
    set_str(L, "context", c->context);
    set_str(L, "cluster", c->cluster);
    set_str(L, "user", c->user);
    set_str(L, "namespace", c->namespace);
    set_url(L, "server", c->server);
    set_str(L, "auth", c->auth);
    set_str(L, "source", c->source);
    set_str(L, "tls_server_name", c->tls_server_name);
    set_url(L, "proxy_url", c->proxy_url);
    set_str(L, "certificate_authority", c->ca_file);
    set_str(L, "client_certificate", c->cert_file);
    set_str(L, "client_key", c->key_file);
    set_str(L, "token_file", c->token_file);
    if (c->exec)
        set_str(L, "exec_command", c->exec->command);
    lua_pushboolean(L, c->insecure);
    lua_setfield(L, -2, "insecure");
    lua_pushboolean(L, c->in_cluster);
    lua_setfield(L, -2, "in_cluster");
    lua_pushboolean(L, c->ca.data != NULL && c->ca_file == NULL);
    lua_setfield(L, -2, "certificate_authority_data");
    return 1;
}

/* ---- signals & driving a transfer -------------------------------------- */

enum { DRIVE_DONE = 1, DRIVE_READY = 0, DRIVE_TIMEOUT = -1, DRIVE_INTR = -2, DRIVE_ERR = -3 };

/*
 * Run the multi handle until the transfer of easy completes (DRIVE_DONE,
 * *res set), ready(ud) becomes true (DRIVE_READY), timeout_s passes
 * (timeout_s < 0: none), or a signal is pending (DRIVE_INTR).
 */
static int drive(CURLM *m, CURL *easy, double timeout_s, int (*ready)(void *), void *ud, CURLcode *res)
{
    double deadline = timeout_s >= 0 ? czctl_now() + timeout_s : -1;
    int use_sigfd = 1, done = 0;
    for (;;) {
        int running = 0;
        if (curl_multi_perform(m, &running) != CURLM_OK)
            return DRIVE_ERR;
        CURLMsg *msg;
        int q;
        while ((msg = curl_multi_info_read(m, &q)))
            if (msg->msg == CURLMSG_DONE && msg->easy_handle == easy) {
                *res = msg->data.result;
                done = 1;
            }
        if (done) /* before ready(): the DONE message is only reported once */
            return DRIVE_DONE;
        if (ready && ready(ud))
            return DRIVE_READY;
        if (czctl_signal_pending())
            return DRIVE_INTR;
        int wait_ms = 1000;
        if (deadline >= 0) {
            double rem = deadline - czctl_now();
            if (rem <= 0)
                return DRIVE_TIMEOUT;
            if (rem * 1000 < wait_ms)
                wait_ms = (int)(rem * 1000) + 1;
        }
        struct curl_waitfd extra = {.fd = czctl_signal_fd(), .events = CURL_WAIT_POLLIN, .revents = 0};
        int nextra = use_sigfd && extra.fd >= 0;
        if (curl_multi_poll(m, nextra ? &extra : NULL, (unsigned)nextra, wait_ms, NULL) != CURLM_OK)
            return DRIVE_ERR;
        if (nextra && extra.revents && !czctl_signal_pending())
            use_sigfd = 0; /* readable without a pending signal: don't spin on it */
    }
}

/* ---- client ------------------------------------------------------------- */

typedef struct kube_client {
    CURL *easy;
    CURLM *multi;
    kc_config *c;               /* owned by the cfg userdata (uservalue 1) */
    double timeout, connect_timeout;
    int verbose;
    char *user_agent;           /* czctl/VERSION (os/arch) [component], as kubectl's */
    char *base;                 /* server URL without trailing '/', host possibly = tls-server-name */
    char *host_header;          /* "Host: ..." when tls-server-name rewrites the URL */
    char *url_user, *url_password; /* userinfo of the server URL, moved out of base (wiped) */
    struct curl_slist *connect_to;
    int no_proxy;               /* loopback server without proxy-url: Go never proxies it */
    int https;
    struct curl_slist *headers; /* per request; may hold Authorization, wiped */
    czctl_buf body, hdrs;         /* body: secret (Secrets, tokens in objects) */
    czctl_tls_check tls;        /* subjectAltName required, as Go requires it */
    char *errmsg;               /* last error message, owned here (see client_fail) */
    char errbuf[CURL_ERROR_SIZE];
    unsigned long requests, connections;
} kube_client;

/* The open client at index i; raises when it is not one or is closed. */
static kube_client *check_client(lua_State *L, int i)
{
    kube_client *k = czctl_handle_check_open(L, i, &client_class);
    if (!k->easy)
        luaL_argerror(L, i, "kube client is not connected");
    return k;
}

/* Frees an easy handle and its multi handle (taking the easy one out of the
 * multi first when it may be in it). Idempotent. */
static void transfer_free(CURLM **multi, CURL **easy, int added)
{
    if (*easy) {
        if (*multi && added)
            curl_multi_remove_handle(*multi, *easy);
        curl_easy_cleanup(*easy);
        *easy = NULL;
    }
    if (*multi) {
        curl_multi_cleanup(*multi);
        *multi = NULL;
    }
}

static void client_release(void *handle)
{
    kube_client *k = handle;
    transfer_free(&k->multi, &k->easy, 1);
    slist_wipe_free(&k->headers);
    curl_slist_free_all(k->connect_to);
    k->connect_to = NULL;
    free(k->user_agent);
    k->user_agent = NULL;
    free(k->base);
    k->base = NULL;
    free(k->host_header);
    k->host_header = NULL;
    wipe_free(&k->url_user);
    wipe_free(&k->url_password);
    czctl_tls_check_free(&k->tls);
    czctl_buf_free(&k->body);
    czctl_buf_free(&k->hdrs);
    free(k->errmsg);
    k->errmsg = NULL;
    kubeconfig_free(k->c);   /* this client's reference */
    k->c = NULL;
}

/* `kube client (https://127.0.0.1:6443)`: the server, never a credential */
static void client_describe(lua_State *L, const void *handle)
{
    const kube_client *k = handle;
    lua_pushfstring(L, "kube client (%s)", k->base ? k->base : "not connected");
}

/* Return nil, msg for a malloc'd msg: the client owns it until the next error
 * or close, so a memory error while pushing it leaks nothing. */
static int client_fail(lua_State *L, kube_client *k, char *msg)
{
    free(k->errmsg);
    k->errmsg = msg;
    return czctl_fail(L, msg ? msg : "out of memory");
}

static int is_loopback_host(const char *h)
{
    return !strcmp(h, "localhost") || !strncmp(h, "127.", 4) || !strcmp(h, "[::1]") || !strcmp(h, "::1");
}

/* TLS settings client-go refuses (rest.TLSConfigFor), so kubectl does too:
 * a CA together with insecure-skip-tls-verify. 0 or -1 with *err. */
static int check_tls(const kc_config *c, char **err)
{
    if (c->insecure && c->ca.data) {
        *err = kc_errf("cluster \"%s\": specifying a root certificates file with the insecure flag is not "
                       "allowed (remove certificate-authority or insecure-skip-tls-verify from the kubeconfig)",
                       c->cluster);
        return -1;
    }
    return 0;
}

/* Work out base URL, connect-to and Host header. 0 or -1 with *err. */
static int client_prepare_url(kube_client *k, char **err)
{
    kc_config *c = k->c;
    CURLU *u = curl_url();
    char *host = NULL, *port = NULL, *dport = NULL, *scheme = NULL, *url = NULL;
    int rc = -1;
    if (!u) {
        *err = kc_errf("out of memory");
        return -1;
    }
    if (curl_url_set(u, CURLUPART_URL, c->server, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_PORT, &dport, CURLU_DEFAULT_PORT) != CURLUE_OK) {
        char *shown = url_for_message(c->server);
        *err = kc_errf("cluster \"%s\": invalid server URL \"%s\"", c->cluster, shown ? shown : "?");
        free(shown);
        goto out;
    }
    if (strcmp(scheme, "https") && strcmp(scheme, "http")) {
        char *shown = url_for_message(c->server);
        *err = kc_errf("cluster \"%s\": unsupported scheme in server URL \"%s\"", c->cluster,
                       shown ? shown : "?");
        free(shown);
        goto out;
    }
    if (curl_url_get(u, CURLUPART_PORT, &port, 0) != CURLUE_OK)
        port = NULL;
    /* a user:password in the server URL goes to libcurl as options, so base
     * (logged with --verbose, put into error messages and Lua) holds none */
    char *part = NULL;
    CURLUcode ur = curl_url_get(u, CURLUPART_USER, &part, CURLU_URLDECODE), pr = CURLUE_OK;
    if (ur == CURLUE_OK) {
        k->url_user = strdup(part);
        explicit_bzero(part, strlen(part));
        curl_free(part);
        part = NULL;
        if ((pr = curl_url_get(u, CURLUPART_PASSWORD, &part, CURLU_URLDECODE)) != CURLUE_OK)
            part = NULL;
        k->url_password = strdup(part ? part : "");
        if (part) {
            explicit_bzero(part, strlen(part));
            curl_free(part);
        }
        if (!k->url_user || !k->url_password)
            goto oom;
        curl_url_set(u, CURLUPART_USER, NULL, 0);
        curl_url_set(u, CURLUPART_PASSWORD, NULL, 0);
    }
    if (ur == CURLUE_URLDECODE || pr == CURLUE_URLDECODE) {
        /* libcurl will not decode a control character (%0D, %0A...) */
        *err = kc_errf("invalid header field value for \"Authorization\": the user:password in the server URL of "
                       "cluster \"%s\" contains a control character (such as CR or LF); fix the credential",
                       c->cluster);
        goto out;
    }
    k->no_proxy = !c->proxy_url && is_loopback_host(host);
    k->https = !strcmp(scheme, "https");
    if (czctl_tls_expect_host(&k->tls, c->tls_server_name ? c->tls_server_name : host) < 0)
        goto oom;
    if (c->tls_server_name && !strcmp(scheme, "https")) {
        char *ct = NULL;
        if (asprintf(&k->host_header, port ? "Host: %s:%s" : "Host: %s", host, port) < 0) {
            k->host_header = NULL;
            goto oom;
        }
        if (asprintf(&ct, "%s:%s:%s:%s", c->tls_server_name, dport, host, dport) < 0)
            goto oom;
        struct curl_slist *l = curl_slist_append(NULL, ct);
        free(ct);
        if (!l)
            goto oom;
        k->connect_to = l;
        if (curl_url_set(u, CURLUPART_HOST, c->tls_server_name, 0) != CURLUE_OK ||
            curl_url_set(u, CURLUPART_PORT, dport, 0) != CURLUE_OK) {
            *err = kc_errf("cluster \"%s\": invalid tls-server-name \"%s\"", c->cluster, c->tls_server_name);
            goto out;
        }
    }
    if (curl_url_get(u, CURLUPART_URL, &url, 0) != CURLUE_OK)
        goto oom;
    size_t n = strlen(url);
    while (n > 0 && url[n - 1] == '/')
        n--;
    k->base = strndup(url, n);
    if (!k->base)
        goto oom;
    rc = 0;
    goto out;
oom:
    *err = kc_errf("out of memory");
out:
    curl_free(host);
    curl_free(port);
    curl_free(dport);
    curl_free(scheme);
    curl_free(url);
    curl_url_cleanup(u);
    return rc;
}

/* Basic auth credentials (the kubeconfig's, or a user:password in the
 * server URL) go into an Authorization header too: a control character in
 * them is refused like one in a token. 0 or -1 with *err. */
static int check_basic_auth(const kube_client *k, char **err)
{
    const kc_config *c = k->c;
    const char *what = NULL;
    if (!strcmp(c->auth, "basic") &&
        ((c->username && !czctl_header_value_ok(c->username)) || (c->password && !czctl_header_value_ok(c->password))))
        what = "the username or password of user";
    else if (k->url_user && (!czctl_header_value_ok(k->url_user) || !czctl_header_value_ok(k->url_password)))
        what = "the user:password in the server URL of cluster";
    if (!what)
        return 0;
    *err = kc_errf("invalid header field value for \"Authorization\": %s \"%s\" contains a control character "
                   "(such as CR or LF); fix the credential",
                   what, !strcmp(c->auth, "basic") ? c->user : c->cluster);
    return -1;
}

/* Options shared by the request handle and every watch handle. */
static int setup_easy(kube_client *k, CURL *e, czctl_buf *body, czctl_buf *hdrs, char *errbuf)
{
    kc_config *c = k->c;
    int bad = 0;
#define SET(opt, val) bad |= curl_easy_setopt(e, opt, val) != CURLE_OK
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    SET(CURLOPT_USERAGENT, k->user_agent);
    SET(CURLOPT_CONNECTTIMEOUT_MS, (long)(k->connect_timeout * 1000));
    SET(CURLOPT_TCP_KEEPALIVE, 1L);
    SET(CURLOPT_ERRORBUFFER, errbuf);
    SET(CURLOPT_WRITEFUNCTION, on_body);
    SET(CURLOPT_WRITEDATA, body);
    SET(CURLOPT_HEADERFUNCTION, on_header);
    SET(CURLOPT_HEADERDATA, hdrs);
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    if (!c->disable_compression)
        SET(CURLOPT_ACCEPT_ENCODING, "");
    if (c->insecure) {
        SET(CURLOPT_SSL_VERIFYPEER, 0L);
        SET(CURLOPT_SSL_VERIFYHOST, 0L);
    } else if (k->https) {
        bad |= czctl_tls_require_san(e, &k->tls) != 0;
    }
    if (!c->insecure && c->ca.data) {
        /* only the configured CA, as client-go (RootCAs = that pool) */
        struct curl_blob blob = {c->ca.data, c->ca.len, CURL_BLOB_COPY};
        SET(CURLOPT_CAINFO, NULL);
        SET(CURLOPT_CAPATH, NULL);
        SET(CURLOPT_CAINFO_BLOB, &blob);
    }
    if (c->cert.data && c->key.data) {
        struct curl_blob cb = {c->cert.data, c->cert.len, CURL_BLOB_COPY};
        struct curl_blob kb = {c->key.data, c->key.len, CURL_BLOB_COPY};
        SET(CURLOPT_SSLCERTTYPE, "PEM");
        SET(CURLOPT_SSLCERT_BLOB, &cb);
        SET(CURLOPT_SSLKEYTYPE, "PEM");
        SET(CURLOPT_SSLKEY_BLOB, &kb);
    }
    if (!strcmp(c->auth, "basic")) {
        SET(CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        SET(CURLOPT_USERNAME, c->username ? c->username : "");
        SET(CURLOPT_PASSWORD, c->password ? c->password : "");
    } else if (k->url_user) {
        /* as Go does with URL userinfo: basic auth unless an Authorization header is set */
        SET(CURLOPT_USERNAME, k->url_user);
        SET(CURLOPT_PASSWORD, k->url_password);
    }
    if (c->proxy_url)
        SET(CURLOPT_PROXY, c->proxy_url);
    else if (k->no_proxy)
        SET(CURLOPT_PROXY, "");
    if (k->connect_to)
        SET(CURLOPT_CONNECT_TO, k->connect_to);
#undef SET
    return bad ? -1 : 0;
}

/* client(cfg, {timeout=, connect_timeout=, verbose=}) -> client | nil, err */
/* A User-Agent part naming what runs (a command such as service-intercept). */
static int component_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64)
        return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && !strchr("._-", *s))
            return 0;
    return 1;
}

/* "czctl/VERSION (linux/x86_64) component", the shape client-go gives every
 * program (kubectl/v1.32.0 (linux/amd64) kubernetes/...): audit logs and
 * API priority and fairness tell czctl's requests, and which command's. */
static char *user_agent(const char *component)
{
    struct utsname u;
    char os[sizeof u.sysname];
    char *ua;
    if (uname(&u) != 0) {
        strcpy(u.sysname, "unknown");
        strcpy(u.machine, "unknown");
    }
    size_t i = 0;
    for (; u.sysname[i] && i + 1 < sizeof os; i++)
        os[i] = (char)tolower((unsigned char)u.sysname[i]);
    os[i] = '\0';
    if (asprintf(&ua, "czctl/%s (%s/%s)%s%s", CZCTL_VERSION, os, u.machine, component ? " " : "",
                 component ? component : "") < 0)
        return NULL;
    return ua;
}

static int kube_client_new(lua_State *L)
{
    kube_cfg *cfg = check_cfg(L, 1);
    double timeout = 30, connect_timeout = 10;
    int verbose = 0;
    const char *component = NULL;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        timeout = czctl_field_seconds(L, 2, "timeout", timeout);
        connect_timeout = czctl_field_seconds(L, 2, "connect_timeout", connect_timeout);
        verbose = opt_bool(L, 2, "verbose");
        if (lua_getfield(L, 2, "component") != LUA_TNIL) {
            component = luaL_checkstring(L, -1);
            if (!component_ok(component))
                return luaL_error(L, "component: expected 1 to 64 of [A-Za-z0-9._-]");
        }
        lua_pop(L, 1); /* the string stays referenced by the options table */
    }
    kube_client *k = czctl_handle_new(L, &client_class, sizeof *k, 0);
    k->body = (czctl_buf){.limit = MAX_BODY, .secret = 1};
    k->hdrs = (czctl_buf){.limit = MAX_HEADERS};
    k->c = kubeconfig_ref(cfg->c);
    k->timeout = timeout;
    k->connect_timeout = connect_timeout;
    k->verbose = verbose;
    char *err = NULL;
    if (!(k->user_agent = user_agent(component))) {
        err = kc_errf("out of memory");
    } else if (czctl_curl_init() != 0) {
        err = kc_errf("libcurl initialisation failed");
    } else if (kubeconfig_load_files(k->c, &err) == 0 && check_tls(k->c, &err) == 0 &&
               client_prepare_url(k, &err) == 0 && check_basic_auth(k, &err) == 0) {
        k->easy = curl_easy_init();
        k->multi = curl_multi_init();
        if (!k->easy || !k->multi || setup_easy(k, k->easy, &k->body, &k->hdrs, k->errbuf) < 0)
            err = kc_errf("libcurl: cannot create a handle");
    }
    if (err) {
        client_release(k);
        return client_fail(L, k, err);
    }
    return 1;
}

static void push_escaped(luaL_Buffer *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
            ch == '.' || ch == '_' || ch == '~') {
            luaL_addchar(b, (char)ch);
        } else {
            luaL_addchar(b, '%');
            luaL_addchar(b, hex[ch >> 4]);
            luaL_addchar(b, hex[ch & 15]);
        }
    }
}

/* Push the full URL for request table t (path, query); raises on misuse.
 * A path no API server should see (a name or namespace that is ".", "..",
 * empty or holds '/' or '%': client-go refuses them, and libcurl would
 * resolve the dot segments into another object's path) pushes nothing and
 * returns the message (malloc'd). Uses the stack only in balanced steps (no
 * luaL_Buffer across lua_next). */
static char *push_url(lua_State *L, kube_client *k, int t)
{
    lua_getfield(L, t, "path");
    const char *path = lua_tostring(L, -1);
    if (!path || lua_type(L, -1) != LUA_TSTRING || path[0] != '/')
        luaL_error(L, "request: 'path' must be a string starting with '/'");
    char *bad = NULL;
    if (kube_check_api_path(path, &bad) < 0) {
        lua_pop(L, 1);
        return bad;
    }
    int pathi = lua_gettop(L);
    int q = lua_getfield(L, t, "query");
    int qi = lua_gettop(L);
    if (q == LUA_TTABLE) {
        lua_pushliteral(L, "");
        int acci = lua_gettop(L);
        lua_pushnil(L);
        while (lua_next(L, qi)) {
            if (lua_type(L, -2) != LUA_TSTRING)
                luaL_error(L, "request: query keys must be strings");
            int vt = lua_type(L, -1);
            if (vt != LUA_TSTRING && vt != LUA_TNUMBER && vt != LUA_TBOOLEAN)
                luaL_error(L, "request: query value for '%s' must be a string, number or boolean",
                           lua_tostring(L, -2));
            size_t kl, vl;
            const char *key = lua_tolstring(L, -2, &kl);
            const char *val = luaL_tolstring(L, -1, &vl); /* pushes a string copy */
            luaL_Buffer piece;
            luaL_buffinit(L, &piece);
            luaL_addchar(&piece, '&');
            push_escaped(&piece, key, kl);
            luaL_addchar(&piece, '=');
            push_escaped(&piece, val, vl);
            luaL_pushresult(&piece);
            lua_pushvalue(L, acci);
            lua_insert(L, -2);
            lua_concat(L, 2);
            lua_replace(L, acci);
            lua_pop(L, 2); /* value string copy, value */
        }
        size_t n;
        const char *acc = lua_tolstring(L, acci, &n);
        lua_pushstring(L, n ? acc + 1 : "");
        lua_replace(L, qi);
        lua_settop(L, qi);
    } else if (q != LUA_TNIL && q != LUA_TSTRING) {
        luaL_error(L, "request: 'query' must be a table or a string");
    }
    size_t qlen = 0;
    if (q != LUA_TNIL)
        lua_tolstring(L, qi, &qlen);
    lua_pushstring(L, k->base);
    lua_pushvalue(L, pathi);
    if (qlen) {
        lua_pushstring(L, strchr(path, '?') ? "&" : "?");
        lua_pushvalue(L, qi);
        lua_concat(L, 4);
    } else {
        lua_concat(L, 2);
    }
    lua_replace(L, pathi);
    lua_settop(L, pathi);
    return NULL;
}

/* Build the per-request header list (Authorization etc). 0, -1 (*err), -2 (interrupted). */
static int build_headers(kube_client *k, struct curl_slist **out, const char *accept, const char *ctype,
                         int force_refresh, CURL *e, char **err)
{
    kc_config *c = k->c;
    struct curl_slist *l = NULL, *n;
    char *line = NULL;
    int rc = -1;
    *err = NULL;
#define ADD(s)                                   \
    do {                                         \
        if (!(n = curl_slist_append(l, (s))))    \
            goto oom;                            \
        l = n;                                   \
    } while (0)
    if (asprintf(&line, "Accept: %s", accept ? accept : "application/json") < 0) {
        line = NULL;
        goto oom;
    }
    ADD(line);
    free(line);
    line = NULL;
    if (ctype) {
        if (asprintf(&line, "Content-Type: %s", ctype) < 0) {
            line = NULL;
            goto oom;
        }
        ADD(line);
        free(line);
        line = NULL;
    }
    ADD("Expect:");
    if (k->host_header)
        ADD(k->host_header);
    char *token = NULL;
    if (!strcmp(c->auth, "exec")) {
        int r = kube_exec_credential(c, force_refresh, err);
        if (r < 0) {
            rc = r;
            goto out;
        }
        if (c->exec_cert.data) {
            struct curl_blob cb = {c->exec_cert.data, c->exec_cert.len, CURL_BLOB_COPY};
            struct curl_blob kb = {c->exec_key.data, c->exec_key.len, CURL_BLOB_COPY};
            curl_easy_setopt(e, CURLOPT_SSLCERTTYPE, "PEM");
            curl_easy_setopt(e, CURLOPT_SSLCERT_BLOB, &cb);
            curl_easy_setopt(e, CURLOPT_SSLKEYTYPE, "PEM");
            curl_easy_setopt(e, CURLOPT_SSLKEY_BLOB, &kb);
        }
        if (c->exec_token && !(token = strdup(c->exec_token)))
            goto oom;
    } else {
        token = kubeconfig_bearer_token(c, err);
        if (!token && *err)
            goto out;
    }
    if (token && !czctl_header_value_ok(token)) {
        /* Go refuses to send it (net/http: invalid header field value), so
         * kubectl does: a CR or LF would end the header and start others */
        explicit_bzero(token, strlen(token));
        free(token);
        *err = kc_errf("invalid header field value for \"Authorization\": the %s of user \"%s\" contains a "
                       "control character (such as CR or LF); fix the credential",
                       !strcmp(c->auth, "exec") ? "token from the exec plugin"
                       : c->token_file        ? "token in the tokenFile"
                                              : "token in the kubeconfig",
                       c->user);
        goto out;
    }
    if (token) {
        int r = asprintf(&line, "Authorization: Bearer %s", token);
        explicit_bzero(token, strlen(token));
        free(token);
        if (r < 0) {
            line = NULL;
            goto oom;
        }
        n = curl_slist_append(l, line);
        explicit_bzero(line, strlen(line));
        free(line);
        line = NULL;
        if (!n)
            goto oom;
        l = n;
    }
#undef ADD
    *out = l;
    return 0;
oom:
    *err = kc_errf("out of memory");
out:
    free(line);
    slist_wipe_free(&l);
    return rc;
}

/* The request's method ("GET" when nil); raises when it is not a string. */
static const char *method_of(lua_State *L, int t)
{
    lua_getfield(L, t, "method");
    const char *m = lua_isnil(L, -1) ? "GET" : lua_tostring(L, -1);
    if (!m)
        luaL_error(L, "request: 'method' must be a string");
    lua_pop(L, 1);
    return m; /* "GET" literal or a string held by the table */
}

/* Apply method and body to a handle. */
static void set_method(CURL *e, const char *method, const char *body, size_t blen)
{
    curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(e, CURLOPT_NOBODY, 0L);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, NULL);
    if (body) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)blen);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
    }
    if (!strcmp(method, "GET") && !body)
        return;
    if (!strcmp(method, "HEAD")) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
        return;
    }
    if (!body) { /* POST/PUT/PATCH/DELETE without body: empty body for writes */
        if (strcmp(method, "GET") && strcmp(method, "DELETE")) {
            curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0);
            curl_easy_setopt(e, CURLOPT_POSTFIELDS, "");
        }
    }
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
}

static const char *http_version_name(CURL *e)
{
    long v = 0;
    curl_easy_getinfo(e, CURLINFO_HTTP_VERSION, &v);
    switch (v) {
    case CURL_HTTP_VERSION_1_0: return "HTTP/1.0";
    case CURL_HTTP_VERSION_1_1: return "HTTP/1.1";
    case CURL_HTTP_VERSION_2_0: return "HTTP/2";
    case CURL_HTTP_VERSION_3: return "HTTP/3";
    default: return "HTTP";
    }
}

/* One stderr line per request in verbose mode: never a header. */
static void log_verbose(kube_client *k, CURL *e, const char *method, const char *url, long status, double secs,
                        long newconn, const char *what)
{
    if (!k->verbose)
        return;
    if (what)
        fprintf(stderr, "kube: %s %s -> %s (%.1f ms)\n", method, url, what, secs * 1000);
    else
        fprintf(stderr, "kube: %s %s -> %ld (%.1f ms, %s%s)\n", method, url, status, secs * 1000,
                http_version_name(e), newconn ? ", new connection" : "");
}

/* A header value the caller gives; raises when it holds a control character. */
static void check_header_arg(lua_State *L, const char *key, const char *v)
{
    if (v && !czctl_header_value_ok(v))
        luaL_error(L, "request: '%s' must be a header value without control characters", key);
}

/* A transfer that ended because the peer reset or closed the connection. */
static int connection_lost(CURLcode res)
{
    return res == CURLE_GOT_NOTHING || res == CURLE_RECV_ERROR || res == CURLE_SEND_ERROR ||
           res == CURLE_PARTIAL_FILE;
}

/* client:request{method=, path=, query=, body=, content_type=, accept=, timeout=}
 *   -> status, body, headers | nil, message [, "reset"] ("reset": the connection
 *   was reset or closed before the whole answer) */
static int client_request(lua_State *L)
{
    kube_client *k = check_client(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    const char *method = method_of(L, 2);
    const char *accept = czctl_field_string(L, 2, "accept");
    const char *ctype = czctl_field_string(L, 2, "content_type");
    double timeout = czctl_field_seconds(L, 2, "timeout", k->timeout);
    size_t blen = 0;
    const char *body = NULL;
    if (lua_getfield(L, 2, "body") != LUA_TNIL) {
        body = lua_tolstring(L, -1, &blen);
        if (!body || lua_type(L, -1) != LUA_TSTRING)
            return luaL_error(L, "request: 'body' must be a string");
    }
    lua_pop(L, 1);
    check_header_arg(L, "accept", accept);
    check_header_arg(L, "content_type", ctype);
    char *bad = push_url(L, k, 2);
    if (bad)
        return client_fail(L, k, bad);
    const char *url = lua_tostring(L, -1);

    for (int attempt = 0;; attempt++) {
        char *err = NULL;
        CURLcode res = CURLE_OK;
        slist_wipe_free(&k->headers);
        int hr = build_headers(k, &k->headers, accept, ctype, attempt > 0, k->easy, &err);
        if (hr < 0) {
            if (hr == -2) {
                free(err);
                err = strdup("interrupted");
            }
            return client_fail(L, k, err);
        }
        czctl_buf_reset(&k->body);
        czctl_buf_reset(&k->hdrs);
        k->errbuf[0] = 0;
        k->tls.refused = 0;
        curl_easy_setopt(k->easy, CURLOPT_URL, url);
        curl_easy_setopt(k->easy, CURLOPT_HTTPHEADER, k->headers);
        curl_easy_setopt(k->easy, CURLOPT_TIMEOUT_MS, timeout > 0 ? (long)(timeout * 1000) : 0L);
        set_method(k->easy, method, body, blen);
        double t0 = czctl_now();
        curl_multi_add_handle(k->multi, k->easy);
        int r = drive(k->multi, k->easy, timeout > 0 ? timeout + 1 : -1, NULL, NULL, &res);
        curl_multi_remove_handle(k->multi, k->easy);
        double dt = czctl_now() - t0;
        k->requests++;
        long newconn = 0, status = 0;
        curl_easy_getinfo(k->easy, CURLINFO_NUM_CONNECTS, &newconn);
        k->connections += (unsigned long)newconn;
        if (r == DRIVE_INTR) {
            log_verbose(k, k->easy, method, url, 0, dt, 0, "interrupted");
            return czctl_fail(L, "interrupted");
        }
        const char *refusal = czctl_tls_refusal(&k->tls);
        if (r == DRIVE_TIMEOUT || r == DRIVE_ERR || res != CURLE_OK) {
            const char *why = refusal            ? refusal
                              : r == DRIVE_TIMEOUT ? "request timed out"
                              : r == DRIVE_ERR   ? "libcurl multi error"
                              : k->errbuf[0]     ? k->errbuf
                                                 : curl_easy_strerror(res);
            log_verbose(k, k->easy, method, url, 0, dt, 0, why);
            luaL_pushfail(L);
            lua_pushfstring(L, "%s %s: %s", method, url, why);
            /* the connection was reset or closed before a whole answer came
             * (client-go's IsConnectionReset/IsProbableEOF): a GET may be sent again */
            if (r == DRIVE_DONE && !refusal && connection_lost(res)) {
                lua_pushliteral(L, "reset");
                return 3;
            }
            return 2;
        }
        curl_easy_getinfo(k->easy, CURLINFO_RESPONSE_CODE, &status);
        log_verbose(k, k->easy, method, url, status, dt, newconn, NULL);
        if (status == 401 && !strcmp(k->c->auth, "exec") && attempt == 0)
            continue; /* refresh the exec credential once and retry */
        lua_pushinteger(L, status);
        lua_pushlstring(L, k->body.data ? k->body.data : "", k->body.len);
        czctl_push_headers(L, k->hdrs.data, k->hdrs.len);
        return 3;
    }
}

/* client:stats() -> {requests=, connections=, exec_runs=} (no secrets) */
static int client_stats(lua_State *L)
{
    kube_client *k = check_client(L, 1);
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, (lua_Integer)k->requests);
    lua_setfield(L, -2, "requests");
    lua_pushinteger(L, (lua_Integer)k->connections);
    lua_setfield(L, -2, "connections");
    lua_pushinteger(L, (lua_Integer)k->c->exec_runs);
    lua_setfield(L, -2, "exec_runs");
    return 1;
}

/* ---- watch -------------------------------------------------------------- */

typedef struct kube_watch {
    CURL *easy;
    CURLM *multi;
    struct curl_slist *headers;
    czctl_buf buf, hdrs;
    char errbuf[CURL_ERROR_SIZE];
    int headers_done, done, paused, added;
    CURLcode result;
} kube_watch;

/* The watch at index i (open or closed); raises when it is not one. */
static kube_watch *check_watch(lua_State *L, int i)
{
    return czctl_handle_check(L, i, &watch_class);
}

static void watch_release(void *handle)
{
    kube_watch *w = handle;
    transfer_free(&w->multi, &w->easy, w->added);
    w->added = 0;
    slist_wipe_free(&w->headers);
    czctl_buf_free(&w->buf);
    czctl_buf_free(&w->hdrs);
}

/* "kube watch (streaming)" until the server ends it */
static void watch_describe(lua_State *L, const void *handle)
{
    const kube_watch *w = handle;
    lua_pushstring(L, !w->easy || w->done ? "kube watch (ended)" : "kube watch (streaming)");
}

static size_t on_watch_body(char *d, size_t sz, size_t n, void *ud)
{
    kube_watch *w = ud;
    if (czctl_buf_unread(&w->buf) >= WATCH_PAUSE_AT && czctl_buf_has_line(&w->buf)) {
        w->paused = 1;
        return CURL_WRITEFUNC_PAUSE; /* the reader is behind: let TCP push back */
    }
    return czctl_buf_add(&w->buf, d, sz * n) == 0 ? sz * n : 0;
}

static size_t on_watch_header(char *d, size_t sz, size_t n, void *ud)
{
    kube_watch *w = ud;
    size_t len = sz * n;
    if (len >= 5 && !memcmp(d, "HTTP/", 5))
        czctl_buf_reset(&w->hdrs);
    if (czctl_buf_add(&w->hdrs, d, len) < 0)
        return 0;
    if ((len == 2 && d[0] == '\r' && d[1] == '\n') || (len == 1 && d[0] == '\n')) {
        long code = 0;
        curl_easy_getinfo(w->easy, CURLINFO_RESPONSE_CODE, &code);
        if (code >= 200)
            w->headers_done = 1;
    }
    return len;
}

static int watch_headers_ready(void *ud)
{
    return ((kube_watch *)ud)->headers_done;
}

static int watch_line_ready(void *ud)
{
    return czctl_buf_has_line(&((kube_watch *)ud)->buf);
}

/* client:watch{path=, query=, timeout=} -> w | nil, err, status, body, headers */
static int client_watch(lua_State *L)
{
    kube_client *k = check_client(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    double timeout = czctl_field_seconds(L, 2, "timeout", k->timeout);
    char *bad = push_url(L, k, 2);
    if (bad)
        return client_fail(L, k, bad);
    const char *url = lua_tostring(L, -1);
    int urli = lua_gettop(L);

    kube_watch *w = czctl_handle_new(L, &watch_class, sizeof *w, 1);
    w->buf = (czctl_buf){.limit = MAX_BODY, .secret = 1};
    w->hdrs = (czctl_buf){.limit = MAX_HEADERS};
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1);   /* the client: its TLS check serves the handshake */

    for (int attempt = 0;; attempt++) {
        char *err = NULL;
        watch_release(w);
        w->headers_done = w->done = w->paused = 0;
        w->result = CURLE_OK;
        w->easy = curl_easy_init();
        w->multi = curl_multi_init();
        if (!w->easy || !w->multi || setup_easy(k, w->easy, &w->buf, &w->hdrs, w->errbuf) < 0) {
            watch_release(w);
            return czctl_fail(L, "libcurl: cannot create a handle");
        }
        curl_easy_setopt(w->easy, CURLOPT_WRITEFUNCTION, on_watch_body);
        curl_easy_setopt(w->easy, CURLOPT_WRITEDATA, w);
        curl_easy_setopt(w->easy, CURLOPT_HEADERFUNCTION, on_watch_header);
        curl_easy_setopt(w->easy, CURLOPT_HEADERDATA, w);
        int hr = build_headers(k, &w->headers, NULL, NULL, attempt > 0, w->easy, &err);
        if (hr < 0) {
            watch_release(w);
            if (hr == -2) {
                free(err);
                err = strdup("interrupted");
            }
            return client_fail(L, k, err);
        }
        curl_easy_setopt(w->easy, CURLOPT_URL, url);
        curl_easy_setopt(w->easy, CURLOPT_HTTPHEADER, w->headers);
        if (curl_multi_add_handle(w->multi, w->easy) != CURLM_OK) {
            watch_release(w);
            return czctl_fail(L, "libcurl: cannot start the watch");
        }
        w->added = 1;
        k->tls.refused = 0;
        double t0 = czctl_now();
        CURLcode res = CURLE_OK;
        int r = drive(w->multi, w->easy, timeout > 0 ? timeout : -1, watch_headers_ready, w, &res);
        long status = 0, newconn = 0;
        curl_easy_getinfo(w->easy, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_getinfo(w->easy, CURLINFO_NUM_CONNECTS, &newconn);
        double dt = czctl_now() - t0;
        if (r == DRIVE_DONE) {
            w->done = 1;
            w->result = res;
        }
        if (r == DRIVE_INTR || r == DRIVE_TIMEOUT || r == DRIVE_ERR || (r == DRIVE_DONE && res != CURLE_OK)) {
            const char *refusal = czctl_tls_refusal(&k->tls);
            const char *why = r == DRIVE_INTR      ? "interrupted"
                              : refusal            ? refusal
                              : r == DRIVE_TIMEOUT ? "timed out waiting for the watch to start"
                              : r == DRIVE_ERR     ? "libcurl multi error"
                              : w->errbuf[0]       ? w->errbuf
                                                   : curl_easy_strerror(res);
            log_verbose(k, w->easy, "WATCH", url, 0, dt, 0, why);
            watch_release(w);
            luaL_pushfail(L);
            if (r == DRIVE_INTR)
                lua_pushliteral(L, "interrupted");
            else
                lua_pushfstring(L, "WATCH %s: %s", url, why);
            return 2;
        }
        log_verbose(k, w->easy, "WATCH", url, status, dt, newconn, NULL);
        if (status == 401 && !strcmp(k->c->auth, "exec") && attempt == 0)
            continue;
        if (status != 200) {
            /* an error answer: read it whole (small) for the Status body */
            if (!w->done) {
                r = drive(w->multi, w->easy, timeout > 0 ? timeout : 30, NULL, NULL, &res);
                if (r != DRIVE_DONE) {
                    watch_release(w);
                    return czctl_fail(L, r == DRIVE_INTR ? "interrupted" : "timed out reading the watch error");
                }
            }
            luaL_pushfail(L);
            lua_pushfstring(L, "HTTP %d", (int)status);
            lua_pushinteger(L, status);
            lua_pushlstring(L, w->buf.data ? w->buf.data : "", w->buf.len);
            czctl_push_headers(L, w->hdrs.data, w->hdrs.len);
            watch_release(w);
            return 5;
        }
        lua_pushvalue(L, urli + 1);
        return 1;
    }
}

/* Push the next event line of the stream; 1 if pushed. */
static int pop_line(lua_State *L, kube_watch *w, int final)
{
    size_t n;
    const char *line = kube_watch_line(&w->buf, final, &n);
    if (!line)
        return 0;
    lua_pushlstring(L, line, n);
    return 1;
}

/* w:next(timeout) -> line | nil, "timeout"|"eof"|"interrupted"|message */
static int watch_next(lua_State *L)
{
    kube_watch *w = check_watch(L, 1);
    double timeout = czctl_opt_seconds(L, 2, -1);
    if (!w->easy) {
        return czctl_fail(L, "eof");
    }
    double deadline = timeout >= 0 ? czctl_now() + timeout : -1;
    for (;;) {
        if (pop_line(L, w, w->done)) {
            if (w->paused && czctl_buf_unread(&w->buf) < WATCH_PAUSE_AT / 2) {
                w->paused = 0;
                curl_easy_pause(w->easy, CURLPAUSE_CONT);
            }
            return 1;
        }
        if (w->paused) {
            w->paused = 0;
            curl_easy_pause(w->easy, CURLPAUSE_CONT);
        }
        if (w->done) {
            luaL_pushfail(L);
            if (w->result == CURLE_OK)
                lua_pushliteral(L, "eof");
            else
                lua_pushstring(L, w->errbuf[0] ? w->errbuf : curl_easy_strerror(w->result));
            return 2;
        }
        double rem = -1;
        if (deadline >= 0) {
            rem = deadline - czctl_now();
            if (rem < 0)
                rem = 0;
        }
        CURLcode res = CURLE_OK;
        int r = drive(w->multi, w->easy, rem, watch_line_ready, w, &res);
        if (r == DRIVE_DONE) {
            w->done = 1;
            w->result = res;
        } else if (r == DRIVE_TIMEOUT) {
            return czctl_fail(L, "timeout");
        } else if (r == DRIVE_INTR) {
            return czctl_fail(L, "interrupted");
        } else if (r == DRIVE_ERR) {
            w->done = 1;
            w->result = CURLE_RECV_ERROR;
        }
    }
}

/* ---- registration ------------------------------------------------------- */

static const luaL_Reg kube_funcs[] = {
    {"client", kube_client_new},
    {"load_config", kube_load_config},
    {NULL, NULL},
};

static const luaL_Reg cfg_methods[] = {
    {"info", cfg_info},
    {NULL, NULL},
};

static const luaL_Reg client_methods[] = {
    {"request", client_request},
    {"stats", client_stats},
    {"watch", client_watch},
    {NULL, NULL},
};

static const luaL_Reg watch_methods[] = {
    {"next", watch_next},
    {NULL, NULL},
};

static const czctl_class cfg_class = {"czctl.kube.config", "kube config", cfg_methods, cfg_release, cfg_describe};
static const czctl_class client_class = {"czctl.kube.client", "kube client", client_methods, client_release,
                                         client_describe};
static const czctl_class watch_class = {"czctl.kube.watch", "kube watch", watch_methods, watch_release,
                                        watch_describe};

int luaopen_czctl_core_kube(lua_State *L)
{
    czctl_class_register(L, &cfg_class);
    czctl_class_register(L, &client_class);
    czctl_class_register(L, &watch_class);
    luaL_newlib(L, kube_funcs);
    return 1;
}
