/*
 * resolve.c: the name hooks. A name under the service domain that the table
 * knows resolves to the service's magic IPv4 address with no I/O; every
 * other name, and every name when there is no table, goes to the real
 * resolver unchanged.
 */
#define _GNU_SOURCE /* AI_IDN, AI_CANONIDN; gethostbyname2 */

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shim.h"

#if defined(__GLIBC__) && !__GLIBC_PREREQ(2, 27)
/* Since 2.27 glibc allocates ai_canonname on its own and freeaddrinfo frees
 * it; before, it lived in the same block as the addrinfo. */
#error "libdisco.so needs glibc 2.27 or later"
#endif

/* lookup: the service's magic address when name is one of ours and the
 * table has it, with the service name and the full name (lower case). */
static int lookup(const char *node, char name[64], char fqdn[256], uint8_t magic[4])
{
	size_t n = disco_service_name(node, name, fqdn);
	if (n == 0)
		return 0;
	const struct disco_table *t = disco_table();
	if (t == NULL)
		return 0;
	/* No backends copied: the name needs only the magic address. */
	if (disco_table_service(t, name, n, magic, NULL, 0) < 0)
		return 0;
	return (magic[0] | magic[1] | magic[2] | magic[3]) != 0;
}

/* The flags glibc knows; a call with others goes to the real getaddrinfo,
 * which answers EAI_BADFLAGS. */
#define KNOWN_FLAGS (AI_PASSIVE | AI_CANONNAME | AI_NUMERICHOST | AI_V4MAPPED | AI_ALL | AI_ADDRCONFIG | AI_IDN | \
		     AI_CANONIDN | AI_NUMERICSERV)

DISCO_EXPORT int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
			     struct addrinfo **res)
{
	disco_init();
	if (disco_real.getaddrinfo == NULL) {
		errno = ENOSYS;
		return EAI_SYSTEM;
	}
	char name[64], fqdn[256];
	uint8_t m[4];
	int flags = hints ? hints->ai_flags : AI_V4MAPPED | AI_ADDRCONFIG; /* glibc's default */
	if (node == NULL || (flags & AI_NUMERICHOST) || (flags & ~KNOWN_FLAGS) || !lookup(node, name, fqdn, m))
		return disco_real.getaddrinfo(node, service, hints, res);

	/* The real getaddrinfo builds the answer from the magic address as a
	 * numeric host, with the caller's service, socket type and protocol:
	 * named services, EAI_SERVICE and EAI_SOCKTYPE come out as glibc
	 * makes them, and so does the memory freeaddrinfo frees. */
	struct addrinfo h;
	memset(&h, 0, sizeof h);
	char num[32];
	switch (hints ? hints->ai_family : AF_UNSPEC) {
	case AF_UNSPEC:
	case AF_INET:
		snprintf(num, sizeof num, "%u.%u.%u.%u", m[0], m[1], m[2], m[3]);
		h.ai_family = AF_INET;
		break;
	case AF_INET6:
		/* The service has only an IPv4 address: as glibc answers for a
		 * name with A records and no AAAA. */
		if (!(flags & AI_V4MAPPED))
			return EAI_NONAME;
		snprintf(num, sizeof num, "::ffff:%u.%u.%u.%u", m[0], m[1], m[2], m[3]);
		h.ai_family = AF_INET6;
		break;
	default:
		return disco_real.getaddrinfo(node, service, hints, res);
	}
	/* AI_ADDRCONFIG goes: the magic address is loopback, reachable
	 * whatever addresses the host has. */
	h.ai_flags = (flags & ~(AI_CANONNAME | AI_CANONIDN | AI_ADDRCONFIG)) | AI_NUMERICHOST;
	if (hints) {
		h.ai_socktype = hints->ai_socktype;
		h.ai_protocol = hints->ai_protocol;
	}
	int r = disco_real.getaddrinfo(num, service, &h, res);
	if (r == 0 && (flags & AI_CANONNAME)) {
		/* glibc's freeaddrinfo frees ai_canonname with free(). */
		char *c = strdup(fqdn);
		if (c == NULL) {
			disco_real.freeaddrinfo(*res);
			*res = NULL;
			return EAI_MEMORY;
		}
		(*res)->ai_canonname = c;
	}
	return r;
}

/* A hostent for gethostbyname and gethostbyname2, per thread (glibc's is
 * one per process). */
