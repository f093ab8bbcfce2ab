/*
 * connect.c: connect() to a service's magic address, any port, goes to one
 * of its backends instead, picked by weighted power of two choices; a
 * connect a backend refuses at once is tried again on another one; and
 * getpeername on such a socket still says the magic address.
 *
 * On the way: no allocation, no lock, no system call but the real connect
 * (and, when a backend fails, one datagram to the agent). The caller's
 * socket is left as it is: its blocking mode, its flags, its errno and its
 * EINPROGRESS are the caller's.
 */
#define _DEFAULT_SOURCE /* not _GNU_SOURCE: glibc's transparent-union sockaddr prototypes */

#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "shim.h"

/* Backends copied onto the stack; a service with more uses the thread's
 * big buffer. 64 × 24 bytes: small enough for any thread's stack. */
#define STACK_BACKENDS 64

/* A connect refused by one backend is tried on at most this many. */
#define MAX_TRIES 3

/* magic_of: the IPv4 address and port addr points at, directly or as an
 * IPv4-mapped IPv6 address; v6 says which. */
static int magic_of(const struct sockaddr *addr, socklen_t len, uint8_t m[4], uint16_t *port, int *v6)
{
	sa_family_t family;
	if (len < offsetof(struct sockaddr, sa_family) + sizeof family)
		return 0;
	memcpy(&family, (const char *)addr + offsetof(struct sockaddr, sa_family), sizeof family);
	if (family == AF_INET && len >= sizeof(struct sockaddr_in)) {
		struct sockaddr_in a;
		memcpy(&a, addr, sizeof a);
		memcpy(m, &a.sin_addr, 4);
		*port = ntohs(a.sin_port);
		*v6 = 0;
	} else if (family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
		struct sockaddr_in6 a;
		memcpy(&a, addr, sizeof a);
		if (!IN6_IS_ADDR_V4MAPPED(&a.sin6_addr))
			return 0;
		memcpy(m, a.sin6_addr.s6_addr + 12, 4);
		*port = ntohs(a.sin6_port);
		*v6 = 1;
	} else {
		return 0;
	}
	return (m[0] | m[1] | m[2] | m[3]) != 0;
}

/* eligible: weight 0 drains; an AF_INET socket cannot reach an IPv6
 * backend; and a backend tried in this call is not tried again. */
static int eligible(const struct disco_backend *b, int v6, const int *tried, int ntried, int i)
{
	if (b->weight == 0 || (b->family != 4 && !(b->family == 6 && v6)))
		return 0;
	for (int j = 0; j < ntried; j++)
		if (tried[j] == i)
			return 0;
	return 1;
}

/* weighted returns the backend at point x of [0, total) in weight order. */
static int weighted(const struct disco_backend *b, int n, int v6, const int *tried, int ntried, uint64_t x)
{
	for (int i = 0; i < n; i++) {
		if (!eligible(&b[i], v6, tried, ntried, i))
			continue;
		if (x < b[i].weight)
			return i;
		x -= b[i].weight;
	}
	return -1;
}

/* pick: two backends drawn by weight, and of the two the one this process
 * saw fail less recently; -1 when none is eligible. */
static int pick(const struct disco_backend *b, int n, int v6, const int *tried, int ntried)
{
	uint64_t total = 0;
	for (int i = 0; i < n; i++)
		if (eligible(&b[i], v6, tried, ntried, i))
			total += b[i].weight;
	if (total == 0)
		return -1;
	int x = weighted(b, n, v6, tried, ntried, disco_random() % total);
	int y = weighted(b, n, v6, tried, ntried, disco_random() % total);
	if (x == y || y < 0)
		return x;
	return disco_failures(&b[y]) < disco_failures(&b[x]) ? y : x;
}

int disco_pick(const struct disco_backend *b, int n, int v6) { return pick(b, n, v6, NULL, 0); }

/* A failure another backend may not share: refused, or unreachable. */
static int retryable(int err)
{
	return err == ECONNREFUSED || err == ETIMEDOUT || err == EHOSTUNREACH || err == ENETUNREACH;
}

union sa {
	struct sockaddr sa;
	struct sockaddr_in in;
	struct sockaddr_in6 in6;
	struct sockaddr_storage ss;
};

/* target builds the backend's address for the caller's kind of socket. */
static socklen_t target(const struct disco_backend *b, int v6, uint16_t port, union sa *to)
{
	memset(to, 0, sizeof *to);
	if (!v6) {
		to->in.sin_family = AF_INET;
		to->in.sin_port = htons(port);
		memcpy(&to->in.sin_addr, b->addr, 4);
		return sizeof to->in;
	}
	to->in6.sin6_family = AF_INET6;
	to->in6.sin6_port = htons(port);
	if (b->family == 4) {
		to->in6.sin6_addr.s6_addr[10] = 0xff;
		to->in6.sin6_addr.s6_addr[11] = 0xff;
		memcpy(to->in6.sin6_addr.s6_addr + 12, b->addr, 4);
	} else {
		memcpy(to->in6.sin6_addr.s6_addr, b->addr, 16);
	}
	return sizeof to->in6;
}

