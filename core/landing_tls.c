/*
 * landing_tls.c: the TLS part of czctl.core.landing (see landing_tls.h).
 *
 * Mutual TLS between the session's proxy and the landing, with a CA made
 * for one session (docs/decisions.md section 2): EC P-256 keys, SHA-256
 * signatures, a server certificate naming the address the proxy dials and a
 * client certificate only the proxy holds. Nothing here knows about
 * sessions or Kubernetes; keys exist only as PEM strings handed to Lua.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "landing_tls.h"

/* Everything one session_pki call allocates, freed in one place (never
 * longjmp past it: Lua is only called once it is all freed or pushed). */
struct pki {
    EVP_PKEY *ca_key, *server_key, *client_key, *fallback_key;
    X509 *ca, *server, *client, *fallback;
};

static void pki_free(struct pki *p)
{
    EVP_PKEY_free(p->ca_key);
    EVP_PKEY_free(p->server_key);
    EVP_PKEY_free(p->client_key);
    EVP_PKEY_free(p->fallback_key);
    X509_free(p->ca);
    X509_free(p->server);
    X509_free(p->client);
    X509_free(p->fallback);
}

static int add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    if (!ext)
        return 0;
    int ok = X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
    return ok;
}

/* A certificate for key, named cn, signed by issuer_key (issuer NULL: self-signed). */
static X509 *make_cert(EVP_PKEY *key, const char *cn, X509 *issuer, EVP_PKEY *issuer_key, long days,
                       const char *const *exts)
{
    X509 *x = X509_new();
    BIGNUM *serial = BN_new();
    int ok = x && serial && X509_set_version(x, 2) && BN_rand(serial, 120, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) &&
             BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(x)) &&
             X509_gmtime_adj(X509_getm_notBefore(x), -3600) &&
             X509_gmtime_adj(X509_getm_notAfter(x), days * 86400L) && X509_set_pubkey(x, key);
    BN_free(serial);
    X509_NAME *name = ok ? X509_get_subject_name(x) : NULL;
    ok = ok && X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"czctl session", -1, -1, 0) &&
         X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0) &&
         X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name);
    for (int i = 0; ok && exts[i]; i += 2)
        ok = add_ext(x, issuer ? issuer : x, OBJ_txt2nid(exts[i]), exts[i + 1]);
    if (!ok || !X509_sign(x, issuer_key, EVP_sha256())) {
        X509_free(x);
        return NULL;
    }
    return x;
}

static char *pem_of(X509 *cert, EVP_PKEY *key)
{
    BIO *b = BIO_new(BIO_s_mem());
    if (!b)
        return NULL;
    int ok = cert ? PEM_write_bio_X509(b, cert) : PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL);
    char *out = NULL;
    BUF_MEM *mem = NULL;
    if (ok && BIO_get_mem_ptr(b, &mem) > 0 && mem && (out = malloc(mem->length + 1))) {
        memcpy(out, mem->data, mem->length);
        out[mem->length] = '\0';
    }
    BIO_free(b);
    return out;
}

