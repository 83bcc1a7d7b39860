/* test_mp.c: the msgpack subset reader and writer of mp.h, checked against
 * msgpack-c: the writer must produce msgpack-c's bytes, the reader must
 * read what msgpack-c writes, and no read may pass the buffer's end. */
#include <check.h>
#include <msgpack.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mp.h"

static const uint64_t uints[] = {
    0,      1,       0x7f,       0x80,           0xff,       0x100,
    0xffff, 0x10000, 0xffffffff, 0x100000000ull, UINT64_MAX,
};
static const int64_t ints[] = {
    0,         -1,     -32,    -33,       -128,
    -129,      -32768, -32769, INT32_MIN, (int64_t)INT32_MIN - 1,
    INT64_MIN, 127,    128,    INT64_MAX,
};
static const size_t lens[] = {0, 1, 31, 32, 255, 256, 65535, 65536};
static const uint32_t counts[] = {0, 15, 16, 65535, 65536};

/* msgpack-c's packer, appending to a cq_buf. */
static int pk_write(void *data, const char *buf, size_t len)
{
    return cq_buf_append(data, buf, len) == 0 ? 0 : -1;
}

/* Copies the buffer to an allocation of exactly its size, so that
 * AddressSanitizer reports any read past the end. */
static uint8_t *exact_copy(const cq_buf *b)
{
    uint8_t *p = malloc(b->len > 0 ? b->len : 1);
    ck_assert_ptr_nonnull(p);
    memcpy(p, b->ptr, b->len);
    return p;
}

static void assert_same(const cq_buf *a, const cq_buf *b)
{
    ck_assert_uint_eq(a->len, b->len);
    ck_assert_int_eq(memcmp(a->ptr, b->ptr, a->len), 0);
}

START_TEST(test_writer_matches_msgpack_c)
{
    cq_buf mine, theirs;
    msgpack_packer pk;
    mp_writer w;
    size_t i;
    char *body = calloc(1, 65536);

    ck_assert_ptr_nonnull(body);
    cq_buf_init(&mine, SIZE_MAX / 2);
    cq_buf_init(&theirs, SIZE_MAX / 2);
    mp_writer_init(&w, &mine);
    msgpack_packer_init(&pk, &theirs, pk_write);
    for (i = 0; i < sizeof(uints) / sizeof(uints[0]); i++) {
        mp_write_uint(&w, uints[i]);
        msgpack_pack_uint64(&pk, uints[i]);
    }
    for (i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
        mp_write_int(&w, ints[i]);
        msgpack_pack_int64(&pk, ints[i]);
    }
    for (i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        mp_write_bin(&w, cq_bytes_of(body, lens[i]));
        msgpack_pack_bin(&pk, lens[i]);
        msgpack_pack_bin_body(&pk, body, lens[i]);
        mp_write_str(&w, cq_bytes_of(body, lens[i]));
        msgpack_pack_str(&pk, lens[i]);
        msgpack_pack_str_body(&pk, body, lens[i]);
    }
    for (i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
        mp_write_map(&w, counts[i]);
        msgpack_pack_map(&pk, counts[i]);
        mp_write_array(&w, counts[i]);
        msgpack_pack_array(&pk, counts[i]);
    }
    mp_write_nil(&w);
    msgpack_pack_nil(&pk);
    ck_assert_int_eq(w.err, 0);
    assert_same(&mine, &theirs);
    cq_buf_fini(&mine);
    cq_buf_fini(&theirs);
    free(body);
}
END_TEST