static DISCO_TLS struct {
	struct hostent h;
	char *aliases[1];
	char *addrs[2];
	uint8_t addr[4];
	char name[256];
} hostbuf;

static struct hostent *hostent_of(const char *fqdn, const uint8_t m[4])
{
	memcpy(hostbuf.addr, m, 4);
	strcpy(hostbuf.name, fqdn);
	hostbuf.aliases[0] = NULL;
	hostbuf.addrs[0] = (char *)hostbuf.addr;
	hostbuf.addrs[1] = NULL;
	hostbuf.h.h_name = hostbuf.name;
	hostbuf.h.h_aliases = hostbuf.aliases;
	hostbuf.h.h_addrtype = AF_INET;
	hostbuf.h.h_length = 4;
	hostbuf.h.h_addr_list = hostbuf.addrs;
	return &hostbuf.h;
}

/* hostent_r lays the answer out in the caller's buffer, as the _r
 * functions do: pointers first, aligned, then the address and the name. */
static int hostent_r(const char *fqdn, const uint8_t m[4], struct hostent *ret, char *buf, size_t buflen,
		     struct hostent **result, int *h_errnop)
{
	size_t pad = (size_t)(-(uintptr_t)buf & (_Alignof(char *) - 1));
	size_t nl = strlen(fqdn) + 1;
	if (buf == NULL || buflen < pad + 3 * sizeof(char *) + 4 + nl) {
		*result = NULL;
		*h_errnop = NETDB_INTERNAL;
		errno = ERANGE;
		return ERANGE;
	}
	char **ptrs = (char **)(void *)(buf + pad);
	char *addr = (char *)(ptrs + 3);
	char *nm = addr + 4;
	memcpy(addr, m, 4);
	memcpy(nm, fqdn, nl);
	ptrs[0] = NULL; /* no aliases */
	ptrs[1] = addr;
	ptrs[2] = NULL;
	ret->h_name = nm;
	ret->h_aliases = &ptrs[0];
	ret->h_addrtype = AF_INET;
	ret->h_length = 4;
	ret->h_addr_list = &ptrs[1];
	*result = ret;
	*h_errnop = NETDB_SUCCESS;
	return 0;
}

DISCO_EXPORT struct hostent *gethostbyname(const char *name)
{
	disco_init();
	char svc[64], fqdn[256];
	uint8_t m[4];
	if (name != NULL && lookup(name, svc, fqdn, m))
		return hostent_of(fqdn, m);
	return disco_real.gethostbyname ? disco_real.gethostbyname(name) : NULL;
}

DISCO_EXPORT struct hostent *gethostbyname2(const char *name, int af)
{
	disco_init();
	char svc[64], fqdn[256];
	uint8_t m[4];
	if (name != NULL && (af == AF_INET || af == AF_INET6) && lookup(name, svc, fqdn, m)) {
		if (af == AF_INET)
			return hostent_of(fqdn, m);
		h_errno = HOST_NOT_FOUND; /* no IPv6 address: what glibc says */
		return NULL;
	}
	return disco_real.gethostbyname2 ? disco_real.gethostbyname2(name, af) : NULL;
}

DISCO_EXPORT int gethostbyname_r(const char *name, struct hostent *ret, char *buf, size_t buflen,
				 struct hostent **result, int *h_errnop)
{
	disco_init();
	char svc[64], fqdn[256];
	uint8_t m[4];
	if (name != NULL && lookup(name, svc, fqdn, m))
		return hostent_r(fqdn, m, ret, buf, buflen, result, h_errnop);
	if (disco_real.gethostbyname_r == NULL)
		return ENOSYS;
	return disco_real.gethostbyname_r(name, ret, buf, buflen, result, h_errnop);
}

DISCO_EXPORT int gethostbyname2_r(const char *name, int af, struct hostent *ret, char *buf, size_t buflen,
				  struct hostent **result, int *h_errnop)
{
	disco_init();
	char svc[64], fqdn[256];
	uint8_t m[4];
	if (name != NULL && (af == AF_INET || af == AF_INET6) && lookup(name, svc, fqdn, m)) {
		if (af == AF_INET)
			return hostent_r(fqdn, m, ret, buf, buflen, result, h_errnop);
		*result = NULL;
		*h_errnop = HOST_NOT_FOUND;
		return 0;
	}
	if (disco_real.gethostbyname2_r == NULL)
		return ENOSYS;
	return disco_real.gethostbyname2_r(name, af, ret, buf, buflen, result, h_errnop);
}
