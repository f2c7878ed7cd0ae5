/*
 * kubeconfig.c: kubeconfig loading, merging and resolution with kubectl's
 * rules (client-go tools/clientcmd: loader.go, client_config.go,
 * validation.go; in-cluster: rest/config.go).
 *
 * - --kubeconfig FILE: that file only, it must exist.
 * - else KUBECONFIG (colon list, empty entries and duplicates skipped,
 *   missing files ignored), merged in order: the first file that defines a
 *   cluster/user/context name wins with its whole entry; the first file
 *   that sets current-context wins.
 * - else ~/.kube/config; if nothing at all is configured and
 *   KUBERNETES_SERVICE_HOST/PORT are set: in-cluster (service account).
 * Relative paths are resolved against the directory of the file that
 * defined them (exec.command only when it contains a '/').
 *
 * The YAML documents are parsed with libyaml's document API into a boxed
 * list of files that is always freed on every path; nothing here raises.
 * Must not: talk to the network, log, or put a secret in an error message.
 */
#define _GNU_SOURCE
#include "kubeconfig.h"
#include "buf.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#define SA_DIR_DEFAULT "/var/run/secrets/kubernetes.io/serviceaccount"

/* ---- small helpers ---------------------------------------------------- */

char *kc_errf(const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;
    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    if (!s)
        return strdup("out of memory");
    /* one line, whatever names from a file it quotes: control characters
     * are shown escaped (\n, \x1b), as Go's %q would show them */
    size_t n = 0, extra = 0;
    for (; s[n]; n++)
        if ((unsigned char)s[n] < 0x20 || s[n] == 0x7f)
            extra += 3;
    if (!extra)
        return s;
    char *e = malloc(n + extra + 1);
    if (!e) {
        free(s);
        return strdup("out of memory");
    }
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '\n' || ch == '\r' || ch == '\t') {
            e[w++] = '\\';
            e[w++] = ch == '\n' ? 'n' : ch == '\r' ? 'r' : 't';
        } else if (ch < 0x20 || ch == 0x7f) {
            w += (size_t)sprintf(e + w, "\\x%02x", ch);
        } else {
            e[w++] = (char)ch;
        }
    }
    e[w] = '\0';
    free(s);
    return e;
}

void kc_blob_wipe(kc_blob *b)
{
    if (b->data) {
        explicit_bzero(b->data, b->len);
        free(b->data);
    }
    b->data = NULL;
    b->len = 0;
}

void kc_str_wipe(char **s)
{
    if (*s) {
        explicit_bzero(*s, strlen(*s));
        free(*s);
        *s = NULL;
    }
}

/* Go prints syscall errors in lower case ("no such file or directory"). */
static char *errno_text(int e)
{
    char *s = strdup(strerror(e));
    if (s && s[0])
        s[0] = (char)tolower((unsigned char)s[0]);
    return s;
}

int kc_read_file(const char *path, kc_blob *out, char **err)
{
    out->data = NULL;
    out->len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        char *t = errno_text(errno);
        *err = kc_errf("open %s: %s", path, t ? t : "error");
        free(t);
        return -1;
    }
    czctl_buf b = {.limit = KC_MAX_FILE, .secret = 1};
    int e = 0;
    for (;;) {
        char *dst = czctl_buf_reserve(&b, 65536);
        if (!dst) {
            e = errno;
            break;
        }
        size_t n = fread(dst, 1, 65536, f);
        czctl_buf_commit(&b, n);
        if (n == 0) {
            if (ferror(f))
                e = errno ? errno : EIO;
            break;
        }
    }
    fclose(f);
    size_t len = 0;
    char *data = e ? NULL : czctl_buf_take(&b, &len);
    if (!e && !data)
        e = ENOMEM;
    czctl_buf_free(&b);
    if (e) {
        char *t = e == EFBIG ? NULL : errno_text(e);
        if (e == EFBIG)
            *err = kc_errf("%s: file too large (over %u MiB)", path, KC_MAX_FILE >> 20);
        else if (e == ENOMEM)
            *err = kc_errf("out of memory");
        else
            *err = kc_errf("read %s: %s", path, t ? t : "error");
        free(t);
        return -1;
    }
    out->data = (unsigned char *)data;
    out->len = len;
    return 0;
}

/* Go's path/filepath.Clean (Unix). */
char *kc_path_clean(const char *path)
{
    size_t n = strlen(path);
    if (n == 0)
        return strdup(".");
    int rooted = path[0] == '/';
    char *out = malloc(n + 2);
    if (!out)
        return NULL;
    size_t w = 0, r = 0, dotdot = 0;
    if (rooted) {
        out[w++] = '/';
        r = 1;
        dotdot = 1;
    }
    while (r < n) {
        if (path[r] == '/') {
            r++;
        } else if (path[r] == '.' && (r + 1 == n || path[r + 1] == '/')) {
            r++;
        } else if (path[r] == '.' && path[r + 1] == '.' && (r + 2 == n || path[r + 2] == '/')) {
            r += 2;
            if (w > dotdot) {
                w--;
                while (w > dotdot && out[w] != '/')
                    w--;
            } else if (!rooted) {
                if (w > 0)
                    out[w++] = '/';
                out[w++] = '.';
                out[w++] = '.';
                dotdot = w;
            }
        } else {
            if ((rooted && w != 1) || (!rooted && w != 0))
                out[w++] = '/';
            for (; r < n && path[r] != '/'; r++)
                out[w++] = path[r];
        }
    }
    if (w == 0)
        out[w++] = '.';
    out[w] = 0;
    return out;
}

