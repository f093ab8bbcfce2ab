/*
 * bench: how long connect() and getaddrinfo() take, for BenchmarkConnect
 * and BenchmarkResolve. Each iteration is timed alone; it prints
 * "p50 NS p99 NS mean NS".
 *
 *   bench connect IP PORT N     a fresh socket connected N times (closed
 *                               with an RST, so no TIME_WAIT piles up)
 *   bench udp IP PORT N         a fresh UDP socket connected N times: no
 *                               handshake, so what the shim adds shows
 *   bench gai NAME PORT N       getaddrinfo(NAME, PORT) N times
 */
#define _GNU_SOURCE

#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static long long now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
	long long x = *(const long long *)a, y = *(const long long *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	if (argc != 5)
		return 2;
	int n = atoi(argv[4]);
	if (n < 1)
		n = 1;
	long long *t = calloc((size_t)n, sizeof *t);
	struct addrinfo h = {.ai_socktype = SOCK_STREAM}, *res;
	if (strcmp(argv[1], "connect") == 0 || strcmp(argv[1], "udp") == 0) {
		int type = strcmp(argv[1], "udp") == 0 ? SOCK_DGRAM : SOCK_STREAM;
		h.ai_flags = AI_NUMERICHOST;
		h.ai_socktype = type;
		if (getaddrinfo(argv[2], argv[3], &h, &res) != 0)
			return 2;
		for (int i = 0; i < n; i++) {
			int fd = socket(res->ai_family, type, 0);
			long long t0 = now();
			if (connect(fd, res->ai_addr, res->ai_addrlen) != 0) {
				perror("connect");
				return 1;
			}
			t[i] = now() - t0;
			struct linger l = {1, 0};
			setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
			close(fd);
		}
		freeaddrinfo(res);
	} else if (strcmp(argv[1], "gai") == 0) {
		for (int i = 0; i < n; i++) {
			long long t0 = now();
			int r = getaddrinfo(argv[2], argv[3], &h, &res);
			t[i] = now() - t0;
			if (r != 0) {
				fprintf(stderr, "getaddrinfo: %s\n", gai_strerror(r));
				return 1;
			}
			freeaddrinfo(res);
		}
	} else {
		return 2;
	}
	qsort(t, (size_t)n, sizeof *t, cmp);
	long long sum = 0;
	for (int i = 0; i < n; i++)
		sum += t[i];
	printf("p50 %lld p99 %lld mean %lld\n", t[n / 2], t[(int)((long long)n * 99 / 100)], sum / n);
	free(t);
	return 0;
}
