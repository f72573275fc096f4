#include "test.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "capi/geo.h"
#include "capi/norm.h"
#include "util/buf.h"
#include "util/err.h"
#include "util/sha256.h"

#define MAX_YEAR 2027

/* ---- geo_init error paths -------------------------------------------------
 * The tables are published once per process, so the failure paths are run
 * from a constructor, before any test can load them, and checked by a test
 * below. A failed init publishes nothing; the last call loads the real
 * tables. */
static struct {
    int missing_rc, alias_rc, ok_rc;
    char missing_msg[160], alias_msg[160];
} geo_boot;

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

__attribute__((constructor)) static void geo_boot_run(void)
{
    struct capid_perr err = {0};
    geo_boot.missing_rc = capid_geo_init("/nonexistent/iso-codes", &err);
    snprintf(geo_boot.missing_msg, sizeof(geo_boot.missing_msg), "%s", err.msg ? err.msg : "");

    char dir[] = "/tmp/capid-geo-XXXXXX", path[64];
    if (mkdtemp(dir)) {
        snprintf(path, sizeof(path), "%s/country-aliases.json", dir);
        write_file(path, "{\"narnia\": \"zz\"}");
        snprintf(path, sizeof(path), "%s/state-aliases.json", dir);
        write_file(path, "{}");
        const char *old = getenv("CAPID_DATA_DIR");
        char *saved = old ? strdup(old) : NULL;
        setenv("CAPID_DATA_DIR", dir, 1);
        memset(&err, 0, sizeof(err));
        geo_boot.alias_rc = capid_geo_init(NULL, &err);
        snprintf(geo_boot.alias_msg, sizeof(geo_boot.alias_msg), "%s", err.msg ? err.msg : "");
        if (saved)
            setenv("CAPID_DATA_DIR", saved, 1);
        else
            unsetenv("CAPID_DATA_DIR");
        free(saved);
        unlink(path);
        snprintf(path, sizeof(path), "%s/country-aliases.json", dir);
        unlink(path);
        rmdir(dir);
    }
    geo_boot.ok_rc = capid_geo_init(NULL, NULL);
}

TEST(geo_init_errors_name_the_file_and_publish_nothing)
{
    ASSERT_INT(geo_boot.missing_rc, CAPID_EIO);
    ASSERT_TRUE(strstr(geo_boot.missing_msg, "/nonexistent/iso-codes/iso_3166-1.json") != NULL);
    ASSERT_INT(geo_boot.alias_rc, CAPID_EINVAL);
    ASSERT_TRUE(strstr(geo_boot.alias_msg, "country-aliases.json") != NULL);
    ASSERT_TRUE(strstr(geo_boot.alias_msg, "narnia") != NULL);
    ASSERT_INT(geo_boot.ok_rc, CAPID_OK);
    /* Idempotent: once loaded, any directory is fine. */
    ASSERT_INT(capid_geo_init("/nonexistent", NULL), CAPID_OK);
}

/* ---- helpers -------------------------------------------------------------- */

struct ncase {
    enum capid_ukey k;
    const char *in;
    size_t len;       /* 0 = strlen(in) */
    const char *want; /* NULL = dropped */
    bool hashed;
    const char *country;
    int max_year; /* 0 = MAX_YEAR */
    size_t wlen;  /* 0 = strlen(want) */
};

static void check_cases(const char *file, int line, const struct ncase *c, size_t n)
{
    struct capid_buf out;
    capid_buf_init(&out, 0);
    for (size_t i = 0; i < n; i++) {
        struct capid_norm_ctx ctx = {c[i].country, c[i].max_year ? c[i].max_year : MAX_YEAR};
        bool hashed = !c[i].hashed;
        size_t len = c[i].len ? c[i].len : strlen(c[i].in);
        int kept = capid_norm_value(c[i].k, c[i].in, len, &ctx, &out, &hashed);
        bool ok = kept == (c[i].want != NULL) && hashed == c[i].hashed &&
                  (!c[i].want || (out.len == (c[i].wlen ? c[i].wlen : strlen(c[i].want)) &&
                                  memcmp(out.data, c[i].want, out.len) == 0));
        if (!kept && out.len != 0)
            ok = false;
        if (!ok)
            capid_test_fail(file, line,
                            "case %zu %s \"%s\": got %s \"%s\" hashed=%d, want \"%s\" "
                            "hashed=%d",
                            i, capid_ukey_name(c[i].k), c[i].in, kept ? "kept" : "dropped",
                            out.data ? out.data : "", hashed, c[i].want ? c[i].want : "(dropped)",
                            c[i].hashed);
    }
    capid_buf_release(&out);
}

