/*
 * epoll_echo: the "physical limit" reference of the iocp_echo bench.
 *
 * One thread, level-triggered epoll: a nonblocking listener accepted until EAGAIN, one
 * recv per readable event into a shared buffer, send straight back; what the kernel does
 * not take is kept per connection, reading stops (EPOLLOUT instead of EPOLLIN) until it
 * has gone out. No framing, no allocation per message, nothing else.
 *
 * Build: cc -O2 -o epoll_echo epoll_echo.c
 * Usage: epoll_echo [--host 127.0.0.1] [--port 0]  (prints "listening on HOST:PORT")
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF_SIZE 65536
#define MAX_EVENTS 256

/* Bytes a connection still owes its peer; NULL while it owes nothing (the idle case). */
struct pending {
    size_t off, len;
    char data[];
};

static struct pending **pending_by_fd;
static size_t pending_cap;
static char buf[BUF_SIZE];

static void die(const char *what) {
    perror(what);
    exit(1);
}

static void set_interest(int ep, int fd, unsigned events) {
    struct epoll_event ev = {.events = events, .data.fd = fd};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev) < 0) die("epoll_ctl mod");
}

static void close_conn(int fd) {
    if ((size_t)fd < pending_cap) {
        free(pending_by_fd[fd]);
        pending_by_fd[fd] = NULL;
    }
    close(fd); /* also removes it from the epoll set */
}

static void accept_all(int ep, int lfd) {
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno == EMFILE || errno == ENFILE) return; /* retried on the next event */
            die("accept4");
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if ((size_t)fd >= pending_cap) {
            size_t cap = pending_cap ? pending_cap : 1024;
            while (cap <= (size_t)fd) cap *= 2;
            pending_by_fd = realloc(pending_by_fd, cap * sizeof *pending_by_fd);
            if (!pending_by_fd) die("realloc");
            memset(pending_by_fd + pending_cap, 0, (cap - pending_cap) * sizeof *pending_by_fd);
            pending_cap = cap;
        }
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl add");
    }
}

/* Sends what it can of data; keeps the rest and switches the socket to EPOLLOUT. */
static int send_or_keep(int ep, int fd, const char *data, size_t len) {
    size_t off = 0;
    while (off < len) {
        ssize_t n = send(fd, data + off, len - off, MSG_NOSIGNAL);
        if (n > 0) {
            off += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pending *p = malloc(sizeof *p + (len - off));
            if (!p) die("malloc");
            p->off = 0;
            p->len = len - off;
            memcpy(p->data, data + off, len - off);
            pending_by_fd[fd] = p;
            set_interest(ep, fd, EPOLLOUT);
            return 0;
        } else {
            return -1;
        }
    }
    return 0;
}

static void on_readable(int ep, int fd) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n > 0) {
        if (send_or_keep(ep, fd, buf, (size_t)n) < 0) close_conn(fd);
    } else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        close_conn(fd);
    }
}

static void on_writable(int ep, int fd) {
    struct pending *p = pending_by_fd[fd];
    while (p->off < p->len) {
        ssize_t n = send(fd, p->data + p->off, p->len - p->off, MSG_NOSIGNAL);
        if (n > 0) {
            p->off += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return;
        } else {
            close_conn(fd);
            return;
        }
    }
    free(p);
    pending_by_fd[fd] = NULL;
    set_interest(ep, fd, EPOLLIN);
}

int main(int argc, char **argv) {
    const char *host = "127.0.0.1";
    int port = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--host") && i + 1 < argc) {
            host = argv[++i];
        } else if (!strcmp(argv[i], "--port") && i + 1 < argc) {
            port = atoi(argv[++i]);
        } else {
            fprintf(stderr, "usage: %s [--host ADDR] [--port N]\n", argv[0]);
            return 2;
        }
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (lfd < 0) die("socket");
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        fprintf(stderr, "bad --host %s\n", host);
        return 2;
    }
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0) die("bind");
    if (listen(lfd, SOMAXCONN) < 0) die("listen");
    socklen_t alen = sizeof addr;
    if (getsockname(lfd, (struct sockaddr *)&addr, &alen) < 0) die("getsockname");

    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    struct epoll_event lev = {.events = EPOLLIN, .data.fd = lfd};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev) < 0) die("epoll_ctl listener");

    printf("listening on %s:%d\n", host, ntohs(addr.sin_port));
    fflush(stdout);

    struct epoll_event events[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(ep, events, MAX_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == lfd) {
                accept_all(ep, lfd);
            } else if (pending_by_fd[fd]) {
                on_writable(ep, fd);
            } else {
                on_readable(ep, fd);
            }
        }
    }
}
