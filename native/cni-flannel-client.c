/*
 * cni-flannel hand-off client: what /opt/cni/bin/<plugin> runs.
 *
 * Every exec of a frozen Python plugin pays ~20-25 ms of interpreter start before any of our
 * code runs.  The resident agent (cni_flannel/agent) has everything loaded; this small static
 * program only moves bytes to it:
 *
 *   1. VERSION is answered here, without any exec, for the inputs runtimes send (empty stdin,
 *      {}, {"cniVersion":"X"}); anything else goes to the Python entry, which decides.
 *   2. ADD/DEL/CHECK/STATUS/GC: the invocation (plugin name, environment, stdin) plus
 *      descriptors of our network and mount namespaces (SCM_RIGHTS) go to the agent's socket;
 *      its answer (stdout bytes, exit code) is printed as is.  If the worker dies mid-request
 *      we die the same way (SIGKILL), as the plugin itself would have.
 *   3. Everything else — no agent, a refusal, CNI_FLANNEL_AGENT=off, arguments, an unknown
 *      name — execs the PyInstaller entry of the same bundle (<our dir>/.cni-flannel/cni-flannel)
 *      with the same argv (argv[0] names the plugin), environment and stdin bytes: the
 *      self-contained path, exactly as without this client.  Stdin is read only once the agent
 *      has accepted the connection; if it must be replayed, it comes from a memfd.
 *
 * All logic stays in Python.  The wire format is cni_flannel/cni/wire.py (length-prefixed
 * fields); the constants come from the Python sources through the generated client_gen.h.
 * No stdio: it would double the size of this static binary.
 *
 * Build: native/build.sh (gcc -static -Os; no libc version dependency on the node).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <fcntl.h>
#include <unistd.h>

#include "client_gen.h"

extern char **environ;

/* --- small helpers ------------------------------------------------------------------------- */

struct buf {
    unsigned char *data;
    size_t len, cap;
};

static int buf_put(struct buf *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n)
            cap *= 2;
        unsigned char *d = realloc(b->data, cap);
        if (!d)
            return -1;
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

static int buf_u32(struct buf *b, uint32_t v)
{
    unsigned char be[4] = {v >> 24, v >> 16, v >> 8, v};
    return buf_put(b, be, 4);
}

static uint32_t get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

static int in_list(const char *s, const char *const *list)
{
    for (; *list; list++)
        if (strcmp(s, *list) == 0)
            return 1;
    return 0;
}

/* --- stdin: read at most once, replayed to the Python entry if needed ------------------------ */

static struct buf input;
static int input_consumed; /* we took bytes from fd 0: a fallback must get them from a memfd */

static void read_stdin(void)
{
    if (input_consumed)
        return;
    if (isatty(0))  /* Python reads nothing from a terminal (and a closed fd 0 fails here too) */
        return;
    unsigned char chunk[65536];
    for (;;) {
        ssize_t n = read(0, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EBADF)
            return;  /* no stdin at all: left as it is */
        input_consumed = 1;
        if (n < 0) {  /* Python's read() would fail as a whole and use b"" */
            input.len = 0;
            return;
        }
        if (n == 0)
            return;
        if (buf_put(&input, chunk, (size_t)n) < 0) {
            input.len = 0;
            return;
        }
    }
}

/* --- fallback: the PyInstaller entry of our bundle ------------------------------------------ */

static void fail(const char *what, const char *detail)
{
    /* The spec's error document; the Python entry could not even be started. */
    static const char head[] = "{\"cniVersion\": \"" CNIF_CURRENT "\", \"code\": " CNIF_INTERNAL_CODE
                               ", \"msg\": \"cni-flannel: ";
    write_all(1, head, sizeof head - 1);
    for (const char *s = what; *s; s++)  /* paths: keep the JSON valid whatever they hold */
        if (*s != '"' && *s != '\\' && (unsigned char)*s >= 0x20)
            write_all(1, s, 1);
    write_all(1, ": ", 2);
    write_all(1, detail, strlen(detail));
    write_all(1, "\"}", 2);
    _exit(1);
}