char *kc_path_resolve(const char *base_dir, const char *p)
{
    if (p[0] == '/' || !base_dir)
        return kc_path_clean(p);
    char *joined = NULL;
    if (asprintf(&joined, "%s/%s", base_dir, p) < 0)
        return NULL;
    char *c = kc_path_clean(joined);
    free(joined);
    return c;
}

/* filepath.Abs(filepath.Dir(file)) */
static char *abs_dir_of(const char *file)
{
    char *abs = NULL;
    if (file[0] == '/') {
        abs = strdup(file);
    } else {
        char *cwd = getcwd(NULL, 0);
        if (!cwd)
            return NULL;
        if (asprintf(&abs, "%s/%s", cwd, file) < 0)
            abs = NULL;
        free(cwd);
    }
    if (!abs)
        return NULL;
    char *clean = kc_path_clean(abs);
    free(abs);
    if (!clean)
        return NULL;
    char *slash = strrchr(clean, '/');
    if (slash == clean)
        clean[1] = 0;
    else if (slash)
        *slash = 0;
    return clean;
}

static int days_from_civil(int y, int m, int d, long long *days)
{
    y -= m <= 2;
    long long era = (y >= 0 ? y : y - 399) / 400;
    long long yoe = y - era * 400;
    long long doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    long long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    *days = era * 146097 + doe - 719468;
    return 0;
}

int kc_parse_rfc3339(const char *s, time_t *out)
{
    int Y, M, D, h, m, sec, n = 0;
    if (sscanf(s, "%4d-%2d-%2d%n", &Y, &M, &D, &n) != 3 || n != 10)
        return -1;
    s += n;
    if (*s != 'T' && *s != 't' && *s != ' ')
        return -1;
    s++;
    n = 0;
    if (sscanf(s, "%2d:%2d:%2d%n", &h, &m, &sec, &n) != 3 || n != 8)
        return -1;
    s += n;
    if (*s == '.') {
        s++;
        if (!isdigit((unsigned char)*s))
            return -1;
        while (isdigit((unsigned char)*s))
            s++;
    }
    long off = 0;
    if (*s == 'Z' || *s == 'z') {
        s++;
    } else if (*s == '+' || *s == '-') {
        int sign = *s == '-' ? -1 : 1, oh, om;
        n = 0;
        if (sscanf(s + 1, "%2d:%2d%n", &oh, &om, &n) != 2 || n != 5)
            return -1;
        off = sign * (oh * 3600L + om * 60L);
        s += 6;
    } else {
        return -1;
    }
    if (*s || M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 || sec > 60)
        return -1;
    long long days;
    days_from_civil(Y, M, D, &days);
    *out = (time_t)(days * 86400LL + h * 3600LL + m * 60LL + sec - off);
    return 0;
}

/* ---- YAML document access ---------------------------------------------- */

typedef struct kc_file {
    char *path;
    char *dir;             /* absolute directory of path */
    yaml_document_t doc;
    int has_doc;
} kc_file;

typedef struct kc_entry {
    const char *name;      /* points into the document */
    size_t file;
    yaml_node_t *body;     /* the cluster/user/context mapping (may be NULL) */
} kc_entry;

typedef struct kc_list {
    kc_entry *v;
    size_t n, cap;
    kc_map index;          /* name -> position in v */
} kc_list;

typedef struct kc_loader {
    kc_file *files;
    size_t nfiles, capfiles;
    kc_list clusters, users, contexts;
    const char *current_context;
    size_t current_context_file;
} kc_loader;

static void loader_free(kc_loader *ld)
{
    for (size_t i = 0; i < ld->nfiles; i++) {
        free(ld->files[i].path);
        free(ld->files[i].dir);
        if (ld->files[i].has_doc)
            yaml_document_delete(&ld->files[i].doc);
    }
    free(ld->files);
    kc_list *lists[] = {&ld->clusters, &ld->users, &ld->contexts};
    for (size_t i = 0; i < 3; i++) {
        free(lists[i]->v);
        kc_map_free(&lists[i]->index);
    }
    memset(ld, 0, sizeof *ld);
}

/* A string field: NULL when absent or null. Non-scalars are a type error. */
static int get_str(yaml_document_t *doc, yaml_node_t *map, const char *key, const char **out,
                   const char *where, char **err)
{
    yaml_node_t *n = kc_yaml_get(doc, map, key);
    *out = NULL;
    if (!n || kc_yaml_is_null(n))
        return 0;
    if (n->type != YAML_SCALAR_NODE) {
        *err = kc_errf("%s: %s must be a string", where, key);
        return -1;
    }
    *out = (const char *)n->data.scalar.value;
    return 0;
}

