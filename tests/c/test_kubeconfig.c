/*
 * test_kubeconfig.c: kubeconfig resolution rules (core/kubeconfig.c) and the
 * czctl.core.kube handles that need no server: path cleaning and resolution,
 * RFC 3339, KUBECONFIG merging (first file wins per name and for
 * current-context, missing files ignored), explicit files, contexts,
 * -data overriding paths, tokenFile re-reading, auth validation, exec
 * defaults, malformed files and in-cluster configuration.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "kubeconfig.h"

static char tmpdir[] = "/tmp/czctl-test-kubeconfig-XXXXXX";

static void write_at(const char *rel, const char *text)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", tmpdir, rel);
    char *slash = strrchr(path, '/');
    *slash = 0;
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", path);
    if (system(cmd) != 0)
        exit(1);
    *slash = '/';
    FILE *f = fopen(path, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0) {
        printf("Bail out! cannot write %s\n", path);
        exit(1);
    }
}

static char *at(const char *rel)
{
    static char buf[8][4096];
    static int i;
    i = (i + 1) % 8;
    snprintf(buf[i], sizeof buf[i], "%s/%s", tmpdir, rel);
    return buf[i];
}

static int streq(const char *a, const char *b)
{
    return a && b && !strcmp(a, b);
}

/* Load with KUBECONFIG (NULL: unset) and options; returns cfg or NULL with *err. */
static kc_config *load(const char *kubeconfig_env, const char *explicit_file, const char *context, char **err)
{
    if (kubeconfig_env)
        setenv("KUBECONFIG", kubeconfig_env, 1);
    else
        unsetenv("KUBECONFIG");
    kc_options o = {explicit_file, context};
    kc_config *c = NULL;
    *err = NULL;
    if (kubeconfig_load(&o, &c, err) < 0)
        return NULL;
    return c;
}

static void test_paths(void)
{
    static const struct {
        const char *in, *want;
    } clean[] = {
        {"a/b/../c", "a/c"}, {"/../x", "/x"}, {"./a//b/", "a/b"}, {"../../a", "../../a"},
        {"", "."}, {"/", "/"}, {"a/..", "."}, {"/a/b/../../..", "/"}, {"a/../../b", "../b"},
    };
    for (size_t i = 0; i < sizeof clean / sizeof *clean; i++) {
        char *got = kc_path_clean(clean[i].in);
        char name[256];
        snprintf(name, sizeof name, "path clean \"%s\" -> \"%s\"", clean[i].in, clean[i].want);
        t_ok(streq(got, clean[i].want), name, got);
        free(got);
    }
    char *r = kc_path_resolve("/base/dir", "certs/../ca.crt");
    t_ok(streq(r, "/base/dir/ca.crt"), "relative path joined to the file's directory and cleaned", r);
    free(r);
    r = kc_path_resolve("/base/dir", "/etc/ca.crt");
    t_ok(streq(r, "/etc/ca.crt"), "absolute path kept", r);
    free(r);
}

static void test_codecs(void)
{
    static const struct {
        const char *in;
        long long want;
        int ok;
    } ts[] = {
        {"1970-01-01T00:00:00Z", 0, 1},
        {"2026-11-26T15:00:00+01:00", 1795701600LL, 1},
        {"2026-11-26T14:00:00.123456Z", 1795701600LL, 1},
        {"2000-02-29T12:00:00Z", 951825600LL, 1},
        {"2026-11-26 14:00:00", 0, 0},
        {"yesterday", 0, 0},
    };
    for (size_t i = 0; i < sizeof ts / sizeof *ts; i++) {
        time_t t = 0;
        int rc = kc_parse_rfc3339(ts[i].in, &t);
        char name[128];
        snprintf(name, sizeof name, "RFC 3339 \"%s\" %s", ts[i].in, ts[i].ok ? "parsed" : "refused");
        char diag[64];
        snprintf(diag, sizeof diag, "rc %d, t %lld", rc, (long long)t);
        t_ok(ts[i].ok ? rc == 0 && (long long)t == ts[i].want : rc < 0, name, diag);
    }
}