/* C(KEY, input, expected or NULL, optional designated fields) */
#define C(key, i, w, ...)                                                                          \
    {                                                                                              \
        .k = CAPID_UK_##key, .in = i, .want = w, __VA_ARGS__                                       \
    }
#define CHECK(table) check_cases(__FILE__, __LINE__, table, sizeof(table) / sizeof(table[0]))

/* ---- the shared vectors --------------------------------------------------- */

/* cJSON keeps strings NUL-terminated, so "\u0000" escapes would cut a value
 * short. They are rewritten to U+E000 (absent from the file, checked) before
 * parsing and turned back into NUL bytes afterwards. */
static bool escape_nuls(char *raw)
{
    if (strstr(raw, "\xee\x80\x80"))
        return false;
    for (char *p = raw; *p; p++) {
        if (*p != '\\')
            continue;
        if (p[1] == 'u' && (p[2] == 'e' || p[2] == 'E') && p[3] == '0' && p[4] == '0' &&
            p[5] == '0')
            return false;
        if (p[1] == 'u' && memcmp(p + 2, "0000", 4) == 0)
            memcpy(p + 2, "E000", 4);
        p++; /* skip the escaped character, so "\\u0000" stays */
    }
    return true;
}

/* Copies s into out, turning U+E000 back into NUL; returns the length. */
static size_t unescape_nuls(const char *s, char *out)
{
    size_t n = 0;
    for (; *s; s++) {
        if (memcmp(s, "\xee\x80\x80", 3) == 0) {
            out[n++] = '\0';
            s += 2;
        } else {
            out[n++] = *s;
        }
    }
    out[n] = '\0';
    return n;
}

TEST(norm_shared_vectors)
{
    const char *path = capid_test_shared("vectors/normalization.json");
    char *raw = capid_test_slurp(path, NULL);
    if (!raw) {
        capid_test_fail(__FILE__, __LINE__, "cannot read '%s'", path);
        return;
    }
    ASSERT_TRUE(escape_nuls(raw));
    cJSON *root = cJSON_Parse(raw);
    ASSERT_TRUE(cJSON_IsArray(root));
    struct capid_sha256 sha;
    ASSERT_INT(capid_sha256_init(&sha), CAPID_OK);
    struct capid_buf out;
    capid_buf_init(&out, 0);
    int ncase = 0, nkept = 0, npass = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, root)
    {
        const cJSON *field = cJSON_GetObjectItemCaseSensitive(c, "field");
        const cJSON *input = cJSON_GetObjectItemCaseSensitive(c, "input");
        const cJSON *norm = cJSON_GetObjectItemCaseSensitive(c, "normalized");
        const cJSON *hash = cJSON_GetObjectItemCaseSensitive(c, "sha256");
        const cJSON *country = cJSON_GetObjectItemCaseSensitive(c, "country");
        bool want_pass = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "passthrough"));
        if (!cJSON_IsString(field) || !cJSON_IsString(input) ||
            !(cJSON_IsString(norm) || cJSON_IsNull(norm))) {
            capid_test_fail(__FILE__, __LINE__, "case %d: malformed", ncase);
            continue;
        }
        int k = capid_ukey_from_name(field->valuestring, strlen(field->valuestring));
        if (k < 0) {
            capid_test_fail(__FILE__, __LINE__, "case %d: unknown field '%s'", ncase,
                            field->valuestring);
            continue;
        }
        size_t ilen = strlen(input->valuestring), wlen = 0;
        char *in = malloc(ilen + 1), *want = NULL;
        ilen = unescape_nuls(input->valuestring, in);
        if (cJSON_IsString(norm)) {
            want = malloc(strlen(norm->valuestring) + 1);
            wlen = unescape_nuls(norm->valuestring, want);
        }
        struct capid_norm_ctx ctx = {cJSON_IsString(country) ? country->valuestring : NULL,
                                     MAX_YEAR};
        bool hashed = !want_pass;
        int kept = capid_norm_value((enum capid_ukey)k, in, ilen, &ctx, &out, &hashed);
        char got_sha[65] = "";
        if (kept)
            capid_sha256_hex(&sha, out.data, out.len, got_sha);
        const char *sha_got = kept && hashed ? out.data : got_sha;
        const char *sha_want = cJSON_IsString(hash) ? hash->valuestring : NULL;
        bool ok = kept == (want != NULL) && hashed == want_pass;
        if (ok && want)
            ok = out.len == wlen && memcmp(out.data, want, wlen) == 0 && sha_want &&
                 strcmp(sha_got, sha_want) == 0;
        if (!ok)
            capid_test_fail(__FILE__, __LINE__,
                            "vector %d field=%s input=\"%s\": got %s \"%s\" sha=%s hashed=%d, "
                            "want %s \"%s\" sha=%s passthrough=%d",
                            ncase, field->valuestring, input->valuestring,
                            kept ? "kept" : "dropped", out.data ? out.data : "",
                            kept ? sha_got : "-", hashed, want ? "kept" : "dropped",
                            want ? norm->valuestring : "", sha_want ? sha_want : "-", want_pass);
        nkept += kept;
        npass += want_pass;
        ncase++;
        free(in);
        free(want);
    }
    printf("  normalization.json: %d cases (%d kept, %d passthrough)\n", ncase, nkept, npass);
    ASSERT_INT(ncase, cJSON_GetArraySize(root));
    ASSERT_TRUE(ncase >= 596);
    capid_buf_release(&out);
    capid_sha256_release(&sha);
    cJSON_Delete(root);
    free(raw);
}

