/* A strict JSON parser (RFC 8259) into a flat array of nodes, for the Graph
 * endpoint's hot path. It allocates nothing per value: nodes come from the
 * thread's arena in one array, strings stay in the text (decoded only when
 * they hold escapes and someone asks), numbers are converted only when read.
 * Parsing a 1000-event batch this way costs about a third of building a cJSON
 * tree, and the nodes keep each value's position, so events are stored as
 * they were sent. The control API keeps using cJSON. */
#include "sim.h"

#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 64 /* server events nest 4 deep; anything far deeper is hostile */

struct jp {
    struct sim_jdoc *d;
    const unsigned char *s;
    size_t len, pos;
    int depth;
};

/* Bytes that stop the fast scan of a string: the quote, the backslash and
 * control characters (which JSON forbids unescaped). */
static const unsigned char str_stop[256] = {
    [0] = 1,  [1] = 1,  [2] = 1,  [3] = 1,  [4] = 1,  [5] = 1,   [6] = 1,    [7] = 1,  [8] = 1,
    [9] = 1,  [10] = 1, [11] = 1, [12] = 1, [13] = 1, [14] = 1,  [15] = 1,   [16] = 1, [17] = 1,
    [18] = 1, [19] = 1, [20] = 1, [21] = 1, [22] = 1, [23] = 1,  [24] = 1,   [25] = 1, [26] = 1,
    [27] = 1, [28] = 1, [29] = 1, [30] = 1, [31] = 1, ['"'] = 1, ['\\'] = 1,
};

#define ONES  0x0101010101010101ull
#define HIGHS 0x8080808080808080ull

/* Non-zero when a byte of x is 0 / is below b (b <= 128). */
static inline uint64_t has_zero(uint64_t x)
{
    return (x - ONES) & ~x & HIGHS;
}

static inline uint64_t has_less(uint64_t x, unsigned b)
{
    return (x - ONES * b) & ~x & HIGHS;
}

static int fail(struct jp *p, const char *msg)
{
    p->d->err = msg;
    p->d->errpos = p->pos;
    return -1;
}

static inline void skip_ws(struct jp *p)
{
    while (p->pos < p->len) {
        unsigned char c = p->s[p->pos];
        if (c != ' ' && c != '\n' && c != '\r' && c != '\t')
            return;
        p->pos++;
    }
}

/* Appends a node of type t starting at the current position; its index. */
static inline uint32_t node_new(struct jp *p, uint8_t t)
{
    struct sim_jdoc *d = p->d;
    if (d->nn == d->cap) {
        uint32_t cap = d->cap * 2;
        struct sim_jnode *n = sim_arena_alloc((size_t)cap * sizeof(*n));
        memcpy(n, d->n, (size_t)d->nn * sizeof(*n));
        d->n = n; /* the old array stays in the arena until the request ends */
        d->cap = cap;
    }
    d->n[d->nn] = (struct sim_jnode){.start = (uint32_t)p->pos, .type = t};
    return d->nn++;
}

static int hex4(const unsigned char *s)
{
    int v = 0;
    for (int i = 0; i < 4; i++) {
        int c = s[i], h;
        if (c >= '0' && c <= '9')
            h = c - '0';
        else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
            h = (c | 0x20) - 'a' + 10;
        else
            return -1;
        v = v * 16 + h;
    }
    return v;
}

/* The string whose quote is at pos: checks it and moves past it. *esc tells
 * whether it holds escapes. UTF-16 surrogates must pair, as cJSON wants. */
static int scan_string(struct jp *p, uint8_t *esc)
{
    const unsigned char *s = p->s;
    size_t i = p->pos + 1, n = p->len;
    *esc = 0;
    for (;;) {
        /* Eight bytes at a time while none of them is a quote, a backslash or
         * a control character (the classic "has zero byte" bit tricks). */
        while (i + 8 <= n) {
            uint64_t v;
            memcpy(&v, s + i, 8);
            if (has_zero(v ^ (ONES * '"')) | has_zero(v ^ (ONES * '\\')) | has_less(v, 0x20))
                break;
            i += 8;
        }
        while (i < n && !str_stop[s[i]])
            i++;
        if (i >= n)
            return fail(p, "unterminated string");
        if (s[i] == '"') {
            p->pos = i + 1;
            return 0;
        }
        if (s[i] != '\\') {
            p->pos = i;
            return fail(p, "control character in a string");
        }
        *esc = 1;
        if (i + 1 >= n)
            return fail(p, "unterminated string");
        unsigned char c = s[i + 1];
        if (c != 'u') {
            if (!strchr("\"\\/bfnrt", c) || !c) {
                p->pos = i;
                return fail(p, "invalid escape in a string");
            }
            i += 2;
            continue;
        }
        int u = i + 6 <= n ? hex4(s + i + 2) : -1;
        if (u < 0 || (u >= 0xDC00 && u <= 0xDFFF)) {
            p->pos = i;
            return fail(p, "invalid \\u escape in a string");
        }
        i += 6;
        if (u >= 0xD800 && u <= 0xDBFF) {
            int lo = i + 6 <= n && s[i] == '\\' && s[i + 1] == 'u' ? hex4(s + i + 2) : -1;
            if (lo < 0xDC00 || lo > 0xDFFF) {
                p->pos = i;
                return fail(p, "unpaired surrogate in a string");
            }
            i += 6;
        }
    }
}

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static int scan_number(struct jp *p)
{
    const unsigned char *s = p->s;
    size_t i = p->pos, n = p->len;
    if (i < n && s[i] == '-')
        i++;
    if (i < n && s[i] == '0')
        i++;
    else if (i < n && is_digit(s[i]))
        while (i < n && is_digit(s[i]))
            i++;
    else
        return fail(p, "invalid number");
    if (i < n && s[i] == '.') {
        if (++i >= n || !is_digit(s[i]))
            return fail(p, "invalid number");
        while (i < n && is_digit(s[i]))
            i++;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            i++;
        if (i >= n || !is_digit(s[i]))
            return fail(p, "invalid number");
        while (i < n && is_digit(s[i]))
            i++;
    }
    p->pos = i;
    return 0;
}

