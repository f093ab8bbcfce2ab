/*
 * client: the C programs shim's tests run with libdisco.so preloaded. Every
 * mode resolves with getaddrinfo (or takes a numeric address), connects,
 * sends "GET / HTTP/1.0" and prints the body each backend answers (its
 * name), one line per request. Anything unexpected goes to stderr with exit
 * status 1.
 *
 *   client get HOST PORT N           blocking sockets
 *   client nonblock HOST PORT N      non-blocking connect, waited for with
 *                                    epoll: connect must say EINPROGRESS
 *   client fork HOST PORT N          N requests in the parent and N in a
 *                                    forked child, both after a first one
 *   client threads HOST PORT N T     T threads of N requests
 *   client v6 HOST PORT N            AF_INET6 sockets (AI_V4MAPPED)
 *   client peer HOST PORT            getpeername on AF_INET and AF_INET6
 *   client poll HOST PORT            a non-blocking connect polled by calling
 *                                    connect again until it says it is done
 *   client addr IP PORT              connect to a numeric address, say how
 *                                    it went (errno by name)
 *   client gai QUERY...              getaddrinfo answers, QUERY being
 *                                    NAME,SERVICE,FAMILY,SOCKTYPE,FLAG+FLAG
 *   client hostent NAME...           the gethostbyname family's answers
 *   client repl                      a request per "HOST PORT" line on stdin
 *   client paced HOST PORT N US OPT  N blocking requests, one every US
 *                                    microseconds, pausing 100 ms after
 *                                    every 50; OPT "nodelay" sets TCP_NODELAY
 *                                    before connect, "none" nothing; each
 *                                    line is the body, then getpeername's
 *                                    answer (prefetching's tests)
 *   client prefork HOST PORT N US    N paced requests, then a fork: prints
 *                                    the fds the parent has beyond those it
 *                                    had at start, the same for the child
 *                                    just after fork, then the child's own
 *                                    N requests
 */
#define _GNU_SOURCE

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static void die(const char *fmt, const char *a, const char *b)
{
	fprintf(stderr, fmt, a, b);
	fputc('\n', stderr);
	exit(1);
}

static const char *errname(int e)
{
	switch (e) {
	case 0:
		return "ok";
	case ECONNREFUSED:
		return "ECONNREFUSED";
	case EINPROGRESS:
		return "EINPROGRESS";
	case ETIMEDOUT:
		return "ETIMEDOUT";
	case ENETUNREACH:
		return "ENETUNREACH";
	case EHOSTUNREACH:
		return "EHOSTUNREACH";
	case EALREADY:
		return "EALREADY";
	case EISCONN:
		return "EISCONN";
	default:
		return strerror(e);
	}
}

/* wait_out waits for a non-blocking connect with epoll and returns its
 * SO_ERROR. */
static int wait_out(int fd)
{
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = {.events = EPOLLOUT};
	if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0)
		die("epoll: %s%s", strerror(errno), "");
	if (epoll_wait(ep, &ev, 1, 5000) != 1)
		die("epoll_wait: %s%s", "timed out", "");
	close(ep);
	int err = 0;
	socklen_t l = sizeof err;
	getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l);
	return err;
}

/* request sends GET / on a connected socket and copies the body's first
 * line into body. */
static void request(int fd, char *body, size_t cap)
{
	const char req[] = "GET / HTTP/1.0\r\nHost: x\r\n\r\n";
	if (write(fd, req, sizeof req - 1) != (ssize_t)(sizeof req - 1))
		die("write: %s%s", strerror(errno), "");
	char buf[4096];
	size_t n = 0;
	for (;;) {
		ssize_t r = read(fd, buf + n, sizeof buf - 1 - n);
		if (r < 0)
			die("read: %s%s", strerror(errno), "");
		if (r == 0 || n + (size_t)r == sizeof buf - 1) {
			n += (size_t)r;
			break;
		}
		n += (size_t)r;
	}
	buf[n] = 0;
	char *b = strstr(buf, "\r\n\r\n");
	if (b == NULL)
		die("no HTTP answer: %s%s", buf, "");
	b += 4;
	b[strcspn(b, "\r\n")] = 0;
	snprintf(body, cap, "%s", b);
}