/* ---- our own cases, one table per rule ------------------------------------ */

#define HEX64_UP "A665A45920422F9D417E4867EFDC4FB8A04A1F3FFF1FA07E998E86F7F7A27AE3"
#define HEX64_LO "a665a45920422f9d417e4867efdc4fb8a04a1f3fff1fa07e998e86f7f7a27ae3"

TEST(norm_passthrough_64_hex_only)
{
    static const struct ncase t[] = {
        C(EM, " " HEX64_UP "\t", HEX64_LO, .hashed = true),
        C(PH, HEX64_UP, HEX64_LO, .hashed = true),
        C(DB, "\xe3\x80\x80" HEX64_UP "\xef\xbb\xbf", HEX64_LO, .hashed = true),
        C(GE, HEX64_LO, HEX64_LO, .hashed = true),
        C(COUNTRY, HEX64_LO, HEX64_LO, .hashed = true),
        C(EXTERNAL_ID, HEX64_UP, HEX64_LO, .hashed = true),
        C(ZP, HEX64_UP, HEX64_LO, .hashed = true, .country = "us"),
        /* 32 hex (MD5) is not a digest here: the field rule applies. */
        C(FN, "2A6A84E9E44441AFBD75CC19CE28BE37", "2a6a84e9e44441afbd75cc19ce28be37"),
        C(EM, "2a6a84e9e44441afbd75cc19ce28be37", NULL),
        /* 63 and 65 hex: the field rule. */
        C(CT, "a665a45920422f9d417e4867efdc4fb8a04a1f3fff1fa07e998e86f7f7a27ae",
          "aafdeefdcfbaafffffaeeffaae"),
        C(COUNTRY, HEX64_LO "3", NULL),
        C(DB, HEX64_LO "3", NULL),
        /* inner white space breaks the digest */
        C(EXTERNAL_ID, "a665a45920422f9d417e4867efdc4fb8 a04a1f3fff1fa07e998e86f7f7a27ae3",
          HEX64_LO),
    };
    CHECK(t);
    ASSERT_TRUE(capid_is_hex64(HEX64_UP, 64));
    ASSERT_TRUE(!capid_is_hex64(HEX64_UP, 63));
    ASSERT_TRUE(
        !capid_is_hex64("g665a45920422f9d417e4867efdc4fb8a04a1f3fff1fa07e998e86f7f7a27ae3", 64));
}