static int64_t parse_value(struct jp *p);

/* An object or an array at pos; its node index or -1. */
static int64_t parse_container(struct jp *p, bool obj)
{
    if (++p->depth > MAX_DEPTH)
        return fail(p, "nesting too deep");
    uint32_t idx = node_new(p, obj ? SIM_J_OBJ : SIM_J_ARR);
    char close = obj ? '}' : ']';
    p->pos++;
    skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == close) {
        p->pos++;
        p->d->n[idx].end = (uint32_t)p->pos;
        p->depth--;
        return idx;
    }
    uint32_t prev = 0;
    for (;;) {
        size_t kstart = 0, kend = 0;
        uint8_t kesc = 0;
        skip_ws(p);
        if (obj) {
            if (p->pos >= p->len || p->s[p->pos] != '"')
                return fail(p, "expected a member name");
            kstart = p->pos + 1;
            if (scan_string(p, &kesc))
                return -1;
            kend = p->pos - 1;
            skip_ws(p);
            if (p->pos >= p->len || p->s[p->pos] != ':')
                return fail(p, "expected ':'");
            p->pos++;
            skip_ws(p);
        }
        int64_t child = parse_value(p);
        if (child < 0)
            return -1;
        struct sim_jnode *cn = &p->d->n[child];
        if (obj) {
            cn->key = (uint32_t)kstart;
            cn->keylen = (uint32_t)(kend - kstart);
            cn->kesc = kesc;
        }
        if (prev)
            p->d->n[prev].next = (uint32_t)child;
        prev = (uint32_t)child;
        p->d->n[idx].count++;
        skip_ws(p);
        if (p->pos >= p->len)
            return fail(p, obj ? "unterminated object" : "unterminated array");
        if (p->s[p->pos] == ',') {
            p->pos++;
            continue;
        }
        if (p->s[p->pos] != close)
            return fail(p, obj ? "expected ',' or '}'" : "expected ',' or ']'");
        p->pos++;
        break;
    }
    p->d->n[idx].end = (uint32_t)p->pos;
    p->depth--;
    return idx;
}

static int64_t literal(struct jp *p, const char *word, uint8_t t)
{
    size_t n = strlen(word);
    if (p->len - p->pos < n || memcmp(p->s + p->pos, word, n) != 0)
        return fail(p, "invalid literal");
    uint32_t idx = node_new(p, t);
    p->pos += n;
    p->d->n[idx].end = (uint32_t)p->pos;
    return idx;
}

static int64_t parse_value(struct jp *p)
{
    if (p->pos >= p->len)
        return fail(p, "unexpected end of text");
    unsigned char c = p->s[p->pos];
    if (c == '{' || c == '[')
        return parse_container(p, c == '{');
    if (c == '"') {
        uint32_t idx = node_new(p, SIM_J_STR);
        uint8_t esc;
        if (scan_string(p, &esc))
            return -1;
        p->d->n[idx].esc = esc;
        p->d->n[idx].end = (uint32_t)p->pos;
        return idx;
    }
    if (c == '-' || is_digit(c)) {
        uint32_t idx = node_new(p, SIM_J_NUM);
        if (scan_number(p))
            return -1;
        p->d->n[idx].end = (uint32_t)p->pos;
        return idx;
    }
    if (c == 't')
        return literal(p, "true", SIM_J_TRUE);
    if (c == 'f')
        return literal(p, "false", SIM_J_FALSE);
    if (c == 'n')
        return literal(p, "null", SIM_J_NULL);
    return fail(p, "unexpected character");
}

