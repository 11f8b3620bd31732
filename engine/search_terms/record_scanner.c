/*
 * Scanner for the records of a Brand Analytics Search Terms report.
 *
 * The report is one JSON document; its array "dataByDepartmentAndSearchTerm" holds
 * millions of flat records. Python finds the array and hands this scanner byte ranges
 * of it. The scanner parses strict JSON (RFC 8259: escapes, surrogate pairs, UTF-8
 * validation, number grammar), writes the known fields straight into Arrow column
 * buffers and flags records that break the row rules, so no Python object is made per
 * row. It holds no global state and Python calls it through ctypes, which releases the
 * GIL: several threads scan different ranges at once.
 *
 * A range may start in the wrong place (Python cuts ranges at a guessed record end);
 * the scanner then reports where the last complete element ended and Python re-scans.
 *
 * After the rows it finds the groups of consecutive rows with the same department and
 * term, with a hash of each key (Python proves with them that no term comes back), and,
 * when asked, writes the top-3 row of every group but the first and last of the range:
 * those two may go on in the neighbouring ranges, and Python joins them.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { F_DEPARTMENT, F_TERM, F_ASIN, F_ITEM_NAME, F_FREQ_RANK, F_CLICK_RANK, F_CLICK_SHARE,
       F_CONVERSION_SHARE, N_FIELDS, F_NONE = -1 };
enum { N_STRINGS = 4 };

/* Outcome of a scan call. */
enum { ST_CHUNK_END = 0,  /* every byte consumed; the range ended after a complete element */
       ST_ARRAY_END = 1,  /* found the closing ']'; consumed points just past it */
       ST_INCOMPLETE = 2, /* the range ended inside an element; consumed = end of the last whole one */
       ST_SYNTAX = 3,     /* invalid JSON at err_pos */
       ST_ROWS_FULL = 4   /* output buffers full; call again from consumed */ };

/* Syntax errors: the whole document is invalid. */
enum { E_UNEXPECTED = 1, E_ESCAPE, E_CONTROL_CHAR, E_UTF8, E_NUMBER, E_DEPTH, E_LITERAL,
       E_EXPECTED_KEY, E_EXPECTED_COLON, E_EXPECTED_COMMA };

/* Row rules: the record is valid JSON but goes to the rejects file. */
enum { R_MISSING = 1, R_WRONG_TYPE, R_OUT_OF_RANGE, R_LONE_SURROGATE, R_NOT_OBJECT };

/* Top-3 rows of a call's inner groups (all but the first and last, which may go on in
 * the neighbouring calls and are joined in Python). */
typedef struct {
    int32_t *offsets[8]; /* department, term, then ASIN and item name of ranks 1, 2, 3 */
    uint8_t *data[8];
    uint8_t *valid[6];   /* ASIN and item name of ranks 1, 2, 3; the shares share the ASIN's */
    int64_t *freq;
    double *click[3], *conversion[3];
    double *total_click, *total_conversion;
    int64_t n;
} pivot_t;

typedef struct {
    /* input */
    const uint8_t *buf;
    int64_t len;
    int32_t expect_comma; /* 1: the range starts just after an element */
    int32_t pad0;
    int64_t max_rows;     /* capacity of the row and reject outputs */
    /* accepted rows */
    int32_t *offsets[N_STRINGS]; /* max_rows + 1 each; offsets[k][0] is written */
    uint8_t *data[N_STRINGS];    /* len bytes each: unescaped text never outgrows its source */
    uint8_t *item_name_valid;    /* Arrow validity bitmap, (max_rows + 7) / 8 bytes */
    int64_t *freq_rank, *click_rank;
    double *click_share, *conversion_share;
    /* rejected records, indexes counted from the first element of this call */
    int64_t *rej_element;
    int64_t *rej_start, *rej_end; /* byte range of the element */
    int32_t *rej_reason, *rej_field;
    /* groups: runs of consecutive accepted rows with the same department and term */
    int64_t *grp_first, *grp_size;   /* first row, rows */
    int64_t *grp_pick[3];            /* row of click-share rank 1, 2, 3 (first seen), or -1 */
    int64_t *grp_min_freq, *grp_max_freq;
    int64_t *grp_ranked;             /* rows with a click-share rank of 1 to 3 */
    uint64_t *grp_hash;              /* hash of (department, term): finds a term listed twice */
    pivot_t *pivot;                  /* NULL: no pivot wanted */
    /* results */
    int64_t n_rows, n_elements, n_rejects, n_groups;
    /* over the inner groups (all but the first and last, which may go on in other calls) */
    int64_t inner_max_size, inner_over_three, inner_duplicate_ranks, inner_mixed_freq;
    int64_t consumed;
    int64_t err_pos;
    int32_t status, err_code;
} scan_t;