int landing_session_pki(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "server_name");
    const char *server_name = lua_tostring(L, -1);
    if (!server_name || !*server_name || strlen(server_name) > 253 || strpbrk(server_name, ", \t\r\n/:"))
        return luaL_argerror(L, 1, "server_name must be an IPv4 address or a DNS name");
    lua_getfield(L, 1, "days");
    lua_Integer days = luaL_optinteger(L, -1, 30);
    if (days < 1 || days > 3650)
        return luaL_argerror(L, 1, "days must be 1..3650");
    unsigned char ip[4];
    char san[300];
    snprintf(san, sizeof san, "%s:%s", inet_pton(AF_INET, server_name, ip) == 1 ? "IP" : "DNS", server_name);

    static const char *const ca_exts[] = {"basicConstraints", "critical,CA:TRUE,pathlen:0",
                                          "keyUsage", "critical,keyCertSign,cRLSign",
                                          "subjectKeyIdentifier", "hash", NULL};
    const char *const server_exts[] = {"basicConstraints", "critical,CA:FALSE",
                                       "keyUsage", "critical,digitalSignature",
                                       "extendedKeyUsage", "serverAuth",
                                       "subjectAltName", san,
                                       "authorityKeyIdentifier", "keyid", NULL};
    static const char *const client_exts[] = {"basicConstraints", "critical,CA:FALSE",
                                              "keyUsage", "critical,digitalSignature",
                                              "extendedKeyUsage", "clientAuth",
                                              "authorityKeyIdentifier", "keyid", NULL};
    struct pki p = {0};
    p.ca_key = EVP_EC_gen("P-256");
    p.server_key = EVP_EC_gen("P-256");
    p.client_key = EVP_EC_gen("P-256");
    p.fallback_key = EVP_EC_gen("P-256");
    if (p.ca_key && p.server_key && p.client_key && p.fallback_key) {
        p.ca = make_cert(p.ca_key, "czctl session CA", NULL, p.ca_key, days, ca_exts);
        if (p.ca) {
            p.server = make_cert(p.server_key, server_name, p.ca, p.ca_key, days, server_exts);
            p.client = make_cert(p.client_key, "czctl proxy", p.ca, p.ca_key, days, client_exts);
            /* the proxy's own stand-in for the landing (the original behind a
             * TCP-level route's TLS hop): same names, its own key (NGINX
             * checks an address against the CN, X509_check_host) */
            p.fallback = make_cert(p.fallback_key, server_name, p.ca, p.ca_key, days, server_exts);
        }
    }
    enum { NPEMS = 7 };
    char *pems[NPEMS] = {0};
    static const char *const names[NPEMS] = {"ca_cert",     "server_cert",   "server_key",  "client_cert",
                                             "client_key",  "fallback_cert", "fallback_key"};
    int ok = p.ca && p.server && p.client && p.fallback;
    if (ok) {
        pems[0] = pem_of(p.ca, NULL);
        pems[1] = pem_of(p.server, NULL);
        pems[2] = pem_of(NULL, p.server_key);
        pems[3] = pem_of(p.client, NULL);
        pems[4] = pem_of(NULL, p.client_key);
        pems[5] = pem_of(p.fallback, NULL);
        pems[6] = pem_of(NULL, p.fallback_key);
        for (int i = 0; i < NPEMS; i++)
            ok = ok && pems[i];
    }
    pki_free(&p);
    ERR_clear_error();
    if (!ok) {
        for (int i = 0; i < NPEMS; i++)
            if (pems[i]) {
                OPENSSL_cleanse(pems[i], strlen(pems[i]));
                free(pems[i]);
            }
        lua_pushnil(L);
        lua_pushliteral(L, "cannot make the session's certificates (OpenSSL failed)");
        return 2;
    }
    /* Copy into Lua strings, then wipe and free ours; lua_pushstring only
     * raises on memory errors, after which the leak is the least concern,
     * but free first anyway by pushing into a table built up front. */
    if (!lua_checkstack(L, 8)) {
        for (int i = 0; i < NPEMS; i++) {
            OPENSSL_cleanse(pems[i], strlen(pems[i]));
            free(pems[i]);
        }
        return luaL_error(L, "not enough memory");
    }
    lua_createtable(L, 0, NPEMS);
    for (int i = 0; i < NPEMS; i++) {
        lua_pushstring(L, pems[i]);
        OPENSSL_cleanse(pems[i], strlen(pems[i]));
        free(pems[i]);
        pems[i] = NULL;
        lua_setfield(L, -2, names[i]);
    }
    return 1;
}

SSL_CTX *landing_tls_server(const char *cert, const char *key, const char *client_ca, const char **err)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    BIO *b = NULL;
    X509 *x = NULL;
    EVP_PKEY *k = NULL;
    *err = "cannot create a TLS context";
    if (!ctx || !SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION))
        goto fail;
    *err = "tls.cert is not a PEM certificate";
    if (!(b = BIO_new_mem_buf(cert, -1)) || !(x = PEM_read_bio_X509(b, NULL, NULL, NULL)) ||
        SSL_CTX_use_certificate(ctx, x) != 1)
        goto fail;
    BIO_free(b);
    X509_free(x);
    b = NULL;
    x = NULL;
    *err = "tls.key is not the PEM key of tls.cert";
    if (!(b = BIO_new_mem_buf(key, -1)) || !(k = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL)) ||
        SSL_CTX_use_PrivateKey(ctx, k) != 1 || SSL_CTX_check_private_key(ctx) != 1)
        goto fail;
    BIO_free(b);
    EVP_PKEY_free(k);
    b = NULL;
    k = NULL;
    *err = "tls.client_ca is not a PEM certificate";
    X509_STORE *store = SSL_CTX_get_cert_store(ctx);
    if (!(b = BIO_new_mem_buf(client_ca, -1)) || !(x = PEM_read_bio_X509(b, NULL, NULL, NULL)) ||
        X509_STORE_add_cert(store, x) != 1)
        goto fail;
    BIO_free(b);
    X509_free(x);
    /* Only a certificate signed by the session's CA, presented directly. */
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    SSL_CTX_set_verify_depth(ctx, 1);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* Resumed sessions (tickets) spare the proxy a full handshake per connection. */
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"czctl-landing", 13);
    ERR_clear_error();
    *err = NULL;
    return ctx;

fail:
    BIO_free(b);
    X509_free(x);
    EVP_PKEY_free(k);
    SSL_CTX_free(ctx);
    ERR_clear_error();
    return NULL;
}