/* get resolves host, connects (blocking or not) and asks for the body. */
static void get(int family, const char *host, const char *port, int nonblock, char *body, size_t cap)
{
	struct addrinfo h = {.ai_family = family, .ai_socktype = SOCK_STREAM}, *res;
	if (family == AF_INET6)
		h.ai_flags = AI_V4MAPPED;
	int r = getaddrinfo(host, port, &h, &res);
	if (r != 0)
		die("getaddrinfo %s: %s", host, gai_strerror(r));
	int fd = socket(res->ai_family, res->ai_socktype | (nonblock ? SOCK_NONBLOCK : 0) | SOCK_CLOEXEC,
			res->ai_protocol);
	if (fd < 0)
		die("socket: %s%s", strerror(errno), "");
	errno = 0;
	r = connect(fd, res->ai_addr, res->ai_addrlen);
	freeaddrinfo(res);
	if (nonblock) {
		if (r != -1 || errno != EINPROGRESS)
			die("non-blocking connect to %s: %s, want EINPROGRESS", host, r == 0 ? "0" : errname(errno));
		int err = wait_out(fd);
		if (err != 0)
			die("non-blocking connect to %s: %s", host, errname(err));
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	} else if (r != 0) {
		die("connect to %s: %s", host, errname(errno));
	}
	request(fd, body, cap);
	close(fd);
}

static void many(int family, const char *prefix, const char *host, const char *port, int n, int nonblock)
{
	for (int i = 0; i < n; i++) {
		char body[256];
		get(family, host, port, nonblock, body, sizeof body);
		printf("%s%s\n", prefix, body);
	}
	fflush(stdout);
}

struct job {
	const char *host, *port;
	int n;
	char (*bodies)[64];
};

static void *worker(void *arg)
{
	struct job *j = arg;
	for (int i = 0; i < j->n; i++)
		get(AF_UNSPEC, j->host, j->port, 0, j->bodies[i], sizeof j->bodies[i]);
	return NULL;
}

static void threads(const char *host, const char *port, int n, int t)
{
	pthread_t th[64];
	struct job jobs[64];
	if (t > 64)
		t = 64;
	for (int i = 0; i < t; i++) {
		jobs[i] = (struct job){host, port, n, calloc((size_t)n, 64)};
		if (pthread_create(&th[i], NULL, worker, &jobs[i]) != 0)
			die("pthread_create%s%s", "", "");
	}
	for (int i = 0; i < t; i++) {
		pthread_join(th[i], NULL);
		for (int k = 0; k < n; k++)
			printf("%s\n", jobs[i].bodies[k]);
		free(jobs[i].bodies);
	}
}

static void print_sa(const char *what, const struct sockaddr *sa, socklen_t len)
{
	char a[INET6_ADDRSTRLEN];
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const void *)sa;
		inet_ntop(AF_INET, &in->sin_addr, a, sizeof a);
		printf("%s %s:%u len %u\n", what, a, ntohs(in->sin_port), len);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const void *)sa;
		inet_ntop(AF_INET6, &in6->sin6_addr, a, sizeof a);
		printf("%s [%s]:%u len %u\n", what, a, ntohs(in6->sin6_port), len);
	} else {
		printf("%s family %d\n", what, sa->sa_family);
	}
}

/* peer connects an AF_INET and an AF_INET6 socket and prints what
 * getpeername says, then a short buffer's answer, then a socket reused. */
static void peer(const char *host, const char *port)
{
	int families[2] = {AF_INET, AF_INET6};
	for (int i = 0; i < 2; i++) {
		struct addrinfo h = {.ai_family = families[i], .ai_socktype = SOCK_STREAM, .ai_flags = AI_V4MAPPED}, *res;
		int r = getaddrinfo(host, port, &h, &res);
		if (r != 0)
			die("getaddrinfo %s: %s", host, gai_strerror(r));
		int fd = socket(res->ai_family, SOCK_STREAM, 0);
		if (connect(fd, res->ai_addr, res->ai_addrlen) != 0)
			die("connect %s: %s", host, strerror(errno));
		print_sa("resolved", res->ai_addr, res->ai_addrlen);
		freeaddrinfo(res);
		struct sockaddr_storage ss;
		socklen_t len = sizeof ss;
		if (getpeername(fd, (struct sockaddr *)&ss, &len) != 0)
			die("getpeername: %s%s", strerror(errno), "");
		print_sa("peer", (struct sockaddr *)&ss, len);
		/* A buffer too short: filled as far as it goes, the length says
		 * how long the address is. */
		char small[4] = {0};
		len = sizeof small;
		if (getpeername(fd, (struct sockaddr *)(void *)small, &len) != 0)
			die("getpeername: %s%s", strerror(errno), "");
		printf("short buffer len %u family %d\n", len, *(sa_family_t *)(void *)small);
		char body[64];
		request(fd, body, sizeof body);
		close(fd);
	}
}

