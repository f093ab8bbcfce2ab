/*
 * connect: how long connect() takes, for bench/transparent's "added
 * connect() time" of libdisco.so. Each call is timed alone
 * (CLOCK_MONOTONIC around the connect, nothing else); it prints one line per
 * call, "VARIANT NANOSECONDS", for the benchmark to add up.
 *
 *   connect tcp|udp N IP PORT
 *       N connects of a fresh socket to IP:PORT: run without the shim,
 *       variant "plain".
 *   connect tcp|udp N IP PORT MAGIC
 *       run under the shim (LD_PRELOAD): N rounds of three connects, in an
 *       order that rotates from round to round, each on a fresh socket:
 *         "libc"  glibc's own connect, found in libc.so.6 itself, so the
 *                 shim never sees the call: the same process, no shim;
 *         "real"  connect() to IP:PORT: the shim looks and passes it on;
 *         "magic" connect() to MAGIC:PORT: the shim rewrites it to a backend.
 *
 * Sockets are blocking. A TCP socket is closed with an RST (SO_LINGER 0),
 * so that no TIME_WAIT piles up and the listener's accept queue drains as
 * fast as the server accepts. A UDP connect makes no packet: what it costs
 * is the system call and the shim's own work.
 */
#define _GNU_SOURCE

#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef int (*connect_fn)(int, const struct sockaddr *, socklen_t);

static long long now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int type;

/* once connects a fresh socket to a with fn, closes it, and returns how long
 * the connect took; it exits on failure. */
static long long once(connect_fn fn, const struct sockaddr_in *a, const char *what)
{
	int fd = socket(AF_INET, type, 0);
	if (fd < 0) {
		perror("socket");
		exit(1);
	}
	long long t0 = now();
	int r = fn(fd, (const struct sockaddr *)a, sizeof *a);
	long long t = now() - t0;
	if (r != 0) {
		fprintf(stderr, "connect (%s): ", what);
		perror("");
		exit(1);
	}
	if (type == SOCK_STREAM) {
		struct linger l = {1, 0};
		setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
	}
	close(fd);
	return t;
}

static int parse(struct sockaddr_in *a, const char *ip, const char *port)
{
	memset(a, 0, sizeof *a);
	a->sin_family = AF_INET;
	a->sin_port = htons((unsigned short)atoi(port));
	return inet_pton(AF_INET, ip, &a->sin_addr) == 1;
}

int main(int argc, char **argv)
{
	if (argc != 5 && argc != 6) {
		fprintf(stderr, "usage: connect tcp|udp N IP PORT [MAGIC]\n");
		return 2;
	}
	type = strcmp(argv[1], "udp") == 0 ? SOCK_DGRAM : SOCK_STREAM;
	int n = atoi(argv[2]);
	struct sockaddr_in direct, magic;
	if (n < 1 || !parse(&direct, argv[3], argv[4]) || (argc == 6 && !parse(&magic, argv[5], argv[4]))) {
		fprintf(stderr, "connect: bad arguments\n");
		return 2;
	}
	/* The shim's hook is the connect every other call in this process
	 * reaches; glibc's own is looked up in libc.so.6's scope, which the
	 * preloaded library is not part of. */
	void *libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
	connect_fn real = libc ? (connect_fn)dlsym(libc, "connect") : NULL;
	if (real == NULL) {
		fprintf(stderr, "connect: glibc's connect not found: %s\n", dlerror());
		return 1;
	}
	long long *t = calloc((size_t)n * 3, sizeof *t);
	char *which = calloc((size_t)n * 3, 1);
	if (t == NULL || which == NULL)
		return 1;
	int k = 0;
	if (argc == 5) {
		for (int i = 0; i < n; i++) {
			t[k] = once(connect, &direct, "plain");
			which[k++] = 'p';
		}
	} else {
		for (int i = 0; i < n; i++) {
			for (int j = 0; j < 3; j++) {
				switch ((i + j) % 3) {
				case 0:
					t[k] = once(real, &direct, "libc");
					which[k++] = 'l';
					break;
				case 1:
					t[k] = once(connect, &direct, "real");
					which[k++] = 'r';
					break;
				default:
					t[k] = once(connect, &magic, "magic");
					which[k++] = 'm';
				}
			}
		}
	}
	/* Printed at the end, so that no write happens between two connects. */
	for (int i = 0; i < k; i++) {
		const char *name = which[i] == 'p' ? "plain" : which[i] == 'l' ? "libc" : which[i] == 'r' ? "real" : "magic";
		printf("%s %lld\n", name, t[i]);
	}
	return 0;
}