TEST(norm_whitespace_classes)
{
    static const struct ncase t[] = {
        /* every non-ASCII white space is deleted inside names */
        C(FN,
          "A\xc2\x85"
          "B\xc2\xa0"
          "C\xe1\x9a\x80"
          "D\xe2\x80\x80"
          "E\xe2\x80\x8a"
          "F\xe2\x80\xa8"
          "G\xe2\x80\xa9"
          "H\xe2\x80\xaf"
          "I\xe2\x81\x9f"
          "J\xe3\x80\x80"
          "K\xef\xbb\xbf"
          "L",
          "abcdefghijkl"),
        /* ASCII: \t\n\v\f\r and the information separators \x1c-\x1f */
        C(EXTERNAL_ID, "a\tb\nc\vd\fe\rf\x1cg\x1dh\x1ei\x1fj k", "abcdefghijk"),
        /* NUL and SOH are not white space; ZWSP (U+200B) and WJ (U+2060) neither */
        C(EXTERNAL_ID,
          "a\0b\x01"
          "c",
          "a\0b\x01"
          "c",
          .len = 5, .wlen = 5),
        C(FN,
          "a\xe2\x80\x8b"
          "b",
          "a\xe2\x80\x8b"
          "b"),
        C(FN,
          "a\xe2\x81\xa0"
          "b",
          "a\xe2\x81\xa0"
          "b"),
        /* trimming for e-mail and gender uses the same set */
        C(EM, "\xe3\x80\x80User@Example.COM\xef\xbb\xbf\xc2\x85", "user@example.com"),
        C(GE,
          "\xc2\xa0"
          "Male\xe2\x80\xa8",
          "m"),
        C(ZP,
          "\xe2\x80\x83"
          "75 001\xe2\x80\x83",
          "75001"),
        /* only white space -> dropped */
        C(FN, " \xc2\xa0\xe3\x80\x80\t", NULL),
        C(EXTERNAL_ID, "\xef\xbb\xbf", NULL),
        C(EM, "", NULL),
    };
    CHECK(t);
}

TEST(norm_email)
{
    static const struct ncase t[] = {
        C(EM, "John_Smith@gmail.com", "john_smith@gmail.com"),
        C(EM, " Foo.Bar@Example.COM ", "foo.bar@example.com"),
        C(EM, "user.name+tag@domain.co.uk", "user.name+tag@domain.co.uk"),
        C(EM, "!#$%&'*+/=?^`{|}~-_@x-1.io", "!#$%&'*+/=?^`{|}~-_@x-1.io"),
        C(EM, "a@1.2", "a@1.2"),
        /* KELVIN SIGN lowercases to ASCII k, as JavaScript's toLowerCase does */
        C(EM,
          "\xe2\x84\xaa"
          "ate@example.com",
          "kate@example.com"),
        C(EM, "test..test@example.com", NULL),
        C(EM, ".a@example.com", NULL),
        C(EM, "a.@example.com", NULL),
        C(EM, "a:.b@example.com", NULL),
        C(EM, "test@example", NULL),
        C(EM, "a@b", NULL),
        C(EM, "a@-b.com", NULL),
        C(EM, "a@b-.com", NULL),
        C(EM, "a@b.com-", NULL),
        C(EM, "a@b..com", NULL),
        C(EM, "a@b.com.", NULL),
        C(EM, "a@b_c.com", NULL),
        C(EM, "a@@b.com", NULL),
        C(EM, "@b.com", NULL),
        C(EM, "a b@c.de", NULL),
        C(EM, "jos\xc3\xa9@example.com", NULL),
        C(EM, "a@ex\xc3\xa4mple.com", NULL),
        C(EM, "a\0b@c.de", NULL, .len = 8),
    };
    CHECK(t);
}

TEST(norm_phone)
{
    static const struct ncase t[] = {
        C(PH, "+1 (650) 555-1212", "16505551212"),
        C(PH, "0044 20 7183 8750", "442071838750"),
        C(PH, "1-800-FLOWERS", "1800"),
        C(PH, "+1 650 555 1212 ext. 123", "16505551212123"),
        C(PH, "000", NULL),
        C(PH, "phone", NULL),
        /* only ASCII digits count (Arabic-Indic and fullwidth digits do not) */
        C(PH, "\xd9\xa1\xd9\xa2\xd9\xa3", NULL),
        C(PH,
          "\xef\xbc\x91"
          "2",
          "2"),
        C(PH,
          "0\0"
          "12",
          "12", .len = 4),
    };
    CHECK(t);
}

