/*
 * fuzz_exec_credential.c: the output of an exec credential plugin
 * (kube_exec_parse in core/kube_exec.c), which czctl reads as JSON with
 * libyaml, for both API versions.
 *
 * The first byte picks the apiVersion the kubeconfig asks for; the rest is
 * the plugin's stdout. Properties: a parse succeeds with a token or a
 * certificate and key pair and a valid cache, or fails with a one-line
 * error that never contains the token or key the output carried.
 */
#define _GNU_SOURCE
#include <string.h>

#include "fuzz.h"
#include "kubeconfig.h"

/* The string value after key in the output (a plain one, no escapes, seen
 * once in the whole output so it cannot also be, say, the kind) never
 * appears in err. */
static void no_secret_in(const char *err, const char *out, size_t n, const char *key)
{
    const char *end = out + n;
    const char *k = memmem(out, n, key, strlen(key));
    if (!k)
        return;
    const char *v = k + strlen(key);
    const char *q = memchr(v, '"', (size_t)(end - v));
    const char *qe = q ? memchr(q + 1, '"', (size_t)(end - q - 1)) : NULL;
    if (!qe)
        return;
    size_t len = (size_t)(qe - q - 1);
    if (len < 8 || memchr(q + 1, '\\', len))
        return;
    const char *again = memmem(qe, (size_t)(end - qe), q + 1, len);
    const char *before = memmem(out, (size_t)(q + 1 - out), q + 1, len);
    if (!again && before == q + 1)
        FUZZ_CHECK(!memmem(err, strlen(err), q + 1, len));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    kc_exec e = {0};
    e.api_version = data[0] & 1 ? "client.authentication.k8s.io/v1beta1" : "client.authentication.k8s.io/v1";
    kc_config c = {0};
    c.exec = &e;
    char *out = malloc(size);
    if (!out)
        abort();
    memcpy(out, data + 1, size - 1);
    out[size - 1] = '\0';
    char *err = NULL;
    int rc = kube_exec_parse(&c, out, size - 1, "plugin", &err);
    if (rc == 0) {
        FUZZ_CHECK(!err && c.exec_valid);
        FUZZ_CHECK((c.exec_token && c.exec_token[0]) || (c.exec_cert.data && c.exec_key.data));
        FUZZ_CHECK(!c.exec_cert.data == !c.exec_key.data);
    } else {
        FUZZ_CHECK(rc == -1 && err && err[0] && !strchr(err, '\n') && !c.exec_valid);
        FUZZ_CHECK(!c.exec_token && !c.exec_cert.data && !c.exec_key.data);
        no_secret_in(err, (const char *)data + 1, size - 1, "\"token\"");
        no_secret_in(err, (const char *)data + 1, size - 1, "\"clientKeyData\"");
    }
    kc_str_wipe(&c.exec_token);
    kc_blob_wipe(&c.exec_cert);
    kc_blob_wipe(&c.exec_key);
    free(err);
    free(out);
    return 0;
}
