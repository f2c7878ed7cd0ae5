/*
 * proc.c: czctl.core.proc: child processes for recipes (nginx, tunnel
 * agents, kubectl, exec helpers).
 *
 * spawn() gives a process handle with line-buffered pipes, waits with
 * timeouts that wake on signals, and a close that always reaps; detach()
 * starts a long-lived helper in its own session and leaves no zombie.
 * Children inherit no fd of ours except the three they are given. The child
 * set-up (czctl_exec_start, czctl_child_stop) is exported through czctl.h so
 * exec credential plugins (kube_exec.c) start the same way. This file must
 * not know what the programs are for.
 */
#define _GNU_SOURCE   /* pipe2, close_range, O_CLOEXEC */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

#include "czctl.h"

extern char **environ;

/* ---- signal names ---------------------------------------------------------- */

static const struct { const char *name; int signo; } signal_names[] = {
    {"ALRM", SIGALRM}, {"CHLD", SIGCHLD}, {"CONT", SIGCONT}, {"HUP", SIGHUP},
    {"INT", SIGINT},   {"KILL", SIGKILL}, {"PIPE", SIGPIPE}, {"QUIT", SIGQUIT},
    {"STOP", SIGSTOP}, {"TERM", SIGTERM}, {"USR1", SIGUSR1}, {"USR2", SIGUSR2},
    {"WINCH", SIGWINCH},
};

/* "TERM", "SIGTERM", "term" or 15; raises on anything else. */
static int check_signal(lua_State *L, int arg, int def)
{
    if (lua_isnoneornil(L, arg))
        return def;
    if (lua_type(L, arg) == LUA_TNUMBER) {
        lua_Integer n = luaL_checkinteger(L, arg);
        luaL_argcheck(L, n >= 0 && n < NSIG, arg, "bad signal number");
        return (int)n;
    }
    const char *s = luaL_checkstring(L, arg);
    if (strncasecmp(s, "SIG", 3) == 0)
        s += 3;
    for (size_t i = 0; i < sizeof signal_names / sizeof signal_names[0]; i++)
        if (strcasecmp(s, signal_names[i].name) == 0)
            return signal_names[i].signo;
    return luaL_argerror(L, arg, lua_pushfstring(L, "unknown signal '%s'", lua_tostring(L, arg)));
}

/* ---- small helpers ------------------------------------------------------------ */

static void close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

/* pidfd_open, remembered as unavailable after ENOSYS (old kernels, valgrind). */
static int pidfd_open_compat(pid_t pid)
{
    static int unsupported;
#ifdef SYS_pidfd_open
    if (!unsupported) {
        int fd = (int)syscall(SYS_pidfd_open, pid, 0);
        if (fd >= 0 || errno != ENOSYS)
            return fd;
        unsupported = 1;
    }
#endif
    (void)pid;
    errno = ENOSYS;
    return -1;
}

/* Without pidfds, waits wake on SIGCHLD through a second self-pipe. The
 * handler is installed only then (SA_RESTART: other calls are unaffected). */
static int chld_pipe[2] = {-1, -1};

static void chld_handler(int signo)
{
    int saved = errno;
    char c = (char)signo;
    ssize_t r = write(chld_pipe[1], &c, 1);
    (void)r;
    errno = saved;
}

static int chld_fd(void)
{
    if (chld_pipe[0] < 0 && pipe2(chld_pipe, O_CLOEXEC | O_NONBLOCK) == 0) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = chld_handler;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
        sigaction(SIGCHLD, &sa, NULL);
    }
    return chld_pipe[0];
}

/* Empties the SIGCHLD pipe; call before checking for an exit, then poll. */
static void chld_drain(void)
{
    char buf[64];
    if (chld_pipe[0] >= 0)
        while (read(chld_pipe[0], buf, sizeof buf) > 0)
            ;
}

static int exit_code_of(int status)
{
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return 255;
}

/* ---- starting a child: the one set-up every program czctl runs gets ------ */

/* Runs in the child after fork: async-signal-safe calls only. Never returns.
 * Reports a failure as {stage, errno} on errfd (CLOEXEC, so a successful
 * exec reports nothing). parent: the pid that forked (for the parent-death
 * signal). Signals stay blocked until execve: tcsetpgrp from what is now a
 * background group would otherwise stop the child with SIGTTOU. */
