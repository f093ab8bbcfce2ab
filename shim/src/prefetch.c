/*
 * prefetch.c: spare connections, opt-in with DISCO_PREFETCH=1
 * (docs/shim.md#prefetching). For a service a process connects to often, a
 * background thread keeps a few sockets already connected to backends, and
 * connect() on a socket nobody set anything on takes one instead of making
 * a connection.
 *
 * connect's side (disco_prefetch_take) counts, and takes a spare with one
 * atomic exchange: no lock, no allocation, no logging; its system calls are
 * the hand-over's (fcntl, poll, getpeername, dup3, close). Everything else
 * is the thread's, which alone creates spares and alone reads its own
 * bookkeeping.
 */
#define _GNU_SOURCE /* dup3, POLLRDHUP, O_ASYNC */

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "shim.h"

#define SLOTS 64	/* services tracked at once */
#define PROBE 4		/* slots a service may land in */
#define SPARES 64	/* the hard cap per service; DISCO_PREFETCH_MAX is clamped to it */
#define TICK_MS 20	/* the thread's period */
#define WINDOW 50	/* ticks the rate is measured over (1 s) */
#define MIN_RATE 10	/* connects a second below which a service keeps no spare */
#define SHARE_PERMILLE 75 /* spares = ceil(rate × 0.075) */
#define CONNECT_MS 1000 /* how long a spare may take to connect */
#define PENDING 128	/* spares connecting at once */
#define FD_LIMIT 65535	/* a spare's fd + 1 fits in 16 bits */
#define TB_MAX 4096	/* backends the thread looks at per service */

int disco_prefetch_on;
static int cap = 8;
static int64_t idle_ms = 20000;

/* One byte per fd below FD_MAX: 1 when the fd is an AF_INET TCP socket our
 * socket() made and nothing was done to yet. Mapped only when on. */
#define FRESH_MAX 65536
static _Atomic uint8_t *fresh;

/* A service's slot: its key (magic address << 16 | caller's port; 0:
 * free), connects counted since the thread last looked, and its spares,
 * each a word: backend IPv4 address << 32 | backend port << 16 | fd + 1
 * (0: none). Only the thread stores a non-zero word; connect only takes
 * one, exchanging it for 0. */
struct slot {
	_Atomic uint64_t key;
	_Atomic uint32_t hits;
	_Atomic uint64_t spare[SPARES];
};
static struct slot slots[SLOTS];

/* The thread's own bookkeeping, per slot. */
struct rec {
	uint64_t word; /* what it stored in spare[i]; 0: nothing */
	int64_t born;  /* ms */
	ino_t ino;     /* the socket's inode: is the fd still ours? */
};
struct track {
	uint32_t hits[WINDOW], dts[WINDOW];
	uint64_t sum_hits, sum_dt;
	int pos;
	struct rec rec[SPARES];
};
static struct track track[SLOTS];

/* A spare connecting. */
struct pend {
	int fd, slot;
	struct disco_backend b;
	uint16_t port;
};

static atomic_int started;	     /* the thread was started (in this process) */
static atomic_int fdlock;	     /* held by the thread around making and closing spares, and by fork */
static _Atomic int inflight[PENDING]; /* spares connecting, fd + 1: fork's child closes them */

static void lock(void)
{
	while (atomic_exchange_explicit(&fdlock, 1, memory_order_acquire))
		sched_yield();
}

static void unlock(void) { atomic_store_explicit(&fdlock, 0, memory_order_release); }

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t key_of(const uint8_t m[4], uint16_t port)
{
	uint32_t a;
	memcpy(&a, m, 4);
	return (uint64_t)a << 16 | port;
}

static uint32_t spread(uint64_t k)
{
	k ^= k >> 29;
	k *= 0xbf58476d1ce4e5b9ULL;
	return (uint32_t)(k >> 32);
}

/* ---- the fd marks ---- */

void disco_prefetch_socket(int fd, int domain, int type, int protocol)
{
	if (fresh == NULL || fd < 0 || fd >= FRESH_MAX)
		return;
	int ok = domain == AF_INET && (type & 0xf) == SOCK_STREAM && (protocol == 0 || protocol == IPPROTO_TCP);
	atomic_store_explicit(&fresh[fd], (uint8_t)ok, memory_order_relaxed);
}

int disco_prefetch_touch(int fd)
{
	if (fresh == NULL || fd < 0 || fd >= FRESH_MAX)
		return 0;
	if (atomic_load_explicit(&fresh[fd], memory_order_relaxed) == 0)
		return 0;
	return atomic_exchange_explicit(&fresh[fd], 0, memory_order_relaxed);
}

/* ---- the thread ---- */

/* close_ours closes a spare's fd when it still is the socket we made: a
 * program may have closed it (close_range, a daemon closing every fd) and
 * reused the number. */