/* poll_connect polls a non-blocking connect the old way, calling connect
 * again until it stops saying EALREADY, then asks getpeername. */
static void poll_connect(const char *host, const char *port)
{
	struct addrinfo h = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res;
	int r = getaddrinfo(host, port, &h, &res);
	if (r != 0)
		die("getaddrinfo %s: %s", host, gai_strerror(r));
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	r = connect(fd, res->ai_addr, res->ai_addrlen);
	printf("first connect: %s\n", r == 0 ? "ok" : errname(errno));
	for (int i = 0; i < 5000; i++) {
		r = connect(fd, res->ai_addr, res->ai_addrlen);
		if (r == 0 || errno == EISCONN)
			break;
		if (errno != EALREADY && errno != EINPROGRESS)
			die("connect again: %s%s", errname(errno), "");
		usleep(1000);
	}
	printf("connected: %s\n", r == 0 ? "ok" : errname(errno));
	r = connect(fd, res->ai_addr, res->ai_addrlen);
	printf("once more: %s\n", r == 0 ? "ok" : errname(errno));
	freeaddrinfo(res);
	struct sockaddr_storage ss;
	socklen_t len = sizeof ss;
	if (getpeername(fd, (struct sockaddr *)&ss, &len) != 0)
		die("getpeername: %s%s", strerror(errno), "");
	print_sa("peer", (struct sockaddr *)&ss, len);
	fcntl(fd, F_SETFL, 0);
	char body[64];
	request(fd, body, sizeof body);
	close(fd);
}

/* addr connects to a numeric address and prints how it went. */
static void addr(const char *ip, const char *port)
{
	struct addrinfo h = {.ai_flags = AI_NUMERICHOST, .ai_socktype = SOCK_STREAM}, *res;
	int r = getaddrinfo(ip, port, &h, &res);
	if (r != 0)
		die("getaddrinfo %s: %s", ip, gai_strerror(r));
	int fd = socket(res->ai_family, SOCK_STREAM, 0);
	errno = 0;
	r = connect(fd, res->ai_addr, res->ai_addrlen);
	freeaddrinfo(res);
	if (r != 0) {
		printf("connect: %s\n", errname(errno));
		return;
	}
	struct sockaddr_storage ss;
	socklen_t len = sizeof ss;
	getpeername(fd, (struct sockaddr *)&ss, &len);
	print_sa("peer", (struct sockaddr *)&ss, len);
	char body[64];
	request(fd, body, sizeof body);
	printf("%s\n", body);
	close(fd);
}

static const char *gai_name(int r)
{
	switch (r) {
	case EAI_NONAME:
		return "EAI_NONAME";
	case EAI_AGAIN:
		return "EAI_AGAIN";
	case EAI_SERVICE:
		return "EAI_SERVICE";
	case EAI_SOCKTYPE:
		return "EAI_SOCKTYPE";
	case EAI_FAMILY:
		return "EAI_FAMILY";
	case EAI_BADFLAGS:
		return "EAI_BADFLAGS";
	case EAI_ADDRFAMILY:
		return "EAI_ADDRFAMILY";
	case EAI_NODATA:
		return "EAI_NODATA";
	default:
		return gai_strerror(r);
	}
}

/* gai runs getaddrinfo queries: NAME,SERVICE,FAMILY,SOCKTYPE,FLAGS with
 * "-" for none (FLAGS joined by "+"). */
