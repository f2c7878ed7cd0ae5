/*
 * czctl.h: what the C files of core/ share with each other.
 *
 * The Lua module entry points (one per C file), the signal machinery every
 * blocking call must wake on, the lazy libcurl initialisation, and a small
 * "resource box" so no C function longjmps past a live fd, malloc or handle.
 * Nothing here knows about intercepts, sessions or recipes.
 */
#ifndef CZCTL_H
#define CZCTL_H

#include <stddef.h>
#include <sys/types.h>
#include <lauxlib.h>
#include <lua.h>

#include "buf.h"

/* Lua module entry points; each may raise only on memory errors. */
int luaopen_czctl_core_proc(lua_State *L);  /* core/proc.c */
int luaopen_czctl_core_sys(lua_State *L);   /* core/sys.c */
int luaopen_czctl_core_net(lua_State *L);   /* core/net.c */
int luaopen_czctl_core_kube(lua_State *L);  /* core/kube.c (core-kube) */
int luaopen_czctl_core_embed(lua_State *L); /* core/embed.c */
int luaopen_czctl_core_landing(lua_State *L); /* core/landing.c */

/*
 * Register every C module, cjson, czctl.core.embed and every embedded Lua
 * module as package.preload loaders (nothing is loaded eagerly). Raises only
 * on memory errors. Defined in core/embed.c.
 */
void czctl_preload_all(lua_State *L);

/* ---- handle classes (core/class.c) ----------------------------------------
 * Every userdata a C module hands to Lua (or keeps on the stack to own a
 * resource) belongs to a class registered the way Lua's liolib registers
 * files: a named metatable ("czctl.<module>.<type>", also its __name), the
 * methods under __index apart from the metamethods, one idempotent release
 * behind :close(), __close and __gc, and __tostring ("process 1234",
 * "process (closed)"). Adopting it in a module takes a release function, a
 * class and the three calls below:
 *
 *   typedef struct thing { int fd; } thing;
 *   static void thing_release(void *p)        // frees what the handle owns;
 *   { thing *t = p; if (t->fd >= 0) close(t->fd); t->fd = -1; }   // idempotent
 *   static void thing_describe(lua_State *L, const void *p)        // optional
 *   { lua_pushfstring(L, "thing %d", ((const thing *)p)->fd); }
 *   static const luaL_Reg thing_methods[] = {{"read", thing_read}, {NULL, NULL}};
 *   static const czctl_class thing_class = {"czctl.mod.thing", "thing", thing_methods,
 *                                           thing_release, thing_describe};
 *
 *   thing *t = czctl_handle_new(L, &thing_class, sizeof *t, 0);  // zeroed; then acquire
 *   thing *t = czctl_handle_check_open(L, 1, &thing_class);      // in a method
 *
 * A "close" method is added unless the class has its own (which calls
 * czctl_handle_close and pushes its results, as process:close() returns
 * the exit code). Release functions must not raise. Raising functions
 * below raise only on misuse (wrong argument) or memory errors. */
typedef struct czctl_class {
    const char *name;             /* registry key and __name: "czctl.process" */
    const char *label;            /* __tostring's word: "process" */
    const luaL_Reg *methods;      /* {NULL, NULL}-terminated, or NULL */
    void (*release)(void *handle);
    void (*describe)(lua_State *L, const void *handle);   /* NULL: "<label> (0x...)" */
} czctl_class;

/* Registers cls (once; later calls do nothing). Optional: czctl_handle_new
 * registers it on first use. */