static void close_ours(int fd, ino_t ino)
{
	struct stat st;
	if (fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_ino == ino)
		close(fd);
}

/* usable: the spare's backend is still an eligible backend of b. */
static int usable(const struct disco_backend *b, int n, uint64_t word, uint16_t port)
{
	uint32_t addr = (uint32_t)(word >> 32);
	uint16_t to_port = (uint16_t)(word >> 16);
	for (int i = 0; i < n; i++) {
		if (b[i].family != 4 || b[i].weight == 0 || memcmp(b[i].addr, &addr, 4) != 0)
			continue;
		if ((b[i].port ? b[i].port : port) == to_port)
			return i;
	}
	return -1;
}

static struct disco_backend tb[TB_MAX]; /* the thread's */

/* drop closes the spare in slot s, entry i, unless connect took it. */
static void drop(int s, int i)
{
	struct rec *r = &track[s].rec[i];
	uint64_t w = r->word;
	lock();
	if (atomic_compare_exchange_strong_explicit(&slots[s].spare[i], &w, 0, memory_order_acquire,
						    memory_order_relaxed))
		close_ours((int)(r->word & 0xffff) - 1, r->ino);
	unlock();
	r->word = 0;
}

/* tick looks at slot s: measures its rate, drops old and dead spares and
 * those whose backend left, and starts the connects that bring it back to
 * its target. */
static void tick(const struct disco_table *t, int s, int64_t now, uint32_t dt, struct pend *p, int *np)
{
	struct slot *sl = &slots[s];
	struct track *tr = &track[s];
	uint64_t key = atomic_load_explicit(&sl->key, memory_order_relaxed);
	if (key == 0)
		return;
	uint32_t h = atomic_exchange_explicit(&sl->hits, 0, memory_order_relaxed);
	tr->sum_hits = tr->sum_hits + h - tr->hits[tr->pos];
	tr->sum_dt = tr->sum_dt + dt - tr->dts[tr->pos];
	tr->hits[tr->pos] = h;
	tr->dts[tr->pos] = dt;
	tr->pos = (tr->pos + 1) % WINDOW;

	uint8_t m[4];
	uint32_t a = (uint32_t)(key >> 16);
	memcpy(m, &a, 4);
	uint16_t port = (uint16_t)key;
	char name[64];
	int n = t ? disco_table_by_magic(t, m, name, tb, TB_MAX) : -1;
	if (n > TB_MAX)
		n = TB_MAX;

	int have = 0;
	for (int i = 0; i < SPARES; i++) {
		struct rec *r = &tr->rec[i];
		if (r->word == 0)
			continue;
		if (atomic_load_explicit(&sl->spare[i], memory_order_relaxed) != r->word) {
			r->word = 0; /* connect took it */
			continue;
		}
		/* Closed by the backend, or sent something: not a spare. */
		struct pollfd pf = {.fd = (int)(r->word & 0xffff) - 1, .events = POLLIN | POLLRDHUP};
		int dead = poll(&pf, 1, 0) != 0;
		if (dead || now - r->born >= idle_ms || n < 0 || usable(tb, n, r->word, port) < 0)
			drop(s, i);
		else
			have++;
	}

	/* A rate measured over less than the window counts as over the whole
	 * window: a service is hot after a second of connects, not one. */
	uint64_t span = tr->sum_dt < WINDOW * TICK_MS ? WINDOW * TICK_MS : tr->sum_dt;
	int target = 0;
	if (n > 0 && tr->sum_hits * 1000 >= (uint64_t)MIN_RATE * span) {
		uint64_t want = (tr->sum_hits * SHARE_PERMILLE + span - 1) / span;
		target = want > (uint64_t)cap ? cap : (int)want;
	}
	if (target == 0 && have == 0 && tr->sum_hits == 0 && tr->sum_dt >= WINDOW * TICK_MS) {
		/* Quiet for a whole window: the slot goes back for another
		 * service. (A connect counting meanwhile loses one hit.) */
		if (atomic_compare_exchange_strong_explicit(&sl->key, &key, 0, memory_order_relaxed,
							    memory_order_relaxed))
			memset(tr, 0, sizeof *tr);
		return;
	}
	for (; have < target && *np < PENDING; have++) {
		int i = disco_pick(tb, n, 0);
		if (i < 0)
			break;
		struct pend *q = &p[*np];
		q->slot = s;
		q->b = tb[i];
		q->port = tb[i].port ? tb[i].port : port;
		struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(q->port)};
		memcpy(&to.sin_addr, tb[i].addr, 4);
		lock();
		int fd = disco_real.socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd >= FD_LIMIT) {
			close(fd);
			fd = -1;
		}
		if (fd >= 0 && disco_real.connect(fd, (struct sockaddr *)&to, sizeof to) != 0 && errno != EINPROGRESS) {
			close(fd);
			fd = -1;
			disco_failed(&tb[i]);
		}
		if (fd >= 0)
			atomic_store_explicit(&inflight[*np], fd + 1, memory_order_relaxed);
		unlock();
		if (fd < 0)
			break;
		q->fd = fd;
		(*np)++;
	}
}

