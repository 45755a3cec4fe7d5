/*
 * W1's cheapest real job body: append one proof/ledger.py line,
 * "job tick run-id token worker kind at\n", to the ledger given as argv[1], in
 * one write(2) to an O_APPEND fd (kind = argv[2], default "start"). The time is
 * read first thing in main(), so the lag it gives is the scheduler's plus the
 * exec. Without $ETCRON_RUN_ID the run id is "pid-<pid>"; without a token, 0.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static const char *env_or(const char *name, const char *fallback) {
    const char *v = getenv(name);
    return v && *v ? v : fallback;
}

int main(int argc, char **argv) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (argc < 2) {
        fputs("usage: ledger_append LEDGER [KIND]\n", stderr);
        return 2;
    }
    char pid_run[32];
    snprintf(pid_run, sizeof pid_run, "pid-%d", (int)getpid());
    char line[1024];
    int n = snprintf(line, sizeof line, "%s %s %s %s %s %s %lld.%09ld\n",
                     env_or("ETCRON_JOB", "-"), env_or("ETCRON_TICK", "-"),
                     env_or("ETCRON_RUN_ID", pid_run), env_or("ETCRON_FENCING_TOKEN", "0"),
                     env_or("ETCRON_WORKER", "-"), argc > 2 ? argv[2] : "start",
                     (long long)ts.tv_sec, ts.tv_nsec);
    if (n <= 0 || n >= (int)sizeof line) return 1;
    int fd = open(argv[1], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0 || write(fd, line, (size_t)n) != n) return 1;
    return close(fd) == 0 ? 0 : 1;
}