static int get_bool(yaml_document_t *doc, yaml_node_t *map, const char *key, int *out,
                    const char *where, char **err)
{
    yaml_node_t *n = kc_yaml_get(doc, map, key);
    *out = 0;
    if (!n || kc_yaml_is_null(n))
        return 0;
    if (n->type == YAML_SCALAR_NODE) {
        const char *v = (const char *)n->data.scalar.value;
        static const char *const yes[] = {"true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON", "y", "Y"};
        static const char *const no[] = {"false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF", "n", "N"};
        for (size_t i = 0; i < sizeof yes / sizeof *yes; i++)
            if (!strcmp(v, yes[i])) {
                *out = 1;
                return 0;
            }
        for (size_t i = 0; i < sizeof no / sizeof *no; i++)
            if (!strcmp(v, no[i]))
                return 0;
    }
    *err = kc_errf("%s: %s must be a boolean", where, key);
    return -1;
}

static int list_add(kc_list *l, const char *name, size_t file, yaml_node_t *body)
{
    if (kc_map_get(&l->index, name))
        return 0; /* first file wins, later entries discarded whole */
    if (l->n == l->cap) {
        size_t ncap = l->cap ? l->cap * 2 : 8;
        kc_entry *nv = realloc(l->v, ncap * sizeof *nv);
        if (!nv)
            return -1;
        l->v = nv;
        l->cap = ncap;
    }
    if (kc_map_put(&l->index, name, l->n) < 0)
        return -1;
    l->v[l->n].name = name;
    l->v[l->n].file = file;
    l->v[l->n].body = body;
    l->n++;
    return 0;
}

static kc_entry *list_find(kc_list *l, const char *name)
{
    size_t *i = kc_map_get(&l->index, name);
    return i ? &l->v[*i] : NULL;
}

/* The name of a list entry ("" when it has none), or NULL with *err. */
static const char *entry_name(kc_file *f, yaml_node_t *item, char **err)
{
    const char *name;
    if (get_str(&f->doc, item, "name", &name, f->path, err) < 0)
        return NULL;
    return name ? name : "";
}

/* client-go turns each named list of a file into a map and refuses a name
 * that appears twice ("duplicate name \"k\" in list"), whether or not
 * the entry is used. 0, or -1 with *err (never the entries themselves: kubectl
 * prints them, secrets included). seen is emptied first. */
static int check_unique(kc_file *f, kc_map *seen, yaml_node_t *item, const char *list, char **err)
{
    const char *name = entry_name(f, item, err);
    if (!name)
        return -1;
    if (kc_map_get(seen, name)) {
        *err = kc_errf("error loading config file \"%s\": duplicate name \"%s\" in list %s (line %lu); "
                       "rename or remove one of them", f->path, name, list,
                       (unsigned long)item->start_mark.line + 1);
        return -1;
    }
    if (kc_map_put(seen, name, 0) < 0) {
        *err = kc_errf("out of memory");
        return -1;
    }
    return 0;
}

/* The extensions lists (of the file, its preferences, or one entry) are
 * named lists too; they are not used, only held to the same rule. */
static int check_extensions(kc_file *f, yaml_node_t *map, const char *where, char **err)
{
    yaml_node_t *seq = kc_yaml_get(&f->doc, map, "extensions");
    if (!seq || seq->type != YAML_SEQUENCE_NODE)
        return 0;
    kc_map seen = {0};
    int rc = 0;
    for (yaml_node_item_t *it = seq->data.sequence.items.start; rc == 0 && it < seq->data.sequence.items.top; it++) {
        yaml_node_t *item = yaml_document_get_node(&f->doc, *it);
        if (item && item->type == YAML_MAPPING_NODE)
            rc = check_unique(f, &seen, item, where, err);
    }
    kc_map_free(&seen);
    return rc;
}

/* Collect the named entries of one top-level list ("clusters", ...). */
static int collect(kc_loader *ld, size_t fi, yaml_node_t *root, const char *key, const char *inner,
                   kc_list *l, char **err)
{
    kc_file *f = &ld->files[fi];
    yaml_node_t *seq = kc_yaml_get(&f->doc, root, key);
    if (!seq || kc_yaml_is_null(seq))
        return 0;
    if (seq->type != YAML_SEQUENCE_NODE) {
        *err = kc_errf("error loading config file \"%s\": %s must be a list (line %lu)", f->path, key,
                       (unsigned long)seq->start_mark.line + 1);
        return -1;
    }
    kc_map seen = {0};
    int rc = -1;
    for (yaml_node_item_t *it = seq->data.sequence.items.start; it < seq->data.sequence.items.top; it++) {
        yaml_node_t *item = yaml_document_get_node(&f->doc, *it);
        if (!item || kc_yaml_is_null(item))
            continue;
        if (item->type != YAML_MAPPING_NODE) {
            *err = kc_errf("error loading config file \"%s\": entries of %s must be maps (line %lu)", f->path,
                           key, (unsigned long)item->start_mark.line + 1);
            goto out;
        }
        const char *name = entry_name(f, item, err);
        if (!name || check_unique(f, &seen, item, key, err) < 0)
            goto out;
        yaml_node_t *body = kc_yaml_get(&f->doc, item, inner);
        if (body && kc_yaml_is_null(body))
            body = NULL;
        if (body && body->type != YAML_MAPPING_NODE) {
            *err = kc_errf("error loading config file \"%s\": %s.%s must be a map (line %lu)", f->path, key,
                           inner, (unsigned long)body->start_mark.line + 1);
            goto out;
        }
        if (body && check_extensions(f, body, "extensions", err) < 0)
            goto out;
        if (list_add(l, name, fi, body) < 0) {
            *err = kc_errf("out of memory");
            goto out;
        }
    }
    rc = 0;
out:
    kc_map_free(&seen);
    return rc;
}