static void gai(int argc, char **argv)
{
	for (int i = 0; i < argc; i++) {
		char q[512], *f[5] = {0}, *save = NULL;
		snprintf(q, sizeof q, "%s", argv[i]);
		int k = 0;
		for (char *s = strtok_r(q, ",", &save); s && k < 5; s = strtok_r(NULL, ",", &save))
			f[k++] = s;
		if (k != 5)
			die("bad query %s%s", argv[i], "");
		struct addrinfo h = {0}, *res;
		h.ai_family = strcmp(f[2], "inet") == 0 ? AF_INET : strcmp(f[2], "inet6") == 0 ? AF_INET6 : AF_UNSPEC;
		h.ai_socktype = strcmp(f[3], "stream") == 0 ? SOCK_STREAM : strcmp(f[3], "dgram") == 0 ? SOCK_DGRAM : 0;
		if (strstr(f[4], "canon"))
			h.ai_flags |= AI_CANONNAME;
		if (strstr(f[4], "v4mapped"))
			h.ai_flags |= AI_V4MAPPED;
		if (strstr(f[4], "all"))
			h.ai_flags |= AI_ALL;
		if (strstr(f[4], "numericserv"))
			h.ai_flags |= AI_NUMERICSERV;
		if (strstr(f[4], "numerichost"))
			h.ai_flags |= AI_NUMERICHOST;
		if (strstr(f[4], "addrconfig"))
			h.ai_flags |= AI_ADDRCONFIG;
		const char *service = strcmp(f[1], "-") == 0 ? NULL : f[1];
		int r = getaddrinfo(f[0], service, strcmp(f[2], "null") == 0 ? NULL : &h, &res);
		printf("%s:", argv[i]);
		if (r != 0) {
			printf(" %s\n", gai_name(r));
			continue;
		}
		for (struct addrinfo *p = res; p; p = p->ai_next) {
			char a[INET6_ADDRSTRLEN];
			unsigned port;
			if (p->ai_family == AF_INET) {
				struct sockaddr_in *in = (void *)p->ai_addr;
				inet_ntop(AF_INET, &in->sin_addr, a, sizeof a);
				port = ntohs(in->sin_port);
			} else {
				struct sockaddr_in6 *in6 = (void *)p->ai_addr;
				inet_ntop(AF_INET6, &in6->sin6_addr, a, sizeof a);
				port = ntohs(in6->sin6_port);
			}
			printf(" [%s %s port %u type %d proto %d", p->ai_family == AF_INET ? "inet" : "inet6", a, port,
			       p->ai_socktype, p->ai_protocol);
			if (p->ai_canonname)
				printf(" canon %s", p->ai_canonname);
			printf("]");
		}
		printf("\n");
		freeaddrinfo(res);
	}
}

static void print_hostent(const char *what, const struct hostent *h, int herr)
{
	if (h == NULL) {
		printf("  %s: none, h_errno %d\n", what, herr);
		return;
	}
	printf("  %s: %s", what, h->h_name);
	for (char **a = h->h_addr_list; *a; a++) {
		char s[INET6_ADDRSTRLEN];
		inet_ntop(h->h_addrtype, *a, s, sizeof s);
		printf(" %s", s);
	}
	printf(" aliases %d\n", h->h_aliases[0] != NULL);
}

static void hostent(int argc, char **argv)
{
	for (int i = 0; i < argc; i++) {
		printf("%s\n", argv[i]);
		struct hostent *h = gethostbyname(argv[i]);
		print_hostent("gethostbyname", h, h_errno);
		h = gethostbyname2(argv[i], AF_INET);
		print_hostent("gethostbyname2 inet", h, h_errno);
		h = gethostbyname2(argv[i], AF_INET6);
		print_hostent("gethostbyname2 inet6", h, h_errno);
		struct hostent he, *res;
		char buf[1024];
		int herr = 0;
		int r = gethostbyname_r(argv[i], &he, buf + 1, sizeof buf - 1, &res, &herr); /* unaligned on purpose */
		printf("  gethostbyname_r returns %d\n", r);
		print_hostent("gethostbyname_r", res, herr);
		r = gethostbyname_r(argv[i], &he, buf, 16, &res, &herr);
		printf("  gethostbyname_r with 16 bytes returns %s, h_errno %d\n", r == ERANGE ? "ERANGE" : strerror(r), herr);
		r = gethostbyname2_r(argv[i], AF_INET6, &he, buf, sizeof buf, &res, &herr);
		printf("  gethostbyname2_r inet6 returns %d\n", r);
		print_hostent("gethostbyname2_r inet6", res, herr);
	}
}

/* paced makes n requests, one every us microseconds, with a pause of 100 ms
 * after every 50, printing each body and the socket's peer. */
static void paced(const char *prefix, const char *host, const char *port, int n, int us, const char *opt)
{
	struct addrinfo h = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res;
	int r = getaddrinfo(host, port, &h, &res);
	if (r != 0)
		die("getaddrinfo %s: %s", host, gai_strerror(r));
	for (int i = 0; i < n; i++) {
		if (i > 0 && i % 50 == 0)
			usleep(100000);
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		if (fd < 0)
			die("socket: %s%s", strerror(errno), "");
		if (strcmp(opt, "nodelay") == 0) {
			int one = 1;
			if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0)
				die("setsockopt: %s%s", strerror(errno), "");
		}
		if (connect(fd, res->ai_addr, res->ai_addrlen) != 0)
			die("connect to %s: %s", host, errname(errno));
		struct sockaddr_in peer;
		socklen_t len = sizeof peer;
		if (getpeername(fd, (struct sockaddr *)&peer, &len) != 0)
			die("getpeername: %s%s", strerror(errno), "");
		char a[INET_ADDRSTRLEN], body[256];
		inet_ntop(AF_INET, &peer.sin_addr, a, sizeof a);
		request(fd, body, sizeof body);
		close(fd);
		printf("%s%s %s:%u\n", prefix, body, a, ntohs(peer.sin_port));
		usleep((useconds_t)us);
	}
	freeaddrinfo(res);
	fflush(stdout);
}