static void child_exec(const czctl_exec *x, int errfd, pid_t parent)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    sigemptyset(&sa.sa_mask);
    static const int reset[] = {SIGINT, SIGTERM, SIGHUP, SIGPIPE, SIGCHLD, SIGQUIT};
    for (size_t i = 0; i < sizeof reset / sizeof reset[0]; i++)
        sigaction(reset[i], &sa, NULL);
    sigset_t none;
    sigemptyset(&none);

    int err = 0, stage = CZCTL_EXEC_EXEC;
    int src[3];
    for (int i = 0; i < 3 && !err; i++) {
        /* move sources out of 0..2 first so installing one cannot clobber another */
        src[i] = x->fds[i] < 3 ? fcntl(x->fds[i], F_DUPFD_CLOEXEC, 3) : x->fds[i];
        if (src[i] < 0)
            err = errno;
    }
    for (int i = 0; i < 3 && !err; i++)
        if (dup2(src[i], i) < 0)
            err = errno;
    if (!err && x->cwd && chdir(x->cwd) != 0)
        err = errno, stage = CZCTL_EXEC_CWD;
    if (!err && x->group && setpgid(0, 0) != 0)
        err = errno, stage = CZCTL_EXEC_FORK;
    if (!err && x->group && x->terminal && isatty(0))
        tcsetpgrp(0, getpid());   /* best effort: without it the job still runs */
    if (!err && x->parent_death_signal) {
        if (prctl(PR_SET_PDEATHSIG, x->parent_death_signal) != 0)
            err = errno, stage = CZCTL_EXEC_FORK;
        else if (getppid() != parent)
            _exit(128 + x->parent_death_signal);   /* the parent died before prctl */
    }
    if (!err) {
        /* no fd of ours may leak into the program (curl sockets, other pipes) */
        if (close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) != 0)
            for (int fd = 3; fd < 65536; fd++)
                fcntl(fd, F_SETFD, FD_CLOEXEC);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execve(x->path, x->argv, x->envp);
        err = errno;
    }
    int msg[2] = {stage, err};
    ssize_t r = write(errfd, msg, sizeof msg);
    (void)r;
    _exit(127);
}

/* Forks with signals blocked so no handler of ours runs in the child (it
 * would write to our self-pipe) before child_exec resets them. */
static pid_t fork_blocked(void)
{
    sigset_t all, old;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, &old);
    pid_t pid = fork();
    if (pid != 0)
        sigprocmask(SIG_SETMASK, &old, NULL);
    return pid;
}

/* Reads the error pipe after fork: 0 when exec succeeded, else errno, with
 * *stage saying what failed. */
static int read_exec_error(int fd, int *stage)
{
    int msg[2];
    ssize_t n;
    do
        n = read(fd, msg, sizeof msg);
    while (n < 0 && errno == EINTR);
    *stage = n == (ssize_t)sizeof msg ? msg[0] : 0;
    return n == (ssize_t)sizeof msg ? (msg[1] ? msg[1] : EIO) : 0;
}

pid_t czctl_exec_start(const czctl_exec *x, int *stage)
{
    int errpipe[2];
    *stage = CZCTL_EXEC_FORK;
    if (pipe2(errpipe, O_CLOEXEC) != 0)
        return -1;
    pid_t parent = getpid();
    pid_t pid = fork_blocked();
    if (pid == 0)
        child_exec(x, errpipe[1], parent);
    int e = errno;
    close(errpipe[1]);
    if (pid < 0) {
        close(errpipe[0]);
        errno = e;
        return -1;
    }
    e = read_exec_error(errpipe[0], stage);
    close(errpipe[0]);
    if (e) {
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
            ;
        errno = e;
        return -1;
    }
    return pid;
}

/* Reap pid without blocking: 1 with *code once it has exited (255 when it
 * was reaped elsewhere), 0 while it runs. */
static int try_reap(pid_t pid, int *code)
{
    int status;
    pid_t r;
    do
        r = waitpid(pid, &status, WNOHANG);
    while (r < 0 && errno == EINTR);
    if (r == 0)
        return 0;
    *code = r == pid ? exit_code_of(status) : 255;
    return 1;
}

int czctl_child_stop(pid_t pid, int pidfd, double grace_s)
{
    int code;
    if (try_reap(pid, &code))
        return code;
    int own = pidfd < 0 ? pidfd_open_compat(pid) : -1;
    if (own >= 0)
        pidfd = own;
    if (pidfd < 0)
        chld_fd();   /* before TERM, so the exit cannot go unnoticed */
    kill(pid, SIGTERM);
    double deadline = czctl_now() + grace_s;
    int reaped;
    /* plain poll, not czctl_wait_fd: a pending signal must not cut cleanup short */
    while (!(reaped = try_reap(pid, &code))) {
        double left = deadline - czctl_now();
        if (left <= 0)
            break;
        struct pollfd pfd = {.fd = pidfd >= 0 ? pidfd : chld_fd(), .events = POLLIN};
        poll(&pfd, 1, (int)(left * 1000) + 1);
        if (pidfd < 0)
            chld_drain();
    }
    if (!reaped) {
        kill(pid, SIGKILL);
        int status = 0;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
            ;
        code = exit_code_of(status);
    }
    if (own >= 0)
        close(own);
    return code;
}