static int load_file(kc_loader *ld, const char *path, char **err)
{
    for (size_t i = 0; i < ld->nfiles; i++)
        if (!strcmp(ld->files[i].path, path))
            return 0; /* duplicate entry in KUBECONFIG */
    if (ld->nfiles == ld->capfiles) {
        size_t ncap = ld->capfiles ? ld->capfiles * 2 : 4;
        kc_file *nf = realloc(ld->files, ncap * sizeof *nf);
        if (!nf) {
            *err = kc_errf("out of memory");
            return -1;
        }
        ld->files = nf;
        ld->capfiles = ncap;
    }
    size_t fi = ld->nfiles;
    kc_file *f = &ld->files[fi];
    memset(f, 0, sizeof *f);
    ld->nfiles++;
    f->path = strdup(path);
    f->dir = abs_dir_of(path);
    if (!f->path || !f->dir) {
        *err = kc_errf("out of memory");
        return -1;
    }

    kc_blob data;
    char *rerr = NULL;
    if (kc_read_file(path, &data, &rerr) < 0) {
        *err = kc_errf("error loading config file \"%s\": %s", path, rerr);
        free(rerr);
        return -1;
    }
    int r = kc_yaml_load(data.data, data.len, &f->doc, &rerr);
    kc_blob_wipe(&data);
    if (r < 0) {
        *err = r == -2 ? rerr : kc_errf("error loading config file \"%s\": %s", path, rerr);
        if (r != -2)
            free(rerr);
        return -1;
    }
    f->has_doc = 1;

    yaml_node_t *root = yaml_document_get_root_node(&f->doc);
    if (!root || kc_yaml_is_null(root))
        return 0; /* empty file: empty config */
    if (root->type != YAML_MAPPING_NODE) {
        *err = kc_errf("error loading config file \"%s\": line %lu: the document is not a map", path,
                       (unsigned long)root->start_mark.line + 1);
        return -1;
    }
    if (collect(ld, fi, root, "clusters", "cluster", &ld->clusters, err) < 0 ||
        collect(ld, fi, root, "users", "user", &ld->users, err) < 0 ||
        collect(ld, fi, root, "contexts", "context", &ld->contexts, err) < 0 ||
        check_extensions(f, root, "extensions", err) < 0 ||
        check_extensions(f, kc_yaml_get(&f->doc, root, "preferences"), "extensions", err) < 0)
        return -1;
    const char *cc;
    if (get_str(&f->doc, root, "current-context", &cc, path, err) < 0)
        return -1;
    if (cc && cc[0] && !ld->current_context) {
        ld->current_context = cc;
        ld->current_context_file = fi;
    }
    return 0;
}

/* ---- building the result ---------------------------------------------- */

kc_config *kubeconfig_ref(kc_config *c)
{
    c->refs++;
    return c;
}

void kubeconfig_free(kc_config *c)
{
    if (!c)
        return;
    if (c->refs > 1) {
        c->refs--;
        return;
    }
    free(c->context);
    free(c->cluster);
    free(c->user);
    free(c->namespace);
    free(c->server);
    free(c->source);
    free(c->ca_file);
    kc_blob_wipe(&c->ca);
    free(c->tls_server_name);
    free(c->proxy_url);
    kc_str_wipe(&c->token);
    free(c->token_file);
    free(c->cert_file);
    free(c->key_file);
    kc_blob_wipe(&c->cert);
    kc_blob_wipe(&c->key);
    kc_str_wipe(&c->username);
    kc_str_wipe(&c->password);
    if (c->exec) {
        kc_exec *e = c->exec;
        free(e->command);
        for (size_t i = 0; i < e->nargs; i++)
            free(e->args[i]);
        free(e->args);
        for (size_t i = 0; i < e->nenv; i++)
            kc_str_wipe(&e->env[i]);
        free(e->env);
        free(e->api_version);
        free(e->install_hint);
        free(e->interactive_mode);
        free(e);
    }
    kc_str_wipe(&c->exec_token);
    kc_blob_wipe(&c->exec_cert);
    kc_blob_wipe(&c->exec_key);
    free(c);
}