START_TEST(test_reader_reads_msgpack_c)
{
    cq_buf b;
    msgpack_packer pk;
    mp_reader r;
    uint8_t *copy;
    char *body = malloc(65536);
    uint64_t u;
    int64_t s;
    uint32_t n;
    cq_bytes v;
    size_t i;

    ck_assert_ptr_nonnull(body);
    for (i = 0; i < 65536; i++)
        body[i] = (char)(i * 7);
    cq_buf_init(&b, SIZE_MAX / 2);
    msgpack_packer_init(&pk, &b, pk_write);
    for (i = 0; i < sizeof(uints) / sizeof(uints[0]); i++)
        msgpack_pack_uint64(&pk, uints[i]);
    for (i = 0; i < sizeof(ints) / sizeof(ints[0]); i++)
        msgpack_pack_int64(&pk, ints[i]);
    /* Non-negative values in signed encodings read as unsigned too. */
    msgpack_pack_fix_int8(&pk, 5);
    msgpack_pack_fix_int64(&pk, 1ll << 40);
    for (i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        msgpack_pack_bin(&pk, lens[i]);
        msgpack_pack_bin_body(&pk, body, lens[i]);
        msgpack_pack_str(&pk, lens[i]);
        msgpack_pack_str_body(&pk, body, lens[i]);
    }
    for (i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
        msgpack_pack_map(&pk, counts[i]);
        msgpack_pack_array(&pk, counts[i]);
    }
    msgpack_pack_nil(&pk);
    msgpack_pack_true(&pk);

    copy = exact_copy(&b);
    mp_reader_init(&r, copy, b.len);
    for (i = 0; i < sizeof(uints) / sizeof(uints[0]); i++) {
        ck_assert(mp_read_uint(&r, UINT64_MAX, &u));
        ck_assert_uint_eq(u, uints[i]);
    }
    for (i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
        ck_assert(mp_read_int(&r, &s));
        ck_assert_int_eq(s, ints[i]);
    }
    ck_assert(mp_read_uint(&r, 5, &u));
    ck_assert_uint_eq(u, 5);
    ck_assert(mp_read_uint(&r, UINT64_MAX, &u));
    ck_assert_uint_eq(u, 1ull << 40);
    for (i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        ck_assert(mp_read_bytes(&r, &v));
        ck_assert_uint_eq(v.len, lens[i]);
        ck_assert(v.len == 0 || memcmp(v.ptr, body, v.len) == 0);
        ck_assert(mp_read_bytes(&r, &v));
        ck_assert_uint_eq(v.len, lens[i]);
    }
    for (i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
        ck_assert(mp_read_map(&r, &n));
        ck_assert_uint_eq(n, counts[i]);
        ck_assert(mp_read_array(&r, &n));
        ck_assert_uint_eq(n, counts[i]);
    }
    ck_assert(mp_read_nil(&r));
    ck_assert(!mp_read_nil(&r)); /* a bool is not nil */
    ck_assert_uint_eq(r.off, b.len - 1);
    ck_assert(mp_skip(&r, 1));
    ck_assert(mp_reader_done(&r));
    free(copy);
    cq_buf_fini(&b);
    free(body);
}
END_TEST

START_TEST(test_reader_type_and_range_checks)
{
    /* 300 as uint16, -1, a 3-byte str "abc", a fixarray of 1, a float */
    static const uint8_t buf[] = {0xcd, 0x01, 0x2c, 0xff, 0xa3, 'a', 'b', 'c',
                                  0x91, 0x01, 0xca, 0,    0,    0,   0};
    mp_reader r;
    uint64_t u;
    int64_t s;
    uint32_t n;
    cq_bytes v;

    mp_reader_init(&r, buf, sizeof(buf));
    ck_assert(!mp_read_uint(&r, 299, &u)); /* above max */
    mp_reader_init(&r, buf, sizeof(buf));
    ck_assert(!mp_read_bytes(&r, &v));
    ck_assert(!mp_read_map(&r, &n));
    ck_assert(!mp_read_array(&r, &n));
    ck_assert_uint_eq(r.off, 0);
    ck_assert(mp_read_uint(&r, 300, &u));
    ck_assert_uint_eq(u, 300);
    ck_assert(!mp_read_uint(&r, UINT64_MAX, &u)); /* negative */
    r.off = 3;
    ck_assert(mp_read_int(&r, &s));
    ck_assert_int_eq(s, -1);
    ck_assert(!mp_read_int(&r, &s)); /* a str */
    ck_assert(mp_read_bytes(&r, &v));
    ck_assert_uint_eq(v.len, 3);
    ck_assert_int_eq(memcmp(v.ptr, "abc", 3), 0);
    ck_assert(mp_read_array(&r, &n));
    ck_assert_uint_eq(n, 1);
    ck_assert(mp_skip(&r, 0));
    ck_assert(!mp_read_uint(&r, UINT64_MAX, &u)); /* a float */
    ck_assert(mp_skip(&r, 0));
    ck_assert(mp_reader_done(&r));

    /* mp_read_str takes a str and refuses a bin of the same bytes */
    {
        static const uint8_t strbin[] = {0xa2, 'h', 'i', 0xc4, 2, 'h', 'i'};
        mp_reader_init(&r, strbin, sizeof(strbin));
        ck_assert(mp_read_str(&r, &v));
        ck_assert_uint_eq(v.len, 2);
        ck_assert(!mp_read_str(&r, &v));
        ck_assert(mp_read_bytes(&r, &v));
        ck_assert(mp_reader_done(&r));
    }
    /* uint64 above INT64_MAX is not an int64 */
    {
        static const uint8_t big[] = {0xcf, 0x80, 0, 0, 0, 0, 0, 0, 0};
        mp_reader_init(&r, big, sizeof(big));
        ck_assert(!mp_read_int(&r, &s));
    }
    /* depth limit of skip */
    {
        static const uint8_t nest[] = {0x91, 0x91, 0x01};
        mp_reader_init(&r, nest, sizeof(nest));
        ck_assert(!mp_skip(&r, 1));
        mp_reader_init(&r, nest, sizeof(nest));
        ck_assert(mp_skip(&r, 2));
    }
}
END_TEST

