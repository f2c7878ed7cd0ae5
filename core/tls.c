/*
 * tls.c: refuse a server certificate without subjectAltName, as Go's
 * crypto/x509 (and so kubectl) does, during the TLS handshake (see tls.h).
 *
 * libcurl has no option for it: its OpenSSL backend falls back to the
 * Common Name. CURLOPT_SSL_CTX_FUNCTION hands us each connection's SSL_CTX
 * before the handshake; we wrap OpenSSL's chain verification
 * (SSL_CTX_set_cert_verify_callback): the chain is verified as before, then
 * a leaf without the subjectAltName extension fails verification, so the
 * handshake ends and nothing is sent. When OpenSSL cannot be reached the
 * connection is refused too (fail closed). Must not log or raise.
 */
#define _GNU_SOURCE
#include "tls.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int verify(X509_STORE_CTX *x, void *arg)
{
    czctl_tls_check *t = arg;
    int ok = czctl_X509_verify_cert(x);
    if (ok <= 0)
        return ok;   /* the chain itself failed: libcurl reports it as usual */
    X509 *leaf = czctl_X509_STORE_CTX_get0_cert(x);
    if (!leaf || czctl_X509_get_ext_by_NID(leaf, NID_subject_alt_name, -1) >= 0)
        return 1;
    char cn[256] = "";
    X509_NAME *subject = czctl_X509_get_subject_name(leaf);
    if (!subject || czctl_X509_NAME_get_text_by_NID(subject, NID_commonName, cn, sizeof cn) < 0)
        cn[0] = '\0';
    t->refused = 1;
    t->cn_matches = cn[0] && t->host && !strcasecmp(cn, t->host);
    czctl_X509_STORE_CTX_set_error(x, X509_V_ERR_HOSTNAME_MISMATCH);
    return 0;
}

static CURLcode on_ssl_ctx(CURL *e, void *ssl_ctx, void *arg)
{
    czctl_tls_check *t = arg;
    (void)e;
    if (!czctl_ossl_loaded()) {
        t->refused = 2;
        return CURLE_SSL_CERTPROBLEM;
    }
    czctl_SSL_CTX_set_cert_verify_callback(ssl_ctx, verify, t);
    return CURLE_OK;
}

int czctl_tls_expect_host(czctl_tls_check *t, const char *host)
{
    size_t n = strlen(host);
    free(t->host);
    /* an IPv6 literal as a URL writes it: [::1] */
    t->host = n > 1 && host[0] == '[' && host[n - 1] == ']' ? strndup(host + 1, n - 2) : strdup(host);
    return t->host ? 0 : -1;
}

int czctl_tls_require_san(CURL *e, czctl_tls_check *t)
{
    if (curl_easy_setopt(e, CURLOPT_SSL_CTX_FUNCTION, on_ssl_ctx) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_SSL_CTX_DATA, t) != CURLE_OK)
        return -1;
    return 0;
}

const char *czctl_tls_refusal(czctl_tls_check *t)
{
    char *msg = t->msg;
    int why = t->refused;
    t->refused = 0;
    if (!why)
        return NULL;
    if (why == 2)
        return "cannot check the server certificate: libcurl is not built on OpenSSL";
    /* crypto/x509 HostnameError.Error() */
    unsigned char ip[16];
    const char *host = t->host ? t->host : "";
    int is_ip = inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1;
    if (t->cn_matches)
        snprintf(msg, sizeof t->msg, "x509: certificate relies on legacy Common Name field, use SANs instead");
    else if (is_ip)
        snprintf(msg, sizeof t->msg, "x509: cannot validate certificate for %s because it doesn't contain any IP SANs",
                 host);
    else
        snprintf(msg, sizeof t->msg, "x509: certificate is not valid for any names, but wanted to match %s", host);
    return msg;
}

void czctl_tls_check_free(czctl_tls_check *t)
{
    free(t->host);
    t->host = NULL;
}