/* Copy an optional string field; path fields are resolved against dir. */
static int take_str(kc_file *f, yaml_node_t *map, const char *key, char **dst, const char *where,
                    int is_path, char **err)
{
    const char *v;
    if (get_str(&f->doc, map, key, &v, where, err) < 0)
        return -1;
    if (!v || !v[0])
        return 0;
    *dst = is_path ? kc_path_resolve(f->dir, v) : strdup(v);
    if (!*dst) {
        *err = kc_errf("out of memory");
        return -1;
    }
    return 0;
}

static int take_b64(kc_file *f, yaml_node_t *map, const char *key, kc_blob *dst, const char *where,
                    char **err)
{
    const char *v;
    if (get_str(&f->doc, map, key, &v, where, err) < 0)
        return -1;
    if (!v || !v[0])
        return 0;
    czctl_buf b = {.secret = 1};
    char *data = NULL;
    size_t len = 0;
    int rc = czctl_base64_decode(&b, v, strlen(v));
    if (rc == 0 && !(data = czctl_buf_take(&b, &len)))
        rc = -1;
    czctl_buf_free(&b);
    if (rc < 0) {
        *err = errno == EINVAL ? kc_errf("%s: %s is not valid base64", where, key) : kc_errf("out of memory");
        return -1;
    }
    dst->data = (unsigned char *)data;
    dst->len = len;
    return 0;
}

static int take_exec(kc_file *f, yaml_node_t *n, kc_config *c, const char *where, char **err)
{
    yaml_document_t *doc = &f->doc;
    kc_exec *e = calloc(1, sizeof *e);
    if (!e)
        goto oom;
    c->exec = e;
    const char *cmd;
    if (get_str(doc, n, "command", &cmd, where, err) < 0)
        return -1;
    if (cmd && cmd[0]) {
        e->command = strchr(cmd, '/') ? kc_path_resolve(f->dir, cmd) : strdup(cmd);
        if (!e->command)
            goto oom;
    }
    if (take_str(f, n, "apiVersion", &e->api_version, where, 0, err) < 0 ||
        take_str(f, n, "installHint", &e->install_hint, where, 0, err) < 0 ||
        take_str(f, n, "interactiveMode", &e->interactive_mode, where, 0, err) < 0 ||
        get_bool(doc, n, "provideClusterInfo", &e->provide_cluster_info, where, err) < 0)
        return -1;
    yaml_node_t *args = kc_yaml_get(doc, n, "args");
    if (args && !kc_yaml_is_null(args)) {
        if (args->type != YAML_SEQUENCE_NODE) {
            *err = kc_errf("%s: exec.args must be a list", where);
            return -1;
        }
        size_t cnt = (size_t)(args->data.sequence.items.top - args->data.sequence.items.start);
        e->args = calloc(cnt + 1, sizeof *e->args);
        if (!e->args)
            goto oom;
        for (yaml_node_item_t *it = args->data.sequence.items.start; it < args->data.sequence.items.top; it++) {
            yaml_node_t *a = yaml_document_get_node(doc, *it);
            if (!a || a->type != YAML_SCALAR_NODE) {
                *err = kc_errf("%s: exec.args must be strings", where);
                return -1;
            }
            if (!(e->args[e->nargs++] = strdup((const char *)a->data.scalar.value)))
                goto oom;
        }
    }
    yaml_node_t *env = kc_yaml_get(doc, n, "env");
    if (env && !kc_yaml_is_null(env)) {
        if (env->type != YAML_SEQUENCE_NODE) {
            *err = kc_errf("%s: exec.env must be a list", where);
            return -1;
        }
        size_t cnt = (size_t)(env->data.sequence.items.top - env->data.sequence.items.start);
        e->env = calloc(cnt + 1, sizeof *e->env);
        if (!e->env)
            goto oom;
        for (yaml_node_item_t *it = env->data.sequence.items.start; it < env->data.sequence.items.top; it++) {
            yaml_node_t *kv = yaml_document_get_node(doc, *it);
            const char *name, *value;
            if (!kv || kv->type != YAML_MAPPING_NODE) {
                *err = kc_errf("%s: exec.env entries must be maps with name and value", where);
                return -1;
            }
            if (get_str(doc, kv, "name", &name, where, err) < 0 || get_str(doc, kv, "value", &value, where, err) < 0)
                return -1;
            if (!name || !name[0]) {
                *err = kc_errf("env variable name must be specified for %s to use exec authentication plugin",
                               c->user);
                return -1;
            }
            if (asprintf(&e->env[e->nenv], "%s=%s", name, value ? value : "") < 0) {
                e->env[e->nenv] = NULL;
                goto oom;
            }
            e->nenv++;
        }
    }
    /* client-go validateAuthInfo + v1beta1 defaulting */
    if (!e->command) {
        *err = kc_errf("command must be specified for %s to use exec authentication plugin", c->user);
        return -1;
    }
    if (!e->api_version) {
        *err = kc_errf("apiVersion must be specified for %s to use exec authentication plugin", c->user);
        return -1;
    }
    if (strcmp(e->api_version, "client.authentication.k8s.io/v1") &&
        strcmp(e->api_version, "client.authentication.k8s.io/v1beta1")) {
        *err = kc_errf("exec plugin: invalid apiVersion \"%s\" for user %s (want client.authentication.k8s.io/v1 or v1beta1)",
                       e->api_version, c->user);
        return -1;
    }
    if (!e->interactive_mode && !strcmp(e->api_version, "client.authentication.k8s.io/v1beta1"))
        if (!(e->interactive_mode = strdup("IfAvailable")))
            goto oom;
    if (!e->interactive_mode) {
        *err = kc_errf("interactiveMode must be specified for %s to use exec authentication plugin", c->user);
        return -1;
    }
    if (strcmp(e->interactive_mode, "Never") && strcmp(e->interactive_mode, "IfAvailable") &&
        strcmp(e->interactive_mode, "Always")) {
        *err = kc_errf("invalid interactiveMode for %s: \"%s\"", c->user, e->interactive_mode);
        return -1;
    }
    return 0;
oom:
    *err = kc_errf("out of memory");
    return -1;
}