TEST(norm_names_diacritics_and_case)
{
    static const struct ncase t[] = {
        C(FN, "\xc3\x89LODIE", "\xc3\xa9lodie"),
        C(LN,
          " Garc\xc3\xad"
          "a-M\xc3\xa1rquez ",
          "garc\xc3\xad"
          "am\xc3\xa1rquez"),
        C(FN,
          "Jos\xc3\xa9 Mar\xc3\xad"
          "a",
          "jos\xc3\xa9mar\xc3\xad"
          "a"),
        C(FN, "O'Brien", "obrien"),
        C(FN, "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~x", "x"),
        C(FN, "!?.", NULL),
        /* non-ASCII punctuation and emoji are kept; digits too */
        C(FN, "Mary\xe2\x80\x93Jane", "mary\xe2\x80\x93jane"),
        C(FN,
          "Jo\xf0\x9f\x98\x80"
          "2",
          "jo\xf0\x9f\x98\x80"
          "2"),
        /* simple case mapping: no final sigma, no expansion of sharp s */
        C(LN, "\xce\xa3\xce\x91\xce\xa3", "\xcf\x83\xce\xb1\xcf\x83"),
        C(LN, "\xe1\xba\x9e", "\xc3\x9f"),
        /* U+0130 -> i; titlecase U+01C5 -> U+01C6 */
        C(FN, "\xc4\xb0pek", "ipek"),
        C(FN, "\xc7\x85", "\xc7\x86"),
        /* U+023A (2 bytes) lowercases to U+2C65 (3 bytes): output grows */
        C(FN, "\xc8\xba\xc8\xba\xc8\xba", "\xe2\xb1\xa5\xe2\xb1\xa5\xe2\xb1\xa5"),
        C(FN, "\xea\xb0\x95", "\xea\xb0\x95"),
    };
    CHECK(t);
}

TEST(norm_city)
{
    static const struct ncase t[] = {
        C(CT, "San Jos\xc3\xa9", "sanjos\xc3\xa9"),
        C(CT, "New York 10001", "newyork"),
        C(CT, "St. Louis", "stlouis"),
        C(CT, "\xd0\x9c\xd0\xbe\xd1\x81\xd0\xba\xd0\xb2\xd0\xb0",
          "\xd0\xbc\xd0\xbe\xd1\x81\xd0\xba\xd0\xb2\xd0\xb0"),
        C(CT, "75015", NULL),
        C(CT, "Paris 15e", "parise"),
        /* fullwidth digits are not ASCII digits */
        C(CT, "A\xef\xbc\x91", "a\xef\xbc\x91"),
    };
    CHECK(t);
}

TEST(norm_gender_every_synonym)
{
    static const char *const male[] = {
        "man",     "male",      "boy",   "gentleman", "guy",    "sir",    "mister", "mr",
        "son",     "father",    "dad",   "daddy",     "papa",   "uncle",  "nephew", "brother",
        "husband", "boyfriend", "groom", "widower",   "king",   "prince", "duke",   "count",
        "emperor", "god",       "lord",  "lad",       "fellow", "chap",   "bloke",  "dude",
        "he",      "him",       "his",   "himself",   "m"};
    static const char *const female[] = {
        "woman",    "female",   "girl",       "lady",   "miss",    "ms",    "mrs",      "madam",
        "ma'am",    "daughter", "mother",     "mom",    "mama",    "mommy", "aunt",     "niece",
        "sister",   "wife",     "girlfriend", "bride",  "widow",   "queen", "princess", "duchess",
        "countess", "empress",  "goddess",    "maiden", "lass",    "gal",   "chick",    "dame",
        "belle",    "she",      "her",        "hers",   "herself", "f"};
    struct capid_buf out;
    capid_buf_init(&out, 0);
    struct capid_norm_ctx ctx = {NULL, MAX_YEAR};
    for (int pass = 0; pass < 2; pass++) {
        const char *const *set = pass ? female : male;
        size_t n = pass ? sizeof(female) / sizeof(*female) : sizeof(male) / sizeof(*male);
        for (size_t i = 0; i < n; i++) {
            /* as is, and upper-cased with surrounding white space */
            char up[32] = " ";
            size_t l = strlen(set[i]);
            for (size_t j = 0; j < l; j++)
                up[1 + j] =
                    (char)(set[i][j] >= 'a' && set[i][j] <= 'z' ? set[i][j] - 32 : set[i][j]);
            memcpy(up + 1 + l, "\t", 2);
            for (int v = 0; v < 2; v++) {
                const char *in = v ? up : set[i];
                bool h;
                int kept = capid_norm_value(CAPID_UK_GE, in, strlen(in), &ctx, &out, &h);
                if (!kept || strcmp(out.data, pass ? "f" : "m") != 0)
                    capid_test_fail(__FILE__, __LINE__, "ge \"%s\": got %s, want %s", in,
                                    kept ? out.data : "(dropped)", pass ? "f" : "m");
            }
        }
    }
    capid_buf_release(&out);
    static const struct ncase t[] = {
        C(GE, "x", NULL),
        C(GE, "", NULL),
        C(GE, "males", NULL),
        C(GE, "girlfriends", NULL),
        C(GE, "ma am", NULL),
        C(GE, "m.", NULL),
        C(GE, "fe male", NULL),
        C(GE, "a", NULL),
        C(GE, "zzz", NULL),
        C(GE, "\xc3\xa9", NULL),
        C(GE, "\xe2\x84\xaaing", "m"), /* KELVIN SIGN + ing */
    };
    CHECK(t);
}

