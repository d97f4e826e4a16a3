/*
 * floor: the least work that starts a program the way an OCI runtime does, the benchmark's floor.
 *
 *   floor [-U] ROOTFS PROG [ARGS...]
 *
 * clone()s a child into new pid, mount, network, ipc, uts and cgroup namespaces (-U: and a user
 * namespace mapping 0 -> 100000, 65536 ids, as the harness's userns spec does), which makes / private,
 * bind-mounts ROOTFS onto itself, mounts proc in it, pivot_root()s into it, sets the hostname and
 * execve()s PROG (an absolute path inside ROOTFS) with the spec's environment. The parent waits for it
 * and exits with its status (128 + signal if it was killed).
 *
 * No config parsing, no state, no cgroups, no /dev, no capabilities, no seccomp: no runtime can be
 * faster than this on the same machine. Built by scripts/bench with gcc -O2.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define STACK_SIZE (256 * 1024)

static char *const child_env[] = {
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "TERM=xterm",
    NULL,
};

struct child_args {
    const char *rootfs;
    char **argv;
    int userns;
    int sync_fd;    /* read end: the parent closes the write end once the id maps are written */
    int sync_wr_fd; /* write end, which the child must close too to ever see EOF */
};

static void die(const char *what) {
    fprintf(stderr, "floor: %s: %s\n", what, strerror(errno));
    _exit(127);
}

static int child(void *p) {
    struct child_args *a = p;

    if (a->userns) {
        char c;
        close(a->sync_wr_fd);
        /* EOF means the parent wrote the maps (or died). */
        if (read(a->sync_fd, &c, 1) < 0)
            die("read sync pipe");
        close(a->sync_fd);
        if (setgid(0) < 0 || setuid(0) < 0)
            die("setuid 0 in the user namespace");
    }
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        die("make / private");
    if (mount(a->rootfs, a->rootfs, NULL, MS_BIND | MS_REC, NULL) < 0)
        die("bind-mount rootfs");
    if (chdir(a->rootfs) < 0)
        die("chdir rootfs");
    if (mount("proc", "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
        die("mount proc");
    /* pivot_root(".", "."): the old root ends up on top of the new one; detach it. */
    if (syscall(SYS_pivot_root, ".", ".") < 0)
        die("pivot_root");
    if (umount2(".", MNT_DETACH) < 0)
        die("detach old root");
    if (chdir("/") < 0)
        die("chdir /");
    if (sethostname("busybox", 7) < 0)
        die("sethostname");
    execve(a->argv[0], a->argv, child_env);
    die(a->argv[0]);
    return 127;
}

static void write_file(const char *path, const char *data) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, data, strlen(data)) != (ssize_t)strlen(data)) {
        fprintf(stderr, "floor: write %s: %s\n", path, strerror(errno));
        exit(127);
    }
    close(fd);
}

int main(int argc, char **argv) {
    struct child_args a = {0};
    int i = 1;

    if (i < argc && strcmp(argv[i], "-U") == 0) {
        a.userns = 1;
        i++;
    }
    if (argc - i < 2) {
        fprintf(stderr, "usage: floor [-U] ROOTFS PROG [ARGS...]\n");
        return 2;
    }
    a.rootfs = argv[i];
    a.argv = &argv[i + 1];

    int sync_pipe[2] = {-1, -1};
    if (a.userns) {
        if (pipe2(sync_pipe, O_CLOEXEC) < 0)
            die("pipe");
        a.sync_fd = sync_pipe[0];
        a.sync_wr_fd = sync_pipe[1];
    }

    char *stack = malloc(STACK_SIZE);
    if (!stack)
        die("malloc");
    int flags = CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS |
                CLONE_NEWCGROUP | SIGCHLD;
    if (a.userns)
        flags |= CLONE_NEWUSER;
    pid_t pid = clone(child, stack + STACK_SIZE, flags, &a);
    if (pid < 0)
        die("clone");

    if (a.userns) {
        char path[64];
        close(sync_pipe[0]);
        snprintf(path, sizeof path, "/proc/%d/uid_map", pid);
        write_file(path, "0 100000 65536\n");
        snprintf(path, sizeof path, "/proc/%d/gid_map", pid);
        write_file(path, "0 100000 65536\n");
        close(sync_pipe[1]);
    }

    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            die("waitpid");
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return WEXITSTATUS(status);
}