/* Is path an executable regular file? */
int czctl_is_executable(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

char *czctl_find_program(const char *cmd, const char *path_var)
{
    if (strchr(cmd, '/')) {
        char *same = strdup(cmd);   /* used as it is, as execvp does */
        if (!same)
            errno = ENOMEM;
        return same;
    }
    if (!path_var) {
        errno = ENOENT;
        return NULL;
    }
    for (const char *p = path_var;;) {
        const char *colon = strchr(p, ':');
        size_t n = colon ? (size_t)(colon - p) : strlen(p);
        char *cand = NULL;
        /* an empty entry is the current directory, as for execvp */
        if (asprintf(&cand, "%.*s/%s", (int)n, n ? p : ".", cmd) < 0) {
            errno = ENOMEM;
            return NULL;
        }
        if (czctl_is_executable(cand))
            return cand;
        free(cand);
        if (!colon) {
            errno = ENOENT;
            return NULL;
        }
        p = colon + 1;
    }
}

/* The program to run for cmd, owned by a box pushed on the stack (so a later
 * raise frees it); NULL when it is not found. PATH is the child's when its
 * environment sets one, else ours, else a default. Raises on memory errors. */
static const char *find_program(lua_State *L, const char *cmd, const char *path_var)
{
    czctl_box *box = czctl_box_new(L);
    if (!path_var)
        path_var = getenv("PATH");
    box->ptr = czctl_find_program(cmd, path_var ? path_var : "/usr/local/bin:/usr/bin:/bin");
    box->release = free;
    if (!box->ptr && errno == ENOMEM)
        luaL_error(L, "not enough memory");
    return box->ptr;
}

/* Reads opts.argv (a non-empty list of strings) into a NULL-terminated
 * array kept alive by a userdata pushed on the stack (pointing into the
 * strings of opts.argv, which the caller keeps on the stack). Raises on misuse. */
static char **check_argv(lua_State *L, int opts)
{
    if (lua_getfield(L, opts, "argv") != LUA_TTABLE)
        luaL_argerror(L, 1, "argv must be a non-empty list of strings");
    int t = lua_gettop(L);
    lua_Integer n = (lua_Integer)lua_rawlen(L, t);
    luaL_argcheck(L, n > 0 && n < INT_MAX / 2, 1, "argv must be a non-empty list of strings");
    char **argv = lua_newuserdatauv(L, sizeof(char *) * ((size_t)n + 1), 1);
    lua_pushvalue(L, t);
    lua_setiuservalue(L, -2, 1);   /* keeps the strings alive */
    for (lua_Integer i = 1; i <= n; i++) {
        if (lua_rawgeti(L, t, i) != LUA_TSTRING)
            luaL_argerror(L, 1, "argv must be a non-empty list of strings");
        argv[i - 1] = (char *)lua_tostring(L, -1);
        lua_pop(L, 1);
    }
    argv[n] = NULL;
    lua_remove(L, t);
    return argv;
}

/* Adds every NAME=value of the table at idx into the table at env (keyed by
 * name). Raises unless it maps strings to strings/numbers. */
static void merge_env(lua_State *L, int env, int idx, const char *field)
{
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) != LUA_TSTRING || !lua_isstring(L, -1) ||
            strchr(lua_tostring(L, -2), '=') || !*lua_tostring(L, -2))
            luaL_error(L, "bad argument #1 (%s must map names to strings)", field);
        lua_pushvalue(L, -2);
        lua_pushfstring(L, "%s=%s", lua_tostring(L, -3), lua_tostring(L, -2));
        lua_rawset(L, env);
        lua_pop(L, 1);
    }
}

/* Builds the environment from opts.env (replaces) or the inherited one, plus
 * opts.env_extra. Pushes an anchor userdata; returns the envp array.
 * *path_var receives the PATH the child will have (or NULL). Raises on
 * misuse (env not a table, names or values that are not strings). */
