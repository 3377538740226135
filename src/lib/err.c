/* err.c — messages for the RN_E* codes. */
#include "err.h"

const char *rn_strerror(int code)
{
	switch (code) {
	case RN_OK:
		return "ok";
	case RN_EINVAL:
		return "invalid argument";
	case RN_ENOMEM:
		return "out of memory";
	case RN_EIO:
		return "input/output error";
	case RN_EPROTO:
		return "protocol error";
	case RN_ENOTFOUND:
		return "not found";
	case RN_EUNREACH:
		return "peer unreachable";
	default:
		return "unknown error";
	}
}
