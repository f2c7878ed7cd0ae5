/*
 * landing_tls.h: the TLS part of the landing (core/landing_tls.c): the
 * per-session certificates and the server context that admits only the
 * session's proxy (docs/decisions.md section 2). Internal to core/landing*.c.
 */
#ifndef CZCTL_LANDING_TLS_H
#define CZCTL_LANDING_TLS_H

#include <lua.h>
#include <openssl/ssl.h>

/* landing.session_pki{ server_name = IP-or-DNS-name, days = 30 } -> {
 *   ca_cert =, server_cert =, server_key =, client_cert =, client_key =,
 *   fallback_cert =, fallback_key = } (PEM)
 * A fresh CA per call signs one server certificate (subjectAltName
 * server_name), one client certificate, and a second server certificate for
 * the same name (the proxy's stand-in for the landing on a TCP-level route's
 * fallback, docs/decisions.md section 3); the CA's key is thrown away, so
 * nothing else can ever be signed by it. Raises on bad arguments; nil, msg
 * when OpenSSL fails. */
int landing_session_pki(lua_State *L);

/* A TLS server context from PEM texts: the landing's certificate and key,
 * and the CA whose client certificates alone are admitted (a client without
 * one fails the handshake). NULL with *err set to a static message. */
SSL_CTX *landing_tls_server(const char *cert, const char *key, const char *client_ca, const char **err);

#endif
