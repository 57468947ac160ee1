/*
 * copypool.h: a fixed set of threads running C jobs, with no Python API.
 *
 * seqtools' thread loaders use it for fused batches: the consumer plans a batch
 * (Python, GIL held), submits its copy here and goes on; the threads copy with no
 * GIL, so on a GIL build the copies overlap the consumer's Python and each
 * other, and nothing waits for a GIL hand-over (seqtools/loaders/_copypool.pyx
 * wraps the pool; the jobs are seqtools/batching/_stack.pyx's CopyJob).
 *
 * Jobs run in submission order, each by one thread. A job is memory owned by the
 * caller, which must keep it valid until sq_pool_wait() has seen it done or
 * sq_pool_cancel() has taken it back. Jobs must not block: the pool has no way to
 * interrupt one, and sq_pool_free() waits for the running ones.
 *
 * Not fork-safe: a process forked from one with a pool has no pool threads; the
 * child must not call anything here on the inherited pool (not even
 * sq_pool_free, whose threads do not exist there). Check the owner's pid.
 */
#ifndef SQ_COPYPOOL_H
#define SQ_COPYPOOL_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The name of the pool's threads (Linux: /proc/<pid>/task/<tid>/comm). */
#define SQ_POOL_THREAD_NAME "seqtools-copy"

/* States of a job, as sq_pool_state() reports them. */
#define SQ_JOB_IDLE 0     /* not submitted, or taken back by sq_pool_cancel */
#define SQ_JOB_QUEUED 1
#define SQ_JOB_RUNNING 2
#define SQ_JOB_DONE 3

typedef struct sq_job {
    void (*run)(struct sq_job *job); /* called once, by a pool thread */
    struct sq_job *next;             /* the pool's queue link */
    int state;                       /* SQ_JOB_*, under the pool's mutex */
} sq_job;

typedef struct sq_pool sq_pool;

/* A pool of `nthreads` threads (1 to 1024), all signals blocked in them, named
 * SQ_POOL_THREAD_NAME.
 * Returns 0 and sets *out, or a negative errno value (-EINVAL, -ENOMEM, or
 * what thread creation failed with; no thread is left running then). */
int sq_pool_new(int nthreads, sq_pool **out);

/* Queue `job` (its `run` set; state IDLE or DONE) to run after the jobs queued
 * before it. Returns 0, -EINVAL if the job is queued or running, -EPIPE once
 * the pool is closing. */
int sq_pool_submit(sq_pool *pool, sq_job *job);

/* Wait up to `timeout` seconds (0: just look) for `job` to be done. Returns 1
 * when done, 0 on timeout, -EINVAL if the job was never submitted (IDLE). */
int sq_pool_wait(sq_pool *pool, sq_job *job, double timeout);

/* Take a queued job back before it runs. Returns 1 if taken back (now IDLE), 0
 * if it is running or done (wait for it before reusing its memory). */
int sq_pool_cancel(sq_pool *pool, sq_job *job);

/* The job's state (SQ_JOB_*). */
int sq_pool_state(sq_pool *pool, sq_job *job);

/* Stop the pool: queued jobs are taken back (IDLE, never run), running ones
 * finish, and the threads are joined. The pool's other functions keep working
 * on its jobs (submit returns -EPIPE). Idempotent. Only in the process that
 * made it. */
void sq_pool_stop(sq_pool *pool);

/* The nanoseconds pool thread `thread` (0 to nthreads - 1) has spent running
 * jobs, its running job's time so far included, in *busy_ns: for statistics.
 * Returns 0, or -EINVAL for no such thread (none after sq_pool_stop). */
int sq_pool_busy(sq_pool *pool, int thread, uint64_t *busy_ns);

/* sq_pool_stop, then free the pool: no call may use it after (nor be in one
 * in another thread). NULL is a no-op. */
void sq_pool_free(sq_pool *pool);

#ifdef __cplusplus
}
#endif
#endif /* SQ_COPYPOOL_H */