/* continued: when fd's entry says this same connect (magic address and
 * port) is under way on it, the backend it went to, if that one is still
 * eligible; else -1. socket() clears the entry of the fd it returns, so a
 * new socket reusing an fd number never looks continued. */
static int continued(const struct disco_peer *before, const struct disco_backend *b, int n, const uint8_t m[4],
		     uint16_t port, int v6)
{
	if (memcmp(before->magic, m, 4) != 0 || before->port != port || before->v6 != v6)
		return -1;
	for (int i = 0; i < n; i++) {
		uint16_t to_port = b[i].port ? b[i].port : port;
		if (eligible(&b[i], v6, NULL, 0, i) && (b[i].family == 6) == before->to_v6 && to_port == before->to_port &&
		    memcmp(b[i].addr, before->to, b[i].family == 6 ? 16 : 4) == 0)
			return i;
	}
	return -1;
}

/* redirect connects fd to one of the n backends b; it returns -2 when none
 * is eligible (the caller then connects to the magic address itself). */
static int redirect(int fd, const char *service, const struct disco_backend *b, int n, const uint8_t m[4],
		    uint16_t port, int v6)
{
	int saved = errno, err = 0;
	int tried[MAX_TRIES], ntried = 0;
	struct disco_peer before, peer = {.v6 = v6, .port = port};
	int had = disco_fd_get(fd, &before);
	memcpy(peer.magic, m, 4);
	/* A connect repeated on a socket already connecting, to poll it (as
	 * Perl's IO::Socket does) or after EINTR: the kernel keeps the first
	 * call's backend whatever address comes, so it is the one to name, to
	 * blame, and to answer getpeername with. And no retry: the caller
	 * chose a non-blocking connect, or was interrupted in it. */
	int again = had ? continued(&before, b, n, m, port, v6) : -1;
	while (ntried < MAX_TRIES) {
		int i = again >= 0 ? again : pick(b, n, v6, tried, ntried);
		if (i < 0)
			break;
		tried[ntried++] = i;
		/* A backend without a port takes the caller's. */
		uint16_t to_port = b[i].port ? b[i].port : port;
		union sa to;
		socklen_t tolen = target(&b[i], v6, to_port, &to);
		/* Before the connect: another thread may ask as soon as the
		 * connection is up. */
		peer.to_v6 = b[i].family == 6;
		memcpy(peer.to, b[i].addr, 16);
		peer.to_port = to_port;
		disco_fd_set(fd, &peer);
		if (disco_real.connect(fd, &to.sa, tolen) == 0) {
			disco_succeeded(&b[i]);
			errno = saved;
			return 0;
		}
		err = errno;
		if ((err == EALREADY || err == EISCONN) && again < 0) {
			/* Connecting or connected already, but not by us: the
			 * fd map goes back to what it knew. */
			if (had)
				disco_fd_set(fd, &before);
			else
				disco_fd_clear(fd);
		}
		if (!retryable(err))
			return -1; /* EINPROGRESS, EINTR, EALREADY...: the caller's */
		disco_failed(&b[i]);
		disco_report(service, &b[i], err);
		if (again >= 0)
			break;
		/* Linux lets a TCP socket whose connect failed connect again
		 * (checked by the tests), and a connect that failed before
		 * returning left nothing half done: so the same fd, with all
		 * the options the caller set on it, goes to the next backend.
		 * A non-blocking connect fails later, out of our sight, and is
		 * not retried. */
	}
	if (ntried == 0)
		return -2;
	disco_fd_clear(fd);
	errno = err;
	return -1;
}

/* socket: a new socket forgets what the fd map says of its fd number. */
DISCO_EXPORT int socket(int domain, int type, int protocol)
{
	disco_init();
	if (disco_real.socket == NULL) {
		errno = ENOSYS;
		return -1;
	}
	int fd = disco_real.socket(domain, type, protocol);
	disco_fd_clear(fd);
	if (disco_prefetch_on)
		disco_prefetch_socket(fd, domain, type, protocol);
	return fd;
}

/* setsockopt, bind and epoll_ctl only mark the fd as one a spare must not
 * replace (prefetching): what they did would be lost with the socket. */
DISCO_EXPORT int setsockopt(int fd, int level, int name, const void *value, socklen_t len)
{
	disco_init();
	if (disco_real.setsockopt == NULL) {
		errno = ENOSYS;
		return -1;
	}
	if (disco_prefetch_on)
		disco_prefetch_touch(fd);
	return disco_real.setsockopt(fd, level, name, value, len);
}

