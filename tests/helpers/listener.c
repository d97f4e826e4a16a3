/* listener: a minimal seccomp agent for the tests.
 *
 *   listener SOCKET OUTDIR REPLY
 *
 * Listens on the unix socket SOCKET, writes OUTDIR/ready once listening, accepts one connection
 * and receives the runtime's message: the containerProcessState JSON (written to
 * OUTDIR/state.json) with the notify fd in SCM_RIGHTS. Then answers every notification with
 * REPLY, "val:N" (the syscall returns N without running) or "errno:N" (it fails with N), and
 * appends "nr=N arg0=A\n" to OUTDIR/log, until the container's filter is gone. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static void die(const char *what) { perror(what); exit(1); }

static void write_file(const char *dir, const char *name, const char *data, size_t len, const char *mode) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, mode);
    if (!f) die(path);
    fwrite(data, 1, len, f);
    fclose(f);
}

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: listener SOCKET OUTDIR val:N|errno:N\n"); return 2; }
    long reply_val = 0; int reply_errno = 0;
    if (!strncmp(argv[3], "val:", 4)) reply_val = strtol(argv[3] + 4, NULL, 0);
    else if (!strncmp(argv[3], "errno:", 6)) reply_errno = atoi(argv[3] + 6);
    else { fprintf(stderr, "listener: bad reply %s\n", argv[3]); return 2; }

    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) die("socket");
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    strncpy(addr.sun_path, argv[1], sizeof addr.sun_path - 1);
    if (bind(s, (struct sockaddr *)&addr, sizeof addr)) die("bind");
    if (listen(s, 1)) die("listen");
    write_file(argv[2], "ready", "", 0, "w");

    int c = accept4(s, NULL, NULL, SOCK_CLOEXEC);
    if (c < 0) die("accept");
    static char data[1 << 16];
    char cbuf[CMSG_SPACE(sizeof(int) * 4)];
    struct iovec iov = { .iov_base = data, .iov_len = sizeof data };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf };
    ssize_t n = recvmsg(c, &msg, MSG_CMSG_CLOEXEC);
    if (n < 0) die("recvmsg");
    write_file(argv[2], "state.json", data, n, "w");
    struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
    if (!cm || cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS) {
        fprintf(stderr, "listener: no fd in the message\n");
        return 1;
    }
    int fd;
    memcpy(&fd, CMSG_DATA(cm), sizeof fd);

    for (;;) {
        struct seccomp_notif req;
        struct seccomp_notif_resp resp;
        memset(&req, 0, sizeof req);
        if (ioctl(fd, SECCOMP_IOCTL_NOTIF_RECV, &req)) {
            if (errno == EINTR) continue;
            /* ENOENT: every task of the filter is gone. */
            return 0;
        }
        char line[128];
        int len = snprintf(line, sizeof line, "nr=%d arg0=%llu\n", req.data.nr,
                           (unsigned long long)req.data.args[0]);
        write_file(argv[2], "log", line, len, "a");
        memset(&resp, 0, sizeof resp);
        resp.id = req.id;
        resp.val = reply_val;
        resp.error = reply_errno ? -reply_errno : 0;
        if (ioctl(fd, SECCOMP_IOCTL_NOTIF_SEND, &resp) && errno != ENOENT) die("NOTIF_SEND");
    }
}
