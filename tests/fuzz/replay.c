/* replay: runs a fuzz target without libFuzzer, on its built-in seeds,
 * every truncation and single-byte flip of them, and the files named on
 * the command line. `replay --write-seeds DIR` writes the seeds as a
 * starting corpus for libFuzzer. Exits 0 when nothing crashed. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"

static int write_seeds(const char *dir)
{
    uint8_t *buf;
    size_t len;
    char path[4096];
    int i;

    for (i = 0; fuzz_seed(i, &buf, &len); i++) {
        FILE *f;
        snprintf(path, sizeof(path), "%s/seed-%d", dir, i);
        f = fopen(path, "wb");
        if (f == NULL || fwrite(buf, 1, len, f) != len) {
            fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
            free(buf);
            if (f != NULL)
                fclose(f);
            return 1;
        }
        fclose(f);
        free(buf);
    }
    return 0;
}

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0, n;

    if (f == NULL) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        return 1;
    }
    for (;;) {
        if (len == cap) {
            uint8_t *p;
            cap = cap ? cap * 2 : 4096;
            p = realloc(buf, cap);
            if (p == NULL) {
                free(buf);
                fclose(f);
                return 1;
            }
            buf = p;
        }
        n = fread(buf + len, 1, cap - len, f);
        if (n == 0)
            break;
        len += n;
    }
    fclose(f);
    LLVMFuzzerTestOneInput(buf, len);
    free(buf);
    return 0;
}

int main(int argc, char **argv)
{
    uint8_t *buf;
    size_t len, cut, pos;
    int i, bit, runs = 0;

    if (argc == 3 && strcmp(argv[1], "--write-seeds") == 0)
        return write_seeds(argv[2]);
    for (i = 0; fuzz_seed(i, &buf, &len); i++) {
        for (cut = 0; cut <= len; cut++, runs++)
            LLVMFuzzerTestOneInput(buf, cut);
        for (pos = 0; pos < len; pos++) {
            for (bit = 0; bit < 8; bit++, runs++) {
                buf[pos] ^= (uint8_t)(1u << bit);
                LLVMFuzzerTestOneInput(buf, len);
                buf[pos] ^= (uint8_t)(1u << bit);
            }
        }
        free(buf);
    }
    for (i = 1; i < argc; i++, runs++) {
        if (run_file(argv[i]) != 0)
            return 1;
    }
    printf("replay: %d inputs, no crash\n", runs);
    return 0;
}
