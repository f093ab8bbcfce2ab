/*
 * shim.c: libdisco.so's per-process state. Configuration is read once from
 * the environment; the table is mapped on first use; random numbers, the
 * failure memory and the fd map live in fixed memory and are touched only
 * with atomics, so the hooks never allocate, lock or log.
 */
#define _GNU_SOURCE /* RTLD_NEXT, CLOCK_MONOTONIC_COARSE */

#include <ctype.h>
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <fcntl.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include "shim.h"

#define DEFAULT_TABLE "/dev/shm/disco.table"
#define DEFAULT_DOMAIN "disco"
#define DEFAULT_REPORT "127.0.0.1:7709"

/* Sockets with a higher fd still connect through the shim, but getpeername
 * on them reports the backend. 65536 entries of 32 bytes is 2 MiB of
 * address space, of which only the pages of fds in use are ever touched. */
#define FD_MAX 65536

/* The failure memory: direct-mapped, a collision forgets the older backend.
 * A failure counts for FAIL_WINDOW seconds after the last one. */
#define FAIL_SLOTS 1024
#define FAIL_WINDOW 30

/* A table lookup that found no table tries again after this many seconds,
 * so a program started before the agent picks the table up. */
#define RETRY_SECONDS 1

/* Services with more backends than this are picked among the first ones. */
#define BIG_MAX (1 << 20)

struct disco_real disco_real;

static pthread_once_t once = PTHREAD_ONCE_INIT;

/* Configuration, written once by init. */
static char table_path[4096];	 /* empty: no table, pass everything through */
static char suffix[9 + 200 + 1]; /* ".service.<domain>", lower case */
static size_t suffix_len;
static struct sockaddr_storage report_addr;
static socklen_t report_len; /* 0: no failure reports */

/* ---- time ---- */

/* now_sec reads the coarse monotonic clock: served from the vDSO without
 * entering the kernel, whatever the clock source. */
static uint32_t now_sec(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint32_t)ts.tv_sec;
}

/* ---- configuration ---- */

static void lower(char *s)
{
	for (; *s; s++)
		*s = (char)tolower((unsigned char)*s);
}

static void init_domain(void)
{
	const char *d = getenv("DISCO_DOMAIN");
	if (d == NULL || *d == 0)
		d = DEFAULT_DOMAIN;
	while (*d == '.')
		d++;
	size_t n = strlen(d);
	while (n > 0 && d[n - 1] == '.')
		n--;
	if (n == 0 || n > 200) {
		d = DEFAULT_DOMAIN;
		n = strlen(d);
	}
	memcpy(suffix, ".service.", 9);
	memcpy(suffix + 9, d, n);
	suffix[9 + n] = 0;
	lower(suffix);
	suffix_len = 9 + n;
}

/* init_report parses DISCO_AGENT_REPORT: "A.B.C.D:PORT" or "[V6]:PORT";
 * empty or "off" turns reports off. */
static void init_report(void)
{
	const char *r = getenv("DISCO_AGENT_REPORT");
	if (r == NULL)
		r = DEFAULT_REPORT;
	if (*r == 0 || strcmp(r, "off") == 0)
		return;
	char host[64];
	const char *colon = strrchr(r, ':');
	if (colon == NULL || (size_t)(colon - r) >= sizeof host || colon[1] == 0)
		return;
	memcpy(host, r, (size_t)(colon - r));
	host[colon - r] = 0;
	char *end;
	long port = strtol(colon + 1, &end, 10);
	if (*end != 0 || port <= 0 || port > 65535)
		return;
	size_t hl = strlen(host);
	if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
		host[hl - 1] = 0;
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&report_addr;
		if (inet_pton(AF_INET6, host + 1, &a->sin6_addr) != 1)
			return;
		a->sin6_family = AF_INET6;
		a->sin6_port = htons((uint16_t)port);
		report_len = sizeof *a;
		return;
	}
	struct sockaddr_in *a = (struct sockaddr_in *)&report_addr;
	if (inet_pton(AF_INET, host, &a->sin_addr) != 1)
		return;
	a->sin_family = AF_INET;
	a->sin_port = htons((uint16_t)port);
	report_len = sizeof *a;
}

/* ---- the fd map ---- */

/* One fd's entry, a sequence lock over plain words: connect writes it, and
 * getpeername reads it, maybe in another thread. */
