/* libfaketime 0.9.10 with FAKETIME_DONT_FAKE_MONOTONIC=1 answers EINVAL to an absolute
   clock_nanosleep on CLOCK_MONOTONIC (CPython's time.sleep); monotonic sleeps need no faking:
   go straight to the kernel. */
#define _GNU_SOURCE
#include <errno.h>
#include <time.h>
#include <dlfcn.h>
#include <sys/syscall.h>
#include <unistd.h>

int clock_nanosleep(clockid_t clock, int flags, const struct timespec *req, struct timespec *rem) {
    if (clock == CLOCK_MONOTONIC || clock == CLOCK_BOOTTIME) {
        long rc = syscall(SYS_clock_nanosleep, clock, flags, req, rem);
        return rc == 0 ? 0 : errno;
    }
    static int (*next)(clockid_t, int, const struct timespec *, struct timespec *);
    if (!next) next = dlsym(RTLD_NEXT, "clock_nanosleep");
    return next(clock, flags, req, rem);
}
