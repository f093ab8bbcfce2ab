/*
 * paced: N blocking requests to HOST:PORT at RATE a second, on a fixed
 * schedule (request i starts at i/RATE seconds, or at once when late).
 * Each request is socket, connect, send "ping\n", read the reply to EOF,
 * close — nothing else is done to the socket, so that under libdisco.so
 * with DISCO_PREFETCH=1 every connect may take a spare. Only connect() is
 * timed (CLOCK_MONOTONIC); each line of output is one connect's time in
 * nanoseconds. A failed request is fatal.
 *
 *   paced HOST PORT N RATE
 */
#define _GNU_SOURCE

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void sleep_until(long long t)
{
	struct timespec ts = {.tv_sec = t / 1000000000LL, .tv_nsec = t % 1000000000LL};
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

int main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: paced HOST PORT N RATE\n");
		return 2;
	}
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[2]))};
	if (inet_pton(AF_INET, argv[1], &sa.sin_addr) != 1) {
		fprintf(stderr, "paced: bad address %s\n", argv[1]);
		return 2;
	}
	int n = atoi(argv[3]);
	double rate = atof(argv[4]);
	if (n < 1 || rate <= 0) {
		fprintf(stderr, "paced: N and RATE must be positive\n");
		return 2;
	}
	long long step = (long long)(1e9 / rate), start = now_ns();
	for (int i = 0; i < n; i++) {
		sleep_until(start + (long long)i * step);
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		if (fd < 0) {
			fprintf(stderr, "paced: socket: %s\n", strerror(errno));
			return 1;
		}
		long long t0 = now_ns();
		int r = connect(fd, (struct sockaddr *)&sa, sizeof sa);
		long long t1 = now_ns();
		if (r != 0) {
			fprintf(stderr, "paced: request %d: connect: %s\n", i, strerror(errno));
			return 1;
		}
		if (send(fd, "ping\n", 5, MSG_NOSIGNAL) != 5) {
			fprintf(stderr, "paced: request %d: send: %s\n", i, strerror(errno));
			return 1;
		}
		char buf[256];
		size_t got = 0;
		for (;;) {
			ssize_t k = recv(fd, buf + got, sizeof buf - 1 - got, 0);
			if (k < 0) {
				fprintf(stderr, "paced: request %d: recv: %s\n", i, strerror(errno));
				return 1;
			}
			if (k == 0)
				break;
			got += (size_t)k;
			if (got == sizeof buf - 1)
				break;
		}
		buf[got] = 0;
		if (strncmp(buf, "pong", 4) != 0) {
			fprintf(stderr, "paced: request %d: reply %zu bytes, not pong\n", i, got);
			return 1;
		}
		close(fd);
		printf("%lld\n", t1 - t0);
	}
	return 0;
}
