/*
 * copypool.c: see copypool.h. One mutex guards the queue and every job's state;
 * `work` wakes the threads when a job is queued, `done` wakes waiters when a job
 * ends (broadcast: waiters are few, each checks its own job).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* pthread_setname_np */
#endif
#include "copypool.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <time.h>

/* A copy job runs memcpy and index arithmetic only. */
#define SQ_POOL_STACK ((size_t)256 * 1024)
#define SQ_POOL_MAX_THREADS 1024

struct sq_pool {
    pthread_mutex_t mutex;
    pthread_cond_t work;  /* a job was queued, or the pool is closing */
    pthread_cond_t done;  /* a job is done */
    sq_job *head, *tail;  /* queued jobs, in submission order */
    long pending;         /* queued + running */
    int closing;
    int nthreads;         /* started (and to be joined) */
    pthread_t *threads;
    /* Per thread, by the index it takes as it starts (`named`): nanoseconds
     * spent running jobs, and when its running job began (0: none). */
    int named;
    uint64_t *busy_ns;
    uint64_t *began_ns;
};

/* CLOCK_MONOTONIC in nanoseconds. */
static uint64_t pool_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void *pool_run(void *arg) {
    sq_pool *p = arg;
    sq_job *job;
    int id;
    pthread_mutex_lock(&p->mutex);
    id = p->named++;
    for (;;) {
        while (p->head == NULL && !p->closing) pthread_cond_wait(&p->work, &p->mutex);
        if (p->head == NULL) break; /* closing, nothing left to run */
        job = p->head;
        p->head = job->next;
        if (p->head == NULL) p->tail = NULL;
        job->next = NULL;
        job->state = SQ_JOB_RUNNING;
        p->began_ns[id] = pool_now_ns();
        pthread_mutex_unlock(&p->mutex);
        job->run(job);
        pthread_mutex_lock(&p->mutex);
        p->busy_ns[id] += pool_now_ns() - p->began_ns[id];
        p->began_ns[id] = 0;
        job->state = SQ_JOB_DONE;
        p->pending--;
        pthread_cond_broadcast(&p->done);
    }
    pthread_mutex_unlock(&p->mutex);
    return NULL;
}

void sq_pool_stop(sq_pool *p) {
    sq_job *job;
    int i;
    pthread_mutex_lock(&p->mutex);
    p->closing = 1;
    for (job = p->head; job != NULL;) { /* queued jobs never run */
        sq_job *next = job->next;
        job->next = NULL;
        job->state = SQ_JOB_IDLE;
        p->pending--;
        job = next;
    }
    p->head = p->tail = NULL;
    pthread_cond_broadcast(&p->work);
    pthread_cond_broadcast(&p->done);
    pthread_mutex_unlock(&p->mutex);
    for (i = 0; i < p->nthreads; i++) pthread_join(p->threads[i], NULL);
    p->nthreads = 0;
}

static void pool_destroy(sq_pool *p) {
    pthread_cond_destroy(&p->done);
    pthread_cond_destroy(&p->work);
    pthread_mutex_destroy(&p->mutex);
    free(p->threads);
    free(p->busy_ns);
    free(p->began_ns);
    free(p);
}