/* store puts a connected spare into a free entry of its slot. */
static void store(const struct pend *q, int64_t now)
{
	struct track *tr = &track[q->slot];
	struct stat st;
	if (fstat(q->fd, &st) != 0) {
		close(q->fd);
		return;
	}
	for (int i = 0; i < SPARES; i++) {
		if (tr->rec[i].word != 0)
			continue;
		uint32_t a;
		memcpy(&a, q->b.addr, 4);
		uint64_t w = (uint64_t)a << 32 | (uint64_t)q->port << 16 | (uint64_t)(q->fd + 1);
		tr->rec[i] = (struct rec){.word = w, .born = now, .ino = st.st_ino};
		atomic_store_explicit(&slots[q->slot].spare[i], w, memory_order_release);
		return;
	}
	close(q->fd);
}

/* finish waits for the spares connecting, at most CONNECT_MS. */
static void finish(struct pend *p, int np)
{
	struct pollfd pf[PENDING];
	int64_t deadline = now_ms() + CONNECT_MS;
	int left = np;
	for (int k = 0; k < np; k++)
		pf[k] = (struct pollfd){.fd = p[k].fd, .events = POLLOUT};
	while (left > 0) {
		int64_t wait = deadline - now_ms();
		if (wait <= 0 || poll(pf, (nfds_t)np, (int)wait) < 0)
			break;
		for (int k = 0; k < np; k++) {
			if (pf[k].fd < 0 || pf[k].revents == 0)
				continue;
			int err = 0;
			socklen_t l = sizeof err;
			if (getsockopt(pf[k].fd, SOL_SOCKET, SO_ERROR, &err, &l) != 0)
				err = errno;
			lock();
			if (err == 0)
				store(&p[k], now_ms());
			else
				close(p[k].fd);
			atomic_store_explicit(&inflight[k], 0, memory_order_relaxed);
			unlock();
			if (err != 0)
				disco_failed(&p[k].b);
			pf[k].fd = -1;
			left--;
		}
	}
	lock();
	for (int k = 0; k < np; k++) {
		if (pf[k].fd >= 0)
			close(pf[k].fd);
		atomic_store_explicit(&inflight[k], 0, memory_order_relaxed);
	}
	unlock();
}

static void *loop(void *arg)
{
	(void)arg;
	static struct pend p[PENDING];
	int64_t last = now_ms();
	for (;;) {
		struct timespec d = {0, TICK_MS * 1000000L};
		nanosleep(&d, NULL);
		int64_t now = now_ms();
		uint32_t dt = now > last ? (uint32_t)(now - last) : 1;
		last = now;
		const struct disco_table *t = disco_table();
		int np = 0;
		for (int s = 0; s < SLOTS; s++)
			tick(t, s, now, dt, p, &np);
		if (np > 0)
			finish(p, np);
	}
	return NULL;
}

/* start starts the thread, with every signal blocked: the program's
 * handlers are not for it. pthread_create allocates (glibc's TLS), once per
 * process: the one allocation prefetching makes on connect's path. */
