#include "listener.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define LISTENER_BACKLOG 1024

static int listener_socket(const char *address, int port, int reuseport, int do_listen)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV;
    char portstr[16];
    snprintf(portstr, sizeof(portstr), "%d", port);
    int rc = getaddrinfo(address, portstr, &hints, &res);
    if (rc != 0)
        return -EINVAL;

    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        rc = -errno;
        freeaddrinfo(res);
        return rc;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (reuseport)
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (bind(fd, res->ai_addr, res->ai_addrlen) < 0 ||
        (do_listen && listen(fd, LISTENER_BACKLOG) < 0)) {
        rc = -errno;
        close(fd);
        freeaddrinfo(res);
        return rc;
    }
    freeaddrinfo(res);
    return fd;
}

int listener_probe(const char *address, int port)
{
    int fd = listener_socket(address, port, 0, 0);
    if (fd < 0)
        return fd;
    close(fd);
    return 0;
}

int listener_open(const char *address, int port)
{
    return listener_socket(address, port, 1, 1);
}
