/*
 * tls.h: the server certificate rule czctl adds to libcurl's (core/tls.c),
 * and the OpenSSL functions it borrows from libcurl (core/curl_lazy.c).
 *
 * Go, and so kubectl, refuses a server certificate without subjectAltName
 * ("x509: certificate relies on legacy Common Name field, use SANs
 * instead"); libcurl falls back to the Common Name. A czctl_tls_check,
 * installed on an easy handle with czctl_tls_require_san, refuses such a
 * certificate during the handshake, before any byte of the request (and
 * of its credentials) is sent, and says why in Go's words.
 */
#ifndef CZCTL_TLS_H
#define CZCTL_TLS_H

#include <curl/curl.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

typedef struct czctl_tls_check {
    char *host;        /* the name the certificate must be valid for (malloc'd) */
    int refused;       /* set by the handshake: 1 no subjectAltName, 2 OpenSSL unavailable */
    int cn_matches;    /* its Common Name would have matched host */
    char msg[320];     /* czctl_tls_refusal's answer */
} czctl_tls_check;

/* Sets the name certificates must be valid for (the URL's host, or the
 * TLS server name); 0 or -1 when out of memory. */
int czctl_tls_expect_host(czctl_tls_check *t, const char *host);
/* Installs the check on e, which must verify the peer; 0, or -1 when
 * libcurl does not accept a TLS context callback. */
int czctl_tls_require_san(CURL *e, czctl_tls_check *t);
/* Go's message for the last refusal (NULL when none), and forget it. */
const char *czctl_tls_refusal(czctl_tls_check *t);
/* Frees the host. */
void czctl_tls_check_free(czctl_tls_check *t);

/* ---- OpenSSL, borrowed from libcurl (core/curl_lazy.c) ----------------- */
/* 1 when every function below is there (libcurl.so.4 is built on OpenSSL). */
int czctl_ossl_loaded(void);
void czctl_SSL_CTX_set_cert_verify_callback(SSL_CTX *ctx, int (*cb)(X509_STORE_CTX *, void *), void *arg);
int czctl_X509_verify_cert(X509_STORE_CTX *x);
X509 *czctl_X509_STORE_CTX_get0_cert(const X509_STORE_CTX *x);
void czctl_X509_STORE_CTX_set_error(X509_STORE_CTX *x, int e);
int czctl_X509_get_ext_by_NID(const X509 *x, int nid, int lastpos);
X509_NAME *czctl_X509_get_subject_name(const X509 *x);
int czctl_X509_NAME_get_text_by_NID(const X509_NAME *name, int nid, char *buf, int len);

#endif
