/*
 * sys.c: czctl.core.sys, plus the signal machinery and resource box that the
 * other C modules share (see czctl.h).
 *
 * Time, sleep, environment, XDG directories, atomic files, random ids and the
 * signal state that recipes use to roll back; also the result and argument
 * helpers every module uses (czctl_fail, czctl_opt_seconds, ...). Global
 * mutable state in core/ lives here (and in proc.c's SIGCHLD pipe), and only
 * because signal handlers need it. This file knows nothing about Kubernetes
 * or intercepts.
 */
#define _GNU_SOURCE   /* pipe2, O_CLOEXEC, getrandom, ... */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

#include "czctl.h"

extern char **environ;

/* ---- signals ------------------------------------------------------------ */

static volatile sig_atomic_t sig_pending;   /* first signal since last clear */
static volatile sig_atomic_t sig_shield;    /* shield depth: > 0 hides sig_pending */
static int sig_pipe[2] = {-1, -1};

static void sig_handler(int signo)
{
    int saved = errno;
    if (!sig_pending)
        sig_pending = signo;
    if (sig_pipe[1] >= 0 && !sig_shield) {   /* shielded: record, wake nobody */
        char c = (char)signo;
        ssize_t r = write(sig_pipe[1], &c, 1);   /* full pipe: already readable */
        (void)r;
    }
    errno = saved;
}