static int take_cluster(kc_loader *ld, kc_entry *ce, kc_config *c, char **err)
{
    kc_file *f = &ld->files[ce->file];
    yaml_node_t *n = ce->body;
    char *where = kc_errf("%s: cluster \"%s\"", f->path, c->cluster);
    int rc = -1;
    if (!n) {
        *err = kc_errf("cluster \"%s\" has no server defined", c->cluster);
        goto out;
    }
    if (take_str(f, n, "server", &c->server, where, 0, err) < 0 ||
        take_str(f, n, "certificate-authority", &c->ca_file, where, 1, err) < 0 ||
        take_b64(f, n, "certificate-authority-data", &c->ca, where, err) < 0 ||
        get_bool(&f->doc, n, "insecure-skip-tls-verify", &c->insecure, where, err) < 0 ||
        take_str(f, n, "tls-server-name", &c->tls_server_name, where, 0, err) < 0 ||
        take_str(f, n, "proxy-url", &c->proxy_url, where, 0, err) < 0 ||
        get_bool(&f->doc, n, "disable-compression", &c->disable_compression, where, err) < 0)
        goto out;
    if (!c->server) {
        *err = kc_errf("cluster \"%s\" has no server defined", c->cluster);
        goto out;
    }
    if (c->ca.data) { /* -data overrides the path variant */
        free(c->ca_file);
        c->ca_file = NULL;
    }
    rc = 0;
out:
    free(where);
    return rc;
}

static int take_user(kc_loader *ld, kc_entry *ue, kc_config *c, char **err)
{
    kc_file *f = &ld->files[ue->file];
    yaml_node_t *n = ue->body;
    if (!n)
        return 0;
    char *where = kc_errf("%s: user \"%s\"", f->path, c->user);
    int rc = -1;
    if (take_str(f, n, "token", &c->token, where, 0, err) < 0 ||
        take_str(f, n, "tokenFile", &c->token_file, where, 1, err) < 0 ||
        take_str(f, n, "client-certificate", &c->cert_file, where, 1, err) < 0 ||
        take_str(f, n, "client-key", &c->key_file, where, 1, err) < 0 ||
        take_b64(f, n, "client-certificate-data", &c->cert, where, err) < 0 ||
        take_b64(f, n, "client-key-data", &c->key, where, err) < 0 ||
        take_str(f, n, "username", &c->username, where, 0, err) < 0 ||
        take_str(f, n, "password", &c->password, where, 0, err) < 0)
        goto out;
    yaml_node_t *ex = kc_yaml_get(&f->doc, n, "exec");
    if (ex && !kc_yaml_is_null(ex)) {
        if (ex->type != YAML_MAPPING_NODE) {
            *err = kc_errf("%s: exec must be a map", where);
            goto out;
        }
        if (take_exec(f, ex, c, where, err) < 0)
            goto out;
    }
    yaml_node_t *ap = kc_yaml_get(&f->doc, n, "auth-provider");
    if (ap && !kc_yaml_is_null(ap)) {
        *err = kc_errf("user \"%s\": auth-provider is not supported; use an exec credential plugin", c->user);
        goto out;
    }
    if (c->cert.data) {
        free(c->cert_file);
        c->cert_file = NULL;
    }
    if (c->key.data) {
        free(c->key_file);
        c->key_file = NULL;
    }
    /* client-go: only one of token and basic auth; exec excludes both */
    int has_token = c->token || c->token_file;
    int has_basic = c->username || c->password;
    if (has_token && has_basic) {
        *err = kc_errf("more than one authentication method found for %s; found [token basicAuth], only one is allowed",
                       c->user);
        goto out;
    }
    if ((c->cert.data || c->cert_file) != (c->key.data || c->key_file)) {
        *err = kc_errf("user \"%s\": client-certificate and client-key must be given together", c->user);
        goto out;
    }
    rc = 0;
out:
    free(where);
    return rc;
}

/* client-go's exec authenticator stands aside when the user also has a
 * token, basic auth or a client certificate (exec.go UpdateTransportConfig:
 * "we should assume the intention is to use the provided token"). */