int sq_pool_new(int nthreads, sq_pool **out) {
    pthread_condattr_t cattr;
    pthread_attr_t attr;
    sigset_t all, old;
    sq_pool *p;
    int err = 0, i;
    if (out == NULL || nthreads < 1 || nthreads > SQ_POOL_MAX_THREADS) return -EINVAL;
    p = calloc(1, sizeof *p);
    if (p == NULL) return -ENOMEM;
    p->threads = calloc((size_t)nthreads, sizeof *p->threads);
    p->busy_ns = calloc((size_t)nthreads, sizeof *p->busy_ns);
    p->began_ns = calloc((size_t)nthreads, sizeof *p->began_ns);
    if (p->threads == NULL || p->busy_ns == NULL || p->began_ns == NULL) {
        free(p->threads);
        free(p->busy_ns);
        free(p->began_ns);
        free(p);
        return -ENOMEM;
    }
    pthread_mutex_init(&p->mutex, NULL);
    pthread_condattr_init(&cattr);
    pthread_condattr_setclock(&cattr, CLOCK_MONOTONIC); /* waits immune to clock steps */
    pthread_cond_init(&p->work, &cattr);
    pthread_cond_init(&p->done, &cattr);
    pthread_condattr_destroy(&cattr);
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, SQ_POOL_STACK);
    /* Signals go to the process's other threads: a pool thread never runs a
     * handler (Python's would need the main thread anyway). */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    for (i = 0; i < nthreads; i++) {
        err = pthread_create(&p->threads[i], &attr, pool_run, p);
        if (err != 0) break;
#ifdef __linux__
        pthread_setname_np(p->threads[i], SQ_POOL_THREAD_NAME); /* for top -H, ps */
#endif
        p->nthreads++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (err != 0) {
        sq_pool_stop(p);
        pool_destroy(p);
        return -err;
    }
    *out = p;
    return 0;
}

int sq_pool_submit(sq_pool *p, sq_job *job) {
    int rc = 0;
    pthread_mutex_lock(&p->mutex);
    if (p->closing) {
        rc = -EPIPE;
    } else if (job->state == SQ_JOB_QUEUED || job->state == SQ_JOB_RUNNING) {
        rc = -EINVAL;
    } else {
        job->next = NULL;
        job->state = SQ_JOB_QUEUED;
        if (p->tail != NULL) p->tail->next = job;
        else p->head = job;
        p->tail = job;
        p->pending++;
        pthread_cond_signal(&p->work);
    }
    pthread_mutex_unlock(&p->mutex);
    return rc;
}

int sq_pool_wait(sq_pool *p, sq_job *job, double timeout) {
    struct timespec deadline;
    int rc;
    if (timeout < 0) timeout = 0;
    if (timeout > 1e6) timeout = 1e6;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += (time_t)timeout;
    deadline.tv_nsec += (long)((timeout - (double)(time_t)timeout) * 1e9);
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&p->mutex);
    for (;;) {
        if (job->state == SQ_JOB_DONE) {
            rc = 1;
            break;
        }
        if (job->state == SQ_JOB_IDLE) {
            rc = -EINVAL;
            break;
        }
        if (pthread_cond_timedwait(&p->done, &p->mutex, &deadline) == ETIMEDOUT) {
            rc = job->state == SQ_JOB_DONE ? 1 : (job->state == SQ_JOB_IDLE ? -EINVAL : 0);
            break;
        }
    }
    pthread_mutex_unlock(&p->mutex);
    return rc;
}

int sq_pool_cancel(sq_pool *p, sq_job *job) {
    sq_job *prev = NULL, *j;
    int rc = 0;
    pthread_mutex_lock(&p->mutex);
    if (job->state == SQ_JOB_QUEUED) {
        for (j = p->head; j != NULL && j != job; j = j->next) prev = j;
        if (j == job) {
            if (prev != NULL) prev->next = job->next;
            else p->head = job->next;
            if (p->tail == job) p->tail = prev;
            job->next = NULL;
            job->state = SQ_JOB_IDLE;
            p->pending--;
            rc = 1;
        }
    }
    pthread_mutex_unlock(&p->mutex);
    return rc;
}

int sq_pool_state(sq_pool *p, sq_job *job) {
    int state;
    pthread_mutex_lock(&p->mutex);
    state = job->state;
    pthread_mutex_unlock(&p->mutex);
    return state;
}

void sq_pool_free(sq_pool *p) {
    if (p == NULL) return;
    sq_pool_stop(p);
    pool_destroy(p);
}

int sq_pool_busy(sq_pool *p, int thread, uint64_t *busy_ns) {
    if (thread < 0 || thread >= p->nthreads) return -EINVAL;
    pthread_mutex_lock(&p->mutex);
    *busy_ns = p->busy_ns[thread];
    if (p->began_ns[thread] != 0) *busy_ns += pool_now_ns() - p->began_ns[thread];
    pthread_mutex_unlock(&p->mutex);
    return 0;
}
