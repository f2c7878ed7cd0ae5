/*
 * test_buf.c: the one growable buffer of core/ (core/buf.c): appending,
 * reserving and committing, consuming with compaction, size limits, taking
 * the data, and base64 encoding and decoding.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "harness.h"

static int has(const czctl_buf *b, const char *want)
{
    size_t n = strlen(want);
    return czctl_buf_unread(b) == n && !memcmp(b->data + b->start, want, n) && b->data[b->len] == '\0';
}

static void test_growth(void)
{
    czctl_buf b = {0};
    int ok = 1;
    for (int i = 0; i < 10000 && ok; i++)
        ok = czctl_buf_add(&b, "0123456789", 10) == 0;
    t_ok(ok && b.len == 100000 && b.data[b.len] == '\0' && !memcmp(b.data + 99990, "0123456789", 10),
         "appends grow the buffer and keep it NUL-terminated", NULL);
    czctl_buf_reset(&b);
    t_ok(has(&b, "") && b.cap >= 100000, "reset empties it and keeps the memory", NULL);
    czctl_buf_free(&b);
    t_ok(b.data == NULL && b.len == 0 && b.cap == 0, "free leaves an empty, reusable buffer", NULL);

    char *dst = czctl_buf_reserve(&b, 5);
    memcpy(dst, "hello", 5);
    czctl_buf_commit(&b, 5);
    t_ok(has(&b, "hello"), "reserve then commit appends in place", NULL);
    czctl_buf_free(&b);
}

static void test_consume(void)
{
    czctl_buf b = {0};
    czctl_buf_addstr(&b, "line one\nline two\n");
    czctl_buf_consume(&b, 9);
    t_ok(has(&b, "line two\n"), "consume skips a prefix", NULL);
    size_t cap = b.cap;
    /* growing past the capacity moves the unread bytes to the front first */
    char big[300];
    memset(big, 'x', sizeof big);
    czctl_buf_add(&b, big, sizeof big);
    t_ok(b.start == 0 && !memcmp(b.data, "line two\n", 9) && czctl_buf_unread(&b) == 309 && b.cap >= cap,
         "a growth compacts the consumed prefix away", NULL);
    czctl_buf_consume(&b, czctl_buf_unread(&b));
    t_ok(b.start == 0 && b.len == 0 && has(&b, ""), "consuming everything starts over at 0", NULL);
    czctl_buf_free(&b);
}

static void test_limit(void)
{
    czctl_buf b = {.limit = 8};
    int first = czctl_buf_add(&b, "12345678", 8);
    errno = 0;
    int over = czctl_buf_add(&b, "9", 1);
    t_ok(first == 0 && over == -1 && errno == EFBIG && has(&b, "12345678"),
         "over the limit: EFBIG and the buffer unchanged", NULL);
    czctl_buf_consume(&b, 4);
    t_ok(czctl_buf_add(&b, "9abc", 4) == 0 && has(&b, "56789abc"), "the limit counts unread bytes only", NULL);
    czctl_buf_free(&b);

    czctl_buf s = {.secret = 1};
    for (int i = 0; i < 100; i++)
        czctl_buf_addstr(&s, "s3cret-");
    size_t len;
    char *taken = czctl_buf_take(&s, &len);
    t_ok(taken && len == 700 && !strncmp(taken, "s3cret-s3cret-", 14) && s.data == NULL,
         "take hands over the data (secret buffers grow by copy and wipe)", NULL);
    free(taken);
    czctl_buf e = {0};
    taken = czctl_buf_take(&e, &len);
    t_ok(taken && len == 0 && taken[0] == '\0', "take of an untouched buffer gives an empty string", NULL);
    free(taken);
}

static void test_base64(void)
{
    static const struct {
        const char *in, *want;
    } dec[] = {{"aGVsbG8=", "hello"}, {"aGVsbG8", "hello"}, {"aGVs\nbG8=\n", "hello"}, {"", ""},
               {"YQ==", "a"}, {"YWI=", "ab"}, {" Y W J j ", "abc"}};
    for (size_t i = 0; i < sizeof dec / sizeof *dec; i++) {
        czctl_buf b = {0};
        int rc = czctl_base64_decode(&b, dec[i].in, strlen(dec[i].in));
        t_ok(rc == 0 && has(&b, dec[i].want), "base64 decode", dec[i].in);
        czctl_buf_free(&b);
    }
    static const char *const bad[] = {"a!b=", "YQ==YQ==", "Y", "YQ===", "YQ=a"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        czctl_buf b = {0};
        czctl_buf_addstr(&b, "kept");
        errno = 0;
        int rc = czctl_base64_decode(&b, bad[i], strlen(bad[i]));
        t_ok(rc == -1 && errno == EINVAL && has(&b, "kept"), "invalid base64 refused, buffer unchanged", bad[i]);
        czctl_buf_free(&b);
    }
    static const struct {
        const char *in, *want;
    } enc[] = {{"", ""}, {"a", "YQ=="}, {"ab", "YWI="}, {"abc", "YWJj"}, {"hello", "aGVsbG8="}};
    for (size_t i = 0; i < sizeof enc / sizeof *enc; i++) {
        czctl_buf b = {0};
        int rc = czctl_buf_add_base64(&b, enc[i].in, strlen(enc[i].in));
        t_ok(rc == 0 && (b.data ? has(&b, enc[i].want) : !enc[i].want[0]), "base64 encode", enc[i].in);
        czctl_buf_free(&b);
    }
    unsigned char all[256];
    for (int i = 0; i < 256; i++)
        all[i] = (unsigned char)i;
    czctl_buf e = {0}, d = {0};
    int ok = 1;
    for (size_t n = 0; n <= 256 && ok; n++) {
        czctl_buf_reset(&e);
        czctl_buf_reset(&d);
        ok = czctl_buf_add_base64(&e, all, n) == 0 && czctl_base64_decode(&d, e.data ? e.data : "", e.len) == 0 &&
             d.len == n && (n == 0 || !memcmp(d.data, all, n));
    }
    t_ok(ok, "decode(encode(x)) == x for every length 0..256", NULL);
    czctl_buf_free(&e);
    czctl_buf_free(&d);
}

int main(void)
{
    test_growth();
    test_consume();
    test_limit();
    test_base64();
    return t_done();
}