static const char *auth_method(const kc_config *c)
{
    if (c->token_file) return "tokenFile";
    if (c->token) return "token";
    if (c->username || c->password) return "basic";
    if (c->cert.data || c->cert_file) return "client-certificate";
    if (c->exec) return "exec";
    return "none";
}

static int load_in_cluster(kc_config **out, char **err)
{
    const char *host = getenv("KUBERNETES_SERVICE_HOST");
    const char *port = getenv("KUBERNETES_SERVICE_PORT");
    const char *dir = getenv("CZCTL_SERVICEACCOUNT_DIR");
    if (!dir || !dir[0])
        dir = SA_DIR_DEFAULT;
    kc_config *c = calloc(1, sizeof *c);
    if (!c)
        goto oom;
    c->refs = 1;
    c->in_cluster = 1;
    c->auth = "tokenFile";
    if (!(c->context = strdup("in-cluster")) || !(c->cluster = strdup("in-cluster")) ||
        !(c->user = strdup("in-cluster")) || !(c->source = strdup("")))
        goto oom;
    int v6 = strchr(host, ':') != NULL;
    if (asprintf(&c->server, v6 ? "https://[%s]:%s" : "https://%s:%s", host, port) < 0) {
        c->server = NULL;
        goto oom;
    }
    if (asprintf(&c->token_file, "%s/token", dir) < 0) {
        c->token_file = NULL;
        goto oom;
    }
    if (access(c->token_file, R_OK) != 0) {
        char *t = errno_text(errno);
        *err = kc_errf("in-cluster configuration: open %s: %s", c->token_file, t ? t : "error");
        free(t);
        kubeconfig_free(c);
        return -1;
    }
    char *ca = NULL;
    if (asprintf(&ca, "%s/ca.crt", dir) < 0)
        goto oom;
    if (access(ca, R_OK) == 0)
        c->ca_file = ca; /* client-go carries on without the CA if it cannot be read */
    else
        free(ca);
    const char *ns = getenv("POD_NAMESPACE");
    if (ns && ns[0]) {
        if (!(c->namespace = strdup(ns)))
            goto oom;
    } else {
        char *nsf = NULL;
        kc_blob b;
        char *rerr = NULL;
        if (asprintf(&nsf, "%s/namespace", dir) < 0)
            goto oom;
        if (kc_read_file(nsf, &b, &rerr) == 0) {
            size_t l = b.len;
            while (l && isspace(b.data[l - 1]))
                l--;
            b.data[l] = 0;
            if (l)
                c->namespace = strdup((char *)b.data);
            kc_blob_wipe(&b);
        }
        free(rerr);
        free(nsf);
        if (!c->namespace && !(c->namespace = strdup("default")))
            goto oom;
    }
    *out = c;
    return 0;
oom:
    kubeconfig_free(c);
    *err = kc_errf("out of memory");
    return -1;
}

static int file_exists(const char *p, int *err_no)
{
    struct stat st;
    if (stat(p, &st) == 0)
        return 1;
    *err_no = errno;
    return 0;
}