TEST(norm_birthdate)
{
    static const struct ncase t[] = {
        C(DB, "1990-01-31", "19900131"),
        C(DB, "01/31/1990", "19900131"),
        C(DB, "31.01.1990", "19900131"),
        C(DB, "01/02/1990", "19900102"), /* US order */
        C(DB, "1990/2/3", "19900203"),   /* zero padding */
        C(DB, "1990 25 12", "19901225"), /* Y D M */
        /* n2 > 31 branch: year in the middle */
        C(DB, "12 1990 25", "19901225"),
        C(DB, "05 1990 06", "19900605"),
        C(DB, "1990-01-31T10:20:30Z", "19900131"),
        C(DB, "0001990-01-31", "19900131"),
        /* year bounds: 1800 .. max_year */
        C(DB, "1800-01-01", "18000101"),
        C(DB, "1799-12-31", NULL),
        C(DB, "2027-12-31", "20271231"),
        C(DB, "2028-01-01", NULL),
        C(DB, "2028-01-01", "20280101", .max_year = 2028),
        C(DB, "2027-01-01", NULL, .max_year = 2026),
        /* month and day ranges (no per-month check) */
        C(DB, "1990-00-10", NULL),
        C(DB, "1990-01-00", NULL),
        C(DB, "1990-01-32", NULL),
        C(DB, "1990-02-31", "19900231"),
        C(DB, "13/13/1990", NULL),
        /* one group of exactly 8 digits is taken as is, unvalidated */
        C(DB, "19900131", "19900131"),
        C(DB, "x19900131y", "19900131"),
        C(DB, "99999999", "99999999"),
        C(DB, "199001311", NULL), /* 9 digits */
        C(DB, "1990013", NULL),
        C(DB, "199001311-01-01", NULL),
        /* saturating parse: no overflow into a valid year */
        C(DB, "99999999999999999999999-01-01", NULL),
        C(DB, "01-01-18446744073709553616", NULL),
        C(DB, "Jan 31, 1990", NULL),
        C(DB, "1990-01", NULL),
        C(DB, "70-01-01", NULL),
        C(DB, "", NULL),
    };
    CHECK(t);
}

TEST(norm_zip)
{
    static const struct ncase t[] = {
        C(ZP, "941051234", "94105", .country = "us"),
        C(ZP, "94105 1234", "94105", .country = "us"),
        C(ZP, "941051234", "941051234", .country = "ca"),
        C(ZP, "941051234", "941051234"),
        C(ZP, "9410512345", "9410512345", .country = "us"),
        C(ZP, "94105123a", "94105123a", .country = "us"),
        C(ZP, "94105-1234", "94105", .country = "us"),
        C(ZP, "NR9 5AL", "nr95al", .country = "gb"),
        C(ZP, "98-121-4892", "98"),
        C(ZP, "-12345", NULL),
        C(ZP, "A", NULL),
        C(ZP, "A -B", NULL),
        /* two code points, not two bytes */
        C(ZP, "\xc3\x89", NULL),
        C(ZP, "\xc3\x89\xc3\x89", "\xc3\xa9\xc3\xa9"),
        C(ZP,
          "ZIP\0"
          "123",
          "zip\0"
          "123",
          .len = 7, .wlen = 7),
    };
    CHECK(t);
}

