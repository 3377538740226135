/* touch.h — bring a cache line in ahead of use.
 *
 * A prefetch instruction is only a hint, and on the virtual machines ringnet was measured
 * on most of them were dropped: in a million-node simulation a prefetched node was
 * usually still cold when its message came up (the demand load after it stalled as
 * long as with no prefetch at all). A load that nobody uses cannot be dropped: issued a
 * dozen at a time, such loads miss in parallel and the lines are there when needed.
 * Build with -DRN_TOUCH_PREFETCH to compare against plain prefetches. */
#ifndef RN_TOUCH_H
#define RN_TOUCH_H

static inline void rn_touch(const void *p)
{
#ifdef RN_TOUCH_PREFETCH
	__builtin_prefetch(p);
#else
	(void)*(const volatile char *)p;
#endif
}

#endif
