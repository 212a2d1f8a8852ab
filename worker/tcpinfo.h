/*
 * tcpinfo — what the kernel knows of a TCP connection that libuv does not
 * tell: how many bytes the peer has acknowledged. Kept apart because it
 * needs <linux/tcp.h>, whose struct tcp_info is newer than glibc's and
 * clashes with <netinet/tcp.h> (which uv.h includes).
 */
#ifndef WSGATE_TCPINFO_H
#define WSGATE_TCPINFO_H

#include <stdint.h>

/* Bytes the peer of socket fd has acknowledged so far (monotonic); 0 or a
 * negative errno. */
int tcpinfo_bytes_acked(int fd, uint64_t *out);

#endif