DISCO_EXPORT int bind(int fd, const struct sockaddr *addr, socklen_t len)
{
	disco_init();
	if (disco_real.bind == NULL) {
		errno = ENOSYS;
		return -1;
	}
	if (disco_prefetch_on)
		disco_prefetch_touch(fd);
	return disco_real.bind(fd, addr, len);
}

DISCO_EXPORT int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
	disco_init();
	if (disco_real.epoll_ctl == NULL) {
		errno = ENOSYS;
		return -1;
	}
	if (disco_prefetch_on)
		disco_prefetch_touch(fd);
	return disco_real.epoll_ctl(epfd, op, fd, ev);
}

DISCO_EXPORT int connect(int fd, const struct sockaddr *addr, socklen_t len)
{
	disco_init();
	if (disco_real.connect == NULL) {
		errno = ENOSYS;
		return -1;
	}
	uint8_t m[4];
	uint16_t port;
	int v6;
	const struct disco_table *t;
	/* Any connect ends an fd's time as a candidate for a spare: a
	 * connect repeated to poll a connect under way must not get one. */
	int fresh = disco_prefetch_on ? disco_prefetch_touch(fd) : 0;
	if (addr == NULL || !magic_of(addr, len, m, &port, &v6) || (t = disco_table()) == NULL) {
		disco_fd_clear(fd); /* the fd may be a reused one */
		return disco_real.connect(fd, addr, len);
	}
	char name[64];
	struct disco_backend stack[STACK_BACKENDS], *b = stack;
	int cap = STACK_BACKENDS, big = 0;
	int n = disco_table_by_magic(t, m, name, b, cap);
	if (n > cap) {
		struct disco_backend *g = disco_big_buffer(n, &cap);
		if (g != NULL) {
			big = 1;
			b = g;
			n = disco_table_by_magic(t, m, name, b, cap);
		} else {
			cap = STACK_BACKENDS;
		}
	}
	if (n > cap)
		n = cap; /* the table grew meanwhile, or the buffer could not */
	int r = -2;
	if (fresh && !v6 && n > 0) {
		int saved = errno;
		int i = disco_prefetch_take(fd, m, port, b, n);
		if (i >= 0) {
			disco_succeeded(&b[i]);
			errno = saved;
			r = 0;
		}
	}
	if (r == -2)
		r = n > 0 ? redirect(fd, name, b, n, m, port, v6) : -2;
	if (big)
		disco_big_release();
	if (r == -2) {
		/* Not a service's address, or one with no backend it can
		 * use: the agent's fallback proxy may be listening there. */
		disco_fd_clear(fd);
		return disco_real.connect(fd, addr, len);
	}
	return r;
}

/* same_peer: the socket's real peer is where connect sent it. */
static int same_peer(const union sa *real, socklen_t len, const struct disco_peer *p)
{
	if (!p->v6) {
		return len >= sizeof real->in && real->sa.sa_family == AF_INET && ntohs(real->in.sin_port) == p->to_port &&
		       memcmp(&real->in.sin_addr, p->to, 4) == 0;
	}
	if (len < sizeof real->in6 || real->sa.sa_family != AF_INET6 || ntohs(real->in6.sin6_port) != p->to_port)
		return 0;
	if (p->to_v6)
		return memcmp(real->in6.sin6_addr.s6_addr, p->to, 16) == 0;
	return IN6_IS_ADDR_V4MAPPED(&real->in6.sin6_addr) && memcmp(real->in6.sin6_addr.s6_addr + 12, p->to, 4) == 0;
}

/*
 * getpeername on a redirected socket answers the magic address and the port
 * the caller asked for, as long as the socket's real peer is still the
 * backend connect chose: an fd closed and reused (by accept, dup2, a socket
 * received from another process) shows its real peer, without a close hook.
 */
DISCO_EXPORT int getpeername(int fd, struct sockaddr *addr, socklen_t *len)
{
	disco_init();
	if (disco_real.getpeername == NULL) {
		errno = ENOSYS;
		return -1;
	}
	struct disco_peer p;
	if (addr == NULL || len == NULL || !disco_fd_get(fd, &p))
		return disco_real.getpeername(fd, addr, len);
	union sa real;
	socklen_t rl = sizeof real;
	if (disco_real.getpeername(fd, &real.sa, &rl) != 0)
		return -1;
	if (same_peer(&real, rl, &p)) {
		union sa magic;
		struct disco_backend b = {.family = 4};
		memcpy(b.addr, p.magic, 4);
		rl = target(&b, p.v6, p.port, &magic);
		real = magic;
	}
	/* As the kernel does: copy what fits, and say how long it is. */
	memcpy(addr, &real, *len < rl ? *len : rl);
	*len = rl;
	return 0;
}