/* Every prefix of every encoding is refused without reading past it. */
START_TEST(test_reader_truncated)
{
    cq_buf b;
    mp_writer w;
    size_t i, cut;
    char body[300];

    memset(body, 'x', sizeof(body));
    for (i = 0; i < 5; i++) {
        uint8_t *copy;
        cq_buf_init(&b, SIZE_MAX / 2);
        mp_writer_init(&w, &b);
        switch (i) {
        case 0:
            mp_write_uint(&w, UINT64_MAX);
            break;
        case 1:
            mp_write_int(&w, INT64_MIN);
            break;
        case 2:
            mp_write_bin(&w, cq_bytes_of(body, sizeof(body)));
            break;
        case 3:
            mp_write_map(&w, 70000);
            break;
        default:
            mp_write_array(&w, 300);
            break;
        }
        ck_assert_int_eq(w.err, 0);
        for (cut = 0; cut < b.len; cut++) {
            mp_reader r;
            uint64_t u;
            int64_t s;
            uint32_t n;
            cq_bytes v;
            copy = malloc(cut > 0 ? cut : 1);
            ck_assert_ptr_nonnull(copy);
            memcpy(copy, b.ptr, cut);
            mp_reader_init(&r, copy, cut);
            ck_assert(!mp_read_uint(&r, UINT64_MAX, &u));
            mp_reader_init(&r, copy, cut);
            ck_assert(!mp_read_int(&r, &s));
            mp_reader_init(&r, copy, cut);
            ck_assert(!mp_read_bytes(&r, &v));
            mp_reader_init(&r, copy, cut);
            ck_assert(!mp_read_map(&r, &n));
            mp_reader_init(&r, copy, cut);
            ck_assert(!mp_read_array(&r, &n));
            mp_reader_init(&r, copy, cut);
            ck_assert(!mp_skip(&r, 4));
            free(copy);
        }
        cq_buf_fini(&b);
    }
}
END_TEST

/* The writer's first error sticks and later writes add nothing. */
START_TEST(test_writer_cap)
{
    cq_buf b;
    mp_writer w;

    cq_buf_init(&b, 4);
    mp_writer_init(&w, &b);
    mp_write_uint(&w, 1);
    mp_write_uint(&w, UINT64_MAX); /* 9 bytes: past the cap */
    ck_assert_int_eq(w.err, CLAWQ_ETOO_LARGE);
    mp_write_uint(&w, 2);
    ck_assert_uint_eq(b.len, 1);
    cq_buf_fini(&b);
}
END_TEST

static Suite *mp_suite(void)
{
    Suite *s = suite_create("mp");
    struct {
        const char *name;
        const TTest *fn;
    } cases[] = {
        {"writer_matches_msgpack_c", test_writer_matches_msgpack_c},
        {"reader_reads_msgpack_c", test_reader_reads_msgpack_c},
        {"reader_type_and_range_checks", test_reader_type_and_range_checks},
        {"reader_truncated", test_reader_truncated},
        {"writer_cap", test_writer_cap},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_set_timeout(tc, 30);
        tcase_add_test(tc, cases[i].fn);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(mp_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