int czctl_signal_init(void)
{
    if (sig_pipe[0] >= 0)
        return 0;
    if (pipe2(sig_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
        sig_pipe[0] = sig_pipe[1] = -1;
        return -1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = sig_handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;   /* no SA_RESTART: blocking calls must wake up */
    static const int sigs[] = {SIGINT, SIGTERM, SIGHUP};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        if (sigaction(sigs[i], &sa, NULL) != 0)
            return -1;
    sa.sa_handler = SIG_IGN;
    if (sigaction(SIGPIPE, &sa, NULL) != 0)
        return -1;
    return 0;
}

int czctl_signal_fd(void) { return sig_pipe[0]; }

int czctl_signal_pending(void) { return sig_shield ? 0 : sig_pending; }

int czctl_signal_recorded(void) { return sig_pending; }

int czctl_signal_shield(int on)
{
    if (on) {
        sig_shield = sig_shield + 1;
    } else if (sig_shield > 0) {
        sig_shield = sig_shield - 1;
        if (!sig_shield && sig_pending && sig_pipe[1] >= 0) {
            /* visible again: make the pipe readable, as if it just arrived */
            char c = (char)sig_pending;
            ssize_t r = write(sig_pipe[1], &c, 1);
            (void)r;
        }
    }
    return sig_shield;
}

void czctl_signal_clear(void)
{
    char buf[64];
    sig_pending = 0;
    if (sig_pipe[0] >= 0)
        while (read(sig_pipe[0], buf, sizeof buf) > 0)
            ;
}

const char *czctl_signal_name(int signo)
{
    switch (signo) {
    case SIGINT: return "SIGINT";
    case SIGTERM: return "SIGTERM";
    case SIGHUP: return "SIGHUP";
    default: return NULL;
    }
}

double czctl_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int czctl_wait_fd(int fd, short events, double timeout_s)
{
    double deadline = timeout_s >= 0 ? czctl_now() + timeout_s : 0;
    for (;;) {
        if (czctl_signal_pending())
            return -2;
        struct pollfd pfd[2] = {
            {.fd = fd, .events = events},
            {.fd = sig_pipe[0], .events = POLLIN},
        };
        int ms = -1;
        if (timeout_s >= 0) {
            double left = deadline - czctl_now();
            if (left < 0)
                left = 0;
            /* round up so we never wake just before the deadline and spin */
            ms = left > (double)INT_MAX / 1000 ? INT_MAX : (int)(left * 1000 + 0.999);
        }
        int r = poll(pfd, 2, ms);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (czctl_signal_pending())
            return -2;
        if (fd >= 0 && pfd[0].revents)
            return 1;
        if (r == 0 && timeout_s >= 0 && czctl_now() >= deadline)
            return 0;
        if (pfd[1].revents && !czctl_signal_pending()) {
            /* stale bytes: a signal cleared meanwhile, or one that arrived
             * just before a shield (it is still recorded in sig_pending) */
            char buf[64];
            while (read(sig_pipe[0], buf, sizeof buf) > 0)
                ;
        }
    }
}

/* ---- resource box --------------------------------------------------------- */

void czctl_box_release(czctl_box *box)
{
    if (box->fd >= 0) {
        close(box->fd);
        box->fd = -1;
    }
    /* ptr first: it may point into buf (a temp file name to unlink) */
    if (box->ptr && box->release)
        box->release(box->ptr);
    box->ptr = NULL;
    czctl_buf_free(&box->buf);
}

static void box_release(void *box)
{
    czctl_box_release(box);
}

static const czctl_class box_class = {"czctl.box", "resource box", NULL, box_release, NULL};

czctl_box *czctl_box_new(lua_State *L)
{
    czctl_box *box = czctl_handle_new(L, &box_class, sizeof *box, 0);
    box->fd = -1;
    return box;
}

/* ---- results and arguments, the same in every module (see czctl.h) ------ */

int czctl_fail(lua_State *L, const char *msg)
{
    luaL_pushfail(L);
    lua_pushstring(L, msg);
    return 2;
}

int czctl_fail_errno(lua_State *L, const char *what, int e)
{
    luaL_pushfail(L);
    lua_pushfstring(L, "%s: %s", what, strerror(e));
    lua_pushinteger(L, e);
    return 3;
}

double czctl_opt_seconds(lua_State *L, int arg, double def)
{
    if (lua_isnoneornil(L, arg))
        return def;
    double t = luaL_checknumber(L, arg);
    luaL_argcheck(L, t >= 0, arg, "timeout must be >= 0");
    return t;
}

double czctl_field_seconds(lua_State *L, int t, const char *key, double def)
{
    double v = def;
    int type = lua_getfield(L, t, key);
    if (type != LUA_TNIL && (type != LUA_TNUMBER || (v = lua_tonumber(L, -1)) < 0))
        luaL_argerror(L, t, lua_pushfstring(L, "%s must be a number >= 0", key));
    lua_pop(L, 1);
    return v;
}

const char *czctl_field_string(lua_State *L, int t, const char *key)
{
    int type = lua_getfield(L, t, key);
    if (type != LUA_TNIL && type != LUA_TSTRING)
        luaL_argerror(L, t, lua_pushfstring(L, "%s must be a string", key));
    const char *s = lua_tostring(L, -1);
    lua_pop(L, 1);   /* still referenced by the options table */
    return s;
}

/* ---- helpers ---------------------------------------------------------------- */

/* nil, "<what>: <strerror(errno)>", errno */
static int sys_fail(lua_State *L, const char *what)
{
    return czctl_fail_errno(L, what, errno);
}

/* Release box at once (not at the next GC), then fail like sys_fail. */
static int box_fail(lua_State *L, czctl_box *box, const char *what)
{
    int e = errno;
    czctl_box_release(box);
    errno = e;
    return sys_fail(L, what);
}

/* ---- time ----------------------------------------------------------------- */

/* sys.now() -> monotonic seconds */
static int sys_now(lua_State *L)
{
    lua_pushnumber(L, czctl_now());
    return 1;
}

/* sys.time() -> wall clock seconds since the epoch */
static int sys_time(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    lua_pushnumber(L, (double)ts.tv_sec + (double)ts.tv_nsec / 1e9);
    return 1;
}

/* sys.sleep(s) -> true | nil, "interrupted"; raises on a bad argument */
static int sys_sleep(lua_State *L)
{
    double s = luaL_checknumber(L, 1);
    luaL_argcheck(L, s >= 0, 1, "seconds must be >= 0");
    int r = czctl_wait_fd(-1, POLLIN, s);
    if (r == -2)
        return czctl_fail(L, "interrupted");
    if (r < 0)
        return sys_fail(L, "sleep");
    lua_pushboolean(L, 1);
    return 1;
}

/* ---- process environment ------------------------------------------------ */

/* sys.isatty(fd) -> boolean */
static int sys_isatty(lua_State *L)
{
    lua_Integer fd = luaL_checkinteger(L, 1);
    luaL_argcheck(L, fd >= 0 && fd <= INT_MAX, 1, "bad file descriptor");
    lua_pushboolean(L, isatty((int)fd));
    return 1;
}

/* sys.getenv(name) -> value | nil */
static int sys_getenv(lua_State *L)
{
    const char *v = getenv(luaL_checkstring(L, 1));
    if (v)
        lua_pushstring(L, v);
    else
        lua_pushnil(L);
    return 1;
}

/* sys.environ() -> { NAME = value, ... } */
static int sys_environ(lua_State *L)
{
    lua_newtable(L);
    for (char **e = environ; e && *e; e++) {
        const char *eq = strchr(*e, '=');
        if (!eq || eq == *e)
            continue;
        lua_pushlstring(L, *e, (size_t)(eq - *e));
        lua_pushstring(L, eq + 1);
        lua_rawset(L, -3);
    }
    return 1;
}

/* sys.exe() -> absolute path of the running binary | nil, msg */
static int sys_exe(lua_State *L)
{
    czctl_box *box = czctl_box_new(L);
    size_t cap = 256;
    for (;;) {
        char *dst = czctl_buf_reserve(&box->buf, cap);
        if (!dst)
            return luaL_error(L, "not enough memory");
        ssize_t n = readlink("/proc/self/exe", dst, cap);
        if (n < 0)
            return box_fail(L, box, "/proc/self/exe");
        if ((size_t)n < cap) {
            lua_pushlstring(L, dst, (size_t)n);
            return 1;
        }
        cap *= 2;
    }
}

/* sys.getpid() -> integer */
static int sys_getpid(lua_State *L)
{
    lua_pushinteger(L, getpid());
    return 1;
}

/* sys.hostname() -> string | nil, msg */
static int sys_hostname(lua_State *L)
{
    char name[HOST_NAME_MAX + 2];   /* bounded by the kernel */
    if (gethostname(name, sizeof name - 1) != 0)
        return sys_fail(L, "gethostname");
    name[sizeof name - 1] = '\0';
    lua_pushstring(L, name);
    return 1;
}

/* ---- XDG directories ---------------------------------------------------- */

static const char *home_dir(void)
{
    const char *h = getenv("HOME");
    if (h && *h)
        return h;
    struct passwd *pw = getpwuid(getuid());
    return pw && pw->pw_dir ? pw->pw_dir : "/";
}

/* $VAR/czctl when VAR is an absolute path (the XDG rule), else ~/fallback/czctl.
 * Raises only on memory errors. */
static int xdg_dir(lua_State *L, const char *var, const char *fallback)
{
    const char *v = getenv(var);
    if (v && v[0] == '/')
        lua_pushfstring(L, "%s/czctl", v);
    else
        lua_pushfstring(L, "%s/%s/czctl", home_dir(), fallback);
    return 1;
}

/* sys.config_dir() -> "$XDG_CONFIG_HOME/czctl" or "~/.config/czctl" */
static int sys_config_dir(lua_State *L) { return xdg_dir(L, "XDG_CONFIG_HOME", ".config"); }
/* sys.state_dir() -> "$XDG_STATE_HOME/czctl" or "~/.local/state/czctl" */
static int sys_state_dir(lua_State *L) { return xdg_dir(L, "XDG_STATE_HOME", ".local/state"); }

/* ---- files ---------------------------------------------------------------- */

/* A file mode argument (def when nil); raises outside 0..07777. */
static mode_t check_mode(lua_State *L, int arg, lua_Integer def)
{
    lua_Integer m = luaL_optinteger(L, arg, def);
    luaL_argcheck(L, m >= 0 && m <= 07777, arg, "mode must be in 0..07777");
    return (mode_t)m;
}

/* sys.lstat(path) -> {kind=, mode=, uid=} | nil, msg, errno. kind: "file",
 * "dir", "link" (not followed) or "other"; mode: the permission bits. */
static int sys_lstat(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    struct stat st;
    if (lstat(path, &st) != 0)
        return sys_fail(L, path);
    const char *kind = S_ISREG(st.st_mode) ? "file" : S_ISDIR(st.st_mode) ? "dir"
                     : S_ISLNK(st.st_mode) ? "link" : "other";
    lua_createtable(L, 0, 3);
    lua_pushstring(L, kind);
    lua_setfield(L, -2, "kind");
    lua_pushinteger(L, (lua_Integer)(st.st_mode & 07777));
    lua_setfield(L, -2, "mode");
    lua_pushinteger(L, (lua_Integer)st.st_uid);
    lua_setfield(L, -2, "uid");
    return 1;
}

/* sys.getuid() -> integer (the real user id) */
static int sys_getuid(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)getuid());
    return 1;
}

