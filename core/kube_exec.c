/*
 * kube_exec.c: exec credential plugins (client.authentication.k8s.io/v1 and
 * v1beta1), as client-go's plugin/pkg/client/auth/exec runs them.
 *
 * The plugin gets the host environment plus exec.env plus
 * KUBERNETES_EXEC_INFO, stdin /dev/null (never interactive), stderr passed
 * through; its stdout must be an ExecCredential. The credential is cached in
 * the kc_config until expirationTimestamp. Output is parsed with libyaml
 * (JSON is YAML) and never copied into an error message, a log or Lua.
 * Plugins start through czctl_exec_start (core/proc.c), so they get the same
 * fds and signal set-up as every other child of czctl. Must not raise (no
 * Lua here) and must reap every child it starts.
 */
#define _GNU_SOURCE
#include "kubeconfig.h"
#include "buf.h"
#include "czctl.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <yaml.h>

extern char **environ;

#define EXEC_MAX_OUTPUT (4u * 1024u * 1024u)

/* s as a JSON string. */
static void add_json_string(czctl_buf *b, const char *s, int *bad)
{
    *bad |= czctl_buf_add(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            *bad |= czctl_buf_add(b, esc, 2);
        } else if (*p < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", *p);
            *bad |= czctl_buf_add(b, esc, 6);
        } else {
            *bad |= czctl_buf_add(b, p, 1);
        }
    }
    *bad |= czctl_buf_add(b, "\"", 1);
}

/* KUBERNETES_EXEC_INFO=<the ExecCredential the plugin gets>, malloc'd, or
 * NULL when out of memory. */
static char *exec_info_env(const kc_config *c)
{
    czctl_buf b = {.secret = 1};   /* a proxy-url may hold a password */
    int bad = 0;
    bad |= czctl_buf_addstr(&b, "KUBERNETES_EXEC_INFO={\"apiVersion\":");
    add_json_string(&b, c->exec->api_version, &bad);
    bad |= czctl_buf_addstr(&b, ",\"kind\":\"ExecCredential\",\"spec\":{\"interactive\":false");
    if (c->exec->provide_cluster_info) {
        bad |= czctl_buf_addstr(&b, ",\"cluster\":{\"server\":");
        add_json_string(&b, c->server, &bad);
        if (c->tls_server_name) {
            bad |= czctl_buf_addstr(&b, ",\"tls-server-name\":");
            add_json_string(&b, c->tls_server_name, &bad);
        }
        if (c->insecure)
            bad |= czctl_buf_addstr(&b, ",\"insecure-skip-tls-verify\":true");
        if (c->ca.data) {
            bad |= czctl_buf_addstr(&b, ",\"certificate-authority-data\":\"");
            bad |= czctl_buf_add_base64(&b, c->ca.data, c->ca.len);
            bad |= czctl_buf_addstr(&b, "\"");
        }
        if (c->proxy_url) {
            bad |= czctl_buf_addstr(&b, ",\"proxy-url\":");
            add_json_string(&b, c->proxy_url, &bad);
        }
        if (c->disable_compression)
            bad |= czctl_buf_addstr(&b, ",\"disable-compression\":true");
        bad |= czctl_buf_addstr(&b, "}");
    }
    bad |= czctl_buf_addstr(&b, "}}");
    char *env = bad ? NULL : czctl_buf_take(&b, NULL);
    czctl_buf_free(&b);
    return env;
}

/* exec.LookPath: PATH (when set) for a bare name, and a name with a '/'
 * must be an executable file too (client-go reports either as "not found"). */
static char *look_path(const char *cmd)
{
    char *path = czctl_find_program(cmd, getenv("PATH"));
    if (path && !czctl_is_executable(path)) {
        free(path);
        errno = ENOENT;
        return NULL;
    }
    return path;
}

static int env_name_overridden(const char *entry, char **over, size_t n)
{
    const char *eq = strchr(entry, '=');
    size_t len = eq ? (size_t)(eq - entry) : strlen(entry);
    if (len == strlen("KUBERNETES_EXEC_INFO") && !strncmp(entry, "KUBERNETES_EXEC_INFO", len))
        return 1;
    for (size_t i = 0; i < n; i++)
        if (!strncmp(over[i], entry, len) && over[i][len] == '=')
            return 1;
    return 0;
}

/* One line for an install hint: kubectl prints it on separate lines. */
static char *one_line(const char *s)
{
    char *o = strdup(s ? s : "");
    if (!o)
        return NULL;
    size_t w = 0;
    int space = 0;
    for (size_t r = 0; o[r]; r++) {
        char ch = o[r];
        if (ch == '\n' || ch == '\r' || ch == '\t' || ch == ' ') {
            space = w > 0;
            continue;
        }
        if (space)
            o[w++] = ' ';
        space = 0;
        o[w++] = ch;
    }
    o[w] = 0;
    return o;
}

