/*
 * watchdog.h: a worker process ends itself once its parent is gone, whatever its
 * own code is doing then (stuck in a C loop, asleep, holding the GIL).  C with no
 * Python API; used by the worker processes of seqtools' loaders (_ring.pyx).
 *
 * Two mechanisms, to be used together:
 *   - sq_watchdog_start: a thread of the worker's own that polls for its parent
 *     (any POSIX system; it needs no lock and no GIL, so nothing the worker's
 *     main thread holds can stop it);
 *   - sq_set_pdeathsig: Linux only, the kernel signals the worker the moment
 *     the thread that forked it ends (no polling delay).
 *
 * Return values: 0 on success, a negative errno value on failure (-EINVAL, or
 * what the failed call set); sq_set_pdeathsig also returns SQ_PARENT_GONE, and
 * -ENOSYS where the system lacks the feature.
 */
#ifndef SQ_WATCHDOG_H
#define SQ_WATCHDOG_H

#ifdef __cplusplus
extern "C" {
#endif

/* Exit status of a process ended by its watchdog. */
#define SQ_WATCHDOG_EXIT 70

/* sq_set_pdeathsig: the parent died before the signal was set. */
#define SQ_PARENT_GONE 1

/* Start a detached thread that, every `interval` seconds, checks that this
 * process's parent is the one it had when the watchdog started (getppid()
 * unchanged: an orphan is adopted by init or a subreaper) and that process
 * `parent_pid` exists (kill(parent_pid, 0) does not fail with ESRCH; it may be a
 * process other than the parent, such as the pool's owner when a fork server
 * started this one), and calls _exit(SQ_WATCHDOG_EXIT) as soon as either check
 * fails: no atexit handler, no flush, no finalizer runs (the parent that would
 * read their output is gone).  The thread blocks every signal, so that signals
 * go to the process's other threads.  It runs until the process ends; a process
 * forked from this one has no watchdog (fork copies the calling thread only).
 * Returns 0, -EINVAL (parent_pid <= 0, interval not in (0, 1e6] seconds), or
 * the negative errno of the failed thread creation. */
int sq_watchdog_start(long parent_pid, double interval);

/* Linux: have the kernel send `sig` (0: no signal) to this process when its
 * parent ends, then check that getppid() is still `expected_ppid`, the parent it
 * had before the call: if the parent died before the signal was set, no signal
 * will come, and SQ_PARENT_GONE (1) is returned (the caller should exit).  The
 * signal comes when the *thread* that forked this process ends, not the whole
 * parent process: fork the workers from a thread that lives as long as they do.
 * The setting is cleared in children this process forks.  Returns 0,
 * SQ_PARENT_GONE, -EINVAL (bad signal number, expected_ppid <= 0), or -ENOSYS
 * on other systems. */
int sq_set_pdeathsig(int sig, long expected_ppid);

/* 1 if process `pid` has ended and awaits reaping (a zombie), which kill(pid, 0)
 * does not tell; 0 otherwise, and where it cannot tell (no /proc). */
int sq_is_zombie(long pid);

#ifdef __cplusplus
}
#endif
#endif /* SQ_WATCHDOG_H */