static char **check_env(lua_State *L, int opts, const char **path_var)
{
    lua_newtable(L);   /* name -> "name=value" */
    int env = lua_gettop(L);
    int t = lua_getfield(L, opts, "env");
    if (t == LUA_TTABLE) {
        merge_env(L, env, lua_gettop(L), "env");
    } else if (t != LUA_TNIL) {
        luaL_argerror(L, 1, "env must be a table");
    } else {
        for (char **e = environ; e && *e; e++) {
            const char *eq = strchr(*e, '=');
            if (!eq || eq == *e)
                continue;
            lua_pushlstring(L, *e, (size_t)(eq - *e));
            lua_pushstring(L, *e);
            lua_rawset(L, env);
        }
    }
    lua_pop(L, 1);
    t = lua_getfield(L, opts, "env_extra");
    if (t == LUA_TTABLE)
        merge_env(L, env, lua_gettop(L), "env_extra");
    else if (t != LUA_TNIL)
        luaL_argerror(L, 1, "env_extra must be a table");
    lua_pop(L, 1);

    size_t n = 0;
    lua_pushnil(L);
    while (lua_next(L, env)) {
        n++;
        lua_pop(L, 1);
    }
    char **envp = lua_newuserdatauv(L, sizeof(char *) * (n + 1), 1);
    lua_pushvalue(L, env);
    lua_setiuservalue(L, -2, 1);
    size_t i = 0;
    *path_var = NULL;
    lua_pushnil(L);
    while (lua_next(L, env)) {
        envp[i++] = (char *)lua_tostring(L, -1);
        if (strcmp(lua_tostring(L, -2), "PATH") == 0)
            *path_var = lua_tostring(L, -1) + 5;
        lua_pop(L, 1);
    }
    envp[i] = NULL;
    lua_remove(L, env);
    return envp;
}

/* ---- process handle ----------------------------------------------------------- */

struct stream {
    int fd;          /* parent's read end, non-blocking, or -1 */
    czctl_buf buf;   /* read, not yet returned */
    int eof;
};

struct proc {
    pid_t pid;
    int pidfd;       /* -1 when pidfd_open is unavailable */
    int in_fd;       /* parent's write end of stdin, or -1 */
    struct stream out, err;
    int reaped;
    int code;        /* exit code once reaped (128+N for signal N) */
    int group;       /* leads its own process group: kill() signals the group */
    int terminal;    /* was given the terminal's foreground: taken back once reaped */
};

static const czctl_class proc_class;

/* The process handle at arg (open or closed); raises when it is not one. */
static struct proc *check_process(lua_State *L, int arg)
{
    return czctl_handle_check(L, arg, &proc_class);
}

static void stream_close(struct stream *s)
{
    close_fd(&s->fd);
    czctl_buf_free(&s->buf);
}

/* Reap without blocking: 1 reaped (now or before), 0 still running. */
static int proc_try_reap(struct proc *p)
{
    if (p->reaped)
        return 1;
    if (!try_reap(p->pid, &p->code))
        return 0;
    p->reaped = 1;
    close_fd(&p->pidfd);
    if (p->terminal) {
        /* back to our group, if the child's still has the terminal; SIGTTOU
         * blocked, since we are in the background until this succeeds */
        p->terminal = 0;
        sigset_t ttou, old;
        sigemptyset(&ttou);
        sigaddset(&ttou, SIGTTOU);
        sigprocmask(SIG_BLOCK, &ttou, &old);
        if (tcgetpgrp(0) == p->pid)
            tcsetpgrp(0, getpgrp());
        sigprocmask(SIG_SETMASK, &old, NULL);
    }
    return 1;
}

/* The one close: stdin, pipes, then TERM (KILL after 2 s) and reap. Idempotent. */
static void proc_release(void *handle)
{
    struct proc *p = handle;
    close_fd(&p->in_fd);
    stream_close(&p->out);
    stream_close(&p->err);
    if (p->pid > 0 && !p->reaped) {
        p->code = czctl_child_stop(p->pid, p->pidfd, 2.0);
        p->reaped = 1;
    }
    close_fd(&p->pidfd);
}

/* p:close() -> exit code (killing and reaping the process if still running) */
static int proc_close(lua_State *L)
{
    struct proc *p = check_process(L, 1);
    czctl_handle_close(L, 1, &proc_class);
    if (p->reaped)
        lua_pushinteger(L, p->code);
    else
        lua_pushnil(L);
    return 1;
}

/* "process 1234", "process 1234 (exited 0)" */
static void proc_describe(lua_State *L, const void *handle)
{
    const struct proc *p = handle;
    if (p->reaped)
        lua_pushfstring(L, "process %d (exited %d)", (int)p->pid, p->code);
    else
        lua_pushfstring(L, "process %d", (int)p->pid);
}

/* p:pid() -> integer */
static int proc_pid(lua_State *L)
{
    lua_pushinteger(L, check_process(L, 1)->pid);
    return 1;
}