void czctl_class_register(lua_State *L, const czctl_class *cls);
/* Pushes a new open handle of size bytes, zeroed, with nuv user values. */
void *czctl_handle_new(lua_State *L, const czctl_class *cls, size_t size, int nuv);
/* The handle at arg, open or closed; raises when it is not one of cls. */
void *czctl_handle_check(lua_State *L, int arg, const czctl_class *cls);
/* The same, but raises "<label> is closed" for a closed one. */
void *czctl_handle_check_open(lua_State *L, int arg, const czctl_class *cls);
/* Releases the handle at arg unless it was already: the one close. */
void czctl_handle_close(lua_State *L, int arg, const czctl_class *cls);
/* Has the handle been closed (by any of :close(), __close, __gc)? */
int czctl_handle_is_closed(const void *handle);

/* ---- signals (core/sys.c) ------------------------------------------------
 * SIGINT, SIGTERM and SIGHUP set a pending flag and write a byte to a
 * non-blocking self-pipe; SIGPIPE is ignored. Handlers run without
 * SA_RESTART so blocking system calls return EINTR. A blocking call polls
 * czctl_signal_fd() next to its own fds and gives up with "interrupted"
 * when czctl_signal_pending() is non-zero. The pending signal stays pending
 * until czctl_signal_clear().
 *
 * The shield (a nesting depth) is for cleanup that must finish, e.g. an undo
 * stack: while it is raised, signals are still recorded (the first one is
 * kept) but czctl_signal_pending() returns 0 and the pipe is not written, so
 * blocking calls run to their own timeouts. Lowering it to 0 with a signal
 * recorded makes the pipe readable again. */

/* Install the handlers and create the pipe; idempotent. 0 or -1 (errno). */
int czctl_signal_init(void);
/* Read end of the self-pipe (readable while a signal is pending), or -1. */
int czctl_signal_fd(void);
/* The first pending signal number since the last clear, or 0; 0 while shielded. */
int czctl_signal_pending(void);
/* The first signal recorded since the last clear, shielded or not, or 0. */
int czctl_signal_recorded(void);
/* Raise (on != 0) or lower (on == 0, never below 0) the shield; returns the
 * new depth. Not for use in signal handlers. */
int czctl_signal_shield(int on);
/* Forget the pending signal and drain the pipe. */
void czctl_signal_clear(void);
/* "SIGINT", "SIGTERM", "SIGHUP" or NULL for anything else. */
const char *czctl_signal_name(int signo);

/*
 * Wait until one of fd (if >= 0) becomes readable, a signal is pending or
 * timeout_s passes (timeout_s < 0: forever). Restarts poll after EINTR with
 * the remaining time. Returns 1 (fd readable or hung up), 0 (timeout),
 * -2 (signal pending) or -1 (poll failed, errno set). events is POLLIN or
 * POLLOUT.
 */
int czctl_wait_fd(int fd, short events, double timeout_s);

/* Monotonic clock in seconds. */
double czctl_now(void);

/* ---- libcurl (core/net.c, core/curl_lazy.c) -----------------------------
 * czctl is not linked against libcurl: core/curl_lazy.c defines the libcurl
 * functions core/ uses and loads libcurl.so.4 on the first call (a new
 * libcurl function needs one line there). curl_global_init is expensive
 * (TLS set-up); call czctl_curl_init() before the first curl_easy_init or
 * curl_multi_init. Returns 0 on success, -1 when libcurl cannot be loaded or
 * initialised. czctl_curl_cleanup() is called by main after lua_close; it is
 * safe when nothing was initialised. */
int czctl_curl_init(void);
void czctl_curl_cleanup(void);

/* Go's httpguts.ValidHeaderFieldValue: no control character but HTAB (so
 * no CR or LF that would end the header and start another). 1 or 0.
 * Defined in core/net.c; every header value czctl sends passes it. */
int czctl_header_value_ok(const char *v);

/* Pushes the raw response header lines (libcurl's header callback data of
 * one response) as { lower-cased name = value }, repeated names joined with
 * ", ", status lines skipped. Raises only on memory errors. */
void czctl_push_headers(lua_State *L, const char *raw, size_t len);

/* ---- results and arguments (core/sys.c) -----------------------------------
 * One behaviour for every module: failures of the world are nil, message
 * (plus errno where there is one); misuse raises "bad argument" errors. */

