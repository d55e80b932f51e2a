/* Private to the nn data readers: file access through zlib (gzread decompresses gzip files
   and passes other files through unchanged) and growable arrays from bilo's allocator. */
#ifndef BILO_DATA_IMPL_H
#define BILO_DATA_IMPL_H

#include "bilo_nn.h"
#include "tensor_impl.h"

#include <errno.h>
#include <string.h>
#include <zlib.h>

#define BILO_GZ_BUFFER (1u << 17) /* zlib's input buffer; its default 8 KiB is slow */

static inline gzFile bilo__data_open(const char *op, const char *path)
{
    if (!path) return bilo__fail(BILO_ENULL, "%s: path is NULL", op);
    errno = 0;
    gzFile f = gzopen(path, "rb");
    if (!f)
        return bilo__fail(BILO_EIO, "%s: %s: cannot open: %s", op, path,
                          errno ? strerror(errno) : "out of memory");
    gzbuffer(f, BILO_GZ_BUFFER);
    return f;
}

/* Read up to n bytes that start at uncompressed offset `at` (used in messages). Returns the
   count, less than n only at the end of the data, or a negative code with an error naming
   the file when the data cannot be read or decompressed. */
static inline int64_t bilo__data_read(const char *op, const char *path, gzFile f, void *buf,
                                      size_t n, int64_t at)
{
    size_t done = 0;
    while (done < n) {
        unsigned chunk = n - done > (1u << 30) ? 1u << 30 : (unsigned)(n - done);
        int got = gzread(f, (char *)buf + done, chunk);
        if (got > 0) done += (size_t)got;
        if (got < (int)chunk) break;
    }
    int code = Z_OK;
    const char *why = done < n ? gzerror(f, &code) : "";
    if (code == Z_OK || code == Z_STREAM_END) return (int64_t)done;
    if (code == Z_ERRNO)
        return bilo__fail_code(BILO_EIO, "%s: %s: byte %lld: read error: %s", op, path,
                               (long long)(at + (int64_t)done), strerror(errno));
    /* zlib prefixes its message with the path given to gzopen */
    size_t plen = strlen(path);
    if (!strncmp(why, path, plen) && !strncmp(why + plen, ": ", 2)) why += plen + 2;
    return bilo__fail_code(BILO_EFORMAT, "%s: %s: byte %lld: corrupt gzip data (%s)", op, path,
                           (long long)(at + (int64_t)done), why);
}

/* Make room for at least `need` elements of `elem` bytes in *array (capacity *cap elements,
   grown by doubling). false when out of memory. */
static inline void bilo__data_release(void *array, size_t cap, size_t elem)
{
    if (array) bilo__free(array, cap * elem);
}

#endif
