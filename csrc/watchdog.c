/*
 * watchdog.c: see watchdog.h.  A worker whose parent is gone must not live on:
 * it would hold its share of memory and CPU forever, and a worker stuck in user
 * code never reaches the Python-level checks between tasks.
 */
#include "watchdog.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

/* Stack of the watchdog thread: it only sleeps and makes three system calls. */
#define SQ_WATCHDOG_STACK ((size_t)256 * 1024)

/* What the thread watches; it owns (and frees) the copy it is given. */
typedef struct {
    pid_t parent_pid; /* a process that must exist */
    pid_t ppid0;      /* getppid() when the watchdog started */
    struct timespec interval;
} sq_watch;

int sq_is_zombie(long pid) {
    char path[64], buf[512];
    ssize_t n;
    int fd;
    char *end;
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = '\0';
    /* "pid (comm) S ...": the state follows the last ')' (comm may hold any) */
    end = strrchr(buf, ')');
    return end != NULL && end[1] == ' ' && (end[2] == 'Z' || end[2] == 'X');
}

/* True while process parent_pid exists and this process has not been orphaned.
 * The direct parent's death shows at once through getppid(), since an exiting
 * process's children are re-parented before it turns zombie. kill(pid, 0) still
 * succeeds on a zombie, until it is reaped, and a parent that died before the
 * watchdog started (ppid0 is then already the reaper's) may stay one for as long
 * as its own parent waits, possibly for output this worker holds open: a zombie
 * counts as gone. */
static int watch_ok(const sq_watch *w) {
    if (getppid() != w->ppid0) return 0;
    if (kill(w->parent_pid, 0) != 0 && errno == ESRCH) return 0;
    if (sq_is_zombie(w->parent_pid)) return 0;
    return 1;
}

static void *watch_run(void *arg) {
    sq_watch w = *(sq_watch *)arg;
    free(arg);
    for (;;) {
        struct timespec left = w.interval;
        while (nanosleep(&left, &left) != 0 && errno == EINTR) {
        }
        if (!watch_ok(&w)) _exit(SQ_WATCHDOG_EXIT);
    }
    return NULL;
}

int sq_watchdog_start(long parent_pid, double interval) {
    pthread_attr_t attr;
    sigset_t all, old;
    pthread_t thread;
    sq_watch *w = NULL;
    size_t stack = SQ_WATCHDOG_STACK;
    int rc;

    /* !(x > 0) is also true for NaN */
    if (parent_pid <= 0 || (long)(pid_t)parent_pid != parent_pid || !(interval > 0) ||
        interval > 1e6)
        return -EINVAL;
    rc = pthread_attr_init(&attr);
    if (rc != 0) return -rc;
    w = malloc(sizeof *w);
    if (w == NULL) {
        rc = ENOMEM;
        goto fail;
    }
    w->parent_pid = (pid_t)parent_pid;
    w->ppid0 = getppid();
    w->interval.tv_sec = (time_t)interval;
    w->interval.tv_nsec = (long)((interval - (double)w->interval.tv_sec) * 1e9);
    if (w->interval.tv_sec == 0 && w->interval.tv_nsec == 0) w->interval.tv_nsec = 1;
    rc = pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (rc != 0) goto fail;
#ifdef PTHREAD_STACK_MIN
    if (stack < (size_t)PTHREAD_STACK_MIN) stack = (size_t)PTHREAD_STACK_MIN;
#endif
    rc = pthread_attr_setstacksize(&attr, stack);
    if (rc != 0) goto fail;
    /* The thread starts with its creator's signal mask: block every signal for
     * it, then give the creator its own mask back. */
    sigfillset(&all);
    rc = pthread_sigmask(SIG_SETMASK, &all, &old);
    if (rc != 0) goto fail;
    rc = pthread_create(&thread, &attr, watch_run, w);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc == 0) w = NULL; /* the thread frees it */
fail:
    pthread_attr_destroy(&attr);
    free(w);
    return -rc;
}

int sq_set_pdeathsig(int sig, long expected_ppid) {
    if (expected_ppid <= 0) return -EINVAL;
#ifdef __linux__
    if (prctl(PR_SET_PDEATHSIG, (unsigned long)sig, 0UL, 0UL, 0UL) != 0) return -errno;
    /* The parent may have died before the call: then no signal comes, and the
     * parent this process has now is another one. */
    if (getppid() != (pid_t)expected_ppid) return SQ_PARENT_GONE;
    return 0;
#else
    (void)sig;
    return -ENOSYS;
#endif
}