/* ------------------------------------------------------------------ helpers */

static const char *const FIELD_NAMES[N_FIELDS] = {
    "departmentName", "searchTerm", "clickedAsin", "clickedItemName",
    "searchFrequencyRank", "clickShareRank", "clickShare", "conversionShare"};

/* 1 for bytes that end the fast path of a string: quote, backslash, control, non-ASCII */
static uint8_t STRING_STOP[256];
static int tables_ready = 0;

static void init_tables(void) {
    if (tables_ready) return; /* benign race: every thread writes the same bytes */
    for (int c = 0; c < 256; c++)
        STRING_STOP[c] = (c == '"' || c == '\\' || c < 0x20 || c >= 0x80);
    tables_ready = 1;
}

typedef struct {
    const uint8_t *b;
    int64_t n, p;
    int err;
    int64_t err_pos;
} cur_t;

#define FAIL(c, code) do { (c)->err = (code); (c)->err_pos = (c)->p; return -1; } while (0)
/* End of input is not an error of the document: the range was cut. */
#define END_OF_INPUT (-2)

static inline void skip_ws(cur_t *c) {
    while (c->p < c->n) {
        uint8_t ch = c->b[c->p];
        if (ch == ' ' || ch == '\n' || ch == '\r' || ch == '\t') c->p++;
        else break;
    }
}