static void exec_python(char **argv)
{
    char path[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", path, sizeof path - sizeof CNIF_PY_ENTRY - 1);
    if (n <= 0)
        fail("cannot find its own executable (/proc/self/exe)", strerror(errno));
    path[n] = 0;
    char *slash = strrchr(path, '/');
    if (!slash)
        fail(path, "not an absolute path");
    strcpy(slash + 1, CNIF_PY_ENTRY);
    if (input_consumed) {
        int fd = memfd_create("cni-flannel-stdin", 0);
        if (fd < 0 || write_all(fd, input.data, input.len) < 0 || lseek(fd, 0, SEEK_SET) != 0)
            fail("cannot keep stdin for the plugin (memfd)", strerror(errno));
        if (fd != 0) {
            if (dup2(fd, 0) < 0)
                fail("cannot keep stdin for the plugin (dup2)", strerror(errno));
            close(fd);
        }
    }
    execve(path, argv, environ);
    fail(path, strerror(errno));
}

/* --- VERSION ------------------------------------------------------------------------------- */

static const unsigned char *skip_ws(const unsigned char *p, const unsigned char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

static int expect(const unsigned char **p, const unsigned char *end, const char *lit)
{
    size_t n = strlen(lit);
    if ((size_t)(end - *p) < n || memcmp(*p, lit, n) != 0)
        return 0;
    *p += n;
    return 1;
}

/*
 * The version asked for, for the three shapes runtimes send; NULL: anything else (the Python
 * entry answers those).  Whitespace as JSON defines it.  Mirrors skel._asked_version:
 * unparsable -> current, no cniVersion / "" -> 0.1.0, unknown -> current.
 */
static const char *simple_version(char *asked, size_t size)
{
    const unsigned char *p = input.data, *end = input.data + input.len;
    p = skip_ws(p, end);
    if (p == end)
        return CNIF_CURRENT;  /* json.loads fails on nothing */
    if (!expect(&p, end, "{"))
        return NULL;
    p = skip_ws(p, end);
    if (expect(&p, end, "}"))
        return skip_ws(p, end) == end ? CNIF_DEFAULT_VERSION : NULL;
    if (!expect(&p, end, "\"cniVersion\""))
        return NULL;
    p = skip_ws(p, end);
    if (!expect(&p, end, ":"))
        return NULL;
    p = skip_ws(p, end);
    if (!expect(&p, end, "\""))
        return NULL;
    size_t n = 0;
    while (p < end && ((*p >= '0' && *p <= '9') || *p == '.')) {
        if (n + 1 >= size)
            return NULL;
        asked[n++] = (char)*p++;
    }
    asked[n] = 0;
    if (!expect(&p, end, "\""))
        return NULL;
    p = skip_ws(p, end);
    if (!expect(&p, end, "}") || skip_ws(p, end) != end)
        return NULL;
    if (n == 0)
        return CNIF_DEFAULT_VERSION;
    return in_list(asked, cnif_supported) ? asked : CNIF_CURRENT;
}

static void answer_version(char **argv)
{
    char asked[32];
    read_stdin();
    const char *v = simple_version(asked, sizeof asked);
    if (!v)
        exec_python(argv);
    if (write_all(1, CNIF_VERSION_PREFIX, sizeof CNIF_VERSION_PREFIX - 1) < 0 ||
        write_all(1, v, strlen(v)) < 0 ||
        write_all(1, CNIF_VERSION_SUFFIX, sizeof CNIF_VERSION_SUFFIX - 1) < 0)
        _exit(1);
    _exit(0);
}

/* --- the agent ----------------------------------------------------------------------------- */

static int connect_agent(void)
{
    const char *path = getenv(CNIF_SOCKET_ENV);
    if (!path || !*path)
        path = CNIF_DEFAULT_SOCKET;
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path)
        return -1;
    strcpy(addr.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    /* A stuck agent (full backlog) must not hold the pod up: fall back after a while. */
    struct timeval tv = {.tv_sec = CNIF_CONNECT_TIMEOUT_S};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int build_request(struct buf *req, const char *plugin)
{
    struct buf env = {0};
    for (char **e = environ; e && *e; e++)
        if (buf_put(&env, *e, strlen(*e) + 1) < 0)  /* KEY=VALUE\0, as /proc/<pid>/environ */
            return -1;
    const void *fields[] = {CNIF_MAGIC, CNIF_VERSION, plugin, env.data, input.data};
    size_t sizes[] = {strlen(CNIF_MAGIC), strlen(CNIF_VERSION), strlen(plugin), env.len, input.len};
    size_t body = 0;
    for (int i = 0; i < 5; i++)
        body += 4 + sizes[i];
    if (body > CNIF_MAX_FRAME)
        return -1;
    if (buf_u32(req, (uint32_t)body) < 0)
        return -1;
    for (int i = 0; i < 5; i++)
        if (buf_u32(req, (uint32_t)sizes[i]) < 0 || (sizes[i] && buf_put(req, fields[i], sizes[i]) < 0))
            return -1;
    free(env.data);
    return 0;
}

/* The request with our namespace descriptors on its first bytes. */
static int send_request(int sock, const struct buf *req)
{
    int fds[2];
    fds[0] = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    fds[1] = open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC);
    if (fds[0] < 0 || fds[1] < 0)
        return -1;
    union {
        char space[CMSG_SPACE(sizeof fds)];
        struct cmsghdr align;
    } ctl;
    memset(&ctl, 0, sizeof ctl);
    struct iovec iov = {.iov_base = req->data, .iov_len = req->len};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.space,
                         .msg_controllen = sizeof ctl.space};
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof fds);
    memcpy(CMSG_DATA(c), fds, sizeof fds);
    ssize_t n;
    do
        n = sendmsg(sock, &msg, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    close(fds[0]);
    close(fds[1]);
    if (n < 0)
        return -1;
    size_t off = (size_t)n;
    while (off < req->len) {
        n = send(sock, req->data + off, req->len - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        off += (size_t)n;
    }
    return 0;
}

/* Exactly n bytes; 0 when the peer closed before the first, -1 otherwise short. */
static int recv_exact(int sock, unsigned char *p, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = recv(sock, p + got, n - got, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return got == 0 && r == 0 ? 0 : -1;
        got += (size_t)r;
    }
    return 1;
}

static void worker_died(void)
{
    /* The request was taken and its worker is gone: die as the plugin itself would have. */
    kill(getpid(), SIGKILL);
    _exit(137);
}

/*
 * Hand the invocation to the agent.  Returns only when the caller must run it itself
 * (nothing has been done for this request); a result ends the process here.
 */
static void try_agent(const char *plugin)
{
    int sock = connect_agent();
    if (sock < 0)
        return;  /* no agent: stdin still untouched */
    read_stdin();
    struct buf req = {0};
    if (build_request(&req, plugin) < 0 || send_request(sock, &req) < 0) {
        close(sock);
        return;
    }
    free(req.data);
    unsigned char head[4];
    int r = recv_exact(sock, head, 4);
    if (r == 0)
        worker_died();
    uint32_t len = r < 0 ? 0 : get_u32(head);
    if (r < 0 || len > CNIF_MAX_FRAME) {
        close(sock);
        return;
    }
    unsigned char *body = malloc(len ? len : 1);
    if (!body || (len && recv_exact(sock, body, len) != 1))
        worker_died();  /* it answered (so it ran) but the answer is lost: as a crash */
    close(sock);
    /* reply = "ok" code stdout | "refused" reason (wire.py) */
    const unsigned char *f[3];
    uint32_t fl[3];
    size_t pos = 0, nf = 0;
    while (pos < len && nf < 3) {
        if (len - pos < 4)
            return;
        fl[nf] = get_u32(body + pos);
        pos += 4;
        if (fl[nf] > len - pos)
            return;
        f[nf++] = body + pos;
        pos += fl[nf - 1];
    }
    if (pos != len || nf != 3 || fl[0] != 2 || memcmp(f[0], "ok", 2) != 0 || fl[1] < 1 || fl[1] > 3)
        return;  /* a refusal (or nonsense): run it ourselves */
    int code = 0;
    for (uint32_t i = 0; i < fl[1]; i++) {
        if (f[1][i] < '0' || f[1][i] > '9')
            return;
        code = code * 10 + (f[1][i] - '0');
    }
    if (code > 255)
        return;
    if (fl[2] && write_all(1, f[2], fl[2]) < 0)
        _exit(1);
    _exit(code);
}

int main(int argc, char **argv)
{
    static const char *const handed_off[] = CNIF_HANDED_OFF;
    const char *command = getenv("CNI_COMMAND");
    if (argc != 1 || !argv[0] || !command)
        exec_python(argv);  /* `flannel agent`, usage, missing CNI_COMMAND: Python's business */
    char plugin[CNIF_MAX_NAME + 1];
    const char *base = strrchr(argv[0], '/');
    base = base ? base + 1 : argv[0];
    size_t n = strlen(base);
    if (n > 3 && strcmp(base + n - 3, ".py") == 0)
        n -= 3;  /* as cni_flannel.main.plugin_name */
    if (n == 0 || n > CNIF_MAX_NAME)
        exec_python(argv);
    memcpy(plugin, base, n);
    plugin[n] = 0;
    if (!in_list(plugin, cnif_plugins))
        exec_python(argv);
    if (strcmp(command, "VERSION") == 0)
        answer_version(argv);
    const char *sw = getenv(CNIF_SWITCH_ENV);
    if (in_list(command, handed_off) && !(sw && strcmp(sw, "off") == 0))
        try_agent(plugin);
    exec_python(argv);
    return 1;
}