/* sys.mkdir_p(path[, mode=0700]) -> true | nil, msg, errno */
static int sys_mkdir_p(lua_State *L)
{
    size_t len;
    const char *path = luaL_checklstring(L, 1, &len);
    mode_t mode = check_mode(L, 2, 0700);
    luaL_argcheck(L, len > 0, 1, "empty path");
    /* a mutable copy in Lua-owned memory: nothing to free on a raise */
    char *p = lua_newuserdatauv(L, len + 1, 0);
    memcpy(p, path, len + 1);
    for (char *s = p + 1;; s++) {
        if (*s == '/' || *s == '\0') {
            char saved = *s;
            *s = '\0';
            if (mkdir(p, mode) != 0 && errno != EEXIST)
                return sys_fail(L, p);
            *s = saved;
            if (!saved)
                break;
        }
    }
    struct stat st;
    if (stat(path, &st) != 0)
        return sys_fail(L, path);
    if (!S_ISDIR(st.st_mode)) {
        errno = ENOTDIR;
        return sys_fail(L, path);
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int write_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

static void unlink_release(void *path)
{
    unlink(path);
}

/* sys.write_file(path, data[, mode=0600]) -> true | nil, msg, errno
 * Atomic: a temporary file in the same directory is written, chmod'ed,
 * fsync'ed and renamed over path; the directory is fsync'ed too. */
static int sys_write_file(lua_State *L)
{
    size_t plen, dlen;
    const char *path = luaL_checklstring(L, 1, &plen);
    const char *data = luaL_checklstring(L, 2, &dlen);
    mode_t mode = check_mode(L, 3, 0600);
    luaL_argcheck(L, plen > 0, 1, "empty path");

    czctl_box *box = czctl_box_new(L);   /* owns fd and temp file name */
    if (czctl_buf_add(&box->buf, path, plen) != 0 || czctl_buf_addstr(&box->buf, ".tmp.XXXXXX") != 0)
        return box_fail(L, box, path);
    char *tmp = box->buf.data;
    box->fd = mkostemp(tmp, O_CLOEXEC);
    if (box->fd < 0)
        return box_fail(L, box, path);
    box->ptr = tmp;
    box->release = unlink_release;   /* removes the temp file on failure */
    if (fchmod(box->fd, mode) != 0 || write_all(box->fd, data, dlen) != 0 ||
        fsync(box->fd) != 0)
        return box_fail(L, box, path);
    int fd = box->fd;
    box->fd = -1;
    if (close(fd) != 0)
        return box_fail(L, box, path);
    if (rename(tmp, path) != 0)
        return box_fail(L, box, path);
    box->ptr = NULL;
    box->release = NULL;
    /* make the rename durable; a failure here does not undo the write */
    const char *slash = strrchr(path, '/');
    if (slash) {
        lua_pushlstring(L, path, slash == path ? 1 : (size_t)(slash - path));
        box->fd = open(lua_tostring(L, -1), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    } else {
        box->fd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    }
    if (box->fd >= 0) {
        fsync(box->fd);
        close(box->fd);
        box->fd = -1;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* sys.read_file(path) -> data | nil, msg, errno (any size; /proc files too) */
static int sys_read_file(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    czctl_box *box = czctl_box_new(L);
    box->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (box->fd < 0)
        return box_fail(L, box, path);
    char chunk[65536];
    for (;;) {
        ssize_t n = read(box->fd, chunk, sizeof chunk);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return box_fail(L, box, path);
        }
        if (n == 0)
            break;
        if (czctl_buf_add(&box->buf, chunk, (size_t)n) != 0)
            return box_fail(L, box, path);
    }
    lua_pushlstring(L, box->buf.data ? box->buf.data : "", box->buf.len);
    czctl_box_release(box);
    return 1;
}

/* sys.remove(path) -> true | nil, msg, errno (files and empty directories) */
static int sys_remove(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    if (unlink(path) != 0) {
        if (errno != EISDIR && errno != EPERM)
            return sys_fail(L, path);
        if (rmdir(path) != 0)
            return sys_fail(L, path);
    }
    lua_pushboolean(L, 1);
    return 1;
}

static void closedir_release(void *dir)
{
    closedir(dir);
}

/* sys.listdir(path) -> sorted names (without . and ..) | nil, msg, errno */
static int sys_listdir(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    czctl_box *box = czctl_box_new(L);
    DIR *dir = opendir(path);
    if (!dir)
        return box_fail(L, box, path);
    box->ptr = dir;
    box->release = closedir_release;
    lua_getglobal(L, "table");
    lua_getfield(L, -1, "sort");
    lua_newtable(L);
    lua_Integer n = 0;
    for (;;) {
        errno = 0;
        struct dirent *d = readdir(dir);
        if (!d) {
            if (errno)
                return box_fail(L, box, path);
            break;
        }
        if (strcmp(d->d_name, ".") == 0 || strcmp(d->d_name, "..") == 0)
            continue;
        lua_pushstring(L, d->d_name);
        lua_rawseti(L, -2, ++n);
    }
    czctl_box_release(box);
    if (lua_isfunction(L, -2)) {
        lua_pushvalue(L, -1);
        lua_insert(L, -3);    /* names, sort, names */
        lua_call(L, 1, 0);
    }
    return 1;
}

/* ---- random ----------------------------------------------------------------- */

/* sys.random_id(n) -> n chars of [a-z0-9] from getrandom(); raises unless 1<=n<=4096 */
static int sys_random_id(lua_State *L)
{
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n >= 1 && n <= 4096, 1, "length must be in 1..4096");
    char *out = lua_newuserdatauv(L, (size_t)n, 0);
    unsigned char bytes[64];
    lua_Integer have = 0;
    while (have < n) {
        ssize_t got = getrandom(bytes, sizeof bytes, 0);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            return sys_fail(L, "getrandom");
        }
        for (ssize_t i = 0; i < got && have < n; i++)
            if (bytes[i] < 252)   /* 252 = 7*36: rejection keeps it uniform */
                out[have++] = alphabet[bytes[i] % 36];
    }
    lua_pushlstring(L, out, (size_t)n);
    return 1;
}

/* ---- signals in Lua ----------------------------------------------------- */

static void push_signal(lua_State *L, int signo)
{
    const char *name = czctl_signal_name(signo);
    if (name)
        lua_pushstring(L, name);
    else
        lua_pushfstring(L, "SIG%d", signo);
}

/* sys.pending_signal([through_shield]) -> "SIGINT"|"SIGTERM"|"SIGHUP" | nil
 * (does not clear). While shielded: nil, unless through_shield is true. */
static int sys_pending_signal(lua_State *L)
{
    int s = lua_toboolean(L, 1) ? czctl_signal_recorded() : czctl_signal_pending();
    if (s)
        push_signal(L, s);
    else
        lua_pushnil(L);
    return 1;
}

/* sys.wait_signal([timeout]) -> name | nil (timeout); nil timeout waits forever */
static int sys_wait_signal(lua_State *L)
{
    double t = czctl_opt_seconds(L, 1, -1);
    int r = czctl_wait_fd(-1, POLLIN, t);
    if (r == -2) {
        push_signal(L, czctl_signal_pending());
        return 1;
    }
    if (r < 0)
        return sys_fail(L, "wait_signal");
    lua_pushnil(L);
    return 1;
}

/* sys.shield_signals(on) -> depth; sys.shield_signals() -> depth.
 * true nests one level deeper, false one level out (never below 0). */
static int sys_shield_signals(lua_State *L)
{
    int depth;
    if (lua_isnoneornil(L, 1)) {
        depth = sig_shield;
    } else {
        luaL_checktype(L, 1, LUA_TBOOLEAN);
        depth = czctl_signal_shield(lua_toboolean(L, 1));
    }
    lua_pushinteger(L, depth);
    return 1;
}

/* sys.clear_signal() */
static int sys_clear_signal(lua_State *L)
{
    (void)L;
    czctl_signal_clear();
    return 0;
}

static const luaL_Reg sys_funcs[] = {
    {"clear_signal", sys_clear_signal},
    {"config_dir", sys_config_dir},
    {"environ", sys_environ},
    {"exe", sys_exe},
    {"getenv", sys_getenv},
    {"getpid", sys_getpid},
    {"getuid", sys_getuid},
    {"hostname", sys_hostname},
    {"isatty", sys_isatty},
    {"listdir", sys_listdir},
    {"lstat", sys_lstat},
    {"mkdir_p", sys_mkdir_p},
    {"now", sys_now},
    {"pending_signal", sys_pending_signal},
    {"random_id", sys_random_id},
    {"read_file", sys_read_file},
    {"remove", sys_remove},
    {"shield_signals", sys_shield_signals},
    {"sleep", sys_sleep},
    {"state_dir", sys_state_dir},
    {"time", sys_time},
    {"wait_signal", sys_wait_signal},
    {"write_file", sys_write_file},
    {NULL, NULL},
};

int luaopen_czctl_core_sys(lua_State *L)
{
    /* A state used without main.c (C tests) still gets working signals. */
    czctl_signal_init();
    luaL_newlib(L, sys_funcs);
    return 1;
}
