/*
 * shim.h: what libdisco.so's files share. shim.c holds the per-process
 * state (configuration, the mapped table, random numbers, the failure
 * memory, the fd map, the failure report), resolve.c the name hooks and
 * connect.c the connect and getpeername hooks. docs/shim.md tells how it
 * works and where it stops.
 *
 * Everything here is hidden (built with -fvisibility=hidden); only the
 * hooks are exported, marked DISCO_EXPORT.
 */
#ifndef DISCO_SHIM_H
#define DISCO_SHIM_H

#include <netdb.h>
#include <stdint.h>
#include <sys/socket.h>

#include "../table.h"

#define DISCO_EXPORT __attribute__((visibility("default")))

/* Thread-locals in the static TLS block: the general-dynamic model may call
 * malloc on a thread's first access, which a hook must never do. A preloaded
 * library is loaded at start, so the static block always has room. */
#define DISCO_TLS _Thread_local __attribute__((tls_model("initial-exec")))

/* The real functions, found with dlsym(RTLD_NEXT) at load. */
struct disco_real {
	int (*socket)(int, int, int);
	int (*connect)(int, const struct sockaddr *, socklen_t);
	int (*getpeername)(int, struct sockaddr *, socklen_t *);
	int (*getaddrinfo)(const char *, const char *, const struct addrinfo *, struct addrinfo **);
	void (*freeaddrinfo)(struct addrinfo *);
	struct hostent *(*gethostbyname)(const char *);
	struct hostent *(*gethostbyname2)(const char *, int);
	int (*gethostbyname_r)(const char *, struct hostent *, char *, size_t, struct hostent **, int *);
	int (*gethostbyname2_r)(const char *, int, struct hostent *, char *, size_t, struct hostent **, int *);
	int (*setsockopt)(int, int, int, const void *, socklen_t);
	int (*bind)(int, const struct sockaddr *, socklen_t);
	int (*epoll_ctl)(int, int, int, void *);
};
extern struct disco_real disco_real;

/* disco_init runs once per process (from the constructor, or from the first
 * hook called before it): configuration from the environment, the real
 * functions, the fd map, the fork handler. Afterwards it is one load. */
void disco_init(void);

/* disco_table returns the mapped table, mapping it on first use and again
 * when the agent superseded it, or NULL when there is none (everything then
 * passes through). No system call unless it (re)maps. */
const struct disco_table *disco_table(void);

/* disco_service_name: when name is "<service>.service.<domain>" (any case,
 * trailing dot allowed, service one label), writes the service in lower
 * case to out[64], and the name, lower case without the trailing dot, to
 * fqdn[256]; returns the service's length, or 0 when name is not one. */
size_t disco_service_name(const char *name, char out[64], char fqdn[256]);

/* disco_random: a per-thread xorshift64* stream, reseeded after fork. */
uint64_t disco_random(void);

/* The failure memory: recent failed connects per backend, this process. */
unsigned disco_failures(const struct disco_backend *b);
void disco_failed(const struct disco_backend *b);
void disco_succeeded(const struct disco_backend *b);

/* disco_report sends the agent one datagram about a failed connect. */
void disco_report(const char *service, const struct disco_backend *b, int err);

/* The fd map: what getpeername should say for sockets connect redirected. */
struct disco_peer {
	int v6;		  /* the caller connected an AF_INET6 socket (v4-mapped magic) */
	uint8_t magic[4]; /* the magic address the caller asked for */
	uint16_t port;	  /* and its port, host order */
	uint8_t to[16];	  /* where the socket really goes: IPv4 in the first 4 bytes unless to_v6 */
	int to_v6;
	uint16_t to_port;
};
void disco_fd_set(int fd, const struct disco_peer *p);
void disco_fd_clear(int fd);
int disco_fd_get(int fd, struct disco_peer *p);

/* disco_big_buffer returns the thread's buffer for services with more
 * backends than connect's stack holds: mapped on first use, grown on
 * demand, unmapped when the thread exits. NULL when it cannot be had (or is
 * in use: a signal handler's connect interrupted this thread's), else its
 * capacity in *cap until disco_big_release. */
struct disco_backend *disco_big_buffer(int n, int *cap);
void disco_big_release(void);

/* disco_pick: a backend of b by weighted power of two choices, as connect
 * picks (v6: the socket is AF_INET6); -1 when none is eligible. */
int disco_pick(const struct disco_backend *b, int n, int v6);

/*
 * Prefetching (prefetch.c, docs/shim.md#prefetching), off unless
 * DISCO_PREFETCH=1. disco_prefetch_on is written once by init.
 *
 * disco_prefetch_socket marks a new fd as a candidate (an AF_INET TCP
 * socket nobody set anything on) or not; disco_prefetch_touch clears the
 * mark (setsockopt, bind, epoll_ctl, any connect) and returns what it was.
 * disco_prefetch_take, for a candidate connecting to magic m and port: counts
 * the connect for the service's rate, starts the thread if need be, and
 * when a spare to an eligible backend of b is ready puts it on fd and
 * returns that backend's index; -1 otherwise (fd untouched: connect it).
 */
extern int disco_prefetch_on;
void disco_prefetch_init(void);
void disco_prefetch_socket(int fd, int domain, int type, int protocol);
int disco_prefetch_touch(int fd);
int disco_prefetch_take(int fd, const uint8_t m[4], uint16_t port, const struct disco_backend *b, int n);

#endif