static const char *FILE_A =
    "apiVersion: v1\nkind: Config\n"
    "clusters:\n"
    "- name: shared\n  cluster: {server: 'https://a.example', certificate-authority: certs/ca.crt}\n"
    "users:\n"
    "- name: u\n  user: {tokenFile: tok}\n"
    "contexts:\n"
    "- name: ctx\n  context: {cluster: shared, user: u}\n";
static const char *FILE_B =
    "apiVersion: v1\nkind: Config\ncurrent-context: ctx\n"
    "clusters:\n"
    "- name: shared\n  cluster: {server: 'https://b.example', insecure-skip-tls-verify: true}\n"
    "- name: bonly\n  cluster: {server: 'https://bonly.example', certificate-authority: ca.crt}\n"
    "users:\n"
    "- name: u\n  user: {token: from-b}\n"
    "- name: cert\n  user: {client-certificate: c.crt, client-key: c.key, client-certificate-data: aGVsbG8=}\n"
    "contexts:\n"
    "- name: ctx\n  context: {cluster: bonly, namespace: nsb}\n"
    "- name: other\n  context: {cluster: bonly, user: cert, namespace: other-ns}\n";
static const char *FILE_C = "apiVersion: v1\nkind: Config\ncurrent-context: other\n";

static void test_merge(void)
{
    char *err;
    write_at("a/config", FILE_A);
    write_at("a/tok", "token-one\n");
    write_at("a/certs/ca.crt", "-----BEGIN CERTIFICATE-----\n");
    write_at("b/config", FILE_B);
    write_at("c/config", FILE_C);
    char env[8192];
    snprintf(env, sizeof env, "::%s:%s:%s:%s:", at("missing/config"), at("a/config"), at("b/config"),
             at("c/config"));
    kc_config *c = load(env, NULL, NULL, &err);
    t_ok(c != NULL, "KUBECONFIG list with missing files and empty entries loads", err);
    if (c) {
        t_ok(streq(c->context, "ctx"), "current-context from the first file that sets it (b, not c)", c->context);
        t_ok(streq(c->cluster, "shared") && streq(c->server, "https://a.example"),
             "same-named context: the first file's entry wins whole", c->server);
        t_ok(!c->insecure, "later same-named cluster's extra fields are discarded", NULL);
        t_ok(streq(c->namespace, "default"), "no namespace in the context: default", c->namespace);
        t_ok(streq(c->ca_file, at("a/certs/ca.crt")), "certificate-authority resolved against its file", c->ca_file);
        t_ok(streq(c->token_file, at("a/tok")) && streq(c->auth, "tokenFile"), "tokenFile resolved; auth tokenFile",
             c->token_file);
        char *terr = NULL, *tok = kubeconfig_bearer_token(c, &terr);
        t_ok(streq(tok, "token-one"), "tokenFile read (trailing newline dropped)", terr);
        free(tok);
        write_at("a/tok", "token-two");
        tok = kubeconfig_bearer_token(c, &terr);
        t_ok(streq(tok, "token-two"), "tokenFile re-read on each use", terr);
        free(tok);
        kubeconfig_free(c);
    }
    free(err);

    c = load(env, NULL, "other", &err);
    t_ok(c && streq(c->server, "https://bonly.example") && streq(c->namespace, "other-ns"),
         "--context selects a context from a later file", err);
    if (c) {
        t_ok(streq(c->ca_file, at("b/ca.crt")), "paths of the later file resolve against its own directory",
             c->ca_file);
        t_ok(c->cert_file == NULL && c->cert.len == 5 && !memcmp(c->cert.data, "hello", 5) &&
                 streq(c->key_file, at("b/c.key")) && streq(c->auth, "client-certificate"),
             "client-certificate-data overrides client-certificate; key path kept", NULL);
        kubeconfig_free(c);
    }
    free(err);

    c = load(env, NULL, "nope", &err);
    t_ok(!c && streq(err, "context \"nope\" does not exist"), "unknown --context", err);
    free(err);

    c = load(NULL, at("b/config"), NULL, &err);
    t_ok(c && streq(c->context, "ctx") && streq(c->server, "https://bonly.example"),
         "--kubeconfig uses that file only", err);
    kubeconfig_free(c);
    free(err);

    c = load(env, at("nothere"), NULL, &err);
    char want[4200];
    snprintf(want, sizeof want, "stat %s: no such file or directory", at("nothere"));
    t_ok(!c && streq(err, want), "--kubeconfig must exist (stat error)", err);
    free(err);
}