static void clear_cache(kc_config *c)
{
    c->exec_valid = 0;
    c->exec_expiry = 0;
    kc_str_wipe(&c->exec_token);
    kc_blob_wipe(&c->exec_cert);
    kc_blob_wipe(&c->exec_key);
}

/* Tabs are not YAML whitespace everywhere; outside strings JSON allows them. */
static void detab(char *s, size_t n)
{
    int in_str = 0;
    for (size_t i = 0; i < n; i++) {
        if (in_str) {
            if (s[i] == '\\')
                i++;
            else if (s[i] == '"')
                in_str = 0;
        } else if (s[i] == '"') {
            in_str = 1;
        } else if (s[i] == '\t') {
            s[i] = ' ';
        }
    }
}

/* A string member of a JSON object: NULL when absent, null or not a string. */
static const char *jstr(yaml_document_t *d, yaml_node_t *m, const char *key)
{
    yaml_node_t *n = kc_yaml_get(d, m, key);
    if (!n || n->type != YAML_SCALAR_NODE || kc_yaml_is_null(n))
        return NULL;
    return (const char *)n->data.scalar.value;
}

int kube_exec_parse(kc_config *c, char *out, size_t len, const char *cmd, char **err)
{
    yaml_document_t doc;
    int rc = -1;
    detab(out, len);
    char *yerr = NULL;
    int r = kc_yaml_load((unsigned char *)out, len, &doc, &yerr);
    if (r < 0) {
        /* yerr is "line N: yaml: problem": the line only, no text of the output */
        unsigned long line = 0;
        if (r == -1 && sscanf(yerr, "line %lu:", &line) == 1)
            *err = kc_errf("exec plugin %s: decoding stdout: invalid JSON at line %lu", cmd, line);
        else
            *err = r == -2 ? kc_errf("interrupted") : kc_errf("exec plugin %s: decoding stdout: %s", cmd, yerr);
        free(yerr);
        return r;
    }
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (!root || root->type != YAML_MAPPING_NODE) {
        *err = kc_errf("exec plugin %s: decoding stdout: not a JSON object", cmd);
        goto out;
    }
    const char *api = jstr(&doc, root, "apiVersion");
    const char *kind = jstr(&doc, root, "kind");
    if (!api || strcmp(api, c->exec->api_version)) {
        *err = kc_errf("exec plugin is configured to use API version %s, plugin returned version %s",
                       c->exec->api_version, api ? api : "(none)");
        goto out;
    }
    if (!kind || strcmp(kind, "ExecCredential")) {
        *err = kc_errf("exec plugin %s: returned kind %s, want ExecCredential", cmd, kind ? kind : "(none)");
        goto out;
    }
    yaml_node_t *st = kc_yaml_get(&doc, root, "status");
    if (!st || st->type != YAML_MAPPING_NODE) {
        *err = kc_errf("exec plugin didn't return a status field");
        goto out;
    }
    const char *token = jstr(&doc, st, "token");
    const char *cert = jstr(&doc, st, "clientCertificateData");
    const char *key = jstr(&doc, st, "clientKeyData");
    const char *exp = jstr(&doc, st, "expirationTimestamp");
    if ((cert && cert[0]) != (key && key[0])) {
        *err = kc_errf("exec plugin returned only certificate or key, not both");
        goto out;
    }
    if (!(token && token[0]) && !(cert && cert[0])) {
        *err = kc_errf("exec plugin didn't return a token or cert/key pair");
        goto out;
    }
    time_t expiry = 0;
    if (exp && exp[0] && kc_parse_rfc3339(exp, &expiry) < 0) {
        *err = kc_errf("exec plugin %s: invalid expirationTimestamp", cmd);
        goto out;
    }
    if (token && token[0] && !(c->exec_token = strdup(token)))
        goto oom;
    if (cert && cert[0]) {
        size_t cl = strlen(cert), kl = strlen(key);
        c->exec_cert.data = malloc(cl + 1);
        c->exec_key.data = malloc(kl + 1);
        if (!c->exec_cert.data || !c->exec_key.data)
            goto oom;
        memcpy(c->exec_cert.data, cert, cl + 1);
        memcpy(c->exec_key.data, key, kl + 1);
        c->exec_cert.len = cl;
        c->exec_key.len = kl;
    }
    c->exec_expiry = expiry;
    c->exec_valid = 1;
    rc = 0;
    goto out;
oom:
    clear_cache(c);
    *err = kc_errf("out of memory");
out:
    /* wipe the scalars that held the credential before freeing */
    for (yaml_node_t *n = doc.nodes.start; n < doc.nodes.top; n++)
        if (n->type == YAML_SCALAR_NODE)
            explicit_bzero(n->data.scalar.value, n->data.scalar.length);
    yaml_document_delete(&doc);
    return rc;
}

