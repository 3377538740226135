/* cast_tcp.h — what the cast transport reads from and sets on a TCP socket (Linux). */
#ifndef RN_CAST_TCP_H
#define RN_CAST_TCP_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
	uint64_t delivery_rate; /* bytes/s, the kernel's latest estimate */
	uint64_t bytes_acked;
	uint32_t rtt_us, min_rtt_us;
	uint32_t retrans;
} cast_tcp_sample;

/* 0 or -1. */
int cast_tcp_info(int fd, cast_tcp_sample *s);
/* Sets the congestion control ("bbr", "cubic"); 0 or -1 (not available). */
int cast_tcp_congestion(int fd, const char *name);
/* Caps the bytes a socket holds that are not sent yet (beyond what is in flight): a write
 * waits until they are below it. 0 or -1. */
int cast_tcp_notsent_lowat(int fd, unsigned bytes);

#endif
