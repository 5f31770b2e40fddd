/*
 * tap.h - minimal TAP producer for the core's unit tests (run by prove).
 *
 *   ok(cond, "name %d", i);          one test point
 *   is_int(got, want, "name");       integers, with diagnostics on failure
 *   close_to(got, want, tol, "name"); |got - want| <= tol
 *   return tap_done();               plan line + exit status
 */
#ifndef TL_TAP_H
#define TL_TAP_H

#include <math.h>
#include <stdarg.h>
#include <stdio.h>

static int	tap_count;
static int	tap_failed;

static inline int
tap_report(int pass, const char *fmt, va_list ap)
{
	tap_count++;
	if (!pass)
		tap_failed++;
	printf("%sok %d - ", pass ? "" : "not ", tap_count);
	vprintf(fmt, ap);
	printf("\n");
	fflush(stdout);
	return pass;
}

static inline int __attribute__((format(printf, 2, 3)))
ok(int pass, const char *fmt,...)
{
	va_list		ap;
	int			r;

	va_start(ap, fmt);
	r = tap_report(pass, fmt, ap);
	va_end(ap);
	return r;
}

static inline int __attribute__((format(printf, 3, 4)))
is_int(long long got, long long want, const char *fmt,...)
{
	va_list		ap;
	int			r;

	va_start(ap, fmt);
	r = tap_report(got == want, fmt, ap);
	va_end(ap);
	if (!r)
		printf("#   got: %lld\n#  want: %lld\n", got, want);
	return r;
}

static inline int __attribute__((format(printf, 4, 5)))
close_to(double got, double want, double tol, const char *fmt,...)
{
	va_list		ap;
	int			r;

	va_start(ap, fmt);
	r = tap_report(fabs(got - want) <= tol, fmt, ap);
	va_end(ap);
	if (!r)
		printf("#   got: %.9g\n#  want: %.9g (tolerance %.3g)\n", got, want, tol);
	return r;
}

static inline void __attribute__((format(printf, 1, 2)))
diag(const char *fmt,...)
{
	va_list		ap;

	printf("# ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
}

static inline int
tap_done(void)
{
	printf("1..%d\n", tap_count);
	return tap_failed ? 1 : 0;
}

#endif