int kube_exec_credential(kc_config *c, int force, char **err)
{
    *err = NULL;
    if (!c->exec) {
        *err = kc_errf("user has no exec plugin");
        return -1;
    }
    if (!force && c->exec_valid && (c->exec_expiry == 0 || time(NULL) < c->exec_expiry))
        return 0;
    clear_cache(c);
    kc_exec *e = c->exec;
    if (!strcmp(e->interactive_mode, "Always")) {
        *err = kc_errf("exec plugin cannot support interactive mode: standard input is not used by czctl");
        return -1;
    }
    char *path = look_path(e->command);
    if (!path && errno == ENOMEM) {
        *err = kc_errf("out of memory");
        return -1;
    }
    if (!path) {
        char *hint = one_line(e->install_hint);
        if (hint && hint[0])
            *err = kc_errf("exec: executable %s not found: %s", e->command, hint);
        else
            *err = kc_errf("exec: executable %s not found", e->command);
        free(hint);
        return -1;
    }


    size_t nenv = 0;
    while (environ[nenv])
        nenv++;
    char **envp = calloc(nenv + e->nenv + 2, sizeof *envp);
    char **argv = calloc(e->nargs + 2, sizeof *argv);
    char *infoenv = exec_info_env(c);
    int rc = -1, pfd[2] = {-1, -1}, nul = -1;
    czctl_buf out = {.limit = EXEC_MAX_OUTPUT, .secret = 1};
    pid_t pid = -1;
    if (!infoenv || !envp || !argv) {
        *err = kc_errf("out of memory");
        goto done;
    }
    size_t k = 0;
    for (size_t i = 0; i < nenv; i++)
        if (!env_name_overridden(environ[i], e->env, e->nenv))
            envp[k++] = environ[i];
    for (size_t i = 0; i < e->nenv; i++)
        envp[k++] = e->env[i];
    envp[k++] = infoenv;
    argv[0] = e->command;
    for (size_t i = 0; i < e->nargs; i++)
        argv[i + 1] = e->args[i];

    if (pipe2(pfd, O_CLOEXEC) < 0 || (nul = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0) {
        *err = kc_errf("exec: %s", strerror(errno));
        goto done;
    }
    /* the same child set-up as every process czctl starts (core/proc.c) */
    czctl_exec x = {.path = path, .argv = argv, .envp = envp, .cwd = NULL, .fds = {nul, pfd[1], 2}};
    int stage;
    pid = czctl_exec_start(&x, &stage);
    if (pid < 0) {
        /* what Go's cmd.Start reports, as client-go passes it on */
        *err = stage == CZCTL_EXEC_FORK ? kc_errf("exec: fork: %s", strerror(errno))
                                        : kc_errf("exec: fork/exec %s: %s", path, strerror(errno));
        goto done;
    }
    close(pfd[1]);
    pfd[1] = -1;
    for (;;) {
        int w = czctl_wait_fd(pfd[0], POLLIN, -1);
        if (w == -2) {
            rc = -2;
            *err = kc_errf("interrupted");
            break;
        }
        if (w < 0) {
            *err = kc_errf("exec: poll: %s", strerror(errno));
            kill(pid, SIGKILL);
            break;
        }
        char *dst = czctl_buf_reserve(&out, 4096);
        if (!dst) {
            *err = errno == EFBIG ? kc_errf("exec plugin %s: output too large", e->command)
                                  : kc_errf("out of memory");
            kill(pid, SIGKILL);
            break;
        }
        ssize_t n = read(pfd[0], dst, 4096);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n < 0) {
            *err = kc_errf("exec: read: %s", strerror(errno));
            kill(pid, SIGKILL);
            break;
        }
        if (n == 0) {
            rc = 0;
            break;
        }
        czctl_buf_commit(&out, (size_t)n);
    }
    if (rc == -2) {
        czctl_child_stop(pid, -1, 2.0);   /* TERM, then KILL if it lingers */
        goto done;
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (rc != 0)
        goto done;
    rc = -1;
    if (WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) != 0)) {
        int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        *err = kc_errf("exec: executable %s failed with exit code %d", e->command, code);
        goto done;
    }
    c->exec_runs++;
    if (!out.len) {
        *err = kc_errf("exec plugin %s: no output", e->command);
        goto done;
    }
    rc = kube_exec_parse(c, out.data, out.len, e->command, err);
done:
    if (pfd[0] >= 0)
        close(pfd[0]);
    if (pfd[1] >= 0)
        close(pfd[1]);
    if (nul >= 0)
        close(nul);
    czctl_buf_free(&out);
    free(path);
    if (infoenv) {
        explicit_bzero(infoenv, strlen(infoenv));
        free(infoenv);
    }
    free(envp);
    free(argv);
    return rc;
}
