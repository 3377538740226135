/* cast_tcp.c — TCP_INFO, TCP_CONGESTION and TCP_NOTSENT_LOWAT for the cast links, in a
 * file of its own because <linux/tcp.h> (which has tcpi_delivery_rate) cannot share a file
 * with the <netinet/tcp.h> that uv.h includes. */
#include <linux/tcp.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#include "cast_tcp.h"

int cast_tcp_info(int fd, cast_tcp_sample *s)
{
	struct tcp_info ti;
	socklen_t len = sizeof ti;
	memset(&ti, 0, sizeof ti);
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0)
		return -1;
	s->delivery_rate =
	    len >= offsetof(struct tcp_info, tcpi_delivery_rate) + 8 ? ti.tcpi_delivery_rate : 0;
	s->bytes_acked = ti.tcpi_bytes_acked;
	s->rtt_us = ti.tcpi_rtt;
	s->min_rtt_us = ti.tcpi_min_rtt;
	s->retrans = ti.tcpi_total_retrans;
	return 0;
}

int cast_tcp_congestion(int fd, const char *name)
{
	return setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, name, (socklen_t)strlen(name));
}

int cast_tcp_notsent_lowat(int fd, unsigned bytes)
{
	return setsockopt(fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &bytes, sizeof bytes);
}