/* nfds counts this process's open fds. */
static int nfds(void)
{
	DIR *d = opendir("/proc/self/fd");
	if (d == NULL)
		die("opendir: %s%s", strerror(errno), "");
	int n = 0;
	for (struct dirent *e; (e = readdir(d)) != NULL;)
		n += e->d_name[0] != '.';
	closedir(d);
	return n - 1; /* the directory's own */
}

static void prefork(const char *host, const char *port, int n, int us)
{
	int base = nfds();
	paced("parent ", host, port, n, us, "none");
	usleep(60000); /* spares are topped up meanwhile */
	printf("parent extra fds %d\n", nfds() - base);
	fflush(stdout);
	pid_t pid = fork();
	if (pid < 0)
		die("fork: %s%s", strerror(errno), "");
	if (pid == 0) {
		printf("child extra fds %d\n", nfds() - base);
		paced("child ", host, port, n, us, "none");
		_exit(0);
	}
	int st;
	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
		die("the child failed%s%s", "", "");
}

static void repl(void)
{
	char line[512];
	while (fgets(line, sizeof line, stdin)) {
		char host[256], port[16];
		if (sscanf(line, "%255s %15s", host, port) != 2)
			continue;
		struct addrinfo h = {.ai_socktype = SOCK_STREAM}, *res;
		int r = getaddrinfo(host, port, &h, &res);
		if (r != 0) {
			printf("%s\n", gai_name(r));
			fflush(stdout);
			continue;
		}
		int fd = socket(res->ai_family, SOCK_STREAM, 0);
		r = connect(fd, res->ai_addr, res->ai_addrlen);
		freeaddrinfo(res);
		if (r != 0) {
			printf("connect: %s\n", errname(errno));
		} else {
			char body[64];
			request(fd, body, sizeof body);
			printf("%s\n", body);
		}
		close(fd);
		fflush(stdout);
	}
}

int main(int argc, char **argv)
{
	if (argc < 2)
		die("usage: client MODE ...%s%s", "", "");
	const char *mode = argv[1];
	if (strcmp(mode, "get") == 0 && argc == 5)
		many(AF_UNSPEC, "", argv[2], argv[3], atoi(argv[4]), 0);
	else if (strcmp(mode, "nonblock") == 0 && argc == 5)
		many(AF_UNSPEC, "", argv[2], argv[3], atoi(argv[4]), 1);
	else if (strcmp(mode, "v6") == 0 && argc == 5)
		many(AF_INET6, "", argv[2], argv[3], atoi(argv[4]), 0);
	else if (strcmp(mode, "threads") == 0 && argc == 6)
		threads(argv[2], argv[3], atoi(argv[4]), atoi(argv[5]));
	else if (strcmp(mode, "fork") == 0 && argc == 5) {
		many(AF_UNSPEC, "first ", argv[2], argv[3], 1, 0);
		pid_t pid = fork();
		if (pid < 0)
			die("fork: %s%s", strerror(errno), "");
		many(AF_UNSPEC, pid == 0 ? "child " : "parent ", argv[2], argv[3], atoi(argv[4]), 0);
		if (pid == 0)
			_exit(0);
		int st;
		if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
			die("the child failed%s%s", "", "");
	} else if (strcmp(mode, "peer") == 0 && argc == 4)
		peer(argv[2], argv[3]);
	else if (strcmp(mode, "poll") == 0 && argc == 4)
		poll_connect(argv[2], argv[3]);
	else if (strcmp(mode, "addr") == 0 && argc == 4)
		addr(argv[2], argv[3]);
	else if (strcmp(mode, "gai") == 0)
		gai(argc - 2, argv + 2);
	else if (strcmp(mode, "hostent") == 0)
		hostent(argc - 2, argv + 2);
	else if (strcmp(mode, "paced") == 0 && argc == 7)
		paced("", argv[2], argv[3], atoi(argv[4]), atoi(argv[5]), argv[6]);
	else if (strcmp(mode, "prefork") == 0 && argc == 6)
		prefork(argv[2], argv[3], atoi(argv[4]), atoi(argv[5]));
	else if (strcmp(mode, "repl") == 0)
		repl();
	else
		die("bad mode %s%s", mode, "");
	return 0;
}
