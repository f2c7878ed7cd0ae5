/*
 * kubeconfig.h: resolve a kubeconfig exactly as kubectl (client-go's
 * clientcmd) does, into one flat description of "where is the API server and
 * how do I authenticate".
 *
 * Pure C, no Lua: the Lua binding lives in core/kube.c. Nothing here talks to
 * the network. Secrets (tokens, passwords, keys, exec credentials) live only
 * in kc_config and are wiped when it is freed; they must never be logged or
 * copied into error messages.
 */
#ifndef CZCTL_KUBECONFIG_H
#define CZCTL_KUBECONFIG_H

#include <stddef.h>
#include <time.h>
#include <yaml.h>

typedef struct kc_blob {
    unsigned char *data;   /* malloc'd, NUL-terminated for convenience */
    size_t len;
} kc_blob;

typedef struct kc_exec {
    char *command;          /* as configured; resolved against the file's dir if it has a '/' */
    char **args;            /* nargs entries */
    size_t nargs;
    char **env;             /* "NAME=value", nenv entries */
    size_t nenv;
    char *api_version;      /* client.authentication.k8s.io/v1 or /v1beta1 */
    char *install_hint;
    char *interactive_mode; /* Never | IfAvailable | Always */
    int provide_cluster_info;
} kc_exec;

typedef struct kc_config {
    /* identity */
    char *context, *cluster, *user, *namespace; /* namespace "default" if unset */
    char *server;
    char *source;           /* file that defined the context ("" in-cluster) */
    int in_cluster;
    const char *auth;       /* "token" | "tokenFile" | "client-certificate" | "basic" | "exec" | "none" */

    /* cluster / TLS */
    char *ca_file;          /* absolute; NULL if none or data given */
    kc_blob ca;             /* certificate-authority-data, or ca_file once loaded */
    int insecure;
    char *tls_server_name;
    char *proxy_url;
    int disable_compression;

    /* user (secrets) */
    char *token;
    char *token_file;       /* absolute; re-read on every use, wins over token */
    char *cert_file, *key_file;
    kc_blob cert, key;      /* -data variants, or the files once loaded */
    char *username, *password;
    kc_exec *exec;

    /* exec credential cache (secrets) */
    int exec_valid;
    time_t exec_expiry;     /* 0: no expiry */
    char *exec_token;
    kc_blob exec_cert, exec_key;
    unsigned exec_runs;     /* how many times the plugin ran (for verbose/tests) */

    unsigned refs;          /* holders; kubeconfig_free drops one */
} kc_config;

typedef struct kc_options {
    const char *kubeconfig; /* --kubeconfig, or NULL */
    const char *context;    /* --context, or NULL */
} kc_options;

/*
 * Resolve the configuration. On success returns 0 and *out; on failure
 * returns -1 and *err (malloc'd one-line message, caller frees). Reads the
 * environment (KUBECONFIG, HOME, KUBERNETES_SERVICE_HOST/PORT, POD_NAMESPACE,
 * CZCTL_SERVICEACCOUNT_DIR). Does not read certificate files (see
 * kubeconfig_load_files) so that `config view` works like kubectl's.
 */
int kubeconfig_load(const kc_options *opts, kc_config **out, char **err);

/* Read CA / client certificate / key files into the blobs (once).
 * 0 or -1 with *err. */
int kubeconfig_load_files(kc_config *cfg, char **err);

/* Current bearer token for token / tokenFile auth, re-reading tokenFile.
 * Returns a malloc'd string (caller wipes and frees), NULL with *err on a read
 * error, or NULL with *err == NULL when the method has no token. */
char *kubeconfig_bearer_token(const kc_config *cfg, char **err);

/* One more holder of cfg (a client keeps the config it was made from);
 * returns cfg. */
kc_config *kubeconfig_ref(kc_config *cfg);
/* Drop one holder; the last frees everything, wiping secrets. NULL is fine. */
void kubeconfig_free(kc_config *cfg);

/* ---- helpers shared with kube.c and the unit tests -------------------- */

/* Go's filepath.Clean for absolute or relative paths; malloc'd or NULL. */
char *kc_path_clean(const char *path);
/* filepath.Join(base, p) when p is relative, Clean(p) when absolute. */
char *kc_path_resolve(const char *base_dir, const char *p);
/* Parse an RFC 3339 timestamp into a UTC time_t. 0 or -1. */
int kc_parse_rfc3339(const char *s, time_t *out);
/* Read a whole file (at most KC_MAX_FILE bytes) into a blob (NUL-terminated,
 * wiped when freed). 0 or -1 with *err. */
