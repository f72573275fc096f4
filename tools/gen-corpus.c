/* gen-corpus: writes a deterministic NDJSON corpus of realistic Commanders
 * Act events for benchmarks (issue 2): purchases, carts, page views with
 * e-mail, phone, names, city, zip, country, external id, ip, user agent,
 * _fbp cookie and 1-5 items, about 1-1.5 KB each.
 *   gen-corpus [COUNT] [--now EPOCH] [--offline]  > corpus.ndjson */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 0x9E3779B97F4A7C15ull;

static uint32_t next(void)
{
    /* xorshift64*: deterministic across machines. */
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return (uint32_t)((rng * 2685821657736338717ull) >> 32);
}

#define PICK(a) (a[next() % (sizeof(a) / sizeof(a[0]))])

static const char *first[] = {"Marie",    "Jean",  "Élodie", "Lucas", "Chloé", "Hugo", "Anna",
                              "Mohammed", "Sofia", "Noah",   "Léa",   "José",  "Zoë",  "Björn"};
static const char *last[] = {"Martin", "Bernard", "Dubois",         "Thomas",   "Robert", "Petit",
                             "Durand", "Müller",  "García-Márquez", "O'Connor", "Nguyen", "Smith"};
static const char *cities[][3] = {{"Paris", "75005", "FR"},      {"Lyon", "69002", "France"},
                                  {"Berlin", "10115", "DE"},     {"New York", "10001-2345", "USA"},
                                  {"San José", "95112", "US"},   {"London", "SW1A 1AA", "UK"},
                                  {"Montréal", "H2X 1Y4", "CA"}, {"Madrid", "28013", "ES"}};
static const char *events[] = {"purchase", "add_to_cart",    "page_view", "view_item",
                               "purchase", "begin_checkout", "page_view", "add_to_cart"};
static const char *uas[] = {
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/121.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/17.2 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0"};
static const char *products[] = {"Lamp", "Mug", "Chair", "Desk", "Sofa", "Rug", "Vase", "Shelf"};
static const char *cats[] = {"Lighting", "Kitchen", "Furniture", "Decor", "Textiles"};

int main(int argc, char **argv)
{
    long count = 100000;
    long long now = 1764000000;
    int offline = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--now") && i + 1 < argc)
            now = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--offline"))
            offline = 1;
        else
            count = atol(argv[i]);
    }
    for (long n = 0; n < count; n++) {
        const char *ev = PICK(events);
        const char **city = cities[next() % (sizeof(cities) / sizeof(cities[0]))];
        const char *fn = PICK(first);
        const char *ln = PICK(last);
        long long ts = (now - (long long)(next() % 86400)) * 1000;
        ts += next() % 1000;
        int nitems = 1 + (int)(next() % 5);
        double total = 0;
        char items[2048];
        size_t off = 0;
        for (int i = 0; i < nitems; i++) {
            double price = (double)(next() % 20000) / 100.0 + 1;
            int qty = 1 + (int)(next() % 3);
            total += price * qty;
            unsigned sku = next() % 100000;
            const char *pname = PICK(products), *pcat = PICK(cats);
            off += (size_t)snprintf(items + off, sizeof(items) - off,
                                    "%s{\"product\":{\"id\":\"SKU-%05u\",\"name\":\"%s\","
                                    "\"price\":%.2f,\"category_1\":\"%s\"},\"quantity\":%d}",
                                    i ? "," : "", sku, pname, price, pcat, qty);
        }
        /* Every random draw is its own statement: argument evaluation order
         * is unspecified in C, and the corpus must be the same everywhere. */
        unsigned coupon = next() % 100, mailno = next() % 1000;
        unsigned ph[4];
        for (int i = 0; i < 4; i++)
            ph[i] = next() % 100;
        unsigned long long anon = (unsigned long long)next() << 32;
        anon |= next();
        unsigned page = next() % 10000;
        unsigned ip[4];
        ip[0] = next() % 223 + 1;
        ip[1] = next() % 256;
        ip[2] = next() % 256;
        ip[3] = next() % 254 + 1;
        const char *ua = PICK(uas);
        unsigned ga1 = next(), ga2 = next(), fbp = next(), sess = next();
        printf(
            "{\"event_name\":\"%s\",\"id\":\"ORD-%08ld\",\"type\":\"%s\",\"value\":%.2f,"
            "\"currency\":\"EUR\",\"coupon\":\"WINTER%u\",\"payment_method\":\"card\","
            "\"user\":{\"id\":\"CRM-%07ld\",\"email\":\" %s.%s%u@Example.com\","
            "\"phone\":\"+33 6 %02u %02u %02u %02u\",\"firstname\":\"%s\",\"lastname\":\"%s\","
            "\"city\":\"%s\",\"zipcode\":\"%s\",\"country\":\"%s\","
            "\"consent_categories\":[\"1\",\"2\",\"3\",\"4\"],"
            "\"consistent_anonymous_id\":\"%016llx\"},"
            "\"context\":{\"event_id\":\"evt-%010ld\",\"event_timestamp\":%lld,"
            "\"page\":{\"url\":\"https://shop.example.com/p/%u?utm_source=news&utm_medium=mail\","
            "\"referrer\":\"https://www.google.com/\",\"title\":\"Shop - product page\"},"
            "\"device\":{\"ip\":\"%u.%u.%u.%u\",\"user_agent\":\"%s\",\"lang\":\"fr-FR\","
            "\"timezone\":\"Europe/Paris\",\"cookie\":\"_ga=GA1.2.%u.%u; "
            "_fbp=fb.1.%lld.%u; session=%08x\"}},"
            "\"items\":[%s]}\n",
            ev, n, offline ? "offline" : "online", total, coupon, n % 5000000, fn, ln, mailno,
            ph[0], ph[1], ph[2], ph[3], fn, ln, city[0], city[1], city[2], anon, n, ts, page, ip[0],
            ip[1], ip[2], ip[3], ua, ga1, ga2, ts - 86400000, fbp, sess, items);
    }
    return 0;
}
