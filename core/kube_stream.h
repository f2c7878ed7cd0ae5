/*
 * kube_stream.h: what core/kube.c gives the streaming modules
 * (core/portforward.c): connections to the API server made with the same
 * kubeconfig, TLS, proxy and credentials as every other request of a
 * czctl.kube.client, on a libcurl CONNECT_ONLY handle, so that the module
 * can speak an upgraded protocol (WebSocket, SPDY) itself.
 *
 * A dialer is made on the Lua thread from an open client and may then be
 * used from any thread: it owns a private copy of the client's URL state
 * and shares the client's kubeconfig (kept alive by whoever holds the
 * client userdata). Credentials are read (and exec plugins run) under one
 * lock shared with the client's own requests. Credentials never leave C:
 * the request head built here is wiped by the caller after use.
 */
#ifndef CZCTL_KUBE_STREAM_H
#define CZCTL_KUBE_STREAM_H

#include <stddef.h>
#include <curl/curl.h>
#include <lua.h>

typedef struct czctl_kube_dialer czctl_kube_dialer;

/* A dialer for the open czctl.kube.client at index idx. Raises when it is
 * not one; returns NULL with *err (malloc'd) on other failures. */
czctl_kube_dialer *czctl_kube_dialer_new(lua_State *L, int idx, char **err);

/*
 * Sets up e (a fresh easy handle) to connect to the API server for
 * METHOD path: libcurl's CONNECT_ONLY with HTTP/1.1, the client's TLS,
 * proxy and timeouts. *head receives the request head without its closing
 * empty line ("METHOD path HTTP/1.1\r\nHost: ...\r\n...Authorization...\r\n",
 * malloc'd; wipe and free it), *url the URL for messages (malloc'd, without
 * secrets). refresh != 0 discards cached exec credentials first (after a
 * 401). 0, -1 with *err (malloc'd), or -2 when a signal interrupted an exec
 * plugin.
 */
int czctl_kube_dialer_prepare(czctl_kube_dialer *d, CURL *e, const char *method, const char *path, int refresh,
                              char **head, size_t *head_len, char **url, char **err);

/* Is the client verbose (one stderr line per request)? */
int czctl_kube_dialer_verbose(const czctl_kube_dialer *d);

/* Does the client authenticate with an exec plugin (a 401 is worth one refresh)? */
int czctl_kube_dialer_exec_auth(const czctl_kube_dialer *d);

/* Frees the dialer; NULL is fine. */
void czctl_kube_dialer_free(czctl_kube_dialer *d);

#endif