int kc_read_file(const char *path, kc_blob *out, char **err);
/* Wipe and free a blob / string. */
void kc_blob_wipe(kc_blob *b);
void kc_str_wipe(char **s);

/* ---- YAML documents (core/kc_yaml.c) ----------------------------------- */

#define KC_MAX_FILE (16u * 1024u * 1024u)  /* kubeconfig, token and certificate files */
#define KC_YAML_MAX_DEPTH 1000             /* nested mappings and sequences */
#define KC_YAML_MAX_NODES 1000000

/*
 * Parse the first YAML document of data into doc, refusing nesting deeper
 * than KC_YAML_MAX_DEPTH and more than KC_YAML_MAX_NODES nodes, honouring
 * signals. 0 (doc to be freed with yaml_document_delete), -1 with *err
 * ("line N: yaml: problem", or "out of memory"), or -2 with *err
 * "interrupted"; on failure doc holds nothing.
 */
int kc_yaml_load(const unsigned char *data, size_t len, yaml_document_t *doc, char **err);
/* The value of key in a libyaml mapping node, or NULL (not a mapping, no
 * such key); a key given twice takes its last value, as kubectl does. */
yaml_node_t *kc_yaml_get(yaml_document_t *doc, yaml_node_t *map, const char *key);
/* Is n absent or a plain null scalar ("", "~", "null", "Null", "NULL")? */
int kc_yaml_is_null(const yaml_node_t *n);

/* A string -> size_t map (open addressing); zeroed is empty. Keys are
 * borrowed, or copied when owns_keys is set. */
typedef struct kc_map_slot {
    const char *key;
    size_t value;
} kc_map_slot;
typedef struct kc_map {
    kc_map_slot *slots;
    size_t n, cap;
    int owns_keys;
} kc_map;
/* The value stored for key, or NULL. */
size_t *kc_map_get(const kc_map *m, const char *key);
/* Adds or replaces; 0 or -1 (out of memory). */
int kc_map_put(kc_map *m, const char *key, size_t value);
void kc_map_free(kc_map *m);
/* Format a one-line error message: malloc'd, control characters shown escaped
 * (\n, \x1b) whatever a name from a file holds; never NULL. */
char *kc_errf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- text rules of the client (core/kube_text.c) ---------------------- */

/*
 * Every segment of an API path (before any '?'), percent-decoded, must be a
 * valid path segment name as client-go requires of names and namespaces
 * (IsValidPathSegmentName: not "." or "..", no '/' or '%'), and not empty:
 * libcurl would otherwise resolve "." and ".." and send the request to
 * another object. 0, or -1 with *err in kubectl's words, e.g.
 * `invalid resource name "..": [may not be '..']` or `invalid namespace ...`.
 * The path "/" alone is allowed.
 */
int kube_check_api_path(const char *path, char **err);
/* Where the secret of a URL's userinfo is: in "scheme://user:password@host"
 * the password, in "scheme://token@host" the whole userinfo. Sets
 * url[*from, *to) and returns 1, or returns 0 when there is none. Works on
 * any text, so a URL too broken to parse can still be shown safely. */
int kube_url_secret_span(const char *url, size_t *from, size_t *to);
/* The next event line of a watch stream buffered in b (struct czctl_buf,
 * core/buf.h), consumed: trailing CR and spaces dropped, blank keep-alive
 * lines skipped; NULL while no complete line is there (with at_end, the
 * unterminated rest is the last line). Valid until b next changes. */
struct czctl_buf;
const char *kube_watch_line(struct czctl_buf *b, int at_end, size_t *n);

/* ---- exec credential plugins (core/kube_exec.c) ------------------------ */

/*
 * Make sure cfg holds a valid exec credential: returns 0 when the cached one
 * is still valid (or was refreshed), -1 with *err on failure, -2 when a
 * signal interrupted the plugin. force != 0 discards the cache first (after
 * a 401). The credential is stored in cfg->exec_token / exec_cert / exec_key.
 */
int kube_exec_credential(kc_config *cfg, int force, char **err);

/*
 * Parse a plugin's stdout (len bytes at out, NUL-terminated; modified in
 * place) as an ExecCredential of cfg->exec->api_version into the cache of
 * cfg. 0, -1 with *err (never any text of the output), or -2 (interrupted).
 * cmd names the plugin in messages. Exposed for the unit tests and fuzzing.
 */
int kube_exec_parse(kc_config *cfg, char *out, size_t len, const char *cmd, char **err);

#endif