TEST(norm_state_names_aliases_territories)
{
    static const struct ncase t[] = {
        C(ST, "California", "ca"),
        C(ST, " ca ", "ca"),
        C(ST, "T.X.", "tx"),
        C(ST, "ZZ", "zz"), /* any 2 letters are kept */
        C(ST, "New York", "ny"),
        C(ST, "NEW-HAMPSHIRE", "nh"),
        C(ST, "Puerto Rico", "pr"),
        C(ST, "District of Columbia", "dc"),
        C(ST, "Guam", "gu"),
        C(ST, "Virgin Islands, U.S.", "vi"),
        C(ST, "American Samoa", "as"),
        C(ST, "Northern Mariana Islands", "mp"),
        C(ST, "Washington, D.C.", "dc"), /* alias */
        C(ST, "Washington", "wa"),
        C(ST,
          "Qu\xc3\xa9"
          "bec",
          "qc"),
        C(ST,
          "QUE\xcc\x81"
          "BEC",
          "qc"), /* combining acute */
        C(ST, "Ontario", "on"),
        C(ST, "Newfoundland and Labrador", "nl"),
        C(ST, "Yukon", "yt"),
        /* fullwidth letters fold (NFKD) */
        C(ST, "\xef\xbc\xa3\xef\xbc\xa1", "ca"),
        /* no substring guessing, no truncation */
        C(ST, "New York City", "newyorkcity"),
        C(ST, "Bayern", "bayern"),
        C(ST,
          "\xc3\x8e"
          "le-de-France",
          "iledefrance"),
        C(ST, "T", "t"),
        C(ST, "12345", NULL),
        C(ST, "\xd0\x9c\xd0\xbe\xd1\x81\xd0\xba\xd0\xb2\xd0\xb0", NULL),
    };
    CHECK(t);
    ASSERT_STR(capid_geo_state("puertorico", 10), "pr");
    ASSERT_TRUE(capid_geo_state("ny", 2) == NULL);
    ASSERT_TRUE(capid_geo_state("", 0) == NULL);
}

TEST(norm_country_codes_names_aliases)
{
    static const struct ncase t[] = {
        C(COUNTRY, "US", "us"),
        C(COUNTRY, " u.s. ", "us"),
        C(COUNTRY, "USA", "us"),
        C(COUNTRY, "United States", "us"),
        C(COUNTRY, "United States of America", "us"),
        C(COUNTRY, "DEU", "de"),
        C(COUNTRY, "gbr", "gb"),
        C(COUNTRY, "UK", "gb"), /* alias */
        C(COUNTRY, "United Kingdom of Great Britain and Northern Ireland", "gb"),
        C(COUNTRY, "Federal Republic of Germany", "de"),
        C(COUNTRY, "C\xc3\xb4te d'Ivoire", "ci"),
        C(COUNTRY, "Ivory Coast", "ci"),
        C(COUNTRY, "Bolivia, Plurinational State of", "bo"),
        C(COUNTRY, "Bolivia", "bo"),     /* common_name */
        C(COUNTRY, "South Korea", "kr"), /* common_name */
        C(COUNTRY, "Russian Federation", "ru"),
        C(COUNTRY, "Russia", "ru"), /* alias */
        C(COUNTRY, "T\xc3\xbcrkiye", "tr"),
        C(COUNTRY, "Turkey", "tr"),
        C(COUNTRY, "Viet Nam", "vn"),
        C(COUNTRY, "Holy See (Vatican City State)", "va"),
        C(COUNTRY, "XX", NULL),
        C(COUNTRY, "zz", NULL),
        C(COUNTRY, "xyz", NULL),
        C(COUNTRY, "Korea", NULL),
        C(COUNTRY, "Deutschland", NULL),
        C(COUNTRY, "Germ\xc3\xa1nia", NULL),
        C(COUNTRY, "123", NULL),
    };
    CHECK(t);
    ASSERT_STR(capid_geo_country("usa", 3), "us");
    ASSERT_STR(capid_geo_country("fr", 2), "fr");
    ASSERT_TRUE(capid_geo_country("FR", 2) == NULL); /* folded input only */
    ASSERT_TRUE(capid_geo_country(NULL, 0) == NULL);
}

