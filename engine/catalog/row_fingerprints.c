/* Row fingerprints of a COPY payload, and the rows a products table already holds left out.

   A payload is a batch of validated rows as PostgreSQL's COPY reads them: text format (one
   row per line, fields separated by tabs, nothing quoted) or CSV (fields separated by commas,
   a quoted field may hold line breaks). Its first field is the row number in the source
   file, which says nothing about the product, so a row's fingerprint is the 64-bit hash of
   the bytes after it, up to the row's line break. See row_fingerprints.py. */

#include <stdint.h>
#include <string.h>

static inline uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static inline uint64_t fmix64(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ULL;
    k ^= k >> 33;
    return k;
}

/* MurmurHash3's 64-bit block mix, one lane, eight bytes a step; the length is mixed in so
   that trailing zero bytes change the hash. */
static uint64_t fingerprint_bytes(const uint8_t *p, int64_t n, uint64_t seed) {
    const uint64_t c1 = 0x87c37b91114253d5ULL, c2 = 0x4cf5ad432745937fULL;
    uint64_t h = seed ^ ((uint64_t)n * 0x9e3779b97f4a7c15ULL);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t k;
        memcpy(&k, p + i, 8);
        k *= c1;
        k = rotl64(k, 31);
        k *= c2;
        h ^= k;
        h = rotl64(h, 27) * 5 + 0x52dce729;
    }
    uint64_t k = 0;
    for (int64_t j = n - 1; j >= i; j--) k = (k << 8) | p[j];
    k *= c1;
    k = rotl64(k, 31);
    k *= c2;
    h ^= k;
    return fmix64(h);
}

/* Whether `fp` is among `known` (ascending, unsigned), through `buckets`: the index of the
   first known fingerprint whose top 16 bits are at least b, for b in 0..65536. */
static int is_known(uint64_t fp, const uint64_t *known, const int64_t *buckets) {
    int64_t lo = buckets[fp >> 48], hi = buckets[(fp >> 48) + 1];
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (known[mid] < fp) lo = mid + 1;
        else hi = mid;
    }
    return lo < buckets[(fp >> 48) + 1] && known[lo] == fp;
}

static int64_t write_int64(uint8_t *out, int64_t value) {
    uint8_t digits[20];
    int64_t n = 0, written = 0;
    uint64_t v = value < 0 ? (uint64_t)0 - (uint64_t)value : (uint64_t)value;
    if (value < 0) out[written++] = '-';
    do {
        digits[n++] = (uint8_t)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n) out[written++] = digits[--n];
    return written;
}

/* For each row of `in` (`size` bytes, text format or CSV when `csv`): its fingerprint, with
   `seed`. A row whose fingerprint is known (`known` non-NULL) is left out and counted in
   *skipped; every other row is written to `out` with its fingerprint (signed, decimal)
   appended as a last field. `out` must hold size + 21 bytes per row of `in`.
   Returns the rows written, and *out_size the bytes; -1 when a row has no separator after
   its first field or does not end with a line break (*out_size: where). */
int64_t fingerprint_rows(const uint8_t *in, int64_t size, int32_t csv, uint64_t seed, const uint64_t *known,
                         const int64_t *buckets, uint8_t *out, int64_t *out_size, int64_t *skipped) {
    const uint8_t separator = csv ? ',' : '\t';
    int64_t pos = 0, written = 0, rows = 0;
    *skipped = 0;
    while (pos < size) {
        const uint8_t *row = in + pos;
        const uint8_t *first_end = memchr(row, separator, (size_t)(size - pos));
        const uint8_t *line_end = memchr(row, '\n', (size_t)(size - pos));
        if (first_end == NULL || line_end == NULL || first_end > line_end) {
            *out_size = pos;
            return -1;
        }
        if (csv) {  // the row ends at the first line break outside quotes
            int quoted = 0;
            const uint8_t *p = first_end + 1;
            for (; p < in + size; p++) {
                if (*p == '"') quoted = !quoted;
                else if (*p == '\n' && !quoted) break;
            }
            if (p == in + size) {
                *out_size = pos;
                return -1;
            }
            line_end = p;
        }
        const uint8_t *values = first_end + 1;
        uint64_t fp = fingerprint_bytes(values, line_end - values, seed);
        int64_t length = line_end - row;
        if (known != NULL && is_known(fp, known, buckets)) {
            (*skipped)++;
        } else {
            memcpy(out + written, row, (size_t)length);
            written += length;
            out[written++] = separator;
            written += write_int64(out + written, (int64_t)fp);
            out[written++] = '\n';
            rows++;
        }
        pos += length + 1;
    }
    *out_size = written;
    return rows;
}
