/*
 * rusage OUTFILE PROG [ARGS...]: runs PROG (an absolute path), waits for it and writes
 * "MAXRSS_KB UTIME_US STIME_US MINFLT\n" from wait4() to OUTFILE; exits with PROG's status (128 +
 * signal).
 *
 * Why not os.wait4() in the harness itself: ru_maxrss of a child starts at the RSS of the process it
 * was forked (or vforked) from, because exec records the old address space's high-water mark. From the
 * harness (a ~20 MiB Python) every command would read at least ~20 MiB. This helper is linked
 * statically and is a few hundred KiB, so what it reports is the command's own peak, plus whatever
 * children the command reaped itself (wait4 semantics).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: rusage OUTFILE PROG [ARGS...]\n");
        return 2;
    }
    pid_t pid = fork();
    if (pid < 0) {
        perror("rusage: fork");
        return 127;
    }
    if (pid == 0) {
        execv(argv[2], &argv[2]);
        fprintf(stderr, "rusage: %s: %s\n", argv[2], strerror(errno));
        _exit(127);
    }
    int status;
    struct rusage ru;
    while (wait4(pid, &status, 0, &ru) < 0) {
        if (errno != EINTR) {
            perror("rusage: wait4");
            return 127;
        }
    }
    FILE *f = fopen(argv[1], "w");
    if (!f) {
        perror("rusage: OUTFILE");
        return 127;
    }
    fprintf(f, "%ld %ld %ld %ld\n", ru.ru_maxrss,
            (long)ru.ru_utime.tv_sec * 1000000 + ru.ru_utime.tv_usec,
            (long)ru.ru_stime.tv_sec * 1000000 + ru.ru_stime.tv_usec, ru.ru_minflt);
    fclose(f);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return WEXITSTATUS(status);
}
