/* test_logzero.c: clawqd's posix_fallocate (broker/logzero.c). This test
 * binary links logzero.c, so its posix_fallocate calls reach it as
 * libraft's do in clawqd. Checked with FIEMAP: a file under the enabled
 * directory ends up with written extents of zeros; a file elsewhere, or
 * with zeroing off, keeps libc's unwritten extents; existing data is
 * never overwritten; on tmpfs the file is allocated and counted. */

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "helpers.h"
#include "logzero.h"

#define MiB (1024 * 1024)

static char *dir, *other;

static void setup(void)
{
    dir = th_tmpdir();
    other = th_tmpdir();
    ck_assert_int_eq(logzero_enable(dir), 0);
}

static void teardown(void)
{
    logzero_enable(NULL);
    th_rmdir(dir);
    th_rmdir(other);
}

/* Extents of fd's file: how many, and how many are marked unwritten. */
static void extents(int fd, unsigned *total, unsigned *unwritten)
{
    struct {
        struct fiemap fm;
        struct fiemap_extent ext[64];
    } q;
    unsigned i;

    memset(&q, 0, sizeof(q));
    q.fm.fm_length = FIEMAP_MAX_OFFSET;
    q.fm.fm_flags = FIEMAP_FLAG_SYNC;
    q.fm.fm_extent_count = 64;
    ck_assert_int_eq(ioctl(fd, FS_IOC_FIEMAP, &q.fm), 0);
    *total = q.fm.fm_mapped_extents;
    *unwritten = 0;
    for (i = 0; i < q.fm.fm_mapped_extents; i++)
        if (q.fm.fm_extents[i].fe_flags & FIEMAP_EXTENT_UNWRITTEN)
            (*unwritten)++;
}

/* ext4 and xfs allocate unwritten extents; other file systems may not. */
static int has_unwritten_extents(const char *path)
{
    struct statfs sf;
    ck_assert_int_eq(statfs(path, &sf), 0);
    return sf.f_type == EXT4_SUPER_MAGIC || sf.f_type == XFS_SUPER_MAGIC;
}

static int create(const char *in, const char *name)
{
    char path[4096];
    int fd;

    snprintf(path, sizeof(path), "%s/%s", in, name);
    fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
    ck_assert_int_ge(fd, 0);
    return fd;
}

static void assert_zeros(int fd, off_t from, off_t to)
{
    static char buf[64 * 1024], zero[64 * 1024];
    off_t at;
    ssize_t n;

    for (at = from; at < to; at += n) {
        n = pread(fd, buf,
                  sizeof(buf) < (size_t)(to - at) ? sizeof(buf)
                                                  : (size_t)(to - at),
                  at);
        ck_assert_int_gt(n, 0);
        ck_assert_msg(memcmp(buf, zero, (size_t)n) == 0,
                      "non-zero bytes in [%lld, %lld)", (long long)at,
                      (long long)(at + n));
    }
}

START_TEST(zeroes_files_in_dir)
{
    logzero_stats before, after;
    unsigned total, unwritten;
    struct stat st;
    int fd = create(dir, "open-1");

    if (!has_unwritten_extents(dir))
        ck_abort_msg("TMPDIR %s is not ext4 or xfs: run on the repository's "
                     "disk",
                     dir);
    logzero_get_stats(&before);
    errno = ENOTTY; /* left alone, as by libc's posix_fallocate */
    ck_assert_int_eq(posix_fallocate(fd, 0, 8 * MiB), 0);
    ck_assert_int_eq(errno, ENOTTY);
    logzero_get_stats(&after);
    ck_assert_int_eq(fstat(fd, &st), 0);
    ck_assert_int_eq(st.st_size, 8 * MiB);
    extents(fd, &total, &unwritten);
    ck_assert_uint_gt(total, 0);
    ck_assert_uint_eq(unwritten, 0);
    assert_zeros(fd, 0, 8 * MiB);
    ck_assert_uint_eq(after.files, before.files + 1);
    ck_assert_uint_eq(after.bytes, before.bytes + 8 * MiB);
    ck_assert_uint_eq(after.skipped, before.skipped);
    close(fd);
}
END_TEST

