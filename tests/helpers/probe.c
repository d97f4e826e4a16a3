/* probe: makes one raw syscall and prints what it returned, so that tests can see exactly what a
 * seccomp filter did to it.
 *
 *   probe [-t] [-T] NAME [ARG...]
 *
 * ARG is a number (strtoul base 0), "s:TEXT" (a pointer to TEXT) or "buf" (a pointer to a 4 KiB
 * buffer). Prints "NAME=RET" where RET is the return value, or minus errno on failure.
 *   -t  catch SIGSYS (SCMP_ACT_TRAP) and print "trapped NAME nr=N" instead of dying.
 *   -T  make the call in a second thread, then print "main thread survived" (tells
 *       SCMP_ACT_KILL_THREAD from SCMP_ACT_KILL_PROCESS).
 * Built statically by the tests (gcc -static) and copied into the container's rootfs. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

struct entry { const char *name; long nr; };
#define X(n) { #n, SYS_##n },
static const struct entry table[] = {
    X(getppid) X(getpid) X(getcwd) X(uname) X(unshare) X(mount) X(keyctl) X(add_key)
    X(request_key) X(vmsplice) X(sysfs) X(ustat) X(kexec_load) X(io_uring_setup)
    X(personality) X(chroot) X(bpf) X(mkdirat) X(fcntl) X(close_range) X(setns)
#ifdef SYS_mkdir
    X(mkdir)
#endif
    { NULL, 0 },
};

static const char *name;
static long nr;
static unsigned long args[6];
static char buf[4096];

static void on_sigsys(int sig, siginfo_t *si, void *ctx) {
    (void)sig; (void)ctx;
    char line[128];
    int n = snprintf(line, sizeof line, "trapped %s nr=%d\n", name, si->si_syscall);
    if (write(1, line, n) < 0) _exit(3);
    _exit(0);
}

static void *call(void *unused) {
    (void)unused;
    long r = syscall(nr, args[0], args[1], args[2], args[3], args[4], args[5]);
    printf("%s=%ld\n", name, r < 0 ? -(long)errno : r);
    fflush(stdout);
    return NULL;
}

int main(int argc, char **argv) {
    int trap = 0, thread = 0, i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "-t")) trap = 1;
        else if (!strcmp(argv[i], "-T")) thread = 1;
        else { fprintf(stderr, "probe: unknown option %s\n", argv[i]); return 2; }
    }
    if (i >= argc) { fprintf(stderr, "usage: probe [-t] [-T] NAME [ARG...]\n"); return 2; }
    name = argv[i++];
    const struct entry *e = table;
    while (e->name && strcmp(e->name, name)) e++;
    if (!e->name) { fprintf(stderr, "probe: unknown syscall %s\n", name); return 2; }
    nr = e->nr;
    for (int a = 0; i < argc && a < 6; i++, a++) {
        if (!strncmp(argv[i], "s:", 2)) args[a] = (unsigned long)(argv[i] + 2);
        else if (!strcmp(argv[i], "buf")) args[a] = (unsigned long)buf;
        else args[a] = strtoul(argv[i], NULL, 0);
    }
    if (trap) {
        struct sigaction sa = { .sa_sigaction = on_sigsys, .sa_flags = SA_SIGINFO };
        sigaction(SIGSYS, &sa, NULL);
    }
    if (thread) {
        pthread_t t;
        if (pthread_create(&t, NULL, call, NULL)) { perror("pthread_create"); return 2; }
        /* A killed thread never finishes: give it time, then report that the process lives. */
        usleep(300000);
        printf("main thread survived\n");
        fflush(stdout);
        return 0;
    }
    call(NULL);
    return 0;
}