int kubeconfig_load(const kc_options *opts, kc_config **out, char **err)
{
    kc_loader ld;
    kc_config *c = NULL;
    memset(&ld, 0, sizeof ld);
    *out = NULL;
    *err = NULL;

    const char *explicit_file = opts && opts->kubeconfig && opts->kubeconfig[0] ? opts->kubeconfig : NULL;
    const char *want_ctx = opts && opts->context && opts->context[0] ? opts->context : NULL;
    if (explicit_file) {
        int e = 0;
        if (!file_exists(explicit_file, &e)) {
            char *t = errno_text(e);
            *err = kc_errf("stat %s: %s", explicit_file, t ? t : "error");
            free(t);
            goto fail;
        }
        if (load_file(&ld, explicit_file, err) < 0)
            goto fail;
    } else {
        const char *kcenv = getenv("KUBECONFIG");
        if (kcenv && kcenv[0]) {
            char *list = strdup(kcenv), *save = NULL;
            if (!list) {
                *err = kc_errf("out of memory");
                goto fail;
            }
            for (char *p = strtok_r(list, ":", &save); p; p = strtok_r(NULL, ":", &save)) {
                int e = 0;
                if (!p[0])
                    continue;
                if (!file_exists(p, &e)) {
                    if (e == ENOENT || e == ENOTDIR)
                        continue; /* missing files are ignored */
                }
                if (load_file(&ld, p, err) < 0) {
                    free(list);
                    goto fail;
                }
            }
            free(list);
        } else {
            const char *home = getenv("HOME");
            if (home && home[0]) {
                char *p = NULL;
                int e = 0;
                if (asprintf(&p, "%s/.kube/config", home) < 0) {
                    *err = kc_errf("out of memory");
                    goto fail;
                }
                if (file_exists(p, &e) && load_file(&ld, p, err) < 0) {
                    free(p);
                    goto fail;
                }
                free(p);
            }
        }
    }

    const char *ctx_name = want_ctx ? want_ctx : ld.current_context;
    int empty = !ld.clusters.n && !ld.users.n && !ld.contexts.n && !ld.current_context;
    if (!ctx_name) {
        const char *h = getenv("KUBERNETES_SERVICE_HOST"), *p = getenv("KUBERNETES_SERVICE_PORT");
        if (empty && h && h[0] && p && p[0]) {
            loader_free(&ld);
            return load_in_cluster(out, err);
        }
        if (empty)
            *err = kc_errf("invalid configuration: no configuration has been provided "
                           "(set KUBECONFIG, pass --kubeconfig, or create ~/.kube/config)");
        else
            *err = kc_errf("current-context is not set in the kubeconfig; pass --context NAME");
        goto fail;
    }
    kc_entry *ctx = list_find(&ld.contexts, ctx_name);
    if (!ctx) {
        *err = kc_errf("context \"%s\" does not exist", ctx_name);
        goto fail;
    }
    kc_file *cf = &ld.files[ctx->file];
    const char *cluster_name = NULL, *user_name = NULL, *ns = NULL;
    if (ctx->body) {
        if (get_str(&cf->doc, ctx->body, "cluster", &cluster_name, cf->path, err) < 0 ||
            get_str(&cf->doc, ctx->body, "user", &user_name, cf->path, err) < 0 ||
            get_str(&cf->doc, ctx->body, "namespace", &ns, cf->path, err) < 0)
            goto fail;
    }
    if (!cluster_name || !cluster_name[0]) {
        *err = kc_errf("context \"%s\" names no cluster", ctx_name);
        goto fail;
    }
    kc_entry *ce = list_find(&ld.clusters, cluster_name);
    if (!ce) {
        *err = kc_errf("cluster \"%s\" (of context \"%s\") does not exist", cluster_name, ctx_name);
        goto fail;
    }
    kc_entry *ue = NULL;
    if (user_name && user_name[0]) {
        ue = list_find(&ld.users, user_name);
        if (!ue) {
            *err = kc_errf("user \"%s\" (of context \"%s\") does not exist", user_name, ctx_name);
            goto fail;
        }
    }
    c = calloc(1, sizeof *c);
    if (c)
        c->refs = 1;
    if (!c || !(c->context = strdup(ctx_name)) || !(c->cluster = strdup(cluster_name)) ||
        !(c->user = strdup(user_name ? user_name : "")) ||
        !(c->namespace = strdup(ns && ns[0] ? ns : "default")) || !(c->source = strdup(cf->path))) {
        *err = kc_errf("out of memory");
        goto fail;
    }
    if (take_cluster(&ld, ce, c, err) < 0)
        goto fail;
    if (ue && take_user(&ld, ue, c, err) < 0)
        goto fail;
    c->auth = auth_method(c);
    loader_free(&ld);
    *out = c;
    return 0;
fail:
    kubeconfig_free(c);
    loader_free(&ld);
    if (!*err)
        *err = kc_errf("out of memory");
    return -1;
}

int kubeconfig_load_files(kc_config *c, char **err)
{
    if (c->ca_file && !c->ca.data) {
        char *rerr = NULL;
        if (kc_read_file(c->ca_file, &c->ca, &rerr) < 0) {
            *err = kc_errf("unable to read certificate-authority %s for cluster %s: %s", c->ca_file, c->cluster, rerr);
            free(rerr);
            return -1;
        }
    }
    if (c->cert_file && !c->cert.data) {
        char *rerr = NULL;
        if (kc_read_file(c->cert_file, &c->cert, &rerr) < 0) {
            *err = kc_errf("unable to read client-cert %s for user %s: %s", c->cert_file, c->user, rerr);
            free(rerr);
            return -1;
        }
    }
    if (c->key_file && !c->key.data) {
        char *rerr = NULL;
        if (kc_read_file(c->key_file, &c->key, &rerr) < 0) {
            *err = kc_errf("unable to read client-key %s for user %s: %s", c->key_file, c->user, rerr);
            free(rerr);
            return -1;
        }
    }
    return 0;
}

char *kubeconfig_bearer_token(const kc_config *c, char **err)
{
    *err = NULL;
    if (c->token_file) {
        kc_blob b;
        char *rerr = NULL;
        if (kc_read_file(c->token_file, &b, &rerr) < 0) {
            *err = kc_errf("reading tokenFile: %s", rerr);
            free(rerr);
            return NULL;
        }
        /* client-go: strings.TrimSpace, and an empty token is an error */
        size_t from = 0, to = b.len;
        while (to > 0 && isspace(b.data[to - 1]))
            to--;
        while (from < to && isspace(b.data[from]))
            from++;
        if (from == to) {
            kc_blob_wipe(&b);
            *err = kc_errf("read empty token from file \"%s\"", c->token_file);
            return NULL;
        }
        char *tok = strndup((char *)b.data + from, to - from);
        kc_blob_wipe(&b);
        if (!tok)
            *err = kc_errf("out of memory");
        return tok;
    }
    if (c->token) {
        char *tok = strdup(c->token);
        if (!tok)
            *err = kc_errf("out of memory");
        return tok;
    }
    return NULL;
}