static void start(void)
{
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pthread_attr_t at;
	pthread_t th;
	if (pthread_attr_init(&at) == 0) {
		pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
		pthread_attr_setstacksize(&at, 256 * 1024);
		pthread_create(&th, &at, loop, NULL);
		pthread_attr_destroy(&at);
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* ---- connect's side ---- */

/* slot_for finds (or claims) the slot of key; -1 when all its places are
 * taken by other services. */
static int slot_for(uint64_t key)
{
	uint32_t h = spread(key);
	for (int j = 0; j < PROBE; j++) {
		int s = (int)((h + (uint32_t)j) % SLOTS);
		uint64_t k = atomic_load_explicit(&slots[s].key, memory_order_relaxed);
		if (k == key)
			return s;
		if (k == 0) {
			uint64_t zero = 0;
			if (atomic_compare_exchange_strong_explicit(&slots[s].key, &zero, key, memory_order_relaxed,
								    memory_order_relaxed) ||
			    zero == key)
				return s;
		}
	}
	return -1;
}

int disco_prefetch_take(int fd, const uint8_t m[4], uint16_t port, const struct disco_backend *b, int n)
{
	int s = slot_for(key_of(m, port));
	if (s < 0)
		return -1;
	struct slot *sl = &slots[s];
	atomic_fetch_add_explicit(&sl->hits, 1, memory_order_relaxed);
	if (!atomic_load_explicit(&started, memory_order_relaxed) &&
	    !atomic_exchange_explicit(&started, 1, memory_order_relaxed))
		start();

	int any = 0;
	for (int i = 0; i < SPARES && !any; i++)
		any = atomic_load_explicit(&sl->spare[i], memory_order_relaxed) != 0;
	if (!any)
		return -1;
	/* The caller's flags, to give the spare; O_ASYNC (F_SETOWN and
	 * friends) would be lost with its socket. */
	int fl = fcntl(fd, F_GETFL), fdfl = fcntl(fd, F_GETFD);
	if (fl < 0 || fdfl < 0 || (fl & O_ASYNC))
		return -1;

	for (int i = 0; i < SPARES; i++) {
		uint64_t w = atomic_load_explicit(&sl->spare[i], memory_order_relaxed);
		if (w == 0 || !atomic_compare_exchange_strong_explicit(&sl->spare[i], &w, 0, memory_order_acquire,
								       memory_order_relaxed))
			continue;
		int sfd = (int)(w & 0xffff) - 1;
		uint32_t addr = (uint32_t)(w >> 32);
		uint16_t to_port = (uint16_t)(w >> 16);
		/* Still the socket we made? (The program may have closed the
		 * number and reused it: then it is not ours to close.) */
		struct sockaddr_in real;
		socklen_t rl = sizeof real;
		if (disco_real.getpeername(sfd, (struct sockaddr *)&real, &rl) != 0 || rl != sizeof real ||
		    real.sin_family != AF_INET || memcmp(&real.sin_addr, &addr, 4) != 0 || ntohs(real.sin_port) != to_port)
			continue;
		struct pollfd pf = {.fd = sfd, .events = POLLIN | POLLRDHUP};
		int bi = usable(b, n, w, port);
		if (bi < 0 || poll(&pf, 1, 0) != 0) {
			close(sfd); /* its backend left, or it closed */
			continue;
		}
		if (fl != (O_RDWR | O_NONBLOCK) && fcntl(sfd, F_SETFL, fl) != 0) {
			close(sfd);
			return -1;
		}
		struct disco_peer peer = {.v6 = 0, .port = port, .to_v6 = 0, .to_port = to_port};
		memcpy(peer.magic, m, 4);
		memcpy(peer.to, &addr, 4);
		disco_fd_set(fd, &peer);
		if (dup3(sfd, fd, (fdfl & FD_CLOEXEC) ? O_CLOEXEC : 0) < 0) {
			disco_fd_clear(fd);
			close(sfd);
			return -1;
		}
		close(sfd);
		return bi;
	}
	return -1;
}

/* ---- fork ---- */

/* The thread is not in the child: holding fdlock over fork means no spare
 * is half made or half closed there. */
static void prepare(void) { lock(); }

static void parent(void) { unlock(); }

/* child closes every spare the child inherited, and forgets the thread:
 * the child's first candidate connect starts its own. */
static void child(void)
{
	for (int s = 0; s < SLOTS; s++) {
		for (int i = 0; i < SPARES; i++) {
			uint64_t w = atomic_exchange_explicit(&slots[s].spare[i], 0, memory_order_relaxed);
			if (w != 0)
				close_ours((int)(w & 0xffff) - 1, track[s].rec[i].ino);
		}
		atomic_store_explicit(&slots[s].hits, 0, memory_order_relaxed);
		atomic_store_explicit(&slots[s].key, 0, memory_order_relaxed);
	}
	for (int k = 0; k < PENDING; k++) {
		int f = atomic_exchange_explicit(&inflight[k], 0, memory_order_relaxed);
		if (f != 0)
			close(f - 1);
	}
	memset(track, 0, sizeof track);
	atomic_store_explicit(&started, 0, memory_order_relaxed);
	unlock();
}

static long env_long(const char *name, long def, long lo, long hi)
{
	const char *v = getenv(name);
	if (v == NULL || *v == 0)
		return def;
	char *end;
	long x = strtol(v, &end, 10);
	if (*end != 0)
		return def;
	return x < lo ? lo : x > hi ? hi : x;
}

void disco_prefetch_init(void)
{
	const char *on = getenv("DISCO_PREFETCH");
	if (on == NULL || strcmp(on, "1") != 0)
		return;
	cap = (int)env_long("DISCO_PREFETCH_MAX", 8, 0, SPARES);
	idle_ms = env_long("DISCO_PREFETCH_IDLE", 20, 1, 3600) * 1000;
	void *m = mmap(NULL, FRESH_MAX, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (m == MAP_FAILED || cap == 0)
		return;
	fresh = m;
	pthread_atfork(prepare, parent, child);
	disco_prefetch_on = 1;
}
