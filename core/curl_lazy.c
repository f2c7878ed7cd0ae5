/*
 * curl_lazy.c: libcurl, loaded on first use.
 *
 * Linking libcurl pulls in about thirty shared libraries (TLS, Kerberos,
 * LDAP, SSH, IDN, ...) and costs several milliseconds and ~7 MiB of RSS at
 * every start, even for `czctl version` or `czctl help`. So czctl is not
 * linked against libcurl: each libcurl function used in core/ is defined
 * here with libcurl's own prototype and forwards to the real one, which is
 * looked up in libcurl.so.4 with dlopen the first time any of them is
 * called. kube.c and net.c call libcurl as usual.
 *
 * A libcurl function used in core/ but missing here is a link error: add
 * one line below. If libcurl cannot be loaded, the *_init functions fail
 * (curl_global_init returns CURLE_FAILED_INIT, curl_easy_init NULL) and
 * curl_easy_strerror explains why. The library is never unloaded.
 *
 * The few OpenSSL functions core/tls.c needs (a certificate check libcurl
 * does not make) are forwarded the same way, from the libssl and libcrypto
 * that libcurl.so.4 itself loaded (dlsym on libcurl's handle also searches
 * its dependencies), under czctl_ names so no definition of ours can ever
 * stand in for OpenSSL's own symbols.
 * This file must not contain any logic beyond forwarding.
 */
#define _GNU_SOURCE
#define CURL_DISABLE_TYPECHECK   /* the type-checking macros would wrap our definitions */
#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <curl/curl.h>

#include "tls.h"

#define LIBCURL_SONAME "libcurl.so.4"

static void *libcurl;
static int load_failed;
static char load_error[256];

/* Address of a libcurl function, loading the library first; NULL on failure. */
static void *curl_lazy_sym(const char *name)
{
    if (!libcurl && !load_failed) {
        libcurl = dlopen(LIBCURL_SONAME, RTLD_NOW | RTLD_LOCAL);
        if (!libcurl) {
            load_failed = 1;
            const char *e = dlerror();
            snprintf(load_error, sizeof load_error, "cannot load %s: %s", LIBCURL_SONAME,
                     e ? e : "unknown error");
        }
    }
    if (!libcurl)
        return NULL;
    void *sym = dlsym(libcurl, name);
    if (!sym && !load_error[0])
        snprintf(load_error, sizeof load_error, "%s has no %s", LIBCURL_SONAME, name);
    return sym;
}

/* One forwarding function named ours for the library's function theirs;
 * on failure it runs `fail` (a return statement). */
