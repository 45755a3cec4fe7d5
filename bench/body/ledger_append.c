/*
 * W1's cheapest real job body: append "job tick start pid worker [kind]\n" to the
 * ledger given as argv[1], in one write(2) to an O_APPEND fd. "start" is read
 * first thing in main(), so the lag it gives is the scheduler's plus the exec.
 * Same line format as the shell body (bench/common.py: ledger_printf).
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (argc < 2) {
        fputs("usage: ledger_append LEDGER [KIND]\n", stderr);
        return 2;
    }
    const char *job = getenv("ETCRON_JOB"), *tick = getenv("ETCRON_TICK");
    const char *worker = getenv("ETCRON_WORKER");
    char line[1024];
    int n = snprintf(line, sizeof line, "%s %s %lld.%09ld %d %s%s%s\n", job ? job : "-",
                     tick ? tick : "-", (long long)ts.tv_sec, ts.tv_nsec, (int)getpid(),
                     worker ? worker : "-", argc > 2 ? " " : "", argc > 2 ? argv[2] : "");
    if (n <= 0 || n >= (int)sizeof line) return 1;
    int fd = open(argv[1], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0 || write(fd, line, (size_t)n) != n) return 1;
    return close(fd) == 0 ? 0 : 1;
}
