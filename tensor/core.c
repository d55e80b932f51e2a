/* Thread-local error state, the error table, shape formatting and the version string. */
#include "tensor_impl.h"

#include <stdarg.h>
#include <string.h>

static _Thread_local int last_code;
static _Thread_local char last_message[512];

static void set_error(int code, const char *fmt, va_list ap)
{
    last_code = code;
    vsnprintf(last_message, sizeof last_message, fmt, ap);
}

void *bilo__fail(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_error(code, fmt, ap);
    va_end(ap);
    return NULL;
}

int bilo__fail_code(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_error(code, fmt, ap);
    va_end(ap);
    return code;
}

BILO_API int bilo_errcode(void) { return last_code; }

BILO_API const char *bilo_last_error(void) { return last_code ? last_message : ""; }

BILO_API void bilo_clear_error(void)
{
    last_code = 0;
    last_message[0] = '\0';
}

BILO_API const char *bilo_strerror(int code)
{
    switch (code) {
#define BILO_ERROR_CASE_(name, value, text) \
    case value: return text;
        BILO_ERROR_TABLE(BILO_ERROR_CASE_)
#undef BILO_ERROR_CASE_
    }
    return "unknown error code";
}

BILO_API const char *bilo_version(void) { return "0.1.0"; }

const char *bilo__shape_str(char *buf, int ndim, const int64_t *shape)
{
    size_t used = 0;
    buf[used++] = '[';
    for (int i = 0; i < ndim; i++)
        used += (size_t)sprintf(buf + used, i ? ",%lld" : "%lld", (long long)shape[i]);
    buf[used++] = ']';
    buf[used] = '\0';
    return buf;
}