struct fdent {
	_Atomic uint32_t seq;
	_Atomic uint32_t flags; /* ENT_SET | ENT_V6 | ENT_TO_V6; 0: empty */
	_Atomic uint32_t magic;
	_Atomic uint32_t ports; /* caller's port << 16 | backend's port */
	_Atomic uint32_t to[4];
};
#define ENT_SET 1u
#define ENT_V6 2u
#define ENT_TO_V6 4u

static struct fdent *fds; /* FD_MAX entries, or NULL */

void disco_fd_set(int fd, const struct disco_peer *p)
{
	if (fds == NULL || fd < 0 || fd >= FD_MAX)
		return;
	struct fdent *e = &fds[fd];
	uint32_t s = atomic_load_explicit(&e->seq, memory_order_relaxed);
	atomic_store_explicit(&e->seq, s + 1, memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
	uint32_t m, to[4];
	memcpy(&m, p->magic, 4);
	memcpy(to, p->to, 16);
	atomic_store_explicit(&e->flags, ENT_SET | (p->v6 ? ENT_V6 : 0) | (p->to_v6 ? ENT_TO_V6 : 0), memory_order_relaxed);
	atomic_store_explicit(&e->magic, m, memory_order_relaxed);
	atomic_store_explicit(&e->ports, (uint32_t)p->port << 16 | p->to_port, memory_order_relaxed);
	for (int i = 0; i < 4; i++)
		atomic_store_explicit(&e->to[i], to[i], memory_order_relaxed);
	atomic_store_explicit(&e->seq, s + 2, memory_order_release);
}

void disco_fd_clear(int fd)
{
	if (fds == NULL || fd < 0 || fd >= FD_MAX)
		return;
	struct fdent *e = &fds[fd];
	if (atomic_load_explicit(&e->flags, memory_order_relaxed) == 0)
		return; /* the usual case: one load, no store */
	uint32_t s = atomic_load_explicit(&e->seq, memory_order_relaxed);
	atomic_store_explicit(&e->seq, s + 1, memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
	atomic_store_explicit(&e->flags, 0, memory_order_relaxed);
	atomic_store_explicit(&e->seq, s + 2, memory_order_release);
}

int disco_fd_get(int fd, struct disco_peer *p)
{
	if (fds == NULL || fd < 0 || fd >= FD_MAX)
		return 0;
	struct fdent *e = &fds[fd];
	for (int tries = 0; tries < 4; tries++) {
		uint32_t s = atomic_load_explicit(&e->seq, memory_order_acquire);
		if (s & 1)
			continue;
		uint32_t flags = atomic_load_explicit(&e->flags, memory_order_relaxed);
		uint32_t m = atomic_load_explicit(&e->magic, memory_order_relaxed);
		uint32_t ports = atomic_load_explicit(&e->ports, memory_order_relaxed);
		uint32_t to[4];
		for (int i = 0; i < 4; i++)
			to[i] = atomic_load_explicit(&e->to[i], memory_order_relaxed);
		atomic_thread_fence(memory_order_acquire);
		if (atomic_load_explicit(&e->seq, memory_order_relaxed) != s)
			continue;
		if (!(flags & ENT_SET))
			return 0;
		p->v6 = (flags & ENT_V6) != 0;
		p->to_v6 = (flags & ENT_TO_V6) != 0;
		memcpy(p->magic, &m, 4);
		memcpy(p->to, to, 16);
		p->port = (uint16_t)(ports >> 16);
		p->to_port = (uint16_t)ports;
		return 1;
	}
	return 0;
}

/* ---- random numbers ---- */

static _Atomic uint32_t epoch = 1;  /* bumped in a forked child: reseed */
static _Atomic uint64_t salt;	    /* the pid and start time */
static _Atomic uint64_t seeds;	    /* how many threads seeded */
static DISCO_TLS uint64_t rng;
static DISCO_TLS uint32_t rng_epoch;

static uint64_t splitmix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

uint64_t disco_random(void)
{
	uint32_t e = atomic_load_explicit(&epoch, memory_order_relaxed);
	if (rng_epoch != e) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		uint64_t s = (uint64_t)(uintptr_t)&rng ^ ((uint64_t)ts.tv_sec << 32) ^ (uint64_t)ts.tv_nsec;
		s ^= atomic_load_explicit(&salt, memory_order_relaxed);
		s ^= atomic_fetch_add_explicit(&seeds, 1, memory_order_relaxed) * 0x9e3779b97f4a7c15ULL;
		rng = splitmix64(s) | 1; /* xorshift's state must not be 0 */
		rng_epoch = e;
	}
	uint64_t x = rng;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	rng = x;
	return x * 0x2545f4914f6cdd1dULL;
}

/* ---- the failure memory ---- */

/* One word per slot, so that it is read and updated whole: the backend's
 * key (32 bits), the second of its last failure (16 bits, wrapping every 18
 * hours), and how many failures in a row (16 bits). */
static _Atomic uint64_t failures[FAIL_SLOTS];

static uint32_t backend_key(const struct disco_backend *b)
{
	uint32_t h = 2166136261u;
	uint8_t bytes[19];
	bytes[0] = b->family;
	bytes[1] = (uint8_t)(b->port >> 8);
	bytes[2] = (uint8_t)b->port;
	memcpy(bytes + 3, b->addr, 16);
	for (size_t i = 0; i < sizeof bytes; i++)
		h = (h ^ bytes[i]) * 16777619u;
	return h | 1;
}

unsigned disco_failures(const struct disco_backend *b)
{
	uint32_t key = backend_key(b);
	uint64_t w = atomic_load_explicit(&failures[key % FAIL_SLOTS], memory_order_relaxed);
	if ((uint32_t)(w >> 32) != key || (uint16_t)w == 0)
		return 0;
	if ((uint16_t)((uint16_t)now_sec() - (uint16_t)(w >> 16)) >= FAIL_WINDOW)
		return 0;
	return (uint16_t)w;
}

void disco_failed(const struct disco_backend *b)
{
	uint32_t key = backend_key(b);
	_Atomic uint64_t *slot = &failures[key % FAIL_SLOTS];
	uint16_t now = (uint16_t)now_sec();
	uint64_t w = atomic_load_explicit(slot, memory_order_relaxed);
	for (;;) {
		uint16_t count = 1;
		if ((uint32_t)(w >> 32) == key && (uint16_t)(now - (uint16_t)(w >> 16)) < FAIL_WINDOW && (uint16_t)w < 0xffff)
			count = (uint16_t)((uint16_t)w + 1);
		uint64_t nw = (uint64_t)key << 32 | (uint64_t)now << 16 | count;
		if (atomic_compare_exchange_weak_explicit(slot, &w, nw, memory_order_relaxed, memory_order_relaxed))
			return;
	}
}

void disco_succeeded(const struct disco_backend *b)
{
	uint32_t key = backend_key(b);
	_Atomic uint64_t *slot = &failures[key % FAIL_SLOTS];
	uint64_t w = atomic_load_explicit(slot, memory_order_relaxed);
	if ((uint32_t)(w >> 32) == key && (uint16_t)w != 0)
		atomic_compare_exchange_strong_explicit(slot, &w, 0, memory_order_relaxed, memory_order_relaxed);
}

/* ---- the failure report ---- */

static size_t put(char *buf, size_t n, size_t cap, const char *s)
{
	while (*s && n < cap)
		buf[n++] = *s++;
	return n;
}

static size_t put_uint(char *buf, size_t n, size_t cap, unsigned long v)
{
	char tmp[24];
	size_t i = sizeof tmp;
	tmp[--i] = 0;
	do {
		tmp[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	return put(buf, n, cap, tmp + i);
}

void disco_report(const char *service, const struct disco_backend *b, int err)
{
	if (report_len == 0 || disco_real.socket == NULL)
		return;
	int saved = errno;
	/* Formatted by hand: connect may be called from a signal handler,
	 * where stdio is off limits. */
	char line[160];
	size_t n = 0, cap = sizeof line - 1;
	n = put(line, n, cap, "fail ");
	n = put(line, n, cap, service);
	n = put(line, n, cap, " ");
	if (b->family == 4) {
		for (int i = 0; i < 4; i++) {
			if (i)
				n = put(line, n, cap, ".");
			n = put_uint(line, n, cap, b->addr[i]);
		}
	} else {
		char a[INET6_ADDRSTRLEN];
		if (inet_ntop(AF_INET6, b->addr, a, sizeof a) == NULL)
			a[0] = 0;
		n = put(line, n, cap, a);
	}
	n = put(line, n, cap, " ");
	n = put_uint(line, n, cap, b->port);
	n = put(line, n, cap, " ");
	n = put_uint(line, n, cap, (unsigned long)err);
	line[n++] = '\n';
	int s = disco_real.socket(report_addr.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s >= 0) {
		sendto(s, line, n, MSG_DONTWAIT | MSG_NOSIGNAL, (const struct sockaddr *)&report_addr, report_len);
		close(s);
	}
	errno = saved;
}

/* ---- the table ---- */

static _Atomic(const struct disco_table *) table;
static atomic_int mapping;	      /* a thread is (re)mapping the table */
static atomic_int tried;	      /* a mapping was tried at least once */
static _Atomic uint32_t retry_at;     /* with no table: when to try again */
static DISCO_TLS int mapping_here;    /* this thread holds mapping */

/* open_table maps the table file read-only, or returns NULL. The struct
 * describing it gets a page of its own that is never freed: a thread may
 * still be reading through it after the table is replaced. */
static const struct disco_table *open_table(void)
{
	int fd = open(table_path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return NULL;
	struct stat st;
	/* Only a table written by root or by this user is trusted: /dev/shm is
	 * writable by everyone, and whoever writes the table decides where this
	 * program's connections go. Nor one anybody else may write to. */
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size < DISCO_TABLE_HEADER_SIZE ||
	    (st.st_uid != 0 && st.st_uid != geteuid()) || (st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
		close(fd);
		return NULL;
	}
	size_t size = (size_t)st.st_size;
	void *mem = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
	close(fd);
	if (mem == MAP_FAILED)
		return NULL;
	uint64_t slot_size;
	struct disco_table probe = {.mem = mem, .size = size};
	/* A file superseded already (an agent that died while stopping) is
	 * no table: mapping it would only find it superseded again. */
	if (disco_table_check(mem, size, &slot_size) != 0 || disco_table_superseded(&probe)) {
		munmap(mem, size);
		return NULL;
	}
	struct disco_table *t = mmap(NULL, sizeof *t, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (t == MAP_FAILED) {
		munmap(mem, size);
		return NULL;
	}
	t->mem = mem;
	t->size = size;
	t->slot_size = slot_size;
	return t;
}

/* retire drops a replaced table's file from memory. Another thread may be
 * in the middle of a read, so the range stays mapped, to zero pages: such a
 * read sees an empty table (its sequence check fails, then no service) and
 * passes through, instead of faulting. */
static void retire(const struct disco_table *t)
{
	mmap((void *)t->mem, t->size, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
}

static const struct disco_table *remap(const struct disco_table *old)
{
	if (mapping_here) /* a signal handler interrupted this thread's remap */
		return old;
	int saved = errno;
	while (atomic_exchange_explicit(&mapping, 1, memory_order_acquire)) {
		if (old != NULL) {
			/* Another thread maps the new file; the old one is
			 * still a whole table meanwhile. */
			errno = saved;
			return old;
		}
		sched_yield(); /* the first mapping: wait for it, microseconds */
	}
	mapping_here = 1;
	const struct disco_table *cur = atomic_load_explicit(&table, memory_order_acquire);
	const struct disco_table *t = cur;
	if (cur != NULL && !disco_table_superseded(cur))
		goto out; /* another thread did it */
	if (cur == NULL && atomic_load_explicit(&tried, memory_order_relaxed) &&
	    (int32_t)(now_sec() - atomic_load_explicit(&retry_at, memory_order_relaxed)) < 0)
		goto out; /* another thread just found none */
	t = open_table();
	atomic_store_explicit(&table, t, memory_order_release);
	if (t == NULL)
		atomic_store_explicit(&retry_at, now_sec() + RETRY_SECONDS, memory_order_relaxed);
	atomic_store_explicit(&tried, 1, memory_order_relaxed);
	if (cur != NULL)
		retire(cur);
out:
	mapping_here = 0;
	atomic_store_explicit(&mapping, 0, memory_order_release);
	errno = saved;
	return t;
}

const struct disco_table *disco_table(void)
{
	const struct disco_table *t = atomic_load_explicit(&table, memory_order_acquire);
	if (t != NULL && !disco_table_superseded(t))
		return t;
	if (table_path[0] == 0)
		return NULL;
	if (t == NULL && atomic_load_explicit(&tried, memory_order_relaxed) &&
	    (int32_t)(now_sec() - atomic_load_explicit(&retry_at, memory_order_relaxed)) < 0)
		return NULL;
	return remap(t);
}

/* ---- names ---- */

size_t disco_service_name(const char *name, char out[64], char fqdn[256])
{
	size_t n = strnlen(name, 256);
	if (n == 0 || n == 256)
		return 0;
	if (name[n - 1] == '.')
		n--;
	if (n <= suffix_len || n - suffix_len > DISCO_TABLE_MAX_NAME)
		return 0;
	size_t label = n - suffix_len;
	for (size_t i = 0; i < suffix_len; i++)
		if (tolower((unsigned char)name[label + i]) != suffix[i])
			return 0;
	for (size_t i = 0; i < label; i++) {
		char c = (char)tolower((unsigned char)name[i]);
		if (c == '.')
			return 0; /* "v2.web.service.disco": the agent's DNS may know */
		out[i] = c;
	}
	out[label] = 0;
	memcpy(fqdn, out, label);
	memcpy(fqdn + label, suffix, suffix_len);
	fqdn[n] = 0;
	return label;
}

/* ---- the per-thread buffer for services with many backends ---- */

struct big {
	size_t bytes; /* of the whole mapping */
	struct disco_backend b[];
};
static DISCO_TLS struct big *big;
static DISCO_TLS int big_busy;
static pthread_key_t big_key;
static int big_key_ok;

static void big_free(void *p)
{
	struct big *g = p;
	munmap(g, g->bytes);
}

struct disco_backend *disco_big_buffer(int n, int *cap)
{
	if (big_busy || !big_key_ok)
		return NULL;
	if (n > BIG_MAX)
		n = BIG_MAX;
	size_t have = big ? (big->bytes - sizeof *big) / sizeof big->b[0] : 0;
	if (have < (size_t)n) {
		size_t want = 256;
		while (want < (size_t)n)
			want *= 2;
		size_t bytes = sizeof *big + want * sizeof big->b[0];
		struct big *g = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (g == MAP_FAILED)
			return NULL;
		g->bytes = bytes;
		if (big)
			big_free(big);
		big = g;
		pthread_setspecific(big_key, g);
		have = want;
	}
	big_busy = 1;
	*cap = (int)have;
	return big->b;
}

void disco_big_release(void) { big_busy = 0; }

/* ---- start ---- */

static void forked(void)
{
	/* Only this thread survives fork: nobody else holds the table. */
	atomic_store_explicit(&mapping, 0, memory_order_relaxed);
	mapping_here = 0;
	big_busy = 0;
	atomic_store_explicit(&salt, splitmix64((uint64_t)getpid()), memory_order_relaxed);
	atomic_fetch_add_explicit(&epoch, 1, memory_order_relaxed);
}

#define REAL(name) (disco_real.name = (__typeof__(disco_real.name))dlsym(RTLD_NEXT, #name))

static void init(void)
{
	int saved = errno;
	REAL(socket);
	REAL(connect);
	REAL(getpeername);
	REAL(getaddrinfo);
	REAL(freeaddrinfo);
	REAL(gethostbyname);
	REAL(gethostbyname2);
	REAL(gethostbyname_r);
	REAL(gethostbyname2_r);
	REAL(setsockopt);
	REAL(bind);
	REAL(epoll_ctl);

	const char *p = getenv("DISCO_TABLE");
	if (p == NULL)
		p = DEFAULT_TABLE;
	if (strlen(p) < sizeof table_path)
		strcpy(table_path, p);
	init_domain();
	init_report();

	void *m = mmap(NULL, (size_t)FD_MAX * sizeof(struct fdent), PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (m != MAP_FAILED)
		fds = m;
	big_key_ok = pthread_key_create(&big_key, big_free) == 0;

	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	atomic_store_explicit(&salt, splitmix64((uint64_t)getpid() << 32 ^ (uint64_t)ts.tv_nsec), memory_order_relaxed);
	pthread_atfork(NULL, NULL, forked);
	disco_prefetch_init();
	errno = saved;
}

void disco_init(void) { pthread_once(&once, init); }

__attribute__((constructor)) static void load(void) { disco_init(); }
