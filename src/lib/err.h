/* err.h — error codes shared by every module. Functions return 0 or a negative RN_E*. */
#ifndef RN_ERR_H
#define RN_ERR_H

#define RN_OK        0
#define RN_EINVAL    (-1) /* an argument or setting is out of range */
#define RN_ENOMEM    (-2) /* allocation failed */
#define RN_EIO       (-3) /* an operating system call failed */
#define RN_EPROTO    (-4) /* a peer sent something malformed */
#define RN_ENOTFOUND (-5)
#define RN_EUNREACH  (-6) /* the peer that should answer cannot be reached */

const char *rn_strerror(int code);

#endif