int sim_jdoc_parse(struct sim_jdoc *d, const char *text, size_t len)
{
    memset(d, 0, sizeof(*d));
    d->text = text;
    d->len = len;
    if (len > UINT32_MAX - 1) {
        d->err = "text too long";
        return -1;
    }
    /* Server events take about 30 bytes of text per value. */
    d->cap = (uint32_t)(len / 24 + 16);
    d->n = sim_arena_alloc((size_t)d->cap * sizeof(*d->n));
    struct jp p = {d, (const unsigned char *)text, len, 0, 0};
    skip_ws(&p);
    if (parse_value(&p) < 0)
        return -1;
    skip_ws(&p);
    if (p.pos != len)
        return fail(&p, "text after the JSON value");
    return 0;
}

/* Decodes the escapes of raw[0..n) into the arena (NUL-terminated). */
static char *decode(const char *raw, size_t n, size_t *outlen)
{
    char *out = sim_arena_alloc(n + 1), *o = out;
    const unsigned char *s = (const unsigned char *)raw;
    for (size_t i = 0; i < n;) {
        if (s[i] != '\\') {
            *o++ = (char)s[i++];
            continue;
        }
        unsigned char c = s[i + 1];
        i += 2;
        switch (c) {
        case 'b':
            *o++ = '\b';
            break;
        case 'f':
            *o++ = '\f';
            break;
        case 'n':
            *o++ = '\n';
            break;
        case 'r':
            *o++ = '\r';
            break;
        case 't':
            *o++ = '\t';
            break;
        case 'u': {
            /* The parser checked the escape and the pairing. */
            uint32_t u = (uint32_t)hex4(s + i);
            i += 4;
            if (u >= 0xD800 && u <= 0xDBFF) {
                u = 0x10000 + ((u - 0xD800) << 10) + ((uint32_t)hex4(s + i + 2) - 0xDC00);
                i += 6;
            }
            if (u < 0x80) {
                *o++ = (char)u;
            } else if (u < 0x800) {
                *o++ = (char)(0xC0 | (u >> 6));
                *o++ = (char)(0x80 | (u & 0x3F));
            } else if (u < 0x10000) {
                *o++ = (char)(0xE0 | (u >> 12));
                *o++ = (char)(0x80 | ((u >> 6) & 0x3F));
                *o++ = (char)(0x80 | (u & 0x3F));
            } else {
                *o++ = (char)(0xF0 | (u >> 18));
                *o++ = (char)(0x80 | ((u >> 12) & 0x3F));
                *o++ = (char)(0x80 | ((u >> 6) & 0x3F));
                *o++ = (char)(0x80 | (u & 0x3F));
            }
            break;
        }
        default:
            *o++ = (char)c; /* " \ / */
        }
    }
    *o = '\0';
    *outlen = (size_t)(o - out);
    return out;
}

const char *sim_jdoc_str(const struct sim_jdoc *d, uint32_t i, size_t *len)
{
    const struct sim_jnode *n = &d->n[i];
    const char *raw = d->text + n->start + 1;
    size_t rawlen = n->end - n->start - 2;
    if (!n->esc) {
        *len = rawlen;
        return raw;
    }
    return decode(raw, rawlen, len);
}

char *sim_jdoc_cstr(const struct sim_jdoc *d, uint32_t i)
{
    size_t len;
    const char *s = sim_jdoc_str(d, i, &len);
    if (d->n[i].esc)
        return (char *)s; /* decode() made a NUL-terminated copy */
    char *c = sim_arena_alloc(len + 1);
    memcpy(c, s, len);
    c[len] = '\0';
    return c;
}

uint32_t sim_jdoc_member(const struct sim_jdoc *d, uint32_t o, const char *key)
{
    const struct sim_jnode *on = &d->n[o];
    if (on->type != SIM_J_OBJ || !on->count)
        return 0;
    size_t klen = strlen(key);
    for (uint32_t c = o + 1; c; c = d->n[c].next) {
        const struct sim_jnode *n = &d->n[c];
        const char *k = d->text + n->key;
        size_t kl = n->keylen;
        if (n->kesc)
            k = decode(k, kl, &kl);
        if (kl == klen && memcmp(k, key, klen) == 0)
            return c;
    }
    return 0;
}

const char *sim_jdoc_key(const struct sim_jdoc *d, uint32_t i, size_t *len)
{
    const struct sim_jnode *n = &d->n[i];
    *len = n->keylen;
    return n->kesc ? decode(d->text + n->key, n->keylen, len) : d->text + n->key;
}

double sim_jdoc_num(const struct sim_jdoc *d, uint32_t i)
{
    const struct sim_jnode *n = &d->n[i];
    size_t len = n->end - n->start;
    char buf[64];
    char *s = len < sizeof(buf) ? buf : sim_arena_alloc(len + 1);
    memcpy(s, d->text + n->start, len);
    s[len] = '\0';
    return strtod(s, NULL); /* the "C" locale: the simulator never sets one */
}