START_TEST(leaves_other_files_alone)
{
    logzero_stats before, after;
    unsigned total, unwritten;
    int fd = create(other, "open-1");

    logzero_get_stats(&before);
    ck_assert_int_eq(posix_fallocate(fd, 0, MiB), 0);
    logzero_get_stats(&after);
    extents(fd, &total, &unwritten);
    ck_assert_uint_gt(total, 0);
    ck_assert_uint_eq(unwritten, total);
    ck_assert_mem_eq(&after, &before, sizeof(before));
    close(fd);

    /* Off: files in the directory too. */
    logzero_enable(NULL);
    fd = create(dir, "open-2");
    ck_assert_int_eq(posix_fallocate(fd, 0, MiB), 0);
    extents(fd, &total, &unwritten);
    ck_assert_uint_eq(unwritten, total);
    close(fd);
}
END_TEST

START_TEST(never_overwrites_data)
{
    char data[6000], back[6000];
    unsigned total, unwritten;
    struct stat st;
    int fd = create(dir, "segment");

    memset(data, 'x', sizeof(data));
    ck_assert_int_eq(pwrite(fd, data, sizeof(data), 0), (ssize_t)sizeof(data));
    ck_assert_int_eq(fsync(fd), 0);
    /* Over the data and past it: the data stays, the rest is zeros. */
    ck_assert_int_eq(posix_fallocate(fd, 0, 2 * MiB), 0);
    ck_assert_int_eq(pread(fd, back, sizeof(back), 0), (ssize_t)sizeof(back));
    ck_assert_mem_eq(back, data, sizeof(data));
    assert_zeros(fd, sizeof(data), 2 * MiB);
    ck_assert_int_eq(fstat(fd, &st), 0);
    ck_assert_int_eq(st.st_size, 2 * MiB);
    extents(fd, &total, &unwritten);
    ck_assert_uint_eq(unwritten, 0);
    /* Inside the file: nothing to do, nothing changes. */
    ck_assert_int_eq(posix_fallocate(fd, 4096, 8192), 0);
    ck_assert_int_eq(pread(fd, back, sizeof(back), 0), (ssize_t)sizeof(back));
    ck_assert_mem_eq(back, data, sizeof(data));
    close(fd);
}
END_TEST

START_TEST(unaligned_and_bad_arguments)
{
    struct stat st;
    int fd = create(dir, "odd");

    /* The unaligned tail is allocated but not zero-filled by us. */
    ck_assert_int_eq(posix_fallocate(fd, 0, 10000), 0);
    ck_assert_int_eq(fstat(fd, &st), 0);
    ck_assert_int_eq(st.st_size, 10000);
    assert_zeros(fd, 0, 10000);
    /* libc's answers, unchanged. */
    ck_assert_int_eq(posix_fallocate(fd, 0, 0), EINVAL);
    ck_assert_int_eq(posix_fallocate(fd, -1, 4096), EINVAL);
    ck_assert_int_eq(posix_fallocate(-1, 0, 4096), EBADF);
    close(fd);
    ck_assert_int_ne(logzero_enable("/nonexistent/clawq-logzero"), 0);
}
END_TEST

/* Linux 6.6 gave tmpfs direct I/O: either way the file is allocated,
 * reads as zeros and is counted once. */
START_TEST(tmpfs_allocates)
{
    char shm[] = "/dev/shm/clawq-logzero.XXXXXX", path[64];
    logzero_stats before, after;
    struct stat st;
    struct statfs sf;
    int fd;

    if (statfs("/dev/shm", &sf) != 0 || sf.f_type != TMPFS_MAGIC)
        ck_abort_msg("/dev/shm is not tmpfs on this machine");
    ck_assert_ptr_nonnull(mkdtemp(shm));
    ck_assert_int_eq(logzero_enable(shm), 0);
    snprintf(path, sizeof(path), "%s/open-1", shm);
    fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
    ck_assert_int_ge(fd, 0);
    logzero_get_stats(&before);
    ck_assert_int_eq(posix_fallocate(fd, 0, MiB), 0);
    logzero_get_stats(&after);
    ck_assert_int_eq(fstat(fd, &st), 0);
    ck_assert_int_eq(st.st_size, MiB);
    assert_zeros(fd, 0, MiB);
    ck_assert_uint_eq(after.skipped + after.files,
                      before.skipped + before.files + 1);
    close(fd);
    unlink(path);
    rmdir(shm);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("logzero");
    TCase *tc = tcase_create("core");
    SRunner *sr;
    int failed;

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, zeroes_files_in_dir);
    tcase_add_test(tc, leaves_other_files_alone);
    tcase_add_test(tc, never_overwrites_data);
    tcase_add_test(tc, unaligned_and_bad_arguments);
    tcase_add_test(tc, tmpfs_allocates);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
