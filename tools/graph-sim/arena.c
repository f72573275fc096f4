/* Per-request memory: a per-thread bump allocator, dropped in one step when
 * the request is done. The Graph endpoint's JSON nodes and decoded strings
 * come from it, and so does every cJSON allocation a worker thread makes
 * meanwhile (poison rules), through cJSON's hooks. A 1000-event batch then
 * costs no malloc at all once the thread's first chunk has grown to fit, and
 * the worker threads stay off the allocator's locks. */
#include "sim.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK_SIZE (2u << 20)
#define CHUNK_MAX  (64u << 20) /* largest chunk kept between requests */

struct chunk {
    struct chunk *next;
    size_t used, size;
    _Alignas(16) unsigned char data[];
};

struct arena {
    struct chunk *head; /* the first chunk is kept between requests */
    struct chunk *cur;  /* the one being filled: head or the last one added */
};

static pthread_key_t arena_key;
static _Thread_local struct arena *active;

/* pthread key destructor: a worker thread's arena dies with the thread. */
static void arena_destroy(void *p)
{
    struct arena *a = p;
    while (a->head) {
        struct chunk *c = a->head;
        a->head = c->next;
        free(c);
    }
    free(a);
}

static struct chunk *chunk_new(size_t min)
{
    size_t size = min > CHUNK_SIZE ? min : CHUNK_SIZE;
    struct chunk *c = malloc(sizeof(*c) + size);
    if (!c)
        abort(); /* STYLE: inputs are capped, so out-of-memory aborts */
    c->next = NULL;
    c->used = 0;
    c->size = size;
    return c;
}

void *sim_arena_alloc(size_t n)
{
    struct arena *a = active;
    if (!a) {
        void *p = malloc(n ? n : 1);
        if (!p)
            abort();
        return p;
    }
    n = (n + 15) & ~(size_t)15;
    struct chunk *c = a->cur;
    if (c->size - c->used < n) {
        c->next = chunk_new(n);
        c = a->cur = c->next;
    }
    void *p = c->data + c->used;
    c->used += n;
    return p;
}

static void *hook_malloc(size_t n)
{
    return active ? sim_arena_alloc(n) : malloc(n);
}

static void hook_free(void *p)
{
    if (!active)
        free(p);
}

void sim_arena_install(void)
{
    static cJSON_Hooks hooks = {hook_malloc, hook_free};
    pthread_key_create(&arena_key, arena_destroy);
    cJSON_InitHooks(&hooks);
}

void sim_arena_begin(void)
{
    struct arena *a = pthread_getspecific(arena_key);
    if (!a) {
        a = calloc(1, sizeof(*a));
        if (!a)
            abort();
        a->head = a->cur = chunk_new(CHUNK_SIZE);
        pthread_setspecific(arena_key, a);
    }
    active = a;
}

void sim_arena_end(void)
{
    struct arena *a = active;
    if (!a)
        return;
    /* Chunks added for this request go back; if there were any, the kept
     * chunk grows to what the request needed, so that a steady stream of
     * requests of one size allocates nothing. */
    size_t total = a->head->used;
    struct chunk *c = a->head->next;
    while (c) {
        struct chunk *n = c->next;
        total += c->used;
        free(c);
        c = n;
    }
    a->head->next = NULL;
    a->head->used = 0;
    if (total > a->head->size && total <= CHUNK_MAX) {
        free(a->head);
        a->head = chunk_new(total + total / 4);
    }
    a->cur = a->head;
    active = NULL;
}