/* Read whatever is available into s (after poll said so). 0 ok, -1 errno. */
static int stream_fill(struct stream *s)
{
    for (;;) {
        char *dst = czctl_buf_reserve(&s->buf, 8192);
        if (!dst)
            return -1;
        ssize_t n = read(s->fd, dst, 8192);
        if (n > 0) {
            czctl_buf_commit(&s->buf, (size_t)n);
            if (n < 8192)
                return 0;   /* drained what was there */
            continue;
        }
        if (n == 0) {
            s->eof = 1;
            return 0;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        return -1;
    }
}

/* p:read_line([timeout[, "stdout"|"stderr"]]) -> line (without "\n") |
 *   nil, "timeout"|"eof"|"interrupted"|msg
 * A last line without "\n" is returned at end of file. Lines have no length
 * limit. Raises when the stream was not spawned as a pipe. */
static int proc_read_line(lua_State *L)
{
    struct proc *p = check_process(L, 1);
    double timeout = czctl_opt_seconds(L, 2, -1);
    static const char *const names[] = {"stdout", "stderr", NULL};
    int which = luaL_checkoption(L, 3, "stdout", names);
    struct stream *s = which == 0 ? &p->out : &p->err;
    if (s->fd < 0 && !czctl_buf_unread(&s->buf))
        return luaL_argerror(L, 3, lua_pushfstring(L, "%s is not a pipe (or was closed)", names[which]));
    double deadline = timeout >= 0 ? czctl_now() + timeout : 0;
    for (;;) {
        size_t n;
        const char *line = czctl_buf_line(&s->buf, s->eof || s->fd < 0, &n);
        if (line) {
            lua_pushlstring(L, line, n);
            return 1;
        }
        if (s->eof || s->fd < 0)
            return czctl_fail(L, "eof");
        double left = timeout >= 0 ? deadline - czctl_now() : -1;
        int w = czctl_wait_fd(s->fd, POLLIN, timeout >= 0 && left < 0 ? 0 : left);
        if (w == -2)
            return czctl_fail(L, "interrupted");
        if (w == 0)
            return czctl_fail(L, "timeout");
        if (w < 0)
            return czctl_fail_errno(L, "read_line", errno);
        if (stream_fill(s) != 0)
            return czctl_fail_errno(L, "read_line", errno);
    }
}

/* p:write(data) -> true | nil, "interrupted"|msg. Blocks (waking on signals)
 * until everything is written. Raises when stdin is not a pipe. */
static int proc_write(lua_State *L)
{
    struct proc *p = check_process(L, 1);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    luaL_argcheck(L, p->in_fd >= 0, 1, "stdin is not a pipe (or was closed)");
    while (len > 0) {
        ssize_t n = write(p->in_fd, data, len);
        if (n > 0) {
            data += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno != EAGAIN)
            return czctl_fail_errno(L, "write", errno);
        int w = czctl_wait_fd(p->in_fd, POLLOUT, -1);
        if (w == -2)
            return czctl_fail(L, "interrupted");
        if (w < 0)
            return czctl_fail_errno(L, "write", errno);
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* p:close_stdin() -- idempotent */
static int proc_close_stdin(lua_State *L)
{
    close_fd(&check_process(L, 1)->in_fd);
    return 0;
}

/* p:wait([timeout]) -> code (128+N for signal N) | nil, "timeout"|"interrupted"
 * nil timeout waits forever. An exit that already happened is reported even
 * while a signal is pending. */
static int proc_wait(lua_State *L)
{
    struct proc *p = check_process(L, 1);
    double timeout = czctl_opt_seconds(L, 2, -1);
    double deadline = timeout >= 0 ? czctl_now() + timeout : 0;
    if (p->pidfd < 0 && !p->reaped)
        chld_fd();   /* before the first check, so no exit goes unnoticed */
    for (;;) {
        if (proc_try_reap(p)) {
            lua_pushinteger(L, p->code);
            return 1;
        }
        double left = timeout >= 0 ? deadline - czctl_now() : -1;
        if (timeout >= 0 && left <= 0)
            return czctl_fail(L, "timeout");
        int w = czctl_wait_fd(p->pidfd >= 0 ? p->pidfd : chld_fd(), POLLIN, left);
        if (p->pidfd < 0)
            chld_drain();   /* then proc_try_reap looks again */
        if (w == -2)
            return czctl_fail(L, "interrupted");
        if (w < 0)
            return czctl_fail_errno(L, "wait", errno);
    }
}

/* p:kill([signal="TERM"]) -> true | nil, msg. Raises on an unknown signal.
 * A process spawned with group=true gets it with its whole group. */
static int proc_kill(lua_State *L)
{
    struct proc *p = check_process(L, 1);
    int sig = check_signal(L, 2, SIGTERM);
    if (proc_try_reap(p))
        return czctl_fail(L, "process has exited");
    if (kill(p->group ? -p->pid : p->pid, sig) != 0)
        return czctl_fail_errno(L, "kill", errno);
    lua_pushboolean(L, 1);
    return 1;
}

/* ---- spawn ---------------------------------------------------------------------- */

enum { IO_NULL, IO_PIPE, IO_INHERIT, IO_STDOUT, IO_FILE };

/* Parses a stdio option; for {file=path} pushes nothing but sets *file.
 * Raises on an unknown mode or a wrong type. */
static int check_io(lua_State *L, int opts, const char *field, int def, int allow_stdout,
                    const char **file)
{
    *file = NULL;
    int t = lua_getfield(L, opts, field);
    int mode = def;
    if (t == LUA_TSTRING) {
        const char *s = lua_tostring(L, -1);
        if (strcmp(s, "null") == 0)
            mode = IO_NULL;
        else if (strcmp(s, "pipe") == 0)
            mode = IO_PIPE;
        else if (strcmp(s, "inherit") == 0)
            mode = IO_INHERIT;
        else if (allow_stdout && strcmp(s, "stdout") == 0)
            mode = IO_STDOUT;
        else
            luaL_error(L, "bad argument #1 (%s: unknown mode '%s')", field, s);
    } else if (t == LUA_TTABLE && strcmp(field, "stdin") != 0) {
        lua_getfield(L, -1, "file");
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "bad argument #1 (%s.file must be a path)", field);
        *file = lua_tostring(L, -1);   /* anchored by opts */
        lua_pop(L, 1);
        mode = IO_FILE;
    } else if (t != LUA_TNIL) {
        luaL_error(L, "bad argument #1 (%s has a wrong type)", field);
    }
    lua_pop(L, 1);
    return mode;
}

/* Fds the parent opened for one spawn; closed on every path. */
struct spawn_fds {
    int in[2], out[2], err[2], errpipe[2];
    int devnull, outfile, errfile;
};

static void spawn_fds_close(struct spawn_fds *f)
{
    int *all[] = {&f->in[0], &f->in[1], &f->out[0], &f->out[1], &f->err[0], &f->err[1],
                  &f->errpipe[0], &f->errpipe[1], &f->devnull, &f->outfile, &f->errfile};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        close_fd(all[i]);
}

static int open_log(const char *path)
{
    return open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
}

/* Reads argv, env/env_extra and cwd of the options table at 1 into x (not
 * the path yet); what they point to is anchored on the stack. *path_var is
 * the PATH the child will have, or NULL. Raises on misuse. */
static void check_exec(lua_State *L, czctl_exec *x, const char **path_var)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    memset(x, 0, sizeof *x);
    x->argv = check_argv(L, 1);
    x->envp = check_env(L, 1, path_var);
    x->cwd = czctl_field_string(L, 1, "cwd");
}

/* nil, message for a child that did not start (stage and errno as
 * czctl_exec_start reports them). Raises only on memory errors. */
static int exec_fail(lua_State *L, const czctl_exec *x, int stage, int e)
{
    if (stage == CZCTL_EXEC_CWD)
        return czctl_fail_errno(L, x->cwd, e);
    if (stage == CZCTL_EXEC_FORK)
        return czctl_fail_errno(L, "fork", e);
    if (e == ENOENT)
        return czctl_fail(L, lua_pushfstring(L, "%s: command not found", x->argv[0]));
    return czctl_fail(L, lua_pushfstring(L, "%s: %s", x->argv[0], strerror(e)));
}

/* Field key of the options table at index t as a boolean (nil: false). */
static int field_bool(lua_State *L, int t, const char *key)
{
    lua_getfield(L, t, key);
    int b = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return b;
}

/* cproc.spawn{ argv=, env=, env_extra=, cwd=, stdin=, stdout=, stderr=,
 *              group=, foreground=, parent_death_signal= } -> process | nil, msg
 * Defaults: stdin "null", stdout "pipe", stderr "pipe". group: the child
 * leads a new process group (kill() then signals the group); foreground
 * (implies group): with stdin "inherit" on the terminal whose foreground we
 * hold, the child's group gets it until it is reaped, as a shell runs a job.
 * parent_death_signal: sent to the child when we die, even by SIGKILL.
 * Raises on misuse; a missing program gives nil, "<cmd>: command not found". */
static int proc_spawn(lua_State *L)
{
    czctl_exec x;
    const char *path_var = NULL;
    check_exec(L, &x, &path_var);
    int foreground = field_bool(L, 1, "foreground");
    x.group = foreground || field_bool(L, 1, "group");
    lua_getfield(L, 1, "parent_death_signal");
    x.parent_death_signal = check_signal(L, lua_gettop(L), 0);
    lua_pop(L, 1);
    const char *outfile, *errfile, *nofile;
    int in_mode = check_io(L, 1, "stdin", IO_NULL, 0, &nofile);
    int out_mode = check_io(L, 1, "stdout", IO_PIPE, 0, &outfile);
    int err_mode = check_io(L, 1, "stderr", IO_PIPE, 1, &errfile);
    luaL_argcheck(L, in_mode != IO_FILE, 1, "stdin must be \"null\", \"pipe\" or \"inherit\"");
    x.terminal = foreground && in_mode == IO_INHERIT && isatty(0) && tcgetpgrp(0) == getpgrp();

    if (czctl_signal_pending())
        return czctl_fail(L, "interrupted");
    if (!(x.path = find_program(L, x.argv[0], path_var)))
        return exec_fail(L, &x, CZCTL_EXEC_EXEC, ENOENT);

    /* the handle exists before any fd, so a memory error leaks nothing */
    struct proc *p = czctl_handle_new(L, &proc_class, sizeof *p, 0);
    p->pid = -1;
    p->pidfd = p->in_fd = p->out.fd = p->err.fd = -1;

    struct spawn_fds f = {{-1, -1}, {-1, -1}, {-1, -1}, {-1, -1}, -1, -1, -1};
    int e = 0;
    const char *what = "spawn";
    if ((in_mode == IO_NULL || out_mode == IO_NULL || err_mode == IO_NULL) &&
        (f.devnull = open("/dev/null", O_RDWR | O_CLOEXEC)) < 0)
        e = errno;
    if (!e && in_mode == IO_PIPE && pipe2(f.in, O_CLOEXEC) != 0)
        e = errno;
    if (!e && out_mode == IO_PIPE && pipe2(f.out, O_CLOEXEC) != 0)
        e = errno;
    if (!e && err_mode == IO_PIPE && pipe2(f.err, O_CLOEXEC) != 0)
        e = errno;
    if (!e && out_mode == IO_FILE && (f.outfile = open_log(outfile)) < 0)
        e = errno, what = outfile;
    if (!e && err_mode == IO_FILE && (f.errfile = open_log(errfile)) < 0)
        e = errno, what = errfile;
    if (e) {
        spawn_fds_close(&f);
        return czctl_fail_errno(L, what, e);
    }

    x.fds[0] = in_mode == IO_PIPE ? f.in[0] : in_mode == IO_NULL ? f.devnull : 0;
    x.fds[1] = out_mode == IO_PIPE ? f.out[1] : out_mode == IO_NULL ? f.devnull
             : out_mode == IO_FILE ? f.outfile : 1;
    x.fds[2] = err_mode == IO_PIPE ? f.err[1] : err_mode == IO_NULL ? f.devnull
             : err_mode == IO_FILE ? f.errfile : err_mode == IO_STDOUT ? x.fds[1] : 2;

    int stage;
    pid_t pid = czctl_exec_start(&x, &stage);
    if (pid < 0) {
        e = errno;
        spawn_fds_close(&f);
        return exec_fail(L, &x, stage, e);
    }
    p->pid = pid;
    p->group = x.group;
    p->terminal = x.terminal;
    p->pidfd = pidfd_open_compat(pid);
    if (p->pidfd >= 0)
        fcntl(p->pidfd, F_SETFD, FD_CLOEXEC);
    p->in_fd = f.in[1];
    f.in[1] = -1;
    p->out.fd = f.out[0];
    f.out[0] = -1;
    p->err.fd = f.err[0];
    f.err[0] = -1;
    spawn_fds_close(&f);   /* the child's ends and the rest */
    if (p->in_fd >= 0)
        fcntl(p->in_fd, F_SETFL, O_NONBLOCK);
    if (p->out.fd >= 0)
        fcntl(p->out.fd, F_SETFL, O_NONBLOCK);
    if (p->err.fd >= 0)
        fcntl(p->err.fd, F_SETFL, O_NONBLOCK);
    return 1;
}

/* ---- detach ------------------------------------------------------------------------ */

/* cproc.detach{ argv=, env=, env_extra=, cwd=, log= } -> pid | nil, msg
 * Double fork: the helper runs in its own session (setsid), is not our child
 * (no zombie, survives us), reads /dev/null and appends stdout and stderr to
 * log (created 0600; /dev/null when absent). The intermediate child is
 * reaped here. */
static int proc_detach(lua_State *L)
{
    czctl_exec x;
    const char *path_var = NULL;
    check_exec(L, &x, &path_var);
    const char *log = czctl_field_string(L, 1, "log");
    if (czctl_signal_pending())
        return czctl_fail(L, "interrupted");
    if (!(x.path = find_program(L, x.argv[0], path_var)))
        return exec_fail(L, &x, CZCTL_EXEC_EXEC, ENOENT);

    struct spawn_fds f = {{-1, -1}, {-1, -1}, {-1, -1}, {-1, -1}, -1, -1, -1};
    int e = 0;
    const char *what = "detach";
    if (pipe2(f.errpipe, O_CLOEXEC) != 0)
        e = errno;
    if (!e && (f.devnull = open("/dev/null", O_RDWR | O_CLOEXEC)) < 0)
        e = errno;
    if (!e && log && (f.outfile = open_log(log)) < 0)
        e = errno, what = log;
    if (e) {
        spawn_fds_close(&f);
        return czctl_fail_errno(L, what, e);
    }
    x.fds[0] = f.devnull;
    x.fds[1] = x.fds[2] = log ? f.outfile : f.devnull;

    pid_t mid = fork_blocked();
    if (mid < 0) {
        e = errno;
        spawn_fds_close(&f);
        return czctl_fail_errno(L, "fork", e);
    }
    if (mid == 0) {
        /* intermediate: new session, fork the helper, report its pid, exit */
        int msg[2] = {0, 0};
        if (setsid() < 0) {
            msg[0] = CZCTL_EXEC_FORK, msg[1] = errno;
        } else {
            pid_t helper = fork();
            if (helper == 0)
                child_exec(&x, f.errpipe[1], 0);
            if (helper < 0)
                msg[0] = CZCTL_EXEC_FORK, msg[1] = errno;
            else
                msg[0] = 3, msg[1] = (int)helper;
        }
        ssize_t r = write(f.errpipe[1], msg, sizeof msg);
        (void)r;
        _exit(0);
    }
    close_fd(&f.errpipe[1]);
    /* messages: {3, pid} from the intermediate, {stage, errno} on failure;
     * EOF once the helper exec'd (its copy of the pipe is CLOEXEC). */
    pid_t helper = -1;
    int kind = 0;
    e = 0;
    for (;;) {
        int msg[2];
        ssize_t n = read(f.errpipe[0], msg, sizeof msg);
        if (n < 0 && errno == EINTR)
            continue;
        if (n != (ssize_t)sizeof msg)
            break;
        if (msg[0] == 3)
            helper = msg[1];
        else
            kind = msg[0], e = msg[1] ? msg[1] : EIO;
    }
    int status;
    while (waitpid(mid, &status, 0) < 0 && errno == EINTR)
        ;
    spawn_fds_close(&f);
    if (e)
        return exec_fail(L, &x, kind, e);
    if (helper <= 0)
        return czctl_fail(L, "detach: the helper did not start");
    lua_pushinteger(L, helper);
    return 1;
}

/* cproc.find(cmd) -> path | nil, "<cmd>: command not found"
 * The program spawn would run for cmd (as execvp finds it, on our PATH):
 * lets a caller refuse a command before doing anything on its behalf. */
static int proc_find(lua_State *L)
{
    const char *cmd = luaL_checkstring(L, 1);
    const char *path = find_program(L, cmd, NULL);
    if (!path)
        return czctl_fail(L, lua_pushfstring(L, "%s: command not found", cmd));
    lua_pushstring(L, path);
    return 1;
}

/* ---- pid functions --------------------------------------------------------------- */

/* A pid argument; raises unless a positive integer. */
static pid_t check_pid(lua_State *L, int arg)
{
    lua_Integer pid = luaL_checkinteger(L, arg);
    /* 0 and negative pids address process groups: never what is meant here */
    luaL_argcheck(L, pid > 0 && pid <= INT_MAX, arg, "pid must be a positive integer");
    return (pid_t)pid;
}

/* cproc.alive(pid) -> boolean (false for zombies) */
static int proc_alive(lua_State *L)
{
    pid_t pid = check_pid(L, 1);
    int alive = kill(pid, 0) == 0 || errno == EPERM;
    if (alive) {
        char path[64], buf[512];
        snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            ssize_t n = read(fd, buf, sizeof buf - 1);
            close(fd);
            if (n > 0) {
                buf[n] = '\0';
                const char *rp = strrchr(buf, ')');   /* comm may contain spaces */
                if (rp && rp[1] == ' ' && (rp[2] == 'Z' || rp[2] == 'X'))
                    alive = 0;
            }
        }
    }
    lua_pushboolean(L, alive);
    return 1;
}