/* Pushes nil, msg; returns 2. Raises only on memory errors. */
int czctl_fail(lua_State *L, const char *msg);
/* Pushes nil, "<what>: <strerror(e)>", e; returns 3. Raises only on memory errors. */
int czctl_fail_errno(lua_State *L, const char *what, int e);
/* Argument arg in seconds: def when none or nil. Raises unless a number >= 0. */
double czctl_opt_seconds(lua_State *L, int arg, double def);
/* Field key of the options table at index t in seconds: def when nil.
 * Raises unless a number >= 0. */
double czctl_field_seconds(lua_State *L, int t, const char *key, double def);
/* Field key of the options table at index t: NULL when nil, else a string
 * that the table keeps alive. Raises on any other type. */
const char *czctl_field_string(lua_State *L, int t, const char *key);

/* ---- child processes (core/proc.c) ----------------------------------------
 * Every program czctl starts (czctl.core.proc, exec credential plugins)
 * starts through czctl_exec_start, so every child gets the same set-up:
 * signals blocked across fork (no handler of ours runs in the child), then
 * default dispositions and an empty mask, exactly the three fds given as
 * 0, 1 and 2, and every other fd closed on exec. Nothing here raises. */
typedef struct czctl_exec {
    const char *path;          /* the executable (see czctl_find_program) */
    char *const *argv;
    char *const *envp;
    const char *cwd;           /* NULL: ours */
    int fds[3];                /* become the child's 0, 1 and 2 */
    int group;                 /* 1: the child leads a new process group */
    int terminal;              /* with group, 1: that group becomes the foreground of the
                                * terminal on the child's stdin (as a shell starts a job) */
    int parent_death_signal;   /* 0: none; else sent to the child when the thread that
                                * started it dies, even by SIGKILL (PR_SET_PDEATHSIG) */
} czctl_exec;

enum { CZCTL_EXEC_FORK, CZCTL_EXEC_EXEC, CZCTL_EXEC_CWD };

/* Forks and execs x. Returns the child's pid once execve succeeded, or -1
 * with errno set and *stage saying what failed: CZCTL_EXEC_FORK (pipe or
 * fork), CZCTL_EXEC_EXEC (execve; errno is the child's) or CZCTL_EXEC_CWD
 * (chdir); a child that failed has been reaped. */
pid_t czctl_exec_start(const czctl_exec *x, int *stage);

/* Stops a child: SIGTERM, up to grace_s for it to exit (a pending signal
 * does not cut this short: cleanup must finish), then SIGKILL. Reaps it and
 * returns its exit code (128+N for signal N). pidfd may be -1. */
int czctl_child_stop(pid_t pid, int pidfd, double grace_s);

/* cmd as it is when it holds a '/' (like execvp), else the first executable
 * regular file named cmd in the colon list path_var (an empty entry is the
 * current directory; NULL finds nothing). Returns a malloc'd path, or NULL
 * with errno ENOENT or ENOMEM. */
char *czctl_find_program(const char *cmd, const char *path_var);

/* Is path an executable regular file? */
int czctl_is_executable(const char *path);

/* ---- resource box (core/sys.c) -------------------------------------------
 * A full userdata that owns one fd, one malloc'd buffer and one opaque
 * pointer with its release function, all freed by __gc/__close. Create it
 * before acquiring the resources; any later raise (memory error included)
 * leaves nothing behind. czctl_box_new raises on memory errors. */
typedef struct czctl_box {
    int fd;                     /* -1 when none */
    czctl_buf buf;              /* bytes being gathered */
    void *ptr;                  /* released with release(ptr) */
    void (*release)(void *ptr);
} czctl_box;

czctl_box *czctl_box_new(lua_State *L);   /* pushes the box */
void czctl_box_release(czctl_box *box);   /* idempotent */

#endif
