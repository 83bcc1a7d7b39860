/* test_aioreap.c: clawqd's syscall() (broker/aioreap.c), linked into this
 * test as into clawqd. Other system calls pass through with their
 * arguments and errno; io_destroy returns 0 at once and the context is
 * destroyed by the reaper soon after (a second io_destroy of it, run in
 * place, then fails with EINVAL); with reaping off it runs in place. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/aio_abi.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "aioreap.h"

static aio_context_t ctx_new(void)
{
    aio_context_t ctx = 0;
    ck_assert_int_eq(syscall(SYS_io_setup, 1, &ctx), 0);
    ck_assert_uint_ne(ctx, 0);
    return ctx;
}

START_TEST(passes_other_calls_through)
{
    char buf[4] = {0};
    int fds[2];

    ck_assert_int_eq(syscall(SYS_getpid), getpid());
    ck_assert_int_eq(pipe(fds), 0);
    ck_assert_int_eq(syscall(SYS_write, fds[1], "abc", 3), 3);
    ck_assert_int_eq(syscall(SYS_read, fds[0], buf, 3), 3);
    ck_assert_str_eq(buf, "abc");
    close(fds[0]);
    close(fds[1]);
    /* Six arguments reach the kernel, and errors come back as -1/errno. */
    errno = 0;
    ck_assert_int_eq(syscall(SYS_close, -1), -1);
    ck_assert_int_eq(errno, EBADF);
    ck_assert_int_eq(syscall(SYS_openat, AT_FDCWD, "/nonexistent/aioreap",
                             O_RDONLY, 0, 0, 0),
                     -1);
    ck_assert_int_eq(errno, ENOENT);
}
END_TEST

START_TEST(io_destroy_is_reaped)
{
    aioreap_stats before, after;
    aio_context_t ctx = ctx_new();
    struct timespec ms = {0, 1000000};
    int i;

    aioreap_set_enabled(true);
    aioreap_get_stats(&before);
    ck_assert_int_eq(syscall(SYS_io_destroy, ctx), 0);
    for (i = 0; i < 5000; i++) {
        aioreap_get_stats(&after);
        if (after.destroyed > before.destroyed)
            break;
        nanosleep(&ms, NULL);
    }
    ck_assert_uint_eq(after.queued, before.queued + 1);
    ck_assert_uint_eq(after.destroyed, before.destroyed + 1);
    /* Gone: destroying it again, in place, fails. */
    aioreap_set_enabled(false);
    errno = 0;
    ck_assert_int_eq(syscall(SYS_io_destroy, ctx), -1);
    ck_assert_int_eq(errno, EINVAL);
}
END_TEST

START_TEST(off_runs_in_place)
{
    aioreap_stats before, after;
    aio_context_t ctx = ctx_new();

    aioreap_set_enabled(false);
    aioreap_get_stats(&before);
    ck_assert_int_eq(syscall(SYS_io_destroy, ctx), 0);
    aioreap_get_stats(&after);
    ck_assert_mem_eq(&after, &before, sizeof(before));
    errno = 0;
    ck_assert_int_eq(syscall(SYS_io_destroy, ctx), -1);
    ck_assert_int_eq(errno, EINVAL);
    aioreap_set_enabled(true);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("aioreap");
    TCase *tc = tcase_create("core");
    SRunner *sr;
    int failed;

    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, passes_other_calls_through);
    tcase_add_test(tc, io_destroy_is_reaped);
    tcase_add_test(tc, off_runs_in_place);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