TEST(geo_fold_examples)
{
    static const struct {
        const char *in, *want;
    } t[] = {
        {"Qu\xc3\xa9"
         "bec",
         "quebec"},
        {"Washington, D.C.", "washingtondc"},
        {"\xef\xac\x81"
         "nland",
         "finland"},                        /* fi ligature */
        {"\xe3\x8e\xaf", "rads"},           /* U+33AF: 3 bytes -> 4 letters */
        {"\xe1\xb4\xac", ""},               /* MODIFIER CAPITAL A: NFKD 'A', not a-z */
        {"\xe2\x85\xa0", "i"},              /* ROMAN NUMERAL ONE -> U+2170 -> i */
        {"\xc3\x98sterreich", "sterreich"}, /* O-stroke has no decomposition */
        {"", ""},
    };
    struct capid_buf b;
    capid_buf_init(&b, 0);
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        capid_buf_reset(&b);
        ASSERT_INT(capid_geo_fold(t[i].in, strlen(t[i].in), &b), CAPID_OK);
        ASSERT_STR(b.data, t[i].want);
    }
    capid_buf_release(&b);
}

TEST(geo_currency_valid)
{
    static const struct {
        const char *code;
        bool valid;
    } t[] = {
        {"EUR", true},  {"USD", true},  {"JPY", true},        {"CHF", true},   {"XXX", true},
        {"eur", false}, {"Eur", false}, {"EU", false},        {"EURO", false}, {"ABC", false},
        {"", false},    {"US1", false}, {"E\xc3\x9a", false},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
        if (capid_currency_valid(t[i].code, strlen(t[i].code)) != t[i].valid)
            capid_test_fail(__FILE__, __LINE__, "currency \"%s\": want %d", t[i].code, t[i].valid);
    ASSERT_TRUE(!capid_currency_valid(NULL, 3));
}

TEST(norm_external_id)
{
    static const struct ncase t[] = {
        C(EXTERNAL_ID, "ABC-123 ", "abc-123"),
        C(EXTERNAL_ID, " CRM 845454 ", "crm845454"),
        C(EXTERNAL_ID, "\xc3\x89tienne_42", "\xc3\xa9tienne_42"),
        C(EXTERNAL_ID, " \t ", NULL),
    };
    CHECK(t);
}

TEST(norm_ukey_names_round_trip)
{
    static const char *const names[] = {"em", "ph", "fn", "ln",      "ge",         "db",
                                        "ct", "st", "zp", "country", "external_id"};
    for (int k = 0; k < CAPID_UK__COUNT; k++) {
        ASSERT_STR(capid_ukey_name((enum capid_ukey)k), names[k]);
        ASSERT_INT(capid_ukey_from_name(names[k], strlen(names[k])), k);
    }
    ASSERT_INT(capid_ukey_from_name("e", 1), -1);
    ASSERT_INT(capid_ukey_from_name("emx", 3), -1);
    ASSERT_INT(capid_ukey_from_name("country", 6), -1);
    ASSERT_TRUE(capid_ukey_name(CAPID_UK__COUNT) == NULL);
}

/* A value that does not fit out's maximum is dropped, never truncated; once
 * out has grown, normalising does not touch the allocator (cap unchanged). */
TEST(norm_respects_buffer_max_and_reuses_it)
{
    struct capid_buf out;
    capid_buf_init(&out, 4);
    bool h;
    struct capid_norm_ctx ctx = {NULL, MAX_YEAR};
    ASSERT_INT(capid_norm_value(CAPID_UK_FN, "Mary", 4, &ctx, &out, &h), 1);
    ASSERT_INT(capid_norm_value(CAPID_UK_FN, "Maryanne", 8, &ctx, &out, &h), 0);
    ASSERT_INT(out.len, 0);
    ASSERT_INT(capid_norm_value(CAPID_UK_PH, HEX64_UP, 64, &ctx, &out, &h), 0);
    capid_buf_release(&out);

    capid_buf_init(&out, 0);
    ASSERT_INT(capid_norm_value(CAPID_UK_CT, "Los Angeles", 11, &ctx, &out, &h), 1);
    char *data = out.data;
    size_t cap = out.cap;
    ASSERT_INT(capid_norm_value(CAPID_UK_ST, "California", 10, &ctx, &out, &h), 1);
    ASSERT_INT(capid_norm_value(CAPID_UK_DB, "1990-01-31", 10, &ctx, &out, &h), 1);
    ASSERT_TRUE(out.data == data && out.cap == cap);
    capid_buf_release(&out);
}
