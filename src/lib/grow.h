/* grow.h — growing an array by doubling: the one loop every growable buffer needs. */
#ifndef RN_GROW_H
#define RN_GROW_H

#include <stddef.h>

/* Makes *p (of *cap elements of elem bytes) hold at least need elements: the capacity
 * doubles from `first` until it does. 0, or RN_ENOMEM with *p and *cap unchanged. */
int rn_grow(void **p, size_t *cap, size_t need, size_t elem, size_t first);

#endif