static void test_errors(void)
{
    char *err;
    static const struct {
        const char *name, *yaml, *want;
    } cases[] = {
        {"malformed YAML names file and line",
         "apiVersion: v1\nclusters:\n- name: x\n  cluster: {server: 'https://x'\ncontexts: []\n", "line 5: yaml:"},
        {"clusters must be a list", "clusters: 3\n", "clusters must be a list"},
        {"no current-context", "clusters: [{name: k, cluster: {server: 'https://x'}}]\n", "current-context is not set"},
        {"missing cluster", "current-context: c\ncontexts: [{name: c, context: {cluster: k}}]\n",
         "cluster \"k\" (of context \"c\") does not exist"},
        {"missing user",
         "current-context: c\nclusters: [{name: k, cluster: {server: 'https://x'}}]\n"
         "contexts: [{name: c, context: {cluster: k, user: ghost}}]\n",
         "user \"ghost\" (of context \"c\") does not exist"},
        {"cluster without server",
         "current-context: c\nclusters: [{name: k, cluster: {insecure-skip-tls-verify: true}}]\n"
         "contexts: [{name: c, context: {cluster: k}}]\n",
         "cluster \"k\" has no server defined"},
        {"token and basic auth together",
         "current-context: c\nclusters: [{name: k, cluster: {server: 'https://x'}}]\n"
         "contexts: [{name: c, context: {cluster: k, user: u}}]\nusers: [{name: u, user: {token: t, username: a}}]\n",
         "more than one authentication method found for u"},
        {"exec v1 needs interactiveMode",
         "current-context: c\nclusters: [{name: k, cluster: {server: 'https://x'}}]\n"
         "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
         "users: [{name: u, user: {exec: {apiVersion: client.authentication.k8s.io/v1, command: p}}}]\n",
         "interactiveMode must be specified for u"},
        {"exec with an unknown apiVersion",
         "current-context: c\nclusters: [{name: k, cluster: {server: 'https://x'}}]\n"
         "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
         "users: [{name: u, user: {exec: {apiVersion: v9, command: p}}}]\n",
         "invalid apiVersion \"v9\""},
        {"bad base64", "current-context: c\nclusters: [{name: k, cluster: {server: 'https://x', certificate-authority-data: '!!'}}]\n"
         "contexts: [{name: c, context: {cluster: k}}]\n",
         "certificate-authority-data is not valid base64"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        write_at("err/config", cases[i].yaml);
        kc_config *c = load(NULL, at("err/config"), NULL, &err);
        t_ok(!c && err && strstr(err, cases[i].want) && !strchr(err, '\n'), cases[i].name, err);
        kubeconfig_free(c);
        free(err);
    }
    write_at("err/config", "current-context: c\nclusters: [{name: k, cluster: {server: 'https://x'}}]\n"
                           "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
                           "users: [{name: u, user: {exec: {apiVersion: client.authentication.k8s.io/v1beta1, "
                           "command: get-token, args: [a, b], env: [{name: X, value: y}]}}}]\n");
    kc_config *c = load(NULL, at("err/config"), NULL, &err);
    t_ok(c && streq(c->auth, "exec") && streq(c->exec->command, "get-token") &&
             streq(c->exec->interactive_mode, "IfAvailable") && c->exec->nargs == 2 && streq(c->exec->env[0], "X=y"),
         "exec v1beta1: bare command kept, interactiveMode defaults to IfAvailable, args and env", err);
    kubeconfig_free(c);
    free(err);
}

static void test_in_cluster(void)
{
    char *err;
    write_at("home/.keep", "");
    write_at("sa/token", "sa-token\n");
    write_at("sa/ca.crt", "-----BEGIN CERTIFICATE-----\n");
    write_at("sa/namespace", "pod-ns\n");
    setenv("HOME", at("home"), 1);
    setenv("CZCTL_SERVICEACCOUNT_DIR", at("sa"), 1);
    setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1", 1);
    setenv("KUBERNETES_SERVICE_PORT", "443", 1);
    unsetenv("POD_NAMESPACE");
    kc_config *c = load(NULL, NULL, NULL, &err);
    t_ok(c && c->in_cluster && streq(c->server, "https://10.96.0.1:443") && streq(c->namespace, "pod-ns") &&
             streq(c->token_file, at("sa/token")) && streq(c->ca_file, at("sa/ca.crt")) && streq(c->auth, "tokenFile"),
         "nothing configured + KUBERNETES_SERVICE_HOST/PORT: in-cluster (token file, CA, namespace file)", err);
    kubeconfig_free(c);
    free(err);
    setenv("POD_NAMESPACE", "from-env", 1);
    setenv("KUBERNETES_SERVICE_HOST", "fd00::1", 1);
    c = load(NULL, NULL, NULL, &err);
    t_ok(c && streq(c->namespace, "from-env") && streq(c->server, "https://[fd00::1]:443"),
         "in-cluster: POD_NAMESPACE wins; IPv6 host in brackets", err);
    kubeconfig_free(c);
    free(err);
    c = load(NULL, NULL, "some-context", &err);
    t_ok(!c && streq(err, "context \"some-context\" does not exist"), "in-cluster is not used with --context", err);
    free(err);
    write_at("home/.kube/config", "current-context: h\nclusters: [{name: k, cluster: {server: 'https://home'}}]\n"
                                  "contexts: [{name: h, context: {cluster: k}}]\n");
    c = load(NULL, NULL, NULL, &err);
    t_ok(c && !c->in_cluster && streq(c->server, "https://home"), "~/.kube/config wins over in-cluster", err);
    kubeconfig_free(c);
    free(err);
    unsetenv("KUBERNETES_SERVICE_HOST");
    unsetenv("KUBERNETES_SERVICE_PORT");
    unsetenv("POD_NAMESPACE");
    unsetenv("CZCTL_SERVICEACCOUNT_DIR");
}

int main(void)
{
    if (!mkdtemp(tmpdir)) {
        puts("Bail out! mkdtemp");
        return 1;
    }
    test_paths();
    test_codecs();
    test_merge();
    test_errors();
    test_in_cluster();

    /* the Lua binding: failures are nil, message; info carries no secret; close is idempotent */
    lua_State *L = t_state();
    lua_pushstring(L, at("a/config"));
    lua_setglobal(L, "A");
    t_lua(L, "load_config with a missing file returns nil, message", LUA(
        local k = require "czctl.core.kube"
        local cfg, err = k.load_config{ kubeconfig = "/nonexistent/kubeconfig" }
        return cfg == nil and err == "stat /nonexistent/kubeconfig: no such file or directory", err));
    t_lua(L, "cfg:info() has no secret and close is idempotent", LUA(
        local k = require "czctl.core.kube"
        local cfg = assert(k.load_config{ kubeconfig = A, context = "ctx" })
        local info = cfg:info()
        for key, v in pairs(info) do
            if tostring(v):find("token-", 1, true) then return false, key end
        end
        cfg:close(); cfg:close()
        local ok = pcall(cfg.info, cfg)
        return info.auth == "tokenFile" and not ok));
    t_lua(L, "request misuse raises (path must start with '/')", LUA(
        local k = require "czctl.core.kube"
        local cfg = assert(k.load_config{ kubeconfig = A, context = "ctx" })
        local c, err = k.client(cfg)
        if not c then return false, err end
        local ok, e = pcall(c.request, c, { path = "api/v1" })
        c:close(); c:close()
        return not ok and tostring(e):find("path", 1, true) ~= nil, e));
    lua_close(L);

    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        puts("# could not remove the temporary directory");
    return t_done();
}