#define FORWARD_AS(ret, ours, theirs, params, args, fail)             \
    ret ours params                                                   \
    {                                                                 \
        typedef ret(*fn_t) params;                                    \
        static fn_t fn;                                               \
        if (!fn)                                                      \
            *(void **)&fn = curl_lazy_sym(#theirs);                   \
        if (!fn) {                                                    \
            fail;                                                     \
        }                                                             \
        return fn args;                                               \
    }
#define FORWARD(ret, name, params, args, fail) FORWARD_AS(ret, name, name, params, args, fail)

FORWARD(CURLcode, curl_global_init, (long flags), (flags), return CURLE_FAILED_INIT)
FORWARD(void, curl_global_cleanup, (void), (), return)
FORWARD(CURL *, curl_easy_init, (void), (), return NULL)
FORWARD(CURLcode, curl_easy_perform, (CURL *c), (c), return CURLE_FAILED_INIT)
FORWARD(void, curl_easy_cleanup, (CURL *c), (c), return)
FORWARD(void, curl_easy_reset, (CURL *c), (c), return)
FORWARD(CURLcode, curl_easy_pause, (CURL *c, int bitmask), (c, bitmask), return CURLE_FAILED_INIT)
FORWARD(const char *, curl_easy_strerror, (CURLcode code), (code), return load_error)
FORWARD(char *, curl_easy_escape, (CURL *c, const char *s, int n), (c, s, n), return NULL)
FORWARD(char *, curl_easy_unescape, (CURL *c, const char *s, int n, int *outn), (c, s, n, outn),
        return NULL)
FORWARD(void, curl_free, (void *p), (p), return)
FORWARD(struct curl_slist *, curl_slist_append, (struct curl_slist *l, const char *s), (l, s),
        return NULL)
FORWARD(void, curl_slist_free_all, (struct curl_slist *l), (l), return)
FORWARD(CURLM *, curl_multi_init, (void), (), return NULL)
FORWARD(CURLMcode, curl_multi_add_handle, (CURLM *m, CURL *c), (m, c), return CURLM_INTERNAL_ERROR)
FORWARD(CURLMcode, curl_multi_remove_handle, (CURLM *m, CURL *c), (m, c), return CURLM_INTERNAL_ERROR)
FORWARD(CURLMcode, curl_multi_cleanup, (CURLM *m), (m), return CURLM_INTERNAL_ERROR)
FORWARD(CURLMsg *, curl_multi_info_read, (CURLM *m, int *left), (m, left), return NULL)
FORWARD(CURLMcode, curl_multi_perform, (CURLM *m, int *running), (m, running),
        return CURLM_INTERNAL_ERROR)
FORWARD(CURLMcode, curl_multi_poll,
        (CURLM *m, struct curl_waitfd extra[], unsigned int n, int ms, int *ret),
        (m, extra, n, ms, ret), return CURLM_INTERNAL_ERROR)
FORWARD(CURLMcode, curl_multi_wait,
        (CURLM *m, struct curl_waitfd extra[], unsigned int n, int ms, int *ret),
        (m, extra, n, ms, ret), return CURLM_INTERNAL_ERROR)
FORWARD(CURLMcode, curl_multi_wakeup, (CURLM *m), (m), return CURLM_INTERNAL_ERROR)
FORWARD(const char *, curl_multi_strerror, (CURLMcode code), (code), return load_error)
FORWARD(CURLU *, curl_url, (void), (), return NULL)
FORWARD(void, curl_url_cleanup, (CURLU *u), (u), return)
FORWARD(CURLU *, curl_url_dup, (CURLU *u), (u), return NULL)
FORWARD(CURLUcode, curl_url_get, (CURLU *u, CURLUPart what, char **part, unsigned int flags),
        (u, what, part, flags), return CURLUE_OUT_OF_MEMORY)
FORWARD(CURLUcode, curl_url_set, (CURLU *u, CURLUPart what, const char *part, unsigned int flags),
        (u, what, part, flags), return CURLUE_OUT_OF_MEMORY)
FORWARD(const char *, curl_url_strerror, (CURLUcode code), (code), return load_error)
FORWARD(char *, curl_version, (void), (), return load_error)

/* ---- OpenSSL (core/tls.c) ---------------------------------------------- */

static const char *const ossl_names[] = {
    "SSL_CTX_set_cert_verify_callback", "X509_verify_cert", "X509_STORE_CTX_get0_cert", "X509_STORE_CTX_set_error",
    "X509_get_ext_by_NID", "X509_get_subject_name", "X509_NAME_get_text_by_NID",
};

int czctl_ossl_loaded(void)
{
    for (size_t i = 0; i < sizeof ossl_names / sizeof *ossl_names; i++)
        if (!curl_lazy_sym(ossl_names[i]))
            return 0;
    return 1;
}

FORWARD_AS(void, czctl_SSL_CTX_set_cert_verify_callback,
           SSL_CTX_set_cert_verify_callback, (SSL_CTX * ctx, int (*cb)(X509_STORE_CTX *, void *), void *arg),
           (ctx, cb, arg), return)
FORWARD_AS(int, czctl_X509_verify_cert, X509_verify_cert, (X509_STORE_CTX * x), (x), return 0)
FORWARD_AS(X509 *, czctl_X509_STORE_CTX_get0_cert, X509_STORE_CTX_get0_cert, (const X509_STORE_CTX *x), (x),
           return NULL)
FORWARD_AS(void, czctl_X509_STORE_CTX_set_error, X509_STORE_CTX_set_error, (X509_STORE_CTX * x, int e), (x, e),
           return)
FORWARD_AS(int, czctl_X509_get_ext_by_NID, X509_get_ext_by_NID, (const X509 *x, int nid, int lastpos),
           (x, nid, lastpos), return -1)
FORWARD_AS(X509_NAME *, czctl_X509_get_subject_name, X509_get_subject_name, (const X509 *x), (x), return NULL)
FORWARD_AS(int, czctl_X509_NAME_get_text_by_NID, X509_NAME_get_text_by_NID,
           (const X509_NAME *name, int nid, char *buf, int len), (name, nid, buf, len), return -1)

/* The variadic ones: the option number says the type of the one argument
 * (the same rule libcurl itself uses to read it). */
typedef void (*any_fn)(void);

CURLcode curl_easy_setopt(CURL *c, CURLoption option, ...)
{
    typedef CURLcode (*fn_t)(CURL *, CURLoption, ...);
    static fn_t fn;
    if (!fn)
        *(void **)&fn = curl_lazy_sym("curl_easy_setopt");
    if (!fn)
        return CURLE_FAILED_INIT;
    va_list ap;
    va_start(ap, option);
    CURLcode r;
    if (option < CURLOPTTYPE_OBJECTPOINT)
        r = fn(c, option, va_arg(ap, long));
    else if (option < CURLOPTTYPE_FUNCTIONPOINT)
        r = fn(c, option, va_arg(ap, void *));
    else if (option < CURLOPTTYPE_OFF_T)
        r = fn(c, option, va_arg(ap, any_fn));
    else if (option < CURLOPTTYPE_BLOB)
        r = fn(c, option, va_arg(ap, curl_off_t));
    else
        r = fn(c, option, va_arg(ap, void *));
    va_end(ap);
    return r;
}

CURLMcode curl_multi_setopt(CURLM *m, CURLMoption option, ...)
{
    typedef CURLMcode (*fn_t)(CURLM *, CURLMoption, ...);
    static fn_t fn;
    if (!fn)
        *(void **)&fn = curl_lazy_sym("curl_multi_setopt");
    if (!fn)
        return CURLM_INTERNAL_ERROR;
    va_list ap;
    va_start(ap, option);
    CURLMcode r;
    if (option < CURLOPTTYPE_OBJECTPOINT)
        r = fn(m, option, va_arg(ap, long));
    else if (option < CURLOPTTYPE_FUNCTIONPOINT)
        r = fn(m, option, va_arg(ap, void *));
    else if (option < CURLOPTTYPE_OFF_T)
        r = fn(m, option, va_arg(ap, any_fn));
    else
        r = fn(m, option, va_arg(ap, curl_off_t));
    va_end(ap);
    return r;
}

/* Every CURLINFO argument is a pointer to where the answer goes. */
CURLcode curl_easy_getinfo(CURL *c, CURLINFO info, ...)
{
    typedef CURLcode (*fn_t)(CURL *, CURLINFO, ...);
    static fn_t fn;
    if (!fn)
        *(void **)&fn = curl_lazy_sym("curl_easy_getinfo");
    if (!fn)
        return CURLE_FAILED_INIT;
    va_list ap;
    va_start(ap, info);
    CURLcode r = fn(c, info, va_arg(ap, void *));
    va_end(ap);
    return r;
}