/* cproc.kill(pid[, signal="TERM"]) -> true | nil, msg, errno */
static int proc_kill_pid(lua_State *L)
{
    pid_t pid = check_pid(L, 1);
    int sig = check_signal(L, 2, SIGTERM);
    if (kill(pid, sig) != 0)
        return czctl_fail_errno(L, "kill", errno);
    lua_pushboolean(L, 1);
    return 1;
}

static const luaL_Reg proc_methods[] = {
    {"close", proc_close},
    {"close_stdin", proc_close_stdin},
    {"kill", proc_kill},
    {"pid", proc_pid},
    {"read_line", proc_read_line},
    {"wait", proc_wait},
    {"write", proc_write},
    {NULL, NULL},
};

static const czctl_class proc_class = {"czctl.process", "process", proc_methods, proc_release, proc_describe};

static const luaL_Reg proc_funcs[] = {
    {"alive", proc_alive},
    {"detach", proc_detach},
    {"find", proc_find},
    {"kill", proc_kill_pid},
    {"spawn", proc_spawn},
    {NULL, NULL},
};

int luaopen_czctl_core_proc(lua_State *L)
{
    czctl_signal_init();
    czctl_class_register(L, &proc_class);
    luaL_newlib(L, proc_funcs);
    return 1;
}