static inline int hexval(uint8_t ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* Length of a valid UTF-8 sequence at p, or 0 if it is invalid (overlong, surrogate,
 * beyond U+10FFFF, bad continuation). -1 if the input ends inside it. */
static inline int utf8_len(const uint8_t *s, int64_t avail) {
    uint8_t c0 = s[0];
    int n;
    uint32_t cp;
    if (c0 >= 0xC2 && c0 <= 0xDF) { n = 2; cp = c0 & 0x1F; }
    else if (c0 >= 0xE0 && c0 <= 0xEF) { n = 3; cp = c0 & 0x0F; }
    else if (c0 >= 0xF0 && c0 <= 0xF4) { n = 4; cp = c0 & 0x07; }
    else return 0;
    if (avail < n) return -1;
    for (int i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (n == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) return 0;
    if (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) return 0;
    return n;
}

/* Scan a string whose opening quote is at c->p. On success c->p is past the closing quote,
 * start and end delimit the raw content and *escaped tells whether it holds backslashes.
 * Returns 0, -1 on a syntax error, END_OF_INPUT if the range ends inside it. */
static int scan_string(cur_t *c, int64_t *start, int64_t *end, int *escaped) {
    const uint8_t *b = c->b;
    int64_t p = c->p + 1, n = c->n;
    *start = p;
    *escaped = 0;
    for (;;) {
        while (p < n && !STRING_STOP[b[p]]) p++;
        if (p >= n) return END_OF_INPUT;
        uint8_t ch = b[p];
        if (ch == '"') break;
        if (ch == '\\') {
            *escaped = 1;
            if (p + 1 >= n) return END_OF_INPUT;
            uint8_t e = b[p + 1];
            if (e == 'u') {
                if (p + 6 > n) return END_OF_INPUT;
                for (int i = 2; i < 6; i++)
                    if (hexval(b[p + i]) < 0) { c->p = p; FAIL(c, E_ESCAPE); }
                p += 6;
            } else if (e == '"' || e == '\\' || e == '/' || e == 'b' || e == 'f' || e == 'n' ||
                       e == 'r' || e == 't') {
                p += 2;
            } else { c->p = p; FAIL(c, E_ESCAPE); }
        } else if (ch < 0x20) {
            c->p = p; FAIL(c, E_CONTROL_CHAR);
        } else {
            int k = utf8_len(b + p, n - p);
            if (k < 0) return END_OF_INPUT;
            if (k == 0) { c->p = p; FAIL(c, E_UTF8); }
            p += k;
        }
    }
    *end = p;
    c->p = p + 1;
    return 0;
}

static inline uint8_t *put_utf8(uint8_t *o, uint32_t cp) {
    if (cp < 0x80) *o++ = (uint8_t)cp;
    else if (cp < 0x800) { *o++ = 0xC0 | (cp >> 6); *o++ = 0x80 | (cp & 0x3F); }
    else if (cp < 0x10000) {
        *o++ = 0xE0 | (cp >> 12); *o++ = 0x80 | ((cp >> 6) & 0x3F); *o++ = 0x80 | (cp & 0x3F);
    } else {
        *o++ = 0xF0 | (cp >> 18); *o++ = 0x80 | ((cp >> 12) & 0x3F);
        *o++ = 0x80 | ((cp >> 6) & 0x3F); *o++ = 0x80 | (cp & 0x3F);
    }
    return o;
}

static inline uint32_t hex4(const uint8_t *s) {
    return (uint32_t)(hexval(s[0]) << 12 | hexval(s[1]) << 8 | hexval(s[2]) << 4 | hexval(s[3]));
}

/* Decode an already validated string body into o. Returns the end of the output, or NULL
 * when it holds a lone surrogate, which UTF-8 cannot carry. */
static uint8_t *unescape(const uint8_t *s, const uint8_t *e, uint8_t *o) {
    while (s < e) {
        const uint8_t *bs = memchr(s, '\\', (size_t)(e - s));
        if (!bs) bs = e;
        memcpy(o, s, (size_t)(bs - s));
        o += bs - s;
        s = bs;
        if (s >= e) break;
        uint8_t k = s[1];
        s += 2;
        switch (k) {
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        case 'u': {
            uint32_t cp = hex4(s);
            s += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (e - s >= 6 && s[0] == '\\' && s[1] == 'u') {
                    uint32_t lo = hex4(s + 2);
                    if (lo >= 0xDC00 && lo <= 0xDFFF) {
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                        s += 6;
                        o = put_utf8(o, cp);
                        break;
                    }
                }
                return NULL;
            }
            if (cp >= 0xDC00 && cp <= 0xDFFF) return NULL;
            o = put_utf8(o, cp);
            break;
        }
        default: *o++ = k; /* " \ / */
        }
    }
    return o;
}

/* Field of a key, or F_NONE. Keys with escapes are decoded first, as json.loads would. */
static int field_of_key(const uint8_t *s, int64_t len, int escaped) {
    uint8_t tmp[128]; /* the longest field name, every character escaped as \uXXXX, is 114 bytes */
    if (escaped) {
        if (len > (int64_t)sizeof tmp) return F_NONE;
        uint8_t *e = unescape(s, s + len, tmp);
        if (!e) return F_NONE;
        s = tmp;
        len = e - tmp;
    }
    /* Dispatch on length and one distinguishing byte: this runs for every key of every record. */
    int f = F_NONE;
    switch (len) {
    case 10: f = s[0] == 's' ? F_TERM : F_CLICK_SHARE; break;
    case 11: f = F_ASIN; break;
    case 14: f = s[0] == 'd' ? F_DEPARTMENT : F_CLICK_RANK; break;
    case 15: f = s[0] == 'c' && s[1] == 'l' ? F_ITEM_NAME : F_CONVERSION_SHARE; break;
    case 19: f = F_FREQ_RANK; break;
    default: return F_NONE;
    }
    if (memcmp(FIELD_NAMES[f], s, (size_t)len) == 0) return f;
    return F_NONE;
}

static const double POW10[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                 1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* A JSON number at c->p. *is_int: no fraction or exponent. *ival holds the integer when it
 * fits in int64 (*int_ok). *dval is the correctly rounded double. */
static int scan_number(cur_t *c, int *is_int, int64_t *ival, int *int_ok, double *dval) {
    const uint8_t *b = c->b;
    int64_t p = c->p, n = c->n, start = p;
    int neg = 0;
    uint64_t mant = 0;
    int digits = 0, dropped = 0, frac_digits = 0; /* dropped: digits not held in mant */
    if (p < n && b[p] == '-') { neg = 1; p++; }
    if (p >= n) return END_OF_INPUT;
    if (b[p] == '0') { p++; }
    else if (b[p] >= '1' && b[p] <= '9') {
        while (p < n && b[p] >= '0' && b[p] <= '9') {
            if (digits < 19) { mant = mant * 10 + (uint64_t)(b[p] - '0'); digits++; } else dropped = 1;
            p++;
        }
    } else { c->p = p; FAIL(c, E_NUMBER); }
    *is_int = 1;
    if (p < n && b[p] == '.') {
        *is_int = 0;
        p++;
        if (p >= n) return END_OF_INPUT;
        if (!(b[p] >= '0' && b[p] <= '9')) { c->p = p; FAIL(c, E_NUMBER); }
        while (p < n && b[p] >= '0' && b[p] <= '9') {
            int d = b[p] - '0';
            frac_digits++;
            if (mant == 0 && d == 0) {
                /* a leading zero: it only moves the decimal point */
            } else if (digits < 19) {
                mant = mant * 10 + (uint64_t)d;
                digits++;
            } else {
                dropped = 1; /* beyond the fast path's precision: strtod decides */
            }
            p++;
        }
    }
    int64_t exp10 = 0;
    if (p < n && (b[p] == 'e' || b[p] == 'E')) {
        *is_int = 0;
        p++;
        int eneg = 0;
        if (p < n && (b[p] == '+' || b[p] == '-')) { eneg = b[p] == '-'; p++; }
        if (p >= n) return END_OF_INPUT;
        if (!(b[p] >= '0' && b[p] <= '9')) { c->p = p; FAIL(c, E_NUMBER); }
        while (p < n && b[p] >= '0' && b[p] <= '9') {
            if (exp10 < 100000) exp10 = exp10 * 10 + (b[p] - '0');
            p++;
        }
        if (eneg) exp10 = -exp10;
    }
    if (p >= n) return END_OF_INPUT; /* a number cut by the range end may go on */
    c->p = p;
    *int_ok = *is_int && dropped == 0 && (mant <= (uint64_t)INT64_MAX);
    *ival = neg ? -(int64_t)mant : (int64_t)mant;
    if (*is_int && mant == 0 && dropped == 0) { /* "-0" is the integer 0 in json.loads, not -0.0 */
        *dval = 0.0;
        return 0;
    }
    /* Clinger's fast path: mantissa and power of ten both exact, one rounding. */
    int64_t e = exp10 - frac_digits;
    if (dropped == 0 && mant < (1ULL << 53) && e >= -22 && e <= 22) {
        double d = (double)mant;
        d = e < 0 ? d / POW10[-e] : d * POW10[e];
        *dval = neg ? -d : d;
    } else {
        char small[128];
        int64_t len = p - start;
        char *s = len < (int64_t)sizeof small ? small : malloc((size_t)len + 1);
        if (!s) { FAIL(c, E_NUMBER); }
        memcpy(s, b + start, (size_t)len);
        s[len] = 0;
        *dval = strtod(s, NULL);
        if (s != small) free(s);
    }
    return 0;
}

static int expect_literal(cur_t *c, const char *lit, int len) {
    if (c->p + len > c->n) {
        if (memcmp(c->b + c->p, lit, (size_t)(c->n - c->p)) == 0) return END_OF_INPUT;
        FAIL(c, E_LITERAL);
    }
    if (memcmp(c->b + c->p, lit, (size_t)len) != 0) FAIL(c, E_LITERAL);
    c->p += len;
    return 0;
}

/* Skip any JSON value, validating it. */
static int skip_value(cur_t *c, int depth) {
    int64_t s, e;
    int esc, r;
    if (depth > 512) FAIL(c, E_DEPTH);
    skip_ws(c);
    if (c->p >= c->n) return END_OF_INPUT;
    uint8_t ch = c->b[c->p];
    if (ch == '"') return scan_string(c, &s, &e, &esc);
    if (ch == '-' || (ch >= '0' && ch <= '9')) {
        int is_int, int_ok;
        int64_t iv;
        double dv;
        return scan_number(c, &is_int, &iv, &int_ok, &dv);
    }
    if (ch == 't') return expect_literal(c, "true", 4);
    if (ch == 'f') return expect_literal(c, "false", 5);
    if (ch == 'n') return expect_literal(c, "null", 4);
    if (ch == '[' || ch == '{') {
        int obj = ch == '{';
        uint8_t close = obj ? '}' : ']';
        c->p++;
        skip_ws(c);
        if (c->p >= c->n) return END_OF_INPUT;
        if (c->b[c->p] == close) { c->p++; return 0; }
        for (;;) {
            if (obj) {
                skip_ws(c);
                if (c->p >= c->n) return END_OF_INPUT;
                if (c->b[c->p] != '"') FAIL(c, E_EXPECTED_KEY);
                if ((r = scan_string(c, &s, &e, &esc))) return r;
                skip_ws(c);
                if (c->p >= c->n) return END_OF_INPUT;
                if (c->b[c->p] != ':') FAIL(c, E_EXPECTED_COLON);
                c->p++;
            }
            if ((r = skip_value(c, depth + 1))) return r;
            skip_ws(c);
            if (c->p >= c->n) return END_OF_INPUT;
            if (c->b[c->p] == ',') { c->p++; continue; }
            if (c->b[c->p] == close) { c->p++; return 0; }
            FAIL(c, E_EXPECTED_COMMA);
        }
    }
    FAIL(c, E_UNEXPECTED);
}

/* ------------------------------------------------------------------ records */

enum { T_ABSENT = 0, T_STRING, T_INT, T_FLOAT, T_NULL, T_OTHER };

typedef struct {
    int type;
    int escaped;
    int64_t start, end; /* string body */
    int64_t ival;
    int int_ok;
    double dval;
} value_t;

/* Parse the object at c->p into vals. Returns 0, -1 or END_OF_INPUT. */
static int scan_record(cur_t *c, value_t *vals) {
    int r;
    for (int f = 0; f < N_FIELDS; f++) vals[f].type = T_ABSENT;
    c->p++; /* '{' */
    skip_ws(c);
    if (c->p >= c->n) return END_OF_INPUT;
    if (c->b[c->p] == '}') { c->p++; return 0; }
    for (;;) {
        int64_t ks, ke;
        int kesc;
        skip_ws(c);
        if (c->p >= c->n) return END_OF_INPUT;
        if (c->b[c->p] != '"') FAIL(c, E_EXPECTED_KEY);
        if ((r = scan_string(c, &ks, &ke, &kesc))) return r;
        skip_ws(c);
        if (c->p >= c->n) return END_OF_INPUT;
        if (c->b[c->p] != ':') FAIL(c, E_EXPECTED_COLON);
        c->p++;
        skip_ws(c);
        if (c->p >= c->n) return END_OF_INPUT;
        int f = field_of_key(c->b + ks, ke - ks, kesc);
        uint8_t ch = c->b[c->p];
        if (f == F_NONE) {
            if ((r = skip_value(c, 1))) return r;
        } else {
            value_t *v = &vals[f]; /* a repeated key overrides, as in json.loads */
            if (ch == '"') {
                v->type = T_STRING;
                if ((r = scan_string(c, &v->start, &v->end, &v->escaped))) return r;
            } else if (ch == '-' || (ch >= '0' && ch <= '9')) {
                int is_int;
                if ((r = scan_number(c, &is_int, &v->ival, &v->int_ok, &v->dval))) return r;
                v->type = is_int ? T_INT : T_FLOAT;
            } else if (ch == 'n') {
                if ((r = expect_literal(c, "null", 4))) return r;
                v->type = T_NULL;
            } else {
                if ((r = skip_value(c, 1))) return r;
                v->type = T_OTHER;
            }
        }
        skip_ws(c);
        if (c->p >= c->n) return END_OF_INPUT;
        if (c->b[c->p] == ',') { c->p++; continue; }
        if (c->b[c->p] == '}') { c->p++; return 0; }
        FAIL(c, E_EXPECTED_COMMA);
    }
}

/* The first rule a record breaks, as (reason, field); 0 if it keeps them all. */
static int check_record(const value_t *v, int *field) {
    for (int f = 0; f < N_FIELDS; f++) {
        *field = f;
        int t = v[f].type;
        if (t == T_ABSENT || t == T_NULL) {
            if (f == F_ITEM_NAME) continue;
            return R_MISSING;
        }
        if (f < N_STRINGS) {
            if (t != T_STRING) return R_WRONG_TYPE;
        } else if (f == F_FREQ_RANK || f == F_CLICK_RANK) {
            if (t != T_INT) return R_WRONG_TYPE;
            if (!v[f].int_ok || v[f].ival < 1) return R_OUT_OF_RANGE;
        } else {
            if (t != T_INT && t != T_FLOAT) return R_WRONG_TYPE;
            if (!(v[f].dval >= 0.0 && v[f].dval <= 1.0)) return R_OUT_OF_RANGE;
        }
    }
    *field = F_NONE;
    return 0;
}

/* Append the record's strings; 0, or the field holding a lone surrogate. */
static int emit_row(scan_t *s, const value_t *v, int64_t row, int64_t *data_len, int *bad_field) {
    int64_t saved[N_STRINGS];
    for (int k = 0; k < N_STRINGS; k++) {
        saved[k] = data_len[k];
        const value_t *x = &v[k];
        if (x->type == T_STRING) {
            const uint8_t *src = s->buf + x->start;
            uint8_t *dst = s->data[k] + data_len[k];
            if (!x->escaped) {
                memcpy(dst, src, (size_t)(x->end - x->start));
                data_len[k] += x->end - x->start;
            } else {
                uint8_t *e = unescape(src, s->buf + x->end, dst);
                if (!e) {
                    for (int j = 0; j <= k; j++) data_len[j] = saved[j];
                    *bad_field = k;
                    return -1;
                }
                data_len[k] += e - dst;
            }
        }
    }
    for (int k = 0; k < N_STRINGS; k++) s->offsets[k][row + 1] = (int32_t)data_len[k];
    if (v[F_ITEM_NAME].type == T_STRING) s->item_name_valid[row >> 3] |= (uint8_t)(1u << (row & 7));
    else s->item_name_valid[row >> 3] &= (uint8_t)~(1u << (row & 7));
    s->freq_rank[row] = v[F_FREQ_RANK].ival;
    s->click_rank[row] = v[F_CLICK_RANK].ival;
    s->click_share[row] = v[F_CLICK_SHARE].dval;
    s->conversion_share[row] = v[F_CONVERSION_SHARE].dval;
    return 0;
}

static void add_reject(scan_t *s, int64_t element, int64_t start, int64_t end, int reason, int field) {
    int64_t j = s->n_rejects++;
    s->rej_element[j] = element;
    s->rej_start[j] = start;
    s->rej_end[j] = end;
    s->rej_reason[j] = reason;
    s->rej_field[j] = field;
}

static int scan_elements(scan_t *s) {
    cur_t c = {s->buf, s->len, 0, 0, 0};
    value_t vals[N_FIELDS];
    int64_t data_len[N_STRINGS] = {0, 0, 0, 0};
    int expect_comma = s->expect_comma;
    s->n_rows = s->n_elements = s->n_rejects = 0;
    s->status = ST_CHUNK_END;
    s->err_code = 0;
    s->err_pos = -1;
    s->consumed = 0;
    for (int k = 0; k < N_STRINGS; k++) s->offsets[k][0] = 0;
    for (;;) {
        int64_t boundary = c.p; /* end of the last whole element (or the start) */
        skip_ws(&c);
        if (c.p >= c.n) {
            s->consumed = c.n;
            s->status = expect_comma ? ST_CHUNK_END : ST_INCOMPLETE;
            if (!expect_comma) s->consumed = boundary;
            return s->status;
        }
        if (c.b[c.p] == ']') {
            s->consumed = c.p + 1;
            s->status = ST_ARRAY_END;
            return s->status;
        }
        if (s->n_elements >= s->max_rows) {
            s->consumed = boundary;
            s->status = ST_ROWS_FULL;
            return s->status;
        }
        if (expect_comma) {
            if (c.b[c.p] != ',') {
                c.err = E_EXPECTED_COMMA;
                c.err_pos = c.p;
                goto syntax;
            }
            c.p++;
            skip_ws(&c);
            if (c.p >= c.n) { s->consumed = boundary; s->status = ST_INCOMPLETE; return s->status; }
            if (c.b[c.p] == ']') { c.err = E_UNEXPECTED; c.err_pos = c.p; goto syntax; }
        }
        int64_t start = c.p;
        int r;
        if (c.b[c.p] == '{') {
            r = scan_record(&c, vals);
        } else {
            r = skip_value(&c, 1);
        }
        if (r == END_OF_INPUT) { s->consumed = boundary; s->status = ST_INCOMPLETE; return s->status; }
        if (r) goto syntax;
        int64_t element = s->n_elements++;
        expect_comma = 1;
        if (c.b[start] != '{') {
            add_reject(s, element, start, c.p, R_NOT_OBJECT, F_NONE);
            continue;
        }
        int field;
        int reason = check_record(vals, &field);
        if (!reason) {
            if (emit_row(s, vals, s->n_rows, data_len, &field) == 0) {
                s->n_rows++;
                continue;
            }
            reason = R_LONE_SURROGATE;
        }
        add_reject(s, element, start, c.p, reason, field);
    }
syntax:
    s->status = ST_SYNTAX;
    s->err_code = c.err;
    s->err_pos = c.err_pos;
    return s->status;
}

/* ------------------------------------------------------------------ groups */

static inline int cmp_bytes(const uint8_t *a, int64_t la, const uint8_t *b, int64_t lb) {
    int c = memcmp(a, b, (size_t)(la < lb ? la : lb));
    if (c) return c < 0 ? -1 : 1;
    return la < lb ? -1 : la > lb;
}

static inline int cmp_field(const scan_t *s, int k, int64_t r1, int64_t r2) {
    const int32_t *o = s->offsets[k];
    return cmp_bytes(s->data[k] + o[r1], o[r1 + 1] - o[r1], s->data[k] + o[r2], o[r2 + 1] - o[r2]);
}

static inline uint64_t mix64(uint64_t h) {
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

static inline uint64_t hash_bytes(uint64_t h, const uint8_t *p, int64_t n) {
    h = mix64(h ^ (uint64_t)n); /* the length first: ("ab", "c") and ("a", "bc") differ */
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0x9E3779B97F4A7C15ULL;
        h ^= h >> 29;
        p += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, p, (size_t)n);
    return mix64((h ^ w) * 0x9E3779B97F4A7C15ULL);
}

/* Hash of a (department, term) key. Equal keys hash equal; a collision only costs the
 * caller a slower, exact pivot, never a wrong one. */
uint64_t key_hash(const uint8_t *dept, int64_t dept_len, const uint8_t *term, int64_t term_len) {
    return hash_bytes(hash_bytes(0x243F6A8885A308D3ULL, dept, dept_len), term, term_len);
}

/* key_hash of rows `rows` of two Arrow string columns (offsets already adjusted for slicing). */
void key_hashes(const int32_t *dept_off, const uint8_t *dept, const int32_t *term_off, const uint8_t *term,
                const int64_t *rows, int64_t n, uint64_t *out) {
    for (int64_t i = 0; i < n; i++) {
        int64_t r = rows[i];
        out[i] = key_hash(dept + dept_off[r], dept_off[r + 1] - dept_off[r], term + term_off[r], term_off[r + 1] - term_off[r]);
    }
}

static void find_groups(scan_t *s) {
    int64_t g = -1;
    for (int64_t r = 0; r < s->n_rows; r++) {
        if (r == 0 || cmp_field(s, F_TERM, r - 1, r) != 0 || cmp_field(s, F_DEPARTMENT, r - 1, r) != 0) {
            g++;
            s->grp_first[g] = r;
            s->grp_size[g] = 0;
            s->grp_pick[0][g] = s->grp_pick[1][g] = s->grp_pick[2][g] = -1;
            s->grp_min_freq[g] = s->grp_max_freq[g] = s->freq_rank[r];
            s->grp_ranked[g] = 0;
        }
        s->grp_size[g]++;
        int64_t f = s->freq_rank[r], rank = s->click_rank[r];
        if (f < s->grp_min_freq[g]) s->grp_min_freq[g] = f;
        if (f > s->grp_max_freq[g]) s->grp_max_freq[g] = f;
        if (rank >= 1 && rank <= 3) {
            s->grp_ranked[g]++;
            if (s->grp_pick[rank - 1][g] < 0) s->grp_pick[rank - 1][g] = r;
        }
    }
    s->n_groups = g + 1;
    s->inner_max_size = s->inner_over_three = s->inner_duplicate_ranks = s->inner_mixed_freq = 0;
    for (int64_t i = 1; i + 1 < s->n_groups; i++) {
        int64_t picked = (s->grp_pick[0][i] >= 0) + (s->grp_pick[1][i] >= 0) + (s->grp_pick[2][i] >= 0);
        if (s->grp_size[i] > s->inner_max_size) s->inner_max_size = s->grp_size[i];
        s->inner_over_three += s->grp_size[i] > 3;
        s->inner_duplicate_ranks += s->grp_ranked[i] - picked;
        s->inner_mixed_freq += s->grp_min_freq[i] != s->grp_max_freq[i];
    }
    const int32_t *d = s->offsets[F_DEPARTMENT], *t = s->offsets[F_TERM];
    for (int64_t i = 0; i < s->n_groups; i++) {
        int64_t r = s->grp_first[i];
        s->grp_hash[i] = key_hash(s->data[F_DEPARTMENT] + d[r], d[r + 1] - d[r], s->data[F_TERM] + t[r], t[r + 1] - t[r]);
    }
}

static inline void set_bit(uint8_t *bits, int64_t i, int on) {
    if (on) bits[i >> 3] |= (uint8_t)(1u << (i & 7));
    else bits[i >> 3] &= (uint8_t)~(1u << (i & 7));
}

static inline int get_bit(const uint8_t *bits, int64_t i) { return (bits[i >> 3] >> (i & 7)) & 1; }

/* Append string k of row r (or nothing) as value i of output column o. */
static inline void put_string(const scan_t *s, pivot_t *p, int o, int k, int64_t r, int64_t i, int64_t *used) {
    if (r >= 0) {
        const int32_t *off = s->offsets[k];
        int64_t len = off[r + 1] - off[r];
        memcpy(p->data[o] + used[o], s->data[k] + off[r], (size_t)len);
        used[o] += len;
    }
    p->offsets[o][i + 1] = (int32_t)used[o];
}

static void pivot_inner_groups(const scan_t *s, pivot_t *p) {
    int64_t used[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int o = 0; o < 8; o++) p->offsets[o][0] = 0;
    int64_t i = 0;
    for (int64_t g = 1; g + 1 < s->n_groups; g++, i++) {
        int64_t first = s->grp_first[g];
        put_string(s, p, 0, F_DEPARTMENT, first, i, used);
        put_string(s, p, 1, F_TERM, first, i, used);
        p->freq[i] = s->grp_min_freq[g];
        double total_click = 0, total_conversion = 0;
        for (int r = 0; r < 3; r++) {
            int64_t row = s->grp_pick[r][g];
            int has = row >= 0;
            int has_name = has && get_bit(s->item_name_valid, row);
            put_string(s, p, 2 + 2 * r, F_ASIN, has ? row : -1, i, used);
            put_string(s, p, 3 + 2 * r, F_ITEM_NAME, has_name ? row : -1, i, used);
            set_bit(p->valid[2 * r], i, has);
            set_bit(p->valid[2 * r + 1], i, has_name);
            double click = has ? s->click_share[row] : 0.0, conversion = has ? s->conversion_share[row] : 0.0;
            p->click[r][i] = click;
            p->conversion[r][i] = conversion;
            total_click += click;
            total_conversion += conversion;
        }
        p->total_click[i] = total_click;
        p->total_conversion[i] = total_conversion;
    }
    p->n = i;
}

int scan_records(scan_t *s) {
    init_tables();
    s->n_groups = 0;
    int status = scan_elements(s);
    if (status != ST_SYNTAX) {
        find_groups(s);
        if (s->pivot) pivot_inner_groups(s, s->pivot);
    }
    return status;
}

/* Lets Python check that it was built from the source it expects. */
int scanner_struct_size(void) { return (int)sizeof(scan_t); }
