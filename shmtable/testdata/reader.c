/*
 * reader: the C side of shmtable's tests. It maps a table read-only with
 * shim/table.h and either dumps it as text ("dump PATH"), looks names and
 * magic addresses up ("lookup PATH NAME... @A.B.C.D..."), or reads it in a
 * loop while a writer publishes, checking every read is whole ("hammer PATH
 * SECONDS": each published table holds services whose backends all carry
 * the same port, so a torn read shows as a mix).
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../../shim/table.h"

static int open_table(const char *path, struct disco_table *t)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	struct stat st;
	if (fstat(fd, &st) < 0) {
		close(fd);
		return -1;
	}
	void *mem = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	close(fd);
	if (mem == MAP_FAILED)
		return -1;
	t->mem = mem;
	t->size = (size_t)st.st_size;
	return disco_table_check(t->mem, t->size, &t->slot_size);
}

static void print_backend(const struct disco_backend *b)
{
	char buf[INET6_ADDRSTRLEN];
	inet_ntop(b->family == 4 ? AF_INET : AF_INET6, b->addr, buf, sizeof buf);
	if (b->family == 4)
		printf(" %s:%u/%u", buf, b->port, b->weight);
	else
		printf(" [%s]:%u/%u", buf, b->port, b->weight);
}

static struct disco_backend backends[4096];

int main(int argc, char **argv)
{
	struct disco_table t;
	if (argc < 3 || open_table(argv[2], &t) != 0) {
		fprintf(stderr, "usage: reader dump|lookup|hammer PATH ...; or the table is not usable\n");
		return 2;
	}
	if (strcmp(argv[1], "dump") == 0) {
		int n = disco_table_count(&t);
		printf("services %d\n", n);
		for (int i = 0; i < n; i++) {
			char name[64];
			uint8_t magic[4];
			disco_table_name(&t, i, name);
			int nb = disco_table_service(&t, name, strlen(name), magic, backends, 4096);
			printf("%s %u.%u.%u.%u %d", name, magic[0], magic[1], magic[2], magic[3], nb);
			for (int j = 0; j < nb; j++)
				print_backend(&backends[j]);
			printf("\n");
		}
		return 0;
	}
	if (strcmp(argv[1], "lookup") == 0) {
		for (int i = 3; i < argc; i++) {
			int nb;
			if (argv[i][0] == '@') {
				uint8_t a[4];
				char name[64];
				if (inet_pton(AF_INET, argv[i] + 1, a) != 1)
					return 2;
				nb = disco_table_by_magic(&t, a, name, backends, 4096);
				printf("%s -> %s %d\n", argv[i], nb < 0 ? "-" : name, nb);
			} else {
				uint8_t magic[4];
				nb = disco_table_service(&t, argv[i], strlen(argv[i]), magic, backends, 4096);
				if (nb < 0)
					printf("%s -> -\n", argv[i]);
				else
					printf("%s -> %u.%u.%u.%u %d\n", argv[i], magic[0], magic[1], magic[2], magic[3], nb);
			}
		}
		return 0;
	}
	if (strcmp(argv[1], "hammer") == 0 && argc == 4) {
		time_t end = time(NULL) + atoi(argv[3]);
		long reads = 0, torn = 0, generations = 0;
		uint64_t last = 0;
		while (time(NULL) < end) {
			uint8_t magic[4];
			int nb = disco_table_service(&t, "svc", 3, magic, backends, 4096);
			if (nb <= 0)
				continue;
			if (nb > 4096)
				nb = 4096;
			for (int j = 1; j < nb; j++)
				if (backends[j].port != backends[0].port)
					torn++;
			uint64_t g = disco_table_generation(&t);
			if (g != last)
				generations++, last = g;
			reads++;
		}
		printf("reads %ld generations %ld torn %ld\n", reads, generations, torn);
		return torn == 0 ? 0 : 1;
	}
	return 2;
}
